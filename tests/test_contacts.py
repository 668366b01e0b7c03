"""Contacts: structure readers, PPV, exports, the `rbmflow contacts` CLI and its rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rbmflow.cli import main
from rbmflow.data.dataset import EncodedAlignment, save_encoded
from rbmflow.errors import InputError
from rbmflow.evaluation import contacts as K
from rbmflow.model import archive
from rbmflow.model.couplings import contact_scores, effective_couplings
from rbmflow.model.rbm import PottsRBM

ALPHABET = "-ACDEFGHIKLMNPQRSTVWY"


# -- PPV ---------------------------------------------------------------------------------------


def test_ppv_curve_on_a_hand_made_ranking():
    L = 9
    distances = np.full((L, L), 20.0)
    scores = np.zeros((L, L))

    def put(i, j, score, distance):
        scores[i, j] = scores[j, i] = score
        distances[i, j] = distances[j, i] = distance

    put(0, 8, 5.0, 4.0)   # contact
    put(0, 1, 4.5, 3.0)   # contact but |i-j| = 1: not ranked
    put(1, 7, 4.0, 12.0)  # no contact
    put(2, 7, 3.0, 7.5)   # contact at 8 A, not at 7 A
    put(0, 5, 2.0, np.nan)  # unknown distance: not ranked
    put(3, 8, 1.0, 6.0)   # contact
    curve8 = K.ppv_curve(scores, distances, 8.0, max_rank=4)
    np.testing.assert_allclose(curve8, [1, 1 / 2, 2 / 3, 3 / 4])
    curve7 = K.ppv_curve(scores, distances, 7.0, max_rank=4)
    np.testing.assert_allclose(curve7, [1, 1 / 2, 1 / 3, 2 / 4])
    ranks = K.ppv_at_ranks(curve8, L)  # L/5 -> 1, L/2 -> 4, L -> 9 (beyond), 2L -> 18
    assert ranks == {"L/5": 1.0, "L/2": 0.75, "L": None, "2L": None}


# -- structures --------------------------------------------------------------------------------


def test_distance_table_reader(tmp_path: Path, shared_data: Path):
    table = tmp_path / "t.dat"
    table.write_text("# i j score distance\n1 6 0.9 3.5\n2.0e+00 7.0e+00 0.5 9.0\n")
    s = K.read_distance_table(table, 7)
    assert s.distances[0, 5] == s.distances[5, 0] == 3.5 and s.distances[1, 6] == 9.0
    assert np.isnan(s.distances[0, 1]) and s.other_scores[1, 6] == 0.5
    bad = tmp_path / "bad.dat"
    bad.write_text("1 6 0.9\n")
    with pytest.raises(InputError, match="bad.dat: line 1"):
        K.read_distance_table(bad, 7)
    real = K.read_distance_table(shared_data / "pfam" / "PF00014_struct.dat", 53)
    assert real.mapped_columns == 53 and np.isnan(real.distances).sum() == 53  # the diagonal


def _pdb_line(serial, name, resname, resseq, xyz, element, record="ATOM  "):
    x, y, z = xyz
    return (f"{record}{serial:5d} {name:<4s} {resname:3s} A{resseq:4d}    {x:8.3f}{y:8.3f}"
            f"{z:8.3f}  1.00  0.00          {element:>2s}\n")


def _tiny_pdb(path: Path) -> None:
    """Residues ACDEFGHI on a line 10 A apart; residue 1 reaches residue 7 with its CB; an H
    atom of residue 3 sits on residue 6 (hydrogens do not count)."""
    names = ["ALA", "CYS", "ASP", "GLU", "PHE", "GLY", "HIS", "ILE"]
    lines, serial = [], 1
    for k, resname in enumerate(names):
        lines.append(_pdb_line(serial, " CA", resname, k + 1, (10.0 * k, 0, 0), "C"))
        serial += 1
    lines.append(_pdb_line(serial, " CB", "ALA", 1, (58.0, 0, 3.0), "C"))
    lines.append(_pdb_line(serial + 1, " HA", "ASP", 3, (50.0, 0, 0.5), "H"))
    path.write_text("".join(lines) + "END\n")


def test_pdb_chain_residues_and_distances(tmp_path: Path):
    pdb = tmp_path / "tiny.pdb"
    _tiny_pdb(pdb)
    sequence, coordinates = K.chain_residues(pdb, "A")
    assert sequence == "ACDEFGHI"
    d = K.residue_distances(coordinates)
    assert d[0, 6] == pytest.approx(np.sqrt(2 ** 2 + 3 ** 2))  # CB of 1 to CA of 7
    assert d[2, 5] == pytest.approx(30.0)  # the hydrogen is ignored
    with pytest.raises(InputError, match="no chain 'B'"):
        K.chain_residues(pdb, "B")


_THREE = {"A": "ALA", "C": "CYS", "D": "ASP", "E": "GLU", "F": "PHE", "G": "GLY", "H": "HIS",
          "I": "ILE", "K": "LYS", "L": "LEU", "M": "MET", "N": "ASN", "P": "PRO", "Q": "GLN",
          "R": "ARG", "S": "SER", "T": "THR", "V": "VAL", "W": "TRP", "Y": "TYR"}


def _chain_pdb(path: Path, sequence: str, selenomethionine: int | None = None) -> np.ndarray:
    """One CA per residue of `sequence` on a seeded random walk (3.8 A steps); residue
    `selenomethionine` (0-based, an M) written as a HETATM MSE with its SE atom. Returns the CA
    coordinates (n, 3)."""
    steps = np.random.default_rng(7).normal(size=(len(sequence), 3))
    xyz = np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=1, keepdims=True), axis=0)
    lines = []
    for k, letter in enumerate(sequence):
        if k == selenomethionine:
            assert letter == "M"
            lines.append(_pdb_line(2 * k + 1, " CA", "MSE", k + 1, xyz[k], "C", "HETATM"))
            lines.append(_pdb_line(2 * k + 2, "SE", "MSE", k + 1, xyz[k] + 0.5, "SE", "HETATM"))
        else:
            lines.append(_pdb_line(2 * k + 1, " CA", _THREE[letter], k + 1, xyz[k], "C"))
    path.write_text("".join(lines) + "END\n")
    return xyz


@pytest.fixture(scope="module")
def ww():
    from rbmflow.data.alignment import load_alignment
    from rbmflow.data.fetch import locate_example

    enc = load_alignment(*locate_example("example:ww"))
    split = (np.random.default_rng(0).random(enc.codes.shape[0]) < 0.2).astype(np.uint8)
    return EncodedAlignment(enc.codes, np.ones(enc.codes.shape[0], np.float32), split,
                            enc.names, np.arange(enc.codes.shape[1]), ALPHABET, {})


def test_pdb_chain_maps_to_the_columns_with_the_profile_hmm(ww, tmp_path: Path):
    """A full-length family member with two flanking residues on each side, its residue 8 a
    selenomethionine: every member residue lands in its own column (MSE kept as M), the
    flanks in none, and the distances are those of the chain."""
    member = next(r for r in ww.codes[ww.split == 1] if (r > 0).all())
    letters = [ALPHABET[c] for c in member]
    letters[8] = "M"
    sequence = "GS" + "".join(letters) + "KL"
    pdb = tmp_path / "member.pdb"
    xyz = _chain_pdb(pdb, sequence, selenomethionine=10)
    assert K.chain_residues(pdb, "A")[0] == sequence
    s = K.read_structure(pdb, ww.length, chain="A", data=ww)
    assert s.mapped_columns == ww.length
    atoms = [xyz[k][None] if k != 10 else np.stack([xyz[k], xyz[k] + 0.5])
             for k in range(2, len(sequence) - 2)]  # the SE atom is a heavy atom too
    expected = np.array([[np.linalg.norm(a[:, None] - b[None], axis=-1).min() for b in atoms]
                         for a in atoms])
    np.fill_diagonal(expected, np.nan)
    np.testing.assert_allclose(s.distances, expected, atol=5e-3)  # PDB keeps 3 decimals
    assert "identical to the consensus" in s.source


def test_pdb_chain_of_another_family_is_refused(ww, tmp_path: Path, shared_data: Path):
    from rbmflow.data.alignment import load_alignment

    luxc = load_alignment(shared_data / "fixtures/pyhmmer_LuxC.sto")
    foreign = "".join(ALPHABET[c] for c in luxc.codes[0] if c > 0)[:60]
    pdb = tmp_path / "foreign.pdb"
    _chain_pdb(pdb, foreign)
    with pytest.raises(InputError, match="foreign.pdb chain A: not of the family"):
        K.read_structure(pdb, ww.length, chain="A", data=ww)
    with pytest.raises(InputError, match="give the alignment"):
        K.read_structure(pdb, ww.length, chain="A")


@pytest.mark.usefixtures("one_thread")
def test_stage_and_report_map_a_structure_the_same_way(ww, tmp_path: Path):
    """The PPVs of ppv.json (the stage) equal those the report computes from contacts.csv: one
    mapping, from the training split, for both."""
    from rbmflow.data import synthetic
    from rbmflow.data.dataset import load_encoded

    model = synthetic.random_structured_rbm(ww.length, len(ALPHABET), 3,
                                            generator=torch.Generator().manual_seed(3))
    archive.save_checkpoint(
        tmp_path / "model.h5", model, torch.zeros(2, ww.length, dtype=torch.long), update=1,
        time_s=0.0, rng_state=None, hyperparameters={
            "batch_size": 1, "gibbs_steps": 1, "learning_rate": 0.1, "L1": 0.0, "L2": 0.0,
            "seed": 0, "num_hiddens": 3, "num_chains": 2}, metadata={"alphabet": ALPHABET})
    save_encoded(tmp_path / "ww.npz", ww)
    member = next(r for r in ww.codes[ww.split == 0] if (r > 0).all())
    _chain_pdb(tmp_path / "s.pdb", "".join(ALPHABET[c] for c in member))
    assert main(["contacts", str(tmp_path / "model.h5"), "--alignment", str(tmp_path / "ww.npz"),
                 "--out", str(tmp_path / "contacts.csv"), "--structure",
                 str(tmp_path / "s.pdb"), "--chain", "A", "--ppv-json",
                 str(tmp_path / "ppv.json"), "--threads", "1"]) == 0
    stage = json.loads((tmp_path / "ppv.json").read_text())
    scores = K.read_contacts_csv(tmp_path / "contacts.csv", ww.length)
    structure = K.read_structure(tmp_path / "s.pdb", ww.length, "A",
                                 load_encoded(tmp_path / "ww.npz"))
    report = K.ppv_summary(np.nan_to_num(scores, nan=-np.inf), structure)
    assert report == stage and stage["mapped_columns"] == ww.length


def test_consensus_sequence_skips_gaps():
    codes = np.array([[0, 1, 2], [0, 1, 3], [5, 4, 3]])
    weights = np.array([1.0, 1.0, 0.5])
    # column 0: only F is not a gap; column 2: D weighs 1.5 against C 1
    assert K.consensus_sequence(codes, weights, ALPHABET) == "FAD"


# -- exports -----------------------------------------------------------------------------------


def test_adabmdca_export_round_trip_and_layout(tmp_path: Path):
    rng = np.random.default_rng(0)
    L, q = 4, 3
    J = rng.normal(size=(L, L, q, q))
    J = J + J.transpose(1, 0, 3, 2)
    J[np.arange(L), np.arange(L)] = 0
    h = rng.normal(size=(L, q))
    path = tmp_path / "params.dat"
    K.write_adabmdca(path, J, h, "-AC")
    lines = path.read_text().splitlines()
    assert len(lines) == 6 * q * q + L * q
    assert lines[0].split()[:5] == ["J", "0", "1", "-", "-"]
    assert lines[1].split()[:5] == ["J", "0", "1", "-", "A"]
    assert lines[-1].split()[:3] == ["h", "3", "C"]
    J2, h2 = K.read_adabmdca(path, "-AC")
    np.testing.assert_array_equal(J2, J)
    np.testing.assert_array_equal(h2, h)


# -- the CLI and the rule -----------------------------------------------------------------------


@pytest.fixture
def tiny_model(tmp_path: Path) -> dict[str, Path]:
    """A model with two planted pairwise hidden units (columns 2-9 and 4-11) over L = 13."""
    L, q, nh = 13, len(ALPHABET), 5
    g = torch.Generator().manual_seed(0)
    W = 0.05 * torch.randn(L, q, nh, generator=g)
    for unit, (i, j) in enumerate(((1, 8), (3, 10))):
        W[i, :, unit] = 2.0 * torch.randn(q, generator=g)
        W[j, :, unit] = 2.0 * torch.randn(q, generator=g)
    model = PottsRBM(W, 0.3 * torch.randn(L, q, generator=g), torch.zeros(nh))
    codes = torch.randint(0, q, (31, L), generator=g)
    archive.save_checkpoint(
        tmp_path / "model.h5", model, codes[:7], update=5, time_s=1.0, rng_state=None,
        hyperparameters={"batch_size": 7, "gibbs_steps": 3, "learning_rate": 0.01, "L1": 0.0,
                         "L2": 0.0, "seed": 0, "num_hiddens": nh, "num_chains": 7},
        metadata={"alphabet": ALPHABET, "family": "tiny", "method": "pcd"})
    save_encoded(tmp_path / "alignment.npz", EncodedAlignment(
        codes.numpy().astype(np.uint8), np.ones(31, np.float32), np.zeros(31, np.uint8),
        np.array([f"s{k}" for k in range(31)]), np.arange(L), ALPHABET, {}))
    table = tmp_path / "struct.dat"
    pairs = [(i, j) for i in range(1, L + 1) for j in range(i + 1, L + 1)]
    table.write_text("".join(f"{i} {j} 0.0 {3.0 if (i, j) in ((2, 9), (4, 11)) else 15.0}\n"
                             for i, j in pairs))
    return {"model": tmp_path / "model.h5", "alignment": tmp_path / "alignment.npz",
            "structure": table, "dir": tmp_path, "torch_model": model}  # type: ignore[dict-item]


@pytest.mark.usefixtures("one_thread")
def test_cli_contacts_end_to_end(tiny_model: dict):
    d = tiny_model["dir"]
    code = main(["contacts", str(tiny_model["model"]), "--alignment",
                 str(tiny_model["alignment"]), "--out", str(d / "contacts.csv"),
                 "--structure", str(tiny_model["structure"]), "--ppv-json", str(d / "ppv.json"),
                 "--export-dca", str(d / "params.dat"), "--export-npz", str(d / "c.npz"),
                 "--threads", "1"])
    assert code == 0
    rows = (d / "contacts.csv").read_text().splitlines()
    assert rows[0] == "i,j,score" and len(rows) == 1 + 13 * 12 // 2
    top = [tuple(map(int, r.split(",")[:2])) for r in rows[1:3]]
    assert sorted(top) == [(2, 9), (4, 11)]
    scores = [float(r.split(",")[2]) for r in rows[1:]]
    assert scores == sorted(scores, reverse=True)
    assert all(int(r.split(",")[0]) < int(r.split(",")[1]) for r in rows[1:])
    ppv = json.loads((d / "ppv.json").read_text())
    assert ppv["ppv_8A"]["L/5"] == 1.0  # the two planted pairs are the only contacts
    J, h = K.read_adabmdca(d / "params.dat", ALPHABET)
    npz = np.load(d / "c.npz")
    np.testing.assert_allclose(J, npz["couplings"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, npz["fields"], rtol=1e-5, atol=1e-6)
    # the csv's scores are those of the couplings computed directly
    data_codes = torch.from_numpy(np.load(tiny_model["alignment"])["codes"].astype(np.int64))
    direct = contact_scores(effective_couplings(tiny_model["torch_model"].to(
        dtype=torch.float64), data_codes, method="gaussian"))
    first = rows[1].split(",")
    assert float(first[2]) == pytest.approx(direct[int(first[0]) - 1, int(first[1]) - 1],
                                            rel=1e-6)


def test_cli_contacts_refuses_a_mismatched_alignment(tiny_model: dict, tmp_path: Path, capsys):
    other = tmp_path / "other.npz"
    save_encoded(other, EncodedAlignment(np.zeros((3, 5), np.uint8), np.ones(3, np.float32),
                                         np.zeros(3, np.uint8), np.array(["a", "b", "c"]),
                                         np.arange(5), ALPHABET, {}))
    code = main(["contacts", str(tiny_model["model"]), "--alignment", str(other),
                 "--out", str(tmp_path / "c.csv")])
    assert code == 1 and "other.npz" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_report_shows_contacts_and_hidden_units(tiny_model: dict):
    from rbmflow.report import ReportInputs, run_stage

    d = tiny_model["dir"]
    assert main(["contacts", str(tiny_model["model"]), "--alignment",
                 str(tiny_model["alignment"]), "--out", str(d / "contacts.csv")]) == 0
    codes = np.load(tiny_model["alignment"])["codes"]
    (d / "samples.fasta").write_text("".join(
        f">g{k}\n{''.join(ALPHABET[a] for a in row)}\n" for k, row in enumerate(codes[::-1])))
    outdir = d / "report"
    metrics = run_stage(ReportInputs(tiny_model["alignment"], d / "samples.fasta",
                                       model=tiny_model["model"], contacts=d / "contacts.csv",
                                       structure=tiny_model["structure"]),
                          outdir, device="cpu", family="tiny", run="r")
    assert metrics["contacts"]["ppv_8A"]["L/5"] == 1.0
    assert metrics["contacts"]["ppv_table_score_8A"]["L/5"] is not None
    for name in ("contacts_ppv", "contact_map", "hidden_units", "hidden_inputs"):
        assert (outdir / f"{name}.png").is_file(), name
    units = metrics["hidden_units"]
    assert [u["unit"] for u in units[:2]] in ([1, 2], [2, 1])  # the planted strong units
    assert "positions" in units[0]["description"]
    page = (outdir / "report.html").read_text()
    assert "PPV@L/5" in page and "Hidden unit" in page


def test_unit_description_names_positions_residues_and_gaps():
    from rbmflow.model.hidden_units import summarize_unit, top_units

    L, q = 7, 4
    W = torch.zeros(L, q, 3)
    W[2, 1, 1], W[5, 0, 1] = 3.0, -2.0  # unit 2: residue A at 3 activates, a gap at 6 represses
    W[0, 2, 0] = 0.5
    model = PottsRBM(W, torch.zeros(L, q), torch.zeros(3))
    assert list(top_units(model, 2)) == [1, 0]
    text = summarize_unit(model, 1, "-ACD", top=1).describe()
    assert text.startswith("Hidden unit 2 ")
    assert "activated by A3" in text and "repressed by a gap at 6" in text


def test_contacts_gpu_benchmark_runs_on_the_cpu(tmp_path, monkeypatch):
    """benchmarks/contacts_gpu.py end to end at toy size: probe, sized runs, PPV table."""
    import runpy
    import sys

    rng = np.random.default_rng(11)
    m, length = 97, 17
    data = EncodedAlignment(codes=rng.integers(1, 21, (m, length)).astype(np.uint8),
                            weights=np.ones(m, np.float32), split=np.zeros(m, np.uint8),
                            names=np.array([f"s{k}" for k in range(m)]),
                            columns=np.arange(length), alphabet=ALPHABET)
    save_encoded(tmp_path / "a.npz", data)
    table = "\n".join(f"{i} {j} {rng.random():.3f} {rng.uniform(3, 15):.2f}"
                      for i in range(1, length + 1) for j in range(i + 1, length + 1))
    (tmp_path / "struct.dat").write_text(table + "\n")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "contacts_gpu.py"
    monkeypatch.setattr(sys, "argv", [
        str(script), str(tmp_path / "a.npz"), str(tmp_path / "struct.dat"),
        "--out", str(tmp_path / "out"), "--budget", "30", "--reserve", "5", "--probe", "4",
        "--max-updates", "9", "--configs", "3x11x13,5x7x17", "--device", "cpu"])
    runpy.run_path(str(script), run_name="__main__")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(summary) == {"h3c11b13", "h5c7b17"}
    for run in summary.values():
        assert 4 <= run["updates"] <= 9
        for method in ("tubiana", "gaussian"):
            ppv = run[method]["ppv_8A"]
            assert set(ppv) == {"L/5", "L/2", "L", "2L"}
            assert all(v is not None and 0 <= v <= 1 for v in ppv.values())
