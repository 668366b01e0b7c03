"""Training: the gradient against autograd, learning a known RBM, resume, divergence, the CLI."""

from __future__ import annotations

import csv
import itertools
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from rbmflow.cli import main as cli_main
from rbmflow.data.dataset import EncodedAlignment, save_encoded
from rbmflow.errors import RbmflowError
from rbmflow.model import archive
from rbmflow.model.partition import log_partition_exact
from rbmflow.model.rbm import PottsRBM
from rbmflow.training import train as training
from rbmflow.training.moments import moments_side_by_side
from rbmflow.training.steps import Direction
from rbmflow.training.train import (
    TrainSettings,
    checkpoint_schedule,
    checkpoints,
    gradient,
    moments,
    train,
)

L, Q = 5, 3  # q^L = 243 visible configurations: everything below is exact


pytestmark = pytest.mark.usefixtures("one_thread")


def _all_codes() -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(Q), repeat=L)))


def _random_model(nh: int, seed: int, scale: float = 1.0, dtype=torch.float64) -> PottsRBM:
    g = torch.Generator().manual_seed(seed)
    return PottsRBM(scale * torch.randn(L, Q, nh, generator=g, dtype=dtype),
                    torch.randn(L, Q, generator=g, dtype=dtype),
                    torch.randn(nh, generator=g, dtype=dtype))


def _exact_probabilities(model: PottsRBM, codes: torch.Tensor) -> torch.Tensor:
    return torch.softmax(-model.free_energy(codes), dim=0)


def _exact_loglik(model: PottsRBM, codes: torch.Tensor) -> float:
    m = model.to(dtype=torch.float64)
    return float((-m.free_energy(codes)).mean()) - log_partition_exact(m)


def _alignment(codes: np.ndarray, weights: np.ndarray | None = None) -> EncodedAlignment:
    m = codes.shape[0]
    return EncodedAlignment(
        codes=codes.astype(np.uint8),
        weights=np.ones(m, np.float32) if weights is None else weights.astype(np.float32),
        split=np.zeros(m, np.uint8), names=np.array([f"s{i}" for i in range(m)]),
        columns=np.arange(codes.shape[1]), alphabet="ACD"[:Q])


def _teacher() -> PottsRBM:
    """Two hidden units, each pulling every site to one state: strongly correlated sites."""
    weight_matrix = torch.zeros(L, Q, 2, dtype=torch.float64)
    weight_matrix[:, 0, 0] = weight_matrix[:, 1, 1] = 2.5
    vbias = 0.3 * torch.randn(L, Q, generator=torch.Generator().manual_seed(0),
                              dtype=torch.float64)
    return PottsRBM(weight_matrix, vbias, torch.full((2,), -6.0, dtype=torch.float64))


def _teacher_data(num: int, seed: int) -> np.ndarray:
    teacher = _teacher()
    allv = _all_codes()
    p = _exact_probabilities(teacher, allv)
    g = torch.Generator().manual_seed(seed)
    return allv[torch.multinomial(p, num, replacement=True, generator=g)].numpy()


