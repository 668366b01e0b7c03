"""Scoring sequences and single mutants (`rbmflow score`, `rbmflow mutations`), and aligning
sequences to the model's columns with a profile HMM of the family.

Truths: brute force on an enumerable model (free energies and log Z as explicit sums of
exp(-E(v, h)) over every hidden and visible configuration, one-hot energies written out);
the training alignment itself (a sequence cut out of it must land in its own columns);
sequences of other families, which must be refused by name.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rbmflow import ALPHABET
from rbmflow.cli import main
from rbmflow.data import synthetic
from rbmflow.data.alignment import load_alignment
from rbmflow.data.dataset import EncodedAlignment, save_encoded
from rbmflow.data.fetch import locate_example
from rbmflow.errors import InputError
from rbmflow.evaluation.mutations import scan_single_mutants
from rbmflow.evaluation.profile_hmm import AMINO_ACIDS, FamilyProfile, map_sequences
from rbmflow.model import archive
from rbmflow.model import partition as P
from rbmflow.model.rbm import PottsRBM

pytestmark = pytest.mark.usefixtures("one_thread")

HYPER = {"batch_size": 1, "gibbs_steps": 1, "learning_rate": 0.1, "L1": 0.0, "L2": 0.0,
         "seed": 0, "num_hiddens": 0, "num_chains": 1}


def save_model(path: Path, model: PottsRBM) -> Path:
    hyper = dict(HYPER, num_hiddens=model.num_hiddens)
    archive.save_checkpoint(path, model, torch.zeros(1, model.num_visibles, dtype=torch.long),
                            1, 0.0, None, hyper, {"alphabet": ALPHABET})
    return path


def alignment_of(codes: np.ndarray, names: list[str] | np.ndarray, test_fraction: float = 0.2,
                 seed: int = 0) -> EncodedAlignment:
    m = codes.shape[0]
    split = (np.random.default_rng(seed).random(m) < test_fraction).astype(np.uint8)
    return EncodedAlignment(codes.astype(np.uint8), np.ones(m, np.float32), split,
                            np.asarray(names), np.arange(codes.shape[1]), ALPHABET)


def letters(codes: np.ndarray) -> str:
    return "".join(ALPHABET[c] for c in codes)


def one_hot_energies(model: PottsRBM, codes: torch.Tensor, hiddens: torch.Tensor) -> torch.Tensor:
    """E(v, h) for every pair, (n_v, n_h), written out with one-hot visibles (float64)."""
    v = torch.nn.functional.one_hot(codes, model.num_states).double()  # (n, L, q)
    w, vb, hb = (t.double() for t in model.tensors())
    fields = torch.einsum("nia,ia->n", v, vb)
    couplings = torch.einsum("nia,iam,km->nk", v, w, hiddens)
    return -fields[:, None] - couplings - (hiddens @ hb)[None, :]


def brute_log_weights(model: PottsRBM, codes: torch.Tensor) -> torch.Tensor:
    """log sum_h exp(-E(v, h)) = -F(v) by enumeration of h; (n,)."""
    hiddens = P.hidden_configurations(model.num_hiddens)
    return torch.logsumexp(-one_hot_energies(model, codes, hiddens), dim=1)


def brute_log_z(model: PottsRBM) -> float:
    """log sum_{v, h} exp(-E(v, h)) over all q^L visible and 2^Nh hidden configurations."""
    total = model.num_states**model.num_visibles
    parts = [brute_log_weights(model, P.visible_configurations(
        model.num_visibles, model.num_states, s, s + 20000)) for s in range(0, total, 20000)]
    return float(torch.logsumexp(torch.cat(parts), dim=0))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """An enumerable protein-alphabet model (L = 4, q = 21, Nh = 5) in an archive, exact log Z
    in a loglik.json, and an alignment of 37 sequences drawn from it."""
    root = tmp_path_factory.mktemp("tiny")
    g = torch.Generator().manual_seed(11)
    model = synthetic.random_structured_rbm(4, 21, 5, coupling=2.0, activation=0.3, generator=g)
    path = save_model(root / "model.h5", model)
    stored = archive.load_rbm(path, dtype=torch.float64)  # float32 on disk
    log_z = brute_log_z(stored)
    codes = P.sample_exact(stored, 37, g).numpy()
    data = alignment_of(codes, [f"n{i}" for i in range(37)], 0.3)
    save_encoded(root / "alignment.npz", data)
    assert main(["loglik", str(path), str(root / "alignment.npz"), "--method", "exact",
                 "--out", str(root / "loglik.json"), "--device", "cpu"]) == 0
    return {"root": root, "model": stored, "path": path, "log_z": log_z, "data": data}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_score_cli_equals_brute_force(tiny, tmp_path):
    rng = np.random.default_rng(3)
    queries = rng.integers(0, 21, (13, 4))
    queries[0] = tiny["data"].codes[0]  # a training or test sequence: nearest distance known
    fasta = tmp_path / "queries.fasta"
    fasta.write_text("".join(f">q{k} some description\n{letters(r)}\n"
                             for k, r in enumerate(queries)))
    out = tmp_path / "scores.csv"
    assert main(["score", str(tiny["path"]), str(fasta), "--out", str(out), "--data",
                 str(tiny["root"] / "alignment.npz"), "--loglik",
                 str(tiny["root"] / "loglik.json"), "--device", "cpu", "--input", "aligned"]) == 0
    rows = read_csv(out)
    assert [r["name"] for r in rows] == [f"q{k}" for k in range(13)]
    neg_f = brute_log_weights(tiny["model"], torch.from_numpy(queries)).numpy()
    got_f = np.array([float(r["free_energy"]) for r in rows])
    np.testing.assert_allclose(got_f, -neg_f, atol=1e-5)
    np.testing.assert_allclose([float(r["loglik"]) for r in rows], neg_f - tiny["log_z"],
                               atol=1e-5)
    train = tiny["data"].codes[tiny["data"].split == 0]
    nearest = (queries[:, None, :] != train[None]).sum(-1).min(1) / 4
    np.testing.assert_allclose([float(r["nearest_train_distance"]) for r in rows], nearest)
    assert all(r["aligned_input"] == "true" and r["coverage"] for r in rows)
    # the exact probabilities sum to one over all sequences
    everything = P.visible_configurations(4, 21)
    assert float(torch.logsumexp(brute_log_weights(tiny["model"], everything), 0)) == \
        pytest.approx(tiny["log_z"], abs=1e-9)
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["sequences"] == 13 and summary["provenance"]["stage"] == "score"


def test_score_refuses_log_z_of_another_model(tiny, tmp_path, capsys):
    other = save_model(tmp_path / "other.h5", synthetic.random_structured_rbm(
        4, 21, 5, generator=torch.Generator().manual_seed(1)))
    fasta = tmp_path / "q.fa"
    fasta.write_text(">a\nACDE\n")
    capsys.readouterr()
    assert main(["score", str(other), str(fasta), "--out", str(tmp_path / "s.csv"),
                 "--loglik", str(tiny["root"] / "loglik.json")]) == 1
    assert "computed for another model" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


def test_score_without_log_z_leaves_loglik_empty(tiny, tmp_path):
    fasta = tmp_path / "q.fa"
    fasta.write_text(">a\nAC-D\n>b\nWWWW\n")
    out = tmp_path / "s.csv"
    assert main(["score", str(tiny["path"]), str(fasta), "--out", str(out), "--input",
                 "aligned"]) == 0
    rows = read_csv(out)
    assert [r["loglik"] for r in rows] == ["", ""]
    assert [r["nearest_train_distance"] for r in rows] == ["", ""]
    assert rows[0]["matched_columns"] == "3" and rows[0]["sequence_in_columns"] == "AC-D"


def test_mutations_equal_brute_force(tiny, tmp_path):
    wildtype = "A-DE"  # aligned: residues A, D, E numbered 24, 25, 26 in columns 1, 3, 4
    out = tmp_path / "mutations.csv"
    assert main(["mutations", str(tiny["path"]), str(tiny["root"] / "alignment.npz"),
                 "--wildtype", wildtype, "--first", "24", "--out", str(out),
                 "--device", "cpu"]) == 0
    rows = read_csv(out)
    assert len(rows) == 3 * 19
    assert rows[0]["mutant"] == "A24C" and rows[0]["column"] == "1"
    assert {(r["position"], r["column"]) for r in rows} == {("24", "1"), ("25", "3"),
                                                            ("26", "4")}
    wt_codes = torch.tensor([[ALPHABET.index(c) for c in wildtype]])
    log_p_wt = float(brute_log_weights(tiny["model"], wt_codes)[0]) - tiny["log_z"]
    for row in rows:
        wt, mut = row["mutant"][0], row["mutant"][-1]
        assert wt != mut and wildtype.replace("-", "")[int(row["position"]) - 24] == wt
        codes = wt_codes.clone()
        codes[0, int(row["column"]) - 1] = ALPHABET.index(mut)
        log_p = float(brute_log_weights(tiny["model"], codes)[0]) - tiny["log_z"]
        assert float(row["delta_log_p"]) == pytest.approx(log_p - log_p_wt, abs=1e-5)
    assert out.with_suffix(".png").stat().st_size > 1000
    summary = json.loads(out.with_suffix(".json").read_text())
    assert (summary["covered_positions"], summary["positions"]) == (3, 3)
    assert summary["coverage_columns"] == pytest.approx(0.75)


def test_mutation_scan_gives_zero_for_the_wild_type_letter(tiny):
    [mapping] = map_sequences([("wt", "KLMN")], 4, ALPHABET, None, "test", "aligned")
    scan = scan_single_mutants(tiny["model"], mapping, ALPHABET, first=1)
    for p, letter in enumerate("KLMN"):
        assert scan.delta_log_p[p, AMINO_ACIDS.index(letter)] == 0.0
    assert scan.delta_log_p.shape == (4, 20) and len(scan.rows()) == 4 * 19


@pytest.fixture(scope="module")
def ww() -> EncodedAlignment:
    """The WW domain shipped by logomaker (4,025 x 31), split 80/20."""
    enc = load_alignment(*locate_example("example:ww"))
    return alignment_of(enc.codes, enc.names)


@pytest.fixture(scope="module")
def ww_profile(ww) -> FamilyProfile:
    return FamilyProfile(ww)


def _own_columns(profile: FamilyProfile, rows: np.ndarray) -> tuple[float, float, int]:
    """(fraction of residues mapped to their own column, fraction mapped to another, refused)
    for sequences cut out of an alignment (gaps removed)."""
    records = [(f"r{k}", letters(r[r > 0])) for k, r in enumerate(rows)]
    hits = profile.search(records)
    own = other = total = refused = 0
    for k, (name, residues) in enumerate(records):
        mapping = profile.align(name, residues, hits.get(k))
        truth = np.flatnonzero(rows[k] > 0)
        total += truth.size
        own += int((mapping.residue_columns == truth).sum())
        other += int(((mapping.residue_columns >= 0) & (mapping.residue_columns != truth)).sum())
        refused += not profile.belongs(mapping)
    return own / total, other / total, refused


@pytest.mark.parametrize("part", [0, 1])
def test_sequences_cut_out_of_the_alignment_map_back_to_their_columns(ww, ww_profile, part):
    rows = ww.codes[ww.split == part][:97].astype(np.int64)
    own, other, refused = _own_columns(ww_profile, rows)
    assert refused == 0
    assert own >= 0.98 and other <= 0.005, (own, other)


def test_full_length_member_maps_exactly(ww, ww_profile):
    full = next(r for r in ww.codes[ww.split == 0].astype(np.int64) if (r > 0).all())
    [mapping] = map_sequences([("member", letters(full).lower())], ww.length, ALPHABET, ww,
                              "test", "unaligned")
    assert np.array_equal(mapping.residue_columns, np.arange(ww.length))
    assert np.array_equal(mapping.codes, full) and mapping.coverage == 1.0
    assert mapping.evalue < 1e-6 and not mapping.aligned_input


def test_flanking_residues_are_reported_unmatched(ww, ww_profile):
    full = next(r for r in ww.codes[ww.split == 0].astype(np.int64) if (r > 0).all())
    text = "GSHMGS" + letters(full) + "KLEHHHHHH"
    [mapping] = map_sequences([("tagged", text)], ww.length, ALPHABET, ww, "test")
    assert mapping.coverage >= 0.95
    unmatched = set(mapping.unmatched_residues.tolist())
    assert set(range(4)) <= unmatched and set(range(len(text) - 6, len(text))) <= unmatched
    assert np.array_equal(mapping.column_residues[mapping.column_residues >= 0] - 6,
                          np.flatnonzero(mapping.column_residues >= 0))


def test_other_families_are_refused_by_name(ww, shared_data):
    luxc = load_alignment(shared_data / "fixtures/pyhmmer_LuxC.sto")
    kunitz = load_alignment(shared_data / "pfam/PF00014_mgap6.fasta.gz")
    rng = np.random.default_rng(5)
    records = [("WW_member", letters(ww.codes[3][ww.codes[3] > 0])),
               ("LuxC_seq", letters(luxc.codes[0][luxc.codes[0] > 0])),
               ("kunitz_seq", letters(kunitz.codes[0][kunitz.codes[0] > 0])),
               ("random_seq", "".join(rng.choice(list(AMINO_ACIDS), 40)))]
    with pytest.raises(InputError) as err:
        map_sequences(records, ww.length, ALPHABET, ww, "queries.fasta")
    message = str(err.value)
    assert "queries.fasta" in message
    for name in ("LuxC_seq", "kunitz_seq", "random_seq"):
        assert name in message
    assert "WW_member" not in message


def test_unaligned_input_needs_the_alignment_and_amino_acids(ww):
    with pytest.raises(InputError, match="'x1'.*alignment.npz"):
        map_sequences([("x1", "MKVLW")], ww.length, ALPHABET, None, "q.fa")
    with pytest.raises(InputError, match="'x2'.*'1'"):
        map_sequences([("x2", "MKV1LW")], ww.length, ALPHABET, ww, "q.fa")
    with pytest.raises(InputError, match="'x3' is not aligned"):
        map_sequences([("x3", "MKVLW")], ww.length, ALPHABET, ww, "q.fa", mode="aligned")


def test_cli_mutations_on_unaligned_wild_type(ww, tmp_path, capsys):
    g = torch.Generator().manual_seed(2)
    model = synthetic.random_structured_rbm(ww.length, 21, 3, generator=g)
    path = save_model(tmp_path / "model.h5", model)
    save_encoded(tmp_path / "ww.npz", ww)
    full = next(r for r in ww.codes[ww.split == 1].astype(np.int64) if (r > 0).all())
    wildtype = "MS" + letters(full) + "GSGS" * 70  # longer than a file name may be
    out = tmp_path / "mut.csv"
    assert main(["mutations", str(path), str(tmp_path / "ww.npz"), "--wildtype", wildtype,
                 "--first", "10", "--out", str(out), "--heatmap", str(tmp_path / "h.png")]) == 0
    rows = read_csv(out)
    assert len(rows) == 19 * ww.length
    assert {r["mutant"][:-1] for r in rows} == {f"{c}{k + 12}" for k, c in
                                                 enumerate(letters(full))}
    assert rows[0]["mutant"].startswith(f"{wildtype[2]}12") and rows[0]["column"] == "1"
    stored = archive.load_rbm(path, dtype=torch.float64)
    f_wt = float(stored.free_energy(torch.from_numpy(full)[None])[0])
    for row in rows[::37]:
        codes = torch.from_numpy(full).clone()
        codes[int(row["column"]) - 1] = ALPHABET.index(row["mutant"][-1])
        expected = f_wt - float(stored.free_energy(codes[None])[0])
        assert float(row["delta_log_p"]) == pytest.approx(expected, abs=1e-6)
    assert (tmp_path / "h.png").is_file()
    summary = json.loads(out.with_suffix(".json").read_text())
    tail = list(range(12 + ww.length, 10 + len(wildtype)))
    assert summary["unmatched_positions"] == [10, 11, *tail]
    assert summary["coverage_columns"] == 1.0
    # a wild type of another family: one line naming it, exit 1
    fasta = tmp_path / "other.fasta"
    fasta.write_text(">not_a_ww_domain\n" + "PEPTIDEKLMNQRSTAVWYAACCDDEEFFGGHHIIKK\n")
    capsys.readouterr()
    assert main(["mutations", str(path), str(tmp_path / "ww.npz"), "--wildtype", str(fasta),
                 "--out", str(tmp_path / "other.csv")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not_a_ww_domain" in err[0]
    assert not (tmp_path / "other.csv").exists()


def test_a2m_wild_type_keeps_its_inserts_in_the_numbering(tiny, tmp_path):
    """In `ACdeFG` the lower-case d, e are inserts: F is residue 5 (in column 3), not F3."""
    out = tmp_path / "mutations.csv"
    assert main(["mutations", str(tiny["path"]), str(tiny["root"] / "alignment.npz"),
                 "--wildtype", "ACdeFG", "--first", "1", "--out", str(out)]) == 0
    rows = read_csv(out)
    assert {(r["mutant"][:-1], r["column"]) for r in rows} == {("A1", "1"), ("C2", "2"),
                                                               ("F5", "3"), ("G6", "4")}
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["unmatched_positions"] == [3, 4] and summary["positions"] == 6
    [dots] = map_sequences([("d", "AC..FG")], 4, ALPHABET, None, "test")
    assert dots.residues == "ACFG" and dots.residue_columns.tolist() == [0, 1, 2, 3]


def test_ambiguous_letters_cover_no_column(tiny):
    [mapping] = map_sequences([("x", "JX-A")], 4, ALPHABET, None, "test")
    assert mapping.aligned_input and mapping.codes.tolist() == [0, 0, 0, 1]
    assert mapping.matched_columns == 1 and mapping.coverage == pytest.approx(0.25)
    with pytest.raises(InputError, match="'j' holds no residue"):
        map_sequences([("j", "JJJJ")], 4, ALPHABET, None, "q.fa", "aligned")


def test_row_of_model_length_without_alignment_evidence_is_checked(ww, shared_data, tmp_path):
    """A sequence of exactly L letters, no gap and no insert, is aligned with the profile HMM:
    one of the family is accepted, one of another family and an all-ambiguous one refused."""
    luxc = load_alignment(shared_data / "fixtures/pyhmmer_LuxC.sto")
    foreign = letters(luxc.codes[0][luxc.codes[0] > 0])[:ww.length]
    member = next(r for r in ww.codes[ww.split == 1].astype(np.int64) if (r > 0).all())
    [mapping] = map_sequences([("member", letters(member))], ww.length, ALPHABET, ww, "q.fa")
    assert not mapping.aligned_input and mapping.coverage == 1.0
    for name, text in (("foreign", foreign), ("ambiguous", "J" * ww.length)):
        assert len(text) == ww.length
        with pytest.raises(InputError, match=f"not of the model's family: '{name}'"):
            map_sequences([(name, text)], ww.length, ALPHABET, ww, "q.fa")
    with pytest.raises(InputError, match="'member'.*--input aligned"):
        map_sequences([("member", letters(member))], ww.length, ALPHABET, None, "q.fa")
