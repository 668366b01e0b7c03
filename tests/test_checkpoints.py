"""Checkpoints of training: resume only from the same data, one writer at a time, all-or-nothing
assembly, and an interrupted run that ends as an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from rbmflow.data.dataset import EncodedAlignment
from rbmflow.errors import RbmflowError
from rbmflow.model import archive
from rbmflow.training import train as training
from rbmflow.training.train import TrainSettings, train

REPO = Path(__file__).resolve().parents[1]
L, Q = 7, 3

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = TrainSettings(hidden=5, updates=40, chains=29, batch_size=23, gibbs_steps=2,
                         learning_rate=0.05, checkpoints=6, log_every=5, seed=11,
                         refresh_every=3)  # refreshes before the signals
# checkpoint_schedule(40, 6) == [1, 2, 4, 9, 19, 40]


def _alignment(seed: int, num: int = 61) -> EncodedAlignment:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, Q, size=(num, L))
    codes[: num // 2, :3] = 0  # some correlations to learn
    return EncodedAlignment(codes.astype(np.uint8), np.ones(num, np.float32),
                            np.zeros(num, np.uint8), np.array([f"s{i}" for i in range(num)]),
                            np.arange(L), "ACD")


def _signal_at_update(monkeypatch, update: int) -> None:
    """SIGTERM to ourselves during gradient update `update` (1-based)."""
    real = training.ascent_direction
    calls = {"n": 0}

    def gradient_then_signal(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == update:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "ascent_direction", gradient_then_signal)


def _same_archives(a: Path, b: Path) -> None:
    assert archive.list_updates(a) == archive.list_updates(b)
    for u in archive.list_updates(a):
        for x, y in zip(archive.load_rbm(a, u).tensors(), archive.load_rbm(b, u).tensors(),
                        strict=True):
            assert torch.equal(x, y), u


def test_checkpoints_of_other_data_are_not_resumed(tmp_path, monkeypatch):
    first, other = _alignment(1), _alignment(2)
    reference = tmp_path / "ref.h5"
    train(other, reference, tmp_path / "ref.csv", SETTINGS, progress=False)

    out, log_path = tmp_path / "model.h5", tmp_path / "log.csv"
    _signal_at_update(monkeypatch, 9)
    with pytest.raises(RbmflowError, match="interrupted"):
        train(first, out, log_path, SETTINGS, progress=False)
    monkeypatch.undo()
    assert archive.list_pieces(training.partial_path(out))
    train(other, out, log_path, SETTINGS, progress=False)  # same settings, other sequences
    _same_archives(out, reference)


def test_a_second_writer_of_the_same_archive_is_refused(tmp_path, monkeypatch):
    data = _alignment(3)
    out = tmp_path / "model.h5"
    real = archive.save_checkpoint
    second: dict[str, object] = {}

    def save_and_start_a_second_writer(path, model, chains, at, *args, **kwargs):
        real(path, model, chains, at, *args, **kwargs)
        if at == 4 and not second:
            try:
                train(_alignment(4), out, tmp_path / "other.csv",
                      TrainSettings(**{**SETTINGS.__dict__, "seed": 99}), progress=False)
                second["result"] = "trained"
            except RbmflowError as err:
                second["result"] = str(err)

    monkeypatch.setattr(archive, "save_checkpoint", save_and_start_a_second_writer)
    train(data, out, tmp_path / "log.csv", SETTINGS, progress=False)
    monkeypatch.undo()
    message = second["result"]
    assert message != "trained"
    assert str(out) in message and f"PID {os.getpid()}" in message
    assert not (tmp_path / "other.csv").exists()
    reference = tmp_path / "ref.h5"
    train(data, reference, tmp_path / "ref.csv", SETTINGS, progress=False)
    _same_archives(out, reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv", "model.h5", "ref.csv",
                                                          "ref.h5"]


def _save_dataset(path: Path, data: EncodedAlignment) -> None:
    from rbmflow.data.dataset import save_encoded
    save_encoded(path, data)


def test_sigterm_during_clean_up_loses_no_checkpoint(tmp_path):
    """A SIGTERM while the pieces are being removed must not let a rerun rebuild model.h5
    from the pieces that survived."""
    _save_dataset(tmp_path / "alignment.npz", _alignment(5))
    out, log_path = tmp_path / "model.h5", tmp_path / "log.csv"
    argv = ["train", str(tmp_path / "alignment.npz"), "--out", str(out), "--log",
            str(log_path), "--hidden", "5", "--updates", "40", "--chains", "29",
            "--batch-size", "23", "--gibbs-steps", "2", "--learning-rate", "0.05",
            "--checkpoints", "6", "--seed", "11", "--device", "cpu", "--threads", "1"]
    script = textwrap.dedent(f"""
        import os, shutil, signal, sys
        from pathlib import Path
        real = shutil.rmtree
        def rmtree_then_signal(path, *args, **kwargs):
            files = sorted(Path(path).glob("update_*.h5"))
            if files:
                files[0].unlink()  # the oldest piece goes first, then the signal arrives
                os.kill(os.getpid(), signal.SIGTERM)
            return real(path, *args, **kwargs)
        shutil.rmtree = rmtree_then_signal
        from rbmflow.cli import main
        sys.exit(main({argv!r}))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    subprocess.run([sys.executable, "-c", script], env=env, timeout=120,
                   stderr=subprocess.DEVNULL, check=False)
    from rbmflow.cli import main
    assert main(argv) == 0
    assert archive.list_updates(out) == [1, 2, 4, 9, 19, 40]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alignment.npz", "log.csv",
                                                          "model.h5"]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_an_interrupted_and_resumed_run_writes_the_same_archive(tmp_path, monkeypatch,
                                                                 optimizer):
    data = _alignment(6)
    settings = replace(SETTINGS, optimizer=optimizer,
                       learning_rate=SETTINGS.learning_rate if optimizer == "sgd" else "auto")
    reference = tmp_path / "ref.h5"
    train(data, reference, tmp_path / "ref.csv", settings, progress=False)
    out, log_path = tmp_path / "model.h5", tmp_path / "log.csv"
    _signal_at_update(monkeypatch, 7)  # not a scheduled checkpoint
    with pytest.raises(RbmflowError, match="at update 7"):
        train(data, out, log_path, settings, progress=False)
    monkeypatch.undo()
    assert [u for u, _ in archive.list_pieces(training.partial_path(out))] == [1, 2, 4, 7]
    assert (training.partial_path(out) / "optimizer.h5").exists() == (optimizer == "adam")
    train(data, out, log_path, settings, progress=False)
    _same_archives(out, reference)
    assert (tmp_path / "ref.csv").read_text().count("\n") == log_path.read_text().count("\n")