def test_gradient_equals_autograd_of_exact_loglik():
    model = _random_model(7, seed=3)
    params = [t.requires_grad_() for t in model.tensors()]
    allv = _all_codes()
    g = torch.Generator().manual_seed(4)
    data = torch.randint(0, Q, (11, L), generator=g)
    weights = torch.rand(11, generator=g, dtype=torch.float64)
    log_z = torch.logsumexp(-model.free_energy(allv), dim=0)
    assert float(log_z.detach()) == pytest.approx(log_partition_exact(model.clone()), abs=1e-10)
    loglik = (-model.free_energy(data) * weights).sum() / weights.sum() - log_z
    expected = torch.autograd.grad(loglik, params)
    with torch.no_grad():
        model_moments = moments(model, allv, _exact_probabilities(model, allv))
        data_moments = moments(model, data, weights)
        plain = gradient(data_moments, model_moments, centered=False)
        centered = gradient(data_moments, model_moments, centered=True)
    for ours, ref in zip(plain, expected, strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    chunked = moments(model.clone(), allv, _exact_probabilities(model, allv).detach(), chunk=7)
    for name in ("v", "h", "vh"):
        torch.testing.assert_close(getattr(chunked, name), getattr(model_moments, name))
    # The update's two averages side by side on two threads: the same values, and the
    # caller's thread count is restored.
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        both = moments_side_by_side(model.clone(), [
            (allv, _exact_probabilities(model, allv).detach()), (data, weights)])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    for got, ref in zip(both, (model_moments, data_moments), strict=True):
        for name in ("v", "h", "vh"):
            torch.testing.assert_close(getattr(got, name), getattr(ref, name))
    # the centred direction is the documented linear map of the plain gradient
    d_w, d_v, d_h = expected
    v_bar, h_bar = data_moments.v, data_moments.h
    c_w = d_w - v_bar[:, :, None] * d_h - d_v[:, :, None] * h_bar
    torch.testing.assert_close(centered[0], c_w)
    torch.testing.assert_close(centered[1], d_v - c_w @ h_bar)
    torch.testing.assert_close(centered[2], d_h - torch.einsum("ia,iam->m", v_bar, c_w))
    # penalties enter the plain gradient, before the centring map
    l1, l2 = 0.03, 0.07
    weight_matrix = model.weight_matrix.detach()
    with torch.no_grad():
        plain_pen = gradient(data_moments, model_moments, False, weight_matrix, l1, l2)
        centered_pen = gradient(data_moments, model_moments, True, weight_matrix, l1, l2)
    p_w = d_w - l1 * torch.sign(weight_matrix) - l2 * weight_matrix
    torch.testing.assert_close(plain_pen[0], p_w)
    torch.testing.assert_close(plain_pen[1], d_v)
    c_w = p_w - v_bar[:, :, None] * d_h - d_v[:, :, None] * h_bar
    torch.testing.assert_close(centered_pen[0], c_w)
    torch.testing.assert_close(centered_pen[1], d_v - c_w @ h_bar)
    torch.testing.assert_close(centered_pen[2], d_h - torch.einsum("ia,iam->m", v_bar, c_w))


def test_initial_model_reproduces_weighted_frequencies_in_zero_sum_gauge():
    codes = torch.from_numpy(_teacher_data(97, seed=1)).long()
    weights = torch.rand(97, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(0)
    model = training.init_model(codes, weights, Q, 7, g, pseudocount=1e-3, init_std=0.0)
    freq = training.site_moments(codes, weights / weights.sum(), Q)
    torch.testing.assert_close(torch.softmax(model.vbias, -1), (1 - 1e-3) * freq + 1e-3 / Q)
    assert model.vbias.sum(-1).abs().max() < 1e-5
    assert model.weight_matrix.shape == (L, Q, 7) and float(model.hbias.abs().max()) == 0.0


def test_checkpoint_schedule_is_log_spaced_and_ends_at_last():
    points = checkpoint_schedule(1009, 13)
    assert points[0] == 1 and points[-1] == 1009 and points == sorted(set(points))
    ratios = np.diff(np.log([p for p in points if p >= 10]))
    assert np.allclose(ratios, ratios.mean(), atol=0.05)
    assert checkpoint_schedule(7, 50) == list(range(1, 8))


def test_training_on_rbm_data_raises_exact_test_loglik(tmp_path):
    train_codes, test_codes = _teacher_data(613, seed=5), _teacher_data(401, seed=6)
    settings = TrainSettings(hidden=7, updates=300, chains=211, batch_size=128, gibbs_steps=3,
                             learning_rate=0.03, checkpoints=5, log_every=50, seed=2)
    out = tmp_path / "model.h5"
    model = train(_alignment(train_codes), out, tmp_path / "log.csv", settings, progress=False)
    test = torch.from_numpy(test_codes).long()
    first = archive.load_rbm(out, 1)
    teacher = _teacher()
    ll_first, ll_final = _exact_loglik(first, test), _exact_loglik(model, test)
    ll_teacher = _exact_loglik(teacher, test)
    assert ll_final > ll_first + 0.6 * (ll_teacher - ll_first), (ll_first, ll_final, ll_teacher)
    assert ll_final == pytest.approx(_exact_loglik(archive.load_rbm(out), test), abs=1e-5)


@pytest.mark.parametrize("method", ["cd", "rdm"])
def test_other_methods_learn_and_write_rbms_archives(tmp_path, method):
    rbms_io = pytest.importorskip("rbms.io")
    train_codes = _teacher_data(307, seed=7)
    settings = TrainSettings(hidden=7, updates=60, chains=89, batch_size=64, gibbs_steps=2,
                             learning_rate=0.05, method=method, checkpoints=4, log_every=20)
    out = tmp_path / "model.h5"
    train(_alignment(train_codes), out, tmp_path / "log.csv", settings, progress=False)
    test = torch.from_numpy(_teacher_data(211, seed=8)).long()
    updates = archive.list_updates(out)
    assert updates[-1] == 60
    assert _exact_loglik(archive.load_rbm(out), test) > _exact_loglik(
        archive.load_rbm(out, 1), test)
    for u in updates:
        rbms_io.load_params(str(out), u, torch.device("cpu"), torch.float32)
    meta = archive.read_metadata(out)
    assert meta["method"] == method and meta["gibbs_steps"] == 2


def _interrupt_after(monkeypatch, update: int) -> None:
    """Send ourselves SIGTERM once checkpoint `update` is written."""
    real = archive.save_checkpoint

    def save_then_signal(path, model, chains, at, *args, **kwargs):
        real(path, model, chains, at, *args, **kwargs)
        if at == update:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(archive, "save_checkpoint", save_then_signal)


def test_sigterm_then_rerun_resumes_to_the_same_model(tmp_path, monkeypatch):
    data = _alignment(_teacher_data(151, seed=9), np.linspace(0.5, 1.5, 151))
    settings = TrainSettings(hidden=7, updates=40, chains=53, batch_size=31, gibbs_steps=2,
                             learning_rate=0.05, checkpoints=6, log_every=3, seed=11,
                             swap_threshold=0.0, refresh_every=3)
    ref = train(data, tmp_path / "ref.h5", tmp_path / "ref.csv", settings, progress=False)

    out, log_path = tmp_path / "model.h5", tmp_path / "log.csv"
    _interrupt_after(monkeypatch, 9)
    with pytest.raises(RbmflowError, match="signal .* at update 9"):
        train(data, out, log_path, settings, progress=False)
    monkeypatch.undo()
    assert not out.exists() and not log_path.exists()
    partial = training.partial_path(out)
    pieces = archive.list_pieces(partial)
    assert [u for u, _ in pieces] == [1, 2, 4, 9]
    for u, piece in pieces:
        assert archive.list_updates(piece) == [u]

    model = train(data, out, log_path, settings, progress=False)
    assert not partial.exists()
    for ours, theirs in zip(model.tensors(), ref.tensors(), strict=True):
        assert torch.equal(ours, theirs)
    assert archive.list_updates(out) == archive.list_updates(tmp_path / "ref.h5")
    with open(log_path) as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["update"]) for r in rows] == [0, *range(3, 40, 3), 40]
    times = [float(r["time_s"]) for r in rows]
    assert times == sorted(times)
    assert set(rows[0]) >= {"update", "time_s", "learning_rate", "pearson_cij_train",
                            "free_energy_data", "free_energy_chains"}


