"""model.h5: round trip, compatibility with the `rbms` package both ways, crash safety."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
import torch
from rbmflow.errors import InputError
from rbmflow.model import archive
from rbmflow.model.rbm import PottsRBM, random_codes

L, Q, NH, C = 7, 5, 3, 11


def _model(seed: int) -> PottsRBM:
    g = torch.Generator().manual_seed(seed)
    return PottsRBM(torch.randn(L, Q, NH, generator=g), torch.randn(L, Q, generator=g),
                    torch.randn(NH, generator=g))


def _hyper() -> dict:
    return {"batch_size": 13, "gibbs_steps": 2, "learning_rate": 0.05, "L1": 0.0, "L2": 0.01,
            "seed": 17, "num_hiddens": NH, "num_chains": C, "num_visibles": L}


def _write(path, updates=(1, 4, 9)):
    models, chains = {}, None
    g = torch.Generator().manual_seed(0)
    for u in updates:
        models[u] = _model(u)
        chains = random_codes(C, L, Q, generator=g)
        archive.save_checkpoint(path, models[u], chains, u, 0.5 * u, g.get_state(), _hyper(),
                                {"alphabet": "ACDEF", "method": "cd", "gibbs_steps": 2,
                                 "family": "toy", "provenance": {"seed": 17}},
                                train_log="update,time_s\n1,0.5\n")
    return models, chains


def test_round_trip(tmp_path):
    path = tmp_path / "model.h5"
    models, chains = _write(path)
    assert archive.list_updates(path) == [1, 4, 9]
    for u, model in models.items():
        loaded = archive.load_rbm(path, u, dtype=torch.float64)
        for a, b in zip(loaded.tensors(), model.tensors(), strict=True):
            assert a.dtype == torch.float64
            assert torch.equal(a.float(), b)
    assert torch.equal(archive.load_rbm(path).vbias, models[9].vbias)
    assert torch.equal(archive.load_chains(path), chains)
    meta = archive.read_metadata(path)
    assert meta["alphabet"] == "ACDEF" and meta["method"] == "cd" and meta["gibbs_steps"] == 2
    assert meta["family"] == "toy" and meta["provenance"] == {"seed": 17}
    assert meta["hyperparameters"]["learning_rate"] == pytest.approx(0.05)
    assert meta["num_chains"] == C and meta["model_type"] == "PBRBM"
    state = archive.load_checkpoint_state(path, 4)
    assert state["time_s"] == pytest.approx(2.0) and state["rng_state"].dtype == torch.uint8
    with pytest.raises(InputError, match="update_5"):
        archive.load_rbm(path, 5)


def test_rbms_loads_every_checkpoint(tmp_path):
    rbms_io = pytest.importorskip("rbms.io")
    path = tmp_path / "model.h5"
    models, chains = _write(path)
    for u, model in models.items():
        params = rbms_io.load_params(str(path), u, torch.device("cpu"), torch.float32)
        assert type(params).__name__ == "PBRBM"
        assert torch.equal(params.weight_matrix, model.weight_matrix)
        assert torch.equal(params.hbias, model.hbias)
    params, pchains, time_s, hyper = rbms_io.load_model(
        str(path), 9, torch.device("cpu"), torch.float32, restore=True)
    assert torch.equal(pchains["visible"].long(), chains)
    assert time_s == pytest.approx(4.5)
    assert hyper["batch_size"] == 13 and hyper["L2"] == pytest.approx(0.01)


def test_we_load_a_model_written_by_rbms(tmp_path):
    pytest.importorskip("rbms")
    from rbms.io import save_model
    from rbms.potts_bernoulli.classes import PBRBM
    from rbms.training.utils import create_machine

    path = str(tmp_path / "theirs.h5")
    theirs = PBRBM(weight_matrix=0.1 * torch.randn(L, Q, NH), vbias=torch.randn(L, Q),
                   hbias=torch.randn(NH))
    create_machine(path, theirs, num_visibles=L, num_hiddens=NH, num_chains=C, batch_size=13,
                   gibbs_steps=3, learning_rate=0.02, train_size=0.8, log=False, flags=[],
                   seed=5, L1=0.0, L2=0.0)
    theirs.weight_matrix += 1.0
    chains = theirs.init_chains(C)
    save_model(path, theirs, chains, num_updates=7, time=1.25)
    assert archive.list_updates(path) == [1, 7]
    ours = archive.load_rbm(path)
    assert torch.equal(ours.weight_matrix, theirs.weight_matrix)
    assert torch.equal(ours.vbias, theirs.vbias) and torch.equal(ours.hbias, theirs.hbias)
    assert torch.equal(archive.load_chains(path), chains["visible"].long())
    meta = archive.read_metadata(path)
    assert meta["method"] == "pcd" and meta["gibbs_steps"] == 3 and meta["alphabet"] is None
    assert meta["num_chains"] == C and meta["seed"] == 5


def test_failed_write_leaves_archive_intact(tmp_path, monkeypatch):
    path = tmp_path / "model.h5"
    models, _ = _write(path, updates=(1, 2))
    before = path.read_bytes()

    def boom():
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "get_rng_state", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        archive.save_checkpoint(path, _model(3), random_codes(C, L, Q), 3, 1.0, None, _hyper(),
                                {})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.h5"]
    assert archive.list_updates(path) == [1, 2]


def test_kill9_during_checkpoint_writes_never_corrupts(tmp_path):
    """A writer killed at a random moment leaves a readable archive of complete checkpoints."""
    path = tmp_path / "model.h5"
    script = textwrap.dedent(f"""
        import sys, torch
        from rbmflow.model import archive
        from rbmflow.model.rbm import PottsRBM
        hyper = dict(batch_size=1, gibbs_steps=1, learning_rate=0.1, L1=0.0, L2=0.0, seed=0,
                     num_hiddens=97, num_chains=503, num_visibles=61)
        chains = torch.randint(0, 21, (503, 61))
        for u in range(1, 100000):
            m = PottsRBM(torch.full((61, 21, 97), float(u)), torch.full((61, 21), float(u)),
                         torch.full((97,), float(u)))
            archive.save_checkpoint({str(path)!r}, m, chains, u, 0.0, None, hyper, {{}})
            print(u, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for _ in range(3):  # let a few checkpoints land, then kill at a random moment
        proc.stdout.readline()
    time.sleep(float(np.random.default_rng().uniform(0.0, 0.3)))
    proc.kill()
    proc.wait()
    updates = archive.list_updates(path)
    assert len(updates) >= 3 and updates == list(range(1, len(updates) + 1))
    for u in (updates[0], updates[-1]):
        assert float(archive.load_rbm(path, u).hbias[0]) == u
    with h5py.File(path, "r") as f:
        assert f["model_type"][()].decode() == "PBRBM"


def test_pieces_assemble_into_one_archive(tmp_path):
    """One-checkpoint pieces, assembled, give the archive that growing one file would give."""
    pieces_dir = tmp_path / ".model.h5.partial"
    models, chains = {}, None
    g = torch.Generator().manual_seed(0)
    for u in (1, 4, 9):
        models[u] = _model(u)
        chains = random_codes(C, L, Q, generator=g)
        archive.save_checkpoint(archive.piece_path(pieces_dir, u), models[u], chains, u,
                                0.5 * u, g.get_state(), {**_hyper(), "updates": u},
                                {"alphabet": "ACDEF", "last": u}, train_log=f"update\n{u}\n")
    (pieces_dir / ".update_000010.h5.x.tmp.h5").write_bytes(b"cut short")
    pieces = archive.list_pieces(pieces_dir)
    assert [u for u, _ in pieces] == [1, 4, 9]
    assert pieces[1][1].name == "update_000004.h5" and archive.list_updates(pieces[1][1]) == [4]
    assert archive.list_pieces(tmp_path / "absent") == []

    path = tmp_path / "model.h5"
    archive.assemble([p for _, p in pieces], path)
    assert archive.list_updates(path) == [1, 4, 9]
    for u, model in models.items():
        for a, b in zip(archive.load_rbm(path, u).tensors(), model.tensors(), strict=True):
            assert torch.equal(a, b)
        assert archive.load_checkpoint_state(path, u)["time_s"] == pytest.approx(0.5 * u)
    assert torch.equal(archive.load_chains(path), chains)
    meta = archive.read_metadata(path)
    assert meta["last"] == 9 and meta["updates"] == [1, 4, 9]
    assert meta["hyperparameters"]["updates"] == 9
    assert archive.load_checkpoint_state(path, 9)["train_log"] == "update\n9\n"
    with h5py.File(path, "r") as f:
        assert f["model_type"][()].decode() == "PBRBM"
        for u in models:
            group = f[f"update_{u}"]
            assert group["weight_matrix"].id == group["params/weight_matrix"].id
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.h5.partial", "model.h5"]
    rbms_io = pytest.importorskip("rbms.io")
    for u, model in models.items():
        params = rbms_io.load_params(str(path), u, torch.device("cpu"), torch.float32)
        assert torch.equal(params.weight_matrix, model.weight_matrix)
