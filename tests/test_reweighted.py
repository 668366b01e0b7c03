"""PCD with Jarzynski weights: on an enumerable two-mode model whose chains cannot cross, the
weighted chains end at the exact mode weights while plain persistent chains do not; the
resampling is systematic; a run resumes bit for bit."""

from __future__ import annotations

import pytest
import torch
from rbmflow.errors import RbmflowError
from rbmflow.model import archive
from rbmflow.model.rbm import random_codes
from rbmflow.report import training_chains
from rbmflow.training.chains import PersistentChains, ReweightedChains, systematic_resample
from rbmflow.training.steps import DEFAULT_LEARNING_RATE
from rbmflow.training.train import AUTO_LR_DECAY, TrainSettings
from test_refresh import L, Q, exact_second_mode_weight, in_second_mode, two_mode_model
from test_tempered import _family, assert_resumes_bit_for_bit

pytestmark = pytest.mark.usefixtures("one_thread")


def _occupancy(codes: torch.Tensor, weights: torch.Tensor | None) -> float:
    second = in_second_mode(codes).double()
    if weights is None:
        return float(second.mean())
    return float((second * weights).sum() / weights.sum())


def test_weighted_chains_follow_the_mode_weights_that_plain_chains_lose() -> None:
    """The model at growing scale, like training's growing couplings: the chains commit to a
    mode early, at near-equal weights (0.5 at scale 0), and Gibbs sweeps never move them
    across; the exact weight of the second mode at scale 1 is 0.69."""
    g = torch.Generator().manual_seed(11)
    exact = exact_second_mode_weight(two_mode_model())
    num_chains = 1009
    start = random_codes(num_chains, L, Q, "cpu", g)  # exact samples of the scale-0 model
    trajectory = [two_mode_model(t) for t in torch.linspace(0, 1, 41).tolist()]
    plain, weighted = PersistentChains(start.clone(), 2), ReweightedChains(start.clone(), 2)
    for update, (model, moved) in enumerate(zip(trajectory[:-1], trajectory[1:], strict=True), 1):
        for source in (plain, weighted):
            source.model_chains(model, start, g)
            source.after_step(moved, update, g)
    target = trajectory[-1]
    for source in (plain, weighted):
        source.model_chains(target, start, g)
    tolerance = 4 * (exact * (1 - exact) / num_chains) ** 0.5 + 0.02
    assert abs(_occupancy(plain.chains, None) - exact) > 0.08  # plain PCD lost the weights
    occupancy = _occupancy(weighted.chains, weighted.weights())
    assert abs(occupancy - exact) < tolerance, (occupancy, exact, weighted.resamples)
    drawn = weighted.checkpoint_chains(g)
    assert abs(_occupancy(drawn, None) - exact) < tolerance + 2 / num_chains
    assert 0 < weighted.ess_fraction() <= 1


def test_systematic_resampling_keeps_each_chain_floor_or_ceil_of_its_share() -> None:
    g = torch.Generator().manual_seed(3)
    weights = torch.tensor([0.5, 0.25, 0.25, 0.0], dtype=torch.float64)
    counts = torch.bincount(systematic_resample(weights, g), minlength=4)
    assert counts.tolist() == [2, 1, 1, 0]
    weights = torch.softmax(torch.randn(101, generator=g, dtype=torch.float64), 0)
    counts = torch.bincount(systematic_resample(weights, g), minlength=101).double()
    assert bool(((counts - 101 * weights).abs() < 1).all())


def test_jarzynski_chains_resume_bit_for_bit_after_sigterm(tmp_path, monkeypatch) -> None:
    data = _family(97, 11, (0.6, 0.4), seed=3)
    settings = TrainSettings(hidden=5, updates=17, chains=31, batch_size=41, gibbs_steps=2,
                             checkpoints=5, log_every=4, seed=7, learning_rate=3.0,
                             equilibrium_chains="jarzynski")
    assert_resumes_bit_for_bit(data, settings, tmp_path, monkeypatch)
    meta = archive.read_metadata(tmp_path / "cut.h5")["training_chains"]
    assert meta["source"] == "jarzynski" and meta["resamples"] >= 1
    said = training_chains(archive.read_metadata(tmp_path / "cut.h5"))
    assert said.startswith("persistent chains with Jarzynski weights (equilibrium_chains: "
                           f"jarzynski), resampled {meta['resamples']} times; ")


def test_jarzynski_takes_no_refresh_and_its_auto_step_is_adam_decaying() -> None:
    with pytest.raises(RbmflowError, match="refresh_every"):
        TrainSettings(equilibrium_chains="jarzynski", refresh_every=5)
    resolved = TrainSettings(equilibrium_chains="jarzynski").resolved(True)
    assert resolved.refresh_every == 0 and not resolved.refreshed
    assert (resolved.optimizer, resolved.lr_decay, resolved.lr_decay_from) == (
        "adam", AUTO_LR_DECAY, 0.0)
    assert resolved.learning_rate == DEFAULT_LEARNING_RATE["adam"]
    plain = TrainSettings(equilibrium_chains="never", hidden=17).resolved(False)
    assert (plain.optimizer, plain.lr_decay) == ("sgd", 1.0)