def test_divergence_names_the_update_and_keeps_a_loadable_archive(tmp_path, monkeypatch):
    rbms_io = pytest.importorskip("rbms.io")
    data = _alignment(_teacher_data(101, seed=10))
    settings = TrainSettings(hidden=7, updates=30, chains=29, batch_size=101, gibbs_steps=1,
                             learning_rate=0.05, checkpoints=30, log_every=5)
    real = training.ascent_direction
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        direction = real(*args, **kwargs)
        if calls["n"] == 13:
            d_w = direction.components[0].clone()
            d_w[0, 0, 0] = float("nan")
            direction = Direction((d_w, *direction.components[1:]), direction.centres)
        return direction

    monkeypatch.setattr(training, "ascent_direction", poisoned)
    out = tmp_path / "model.h5"
    with pytest.raises(RbmflowError, match="diverged at update 13.*update_12"):
        train(data, out, tmp_path / "log.csv", settings, progress=False)
    assert not out.exists()
    last, piece = archive.list_pieces(training.partial_path(out))[-1]
    assert last == 12 and archive.list_updates(piece) == [12]
    assert _finite(archive.load_rbm(piece))
    rbms_io.load_params(str(piece), 12, torch.device("cpu"), torch.float32)


def _finite(model: PottsRBM) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.tensors())


