"""Tempered chains as the gradient's model term: resumed bit for bit, switched on by the
equilibrium monitor, and the decision recorded where users read it."""

from __future__ import annotations

import os
import signal
from dataclasses import replace

import numpy as np
import pytest
import torch
from rbmflow import ALPHABET
from rbmflow.data.dataset import EncodedAlignment
from rbmflow.data.synthetic import multimodal_family
from rbmflow.errors import RbmflowError
from rbmflow.model import archive
from rbmflow.model.partition import sample_exact
from rbmflow.report import training_chains
from rbmflow.sampling.equilibrium import MonitorResult
from rbmflow.training import train as training
from rbmflow.training.chains import PersistentChains, TemperedChains
from rbmflow.training.decision import ChainsDecision, switch, switch_due
from rbmflow.training.train import TrainSettings, train

pytestmark = pytest.mark.usefixtures("one_thread")


def _family(num: int, length: int, shares: tuple[float, ...], seed: int) -> EncodedAlignment:
    codes = multimodal_family(num, length, 21, shares, 0.1, seed=seed).codes
    return EncodedAlignment(codes=codes.astype(np.uint8), weights=np.ones(num, np.float32),
                            split=np.zeros(num, np.uint8),
                            names=np.array([f"s{i}" for i in range(num)]),
                            columns=np.arange(length), alphabet=ALPHABET)


def assert_resumes_bit_for_bit(data: EncodedAlignment, settings: TrainSettings, tmp_path,
                               monkeypatch, signal_at: int = 11) -> None:
    """A run cut by SIGTERM at gradient `signal_at`, then resumed, ends with the parameters of
    an uninterrupted run (`cut.h5` is the resumed archive)."""
    direct = train(data, tmp_path / "direct.h5", tmp_path / "direct.csv", settings,
                   progress=False)
    real, calls = training.ascent_direction, {"n": 0}

    def gradient_then_signal(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "ascent_direction", gradient_then_signal)
    with pytest.raises(RbmflowError, match="interrupted"):
        train(data, tmp_path / "cut.h5", tmp_path / "cut.csv", settings, progress=False)
    monkeypatch.undo()
    resumed = train(data, tmp_path / "cut.h5", tmp_path / "cut.csv", settings, progress=False)
    for x, y in zip(direct.tensors(), resumed.tensors(), strict=True):
        assert torch.equal(x, y)


def test_tempered_chains_resume_bit_for_bit_after_sigterm(tmp_path, monkeypatch):
    data = _family(97, 11, (0.6, 0.4), seed=3)
    settings = TrainSettings(hidden=5, updates=17, chains=31, batch_size=41, gibbs_steps=2,
                             checkpoints=5, log_every=4, seed=7, equilibrium_chains="always")
    assert_resumes_bit_for_bit(data, settings, tmp_path, monkeypatch)
    meta = archive.read_metadata(tmp_path / "cut.h5")["training_chains"]
    assert meta["source"] == "tempered" and meta["why"] == "equilibrium_chains: always"
    assert meta["ladder_levels"] >= 2
    assert len(meta["swap_rates"]) in (0, meta["ladder_levels"] - 1)
    assert all(0 <= r <= 1 for r in meta["swap_rates"])


def test_a_disagreeing_monitor_switches_to_tempered_chains_and_the_record_says_why():
    """A disagreeing check switches `auto` to tempered chains over the snapshots, started
    from the persistent chains at the target level; the step then decays; the record names
    the verdict and the cost."""
    g = torch.Generator().manual_seed(5)
    data = _family(89, 13, (0.5, 0.5), seed=2)
    s = TrainSettings(hidden=3, updates=100, chains=47, lr_decay=1.0, refresh_every=0,
                      equilibrium_chains="monitor", learning_rate=0.2)
    model = training.init_model(data.codes_tensor(), data.weights_tensor(), 21, 3, g)
    model.weight_matrix.normal_(0, 0.3, generator=g)
    source = PersistentChains(sample_exact(model.to(dtype=torch.float64), 47, g), 2)
    agree = MonitorResult([0.01], 0.0, 0.1, "exact")
    disagree = MonitorResult([0.3, 0.1], 0.2, 0.1, "exact")
    assert switch_due(s, source, [agree, disagree], 40)
    assert not switch_due(s, source, [disagree, agree], 40) and not switch_due(s, source, [], 40)
    assert not switch_due(replace(s, equilibrium_chains="never"), source, [disagree], 40)
    assert not switch_due(s, source, [disagree], 100)  # nothing left to train
    decision = ChainsDecision.start(s, source)
    snapshots = [training.init_model(data.codes_tensor(), data.weights_tensor(), 21, 3, g)]
    s2, tempered = switch(s, True, source, snapshots, model, disagree, 40, 2.0, decision, g)
    assert isinstance(tempered, TemperedChains) and tempered.chains.shape == (47, 13)
    assert s2.learning_rate_at(40) == s.learning_rate and s2.learning_rate_at(99) < 0.1
    assert not switch_due(s2, tempered, [disagree, disagree], 50)  # once switched, stays
    entry = decision.as_dict(100, 14.0)
    assert entry["switched_at"] == 40 and "KS 0.300 > 0.100" in entry["why"]
    assert entry["seconds_per_update"] == {"before": 0.05, "after": 0.2}
    exact = {"source": "exact", "why": "equilibrium_chains: exact (5 hidden units)"}
    said = training_chains({"method": "pcd", "training_chains": exact, "settings": {
        "refresh_every": 0, "optimizer": "adam", "batch_size": "all", "lr_decay": 0.1,
        "lr_decay_from": 0.5, "updates": 600}})
    assert said == ("no chains: equilibrium_chains: exact (5 hidden units); adam steps on "
                    "every training sequence, decaying to 0.1 x after update 300")
    said = training_chains({"method": "pcd", "settings": {"refresh_every": 0},
                            "training_chains": entry})
    assert said.startswith("plain PCD until update 40, then tempered chains over a ladder")
    assert "0.05 s per update before, 0.2 s after" in said