def test_cli_trains_and_a_second_run_is_a_no_op(tmp_path, capsys):
    codes = _teacher_data(173, seed=12)
    split = (np.arange(173) % 5 == 0).astype(np.uint8)
    data = EncodedAlignment(codes.astype(np.uint8), np.ones(173, np.float32), split,
                            np.array([f"s{i}" for i in range(173)]), np.arange(L), "ACD")
    save_encoded(tmp_path / "alignment.npz", data)
    out, log_path = tmp_path / "run" / "model.h5", tmp_path / "run" / "train_log.csv"
    argv = ["train", str(tmp_path / "alignment.npz"), "--out", str(out), "--log", str(log_path),
            "--hidden", "7", "--updates", "23", "--chains", "37", "--batch-size", "64",
            "--gibbs-steps", "2", "--learning-rate", "0.05", "--centered", "false",
            "--checkpoints", "4", "--log-every", "5", "--seed", "3", "--device", "cpu",
            "--family", "toy"]
    assert cli_main(argv) == 0
    meta = archive.read_metadata(out)
    assert meta["family"] == "toy" and meta["alphabet"] == "ACD" and meta["num_test"] == 35
    assert meta["settings"]["centered"] is False and meta["updates"][-1] == 23
    assert meta["provenance"]["inputs"]["alignment"]["sha256"]
    trained = archive.load_rbm(out)
    assert cli_main(argv) == 0  # the run is complete: nothing more to train
    assert archive.list_updates(out) == meta["updates"]
    for again, before in zip(archive.load_rbm(out).tensors(), trained.tensors(), strict=True):
        assert torch.equal(again, before)
    with open(log_path) as handle:
        rows = list(csv.DictReader(handle))
    assert rows[-1]["update"] == "23" and rows[-1]["pearson_cij_test"] != ""


def test_kill9_during_training_then_rerun_finishes_the_run(tmp_path):
    codes = _teacher_data(211, seed=13)
    save_encoded(tmp_path / "alignment.npz", _alignment(codes))
    out, log_path = tmp_path / "model.h5", tmp_path / "train_log.csv"
    argv = ["train", str(tmp_path / "alignment.npz"), "--out", str(out), "--log", str(log_path),
            "--hidden", "7", "--updates", "1201", "--chains", "31", "--batch-size", "37",
            "--gibbs-steps", "1", "--checkpoints", "30", "--log-every", "300",
            "--device", "cpu", "--threads", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "rbmflow", *argv],
                            stderr=subprocess.DEVNULL)
    partial = training.partial_path(out)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if len(archive.list_pieces(partial)) >= 12:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert not out.exists(), "the run ended before it could be killed"
    done = [u for u, _ in archive.list_pieces(partial)]
    assert len(done) >= 12 and done[-1] < 1201
    assert cli_main(argv) == 0
    assert not partial.exists() and not list(tmp_path.glob(".*"))
    updates = archive.list_updates(out)
    assert updates[:len(done)] == done and updates[-1] == 1201
    with open(log_path) as handle:
        logged = [int(row["update"]) for row in csv.DictReader(handle)]
    assert logged == [0, *range(300, 1201, 300), 1201]


def _bytes_written() -> int | None:
    """Bytes this process has passed to write() so far (Linux), or None."""
    try:
        with open("/proc/self/io") as handle:
            for line in handle:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def test_checkpoint_writes_do_not_grow_with_the_number_of_checkpoints(tmp_path, monkeypatch):
    """Each checkpoint writes one new piece and rewrites nothing already saved."""
    data = _alignment(_teacher_data(101, seed=15))
    settings = TrainSettings(hidden=30, updates=40, chains=200, batch_size=101, gibbs_steps=1,
                             checkpoints=40, log_every=1000)
    out = tmp_path / "model.h5"
    partial = training.partial_path(out)
    real = archive.save_checkpoint
    written: list[int] = []
    seen: dict[str, tuple[int, int, int]] = {}

    def checked_save(path, *args, **kwargs):
        before = _bytes_written()
        real(path, *args, **kwargs)
        after = _bytes_written()
        if before is not None and after is not None:
            written.append(after - before)
        # the tempering ladder (refresh_every) is one file of at most 16 levels, replaced
        now = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
               for p in partial.iterdir() if p != checkpoints.ladder_path(out)}
        assert {k: v for k, v in now.items() if k in seen} == seen
        assert set(now) - set(seen) == {path.name}
        seen.update(now)

    monkeypatch.setattr(archive, "save_checkpoint", checked_save)
    train(data, out, tmp_path / "log.csv", settings, progress=False)
    expected = checkpoint_schedule(40, 40)
    assert len(expected) > 20 and archive.list_updates(out) == expected
    assert sorted(seen) == [archive.piece_path(partial, u).name for u in expected]
    assert not partial.exists()
    if written:
        assert max(written) < 1.5 * min(written), written
        assert max(written) < 2 * max(size for _, _, size in seen.values())


def test_a_longer_run_extends_a_finished_one_exactly(tmp_path):
    data = _alignment(_teacher_data(127, seed=14))
    # Only a constant step can be extended (a decay spans the run), and only without a
    # tempering ladder or Adam's moments (gone with the pieces of a finished run) is the
    # extended run bit for bit the direct one.
    short = TrainSettings(hidden=7, updates=19, chains=41, batch_size=43, gibbs_steps=2,
                          checkpoints=5, log_every=4, seed=5, lr_decay=1.0,
                          refresh_every=0, optimizer="sgd")
    longer = TrainSettings(**{**short.__dict__, "updates": 37})
    direct = train(data, tmp_path / "direct.h5", tmp_path / "direct.csv", longer,
                   progress=False)
    out, log_path = tmp_path / "model.h5", tmp_path / "log.csv"
    train(data, out, log_path, short, progress=False)
    first = archive.list_updates(out)
    extended = train(data, out, log_path, longer, progress=False)
    for ours, ref in zip(extended.tensors(), direct.tensors(), strict=True):
        assert torch.equal(ours, ref)
    updates = archive.list_updates(out)
    assert updates[:len(first)] == first and updates[-1] == 37
    assert not training.partial_path(out).exists()
    rbms_io = pytest.importorskip("rbms.io")
    for u in updates:
        rbms_io.load_params(str(out), u, torch.device("cpu"), torch.float32)


def test_a_shorter_run_or_restart_trains_from_scratch(tmp_path):
    data = _alignment(_teacher_data(127, seed=14))
    longer = TrainSettings(hidden=7, updates=23, chains=41, batch_size=43, gibbs_steps=2,
                           checkpoints=5, log_every=4, seed=5, lr_decay=1.0, refresh_every=0)
    shorter = TrainSettings(**{**longer.__dict__, "updates": 11})
    direct = train(data, tmp_path / "short.h5", tmp_path / "short.csv", shorter, progress=False)
    out, log_path = tmp_path / "model.h5", tmp_path / "log.csv"
    trained = train(data, out, log_path, longer, progress=False)
    fresh_checkpoints = archive.list_updates(out)
    shortened = train(data, out, log_path, shorter, progress=False)
    assert archive.list_updates(out) == archive.list_updates(tmp_path / "short.h5")
    for ours, ref in zip(shortened.tensors(), direct.tensors(), strict=True):
        assert torch.equal(ours, ref)
    train(data, out, log_path, longer, progress=False)  # extends 11 -> 23, keeps update_11
    assert archive.list_updates(out) != fresh_checkpoints
    again = train(data, out, log_path, longer, restart=True, progress=False)
    assert archive.list_updates(out) == fresh_checkpoints
    for ours, ref in zip(again.tensors(), trained.tensors(), strict=True):
        assert torch.equal(ours, ref)


def test_learning_rate_decays_exponentially_to_the_final_ratio():
    settings = TrainSettings(refresh_every=0, updates=29, learning_rate=0.2, lr_decay=0.1,
                             lr_decay_from=0.0)
    assert settings.learning_rate_at(0) == pytest.approx(0.2)
    assert settings.learning_rate_at(29) == pytest.approx(0.02)
    rates = [settings.learning_rate_at(u) for u in range(30)]
    assert np.allclose(np.diff(np.log(rates)), np.log(0.1) / 29)
    assert settings.resolved(False).resume_key() != TrainSettings(
        refresh_every=0, updates=31, learning_rate=0.2, lr_decay=0.1).resolved(False).resume_key()
    def key(updates: int, lr_decay: float) -> str:
        return TrainSettings(refresh_every=0, updates=updates,
                             lr_decay=lr_decay).resolved(False).resume_key()

    assert key(29, 1.0) == key(31, 1.0)
    assert key(29, 0.05) != key(31, 0.05)


def test_learning_rate_is_constant_until_the_decay_starts():
    settings = TrainSettings(refresh_every=0, updates=40, learning_rate=0.3, lr_decay=0.05,
                             lr_decay_from=0.25)
    rates = np.array([settings.learning_rate_at(u) for u in range(41)])
    assert np.all(rates[:11] == 0.3)
    assert np.allclose(np.diff(np.log(rates[10:])), np.log(0.05) / 30)
    assert rates[40] == pytest.approx(0.015)
    assert settings.resolved(False).resume_key() != TrainSettings(
        refresh_every=0, updates=40, learning_rate=0.3, lr_decay=0.05).resolved(False).resume_key()
    with pytest.raises(RbmflowError, match="lr_decay_from"):
        TrainSettings(refresh_every=0, lr_decay_from=1.0)


@pytest.mark.parametrize("step", [
    {"optimizer": "sgd", "learning_rate": 0.5, "normalize_gradient": False, "batch_size": 307},
    {"optimizer": "adam", "learning_rate": 0.02, "lr_decay": 0.01}])
def test_l2_training_converges_to_the_regularised_ml_condition(tmp_path, step):
    """With the exact model term (`equilibrium_chains: exact`, hidden configurations
    enumerated), the centred ascent's fixed point satisfies the regularised maximum-likelihood
    condition of the plain parametrisation, checked here by enumerating every visible
    configuration: f_data - f_model = l2 W for the weights, f_data = f_model for both
    biases. Plain sgd, and Adam with its steps taken in the centred coordinates on every
    sequence (`batch_size: auto`), with a decaying rate."""
    allv = _all_codes()
    real_moments = training.moments
    codes = _teacher_data(307, seed=8)
    l2 = 0.05
    settings = TrainSettings(hidden=2, updates=2000, chains=3, gibbs_steps=1, l2=l2,
                             checkpoints=1, log_every=2000, seed=1, init_std=0.5,
                             equilibrium_chains="exact", **step)
    model = train(_alignment(codes), tmp_path / "m.h5", tmp_path / "log.csv", settings,
                  progress=False).to(dtype=torch.float64)
    # rbms reads hyperparameters/L2 as lambda in lambda sum theta^2: l2 / 2 for our penalty
    hyper = archive.read_metadata(tmp_path / "m.h5")["hyperparameters"]
    assert (hyper["L2"], hyper["weight_l2"], hyper["L1"]) == (l2 / 2, l2, 0.0)
    data = real_moments(model, torch.from_numpy(codes).long())
    fitted = real_moments(model, allv, _exact_probabilities(model, allv))
    d_w, d_v, d_h = gradient(data, fitted, centered=False)
    penalty = l2 * model.weight_matrix
    assert float(penalty.abs().max()) > 5e-3  # the penalty is far above the tolerance
    torch.testing.assert_close(d_w, penalty, rtol=0, atol=2e-5)
    torch.testing.assert_close(d_v, torch.zeros_like(d_v), rtol=0, atol=2e-5)
    torch.testing.assert_close(d_h, torch.zeros_like(d_h), rtol=0, atol=2e-5)
