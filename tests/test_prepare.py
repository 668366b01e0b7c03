"""The prepare stage: filters, split and weights invariants, artifacts, bad inputs, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rbmflow import ALPHABET
from rbmflow.cli import main
from rbmflow.data.dataset import TEST, TRAIN, load_encoded
from rbmflow.data.prepare import PrepareSettings, random_split, run_stage
from rbmflow.data.weights import sequence_weights
from rbmflow.errors import InputError
from rbmflow.provenance import sha256_file

LENGTH = 23


def synthetic_fasta(path: Path, num_sequences: int = 97, seed: int = 5) -> list[str]:
    """Clustered sequences (so weights differ from 1), some very gappy, with inserts."""
    rng = np.random.default_rng(seed)
    letters = np.array(list(ALPHABET[1:]))
    ancestors = rng.choice(letters, size=(7, LENGTH))
    rows = []
    for index in range(num_sequences):
        row = ancestors[rng.integers(0, len(ancestors))].copy()
        mutate = rng.random(LENGTH) < 0.12
        row[mutate] = rng.choice(letters, size=int(mutate.sum()))
        if index % 10 == 3:
            row[rng.choice(LENGTH, size=9, replace=False)] = "-"  # gap fraction 9/23 > 0.2
        rows.append("".join(row))
    with open(path, "w") as handle:
        handle.write("# synthetic test alignment\n")
        for index, row in enumerate(rows):
            handle.write(f">seq{index}\n{row[:4]}..{row[4:11]}a.{row[11:]}\n")
    return rows


def outputs(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "data" / "alignment.npz", tmp_path / "data" / "summary.json"


def test_artifacts_and_invariants(tmp_path: Path) -> None:
    source = tmp_path / "aln.fasta"
    rows = synthetic_fasta(source)
    out, summary_path = outputs(tmp_path)
    settings = PrepareSettings(identity=0.8, max_gap_fraction=0.2, test_fraction=0.3, seed=4)
    summary = run_stage(source, out, summary_path, settings)
    data = load_encoded(out)
    assert json.loads(summary_path.read_text()) == json.loads(json.dumps(summary))

    gappy = [index for index, row in enumerate(rows) if row.count("-") / LENGTH > 0.2]
    kept = [index for index in range(len(rows)) if index not in gappy]
    assert summary["removed_sequences"] == {"total": len(gappy), "ambiguous_letters": 0,
                                            "too_many_gaps": len(gappy)}
    assert summary["removed_columns"] == {"insert": 4}
    assert data.names.tolist() == [f"seq{index}" for index in kept]
    assert data.codes.tolist() == [[ALPHABET.index(c) for c in rows[i]] for i in kept]
    assert data.columns.tolist() == [*range(4), *range(6, 13), *range(15, 27)]
    assert data.alphabet == ALPHABET and summary["alphabet"] == ALPHABET
    assert (summary["M"], summary["L"]) == (len(kept), LENGTH) == data.codes.shape

    # Split: round(0.3 M) test sequences, the rest train, as random_split draws them.
    num_test = int(np.floor(0.3 * len(kept) + 0.5))
    assert (data.split == TEST).sum() == num_test == summary["M_test"]
    assert (data.split == TRAIN).sum() == len(kept) - num_test == summary["M_train"]
    np.testing.assert_array_equal(data.split, random_split(len(kept), 0.3, 4))

    # Weights: computed on each part alone, 1/integer, in (0, 1].
    for part, name in ((TRAIN, "train"), (TEST, "test")):
        members = data.split == part
        expected = sequence_weights(data.codes[members], 0.8)
        np.testing.assert_allclose(data.weights[members], expected, rtol=1e-7)
        assert summary[f"M_eff_{name}"] == pytest.approx(expected.sum())
    assert np.all((data.weights > 0) & (data.weights <= 1))
    assert np.allclose(1.0 / data.weights, np.round(1.0 / data.weights))
    assert data.weights.min() < 1.0  # clustered data: some sequences share their weight
    assert summary["M_eff"] == pytest.approx(summary["M_eff_train"] + summary["M_eff_test"])

    prov = summary["provenance"]
    assert prov["format_version"] == 1 and prov["stage"] == "prepare" and prov["seed"] == 4
    assert prov["inputs"]["alignment"]["sha256"] == sha256_file(source)
    assert summary["input"]["sha256"] == sha256_file(source)
    assert data.provenance["inputs"] == prov["inputs"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["alignment.npz", "summary.json"]


def test_split_is_seeded_and_balanced() -> None:
    first = random_split(1009, 0.2, seed=0)
    assert np.array_equal(first, random_split(1009, 0.2, seed=0))
    assert not np.array_equal(first, random_split(1009, 0.2, seed=1))
    assert (first == TEST).sum() == 202
    assert (random_split(13, 0.0, seed=0) == TRAIN).all()
    tiny = random_split(2, 0.01, seed=0)
    assert sorted(tiny.tolist()) == [TRAIN, TEST]  # both parts non-empty
    with pytest.raises(ValueError, match="cannot split"):
        random_split(1, 0.2, seed=0)


def test_no_split_weights_over_all(tmp_path: Path) -> None:
    source = tmp_path / "aln.fasta"
    synthetic_fasta(source)
    out, summary_path = outputs(tmp_path)
    summary = run_stage(source, out, summary_path, PrepareSettings(test_fraction=0.0,
                                                                 max_gap_fraction=1.0))
    data = load_encoded(out)
    assert summary["removed_sequences"]["total"] == 0
    assert summary["M_test"] == 0 and summary["weights"]["computed"] == "over all sequences"
    np.testing.assert_allclose(data.weights, sequence_weights(data.codes, 0.8), rtol=1e-7)


def test_source_json_from_fetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    msa = Path("resources/msa/fam")
    msa.mkdir(parents=True)
    synthetic_fasta(msa / "alignment.fa")
    record = {"alignment_path": str(msa / "alignment.fa"), "format": "fasta",
              "sha256": sha256_file(msa / "alignment.fa")}
    (msa / "source.json").write_text(json.dumps(record))
    out, summary_path = outputs(Path("results/fam"))
    summary = run_stage(msa / "source.json", out, summary_path, PrepareSettings())
    assert summary["input"]["format"] == "fasta"
    assert summary["provenance"]["inputs"]["source"]["sha256"] == sha256_file(
        msa / "source.json")

    (msa / "alignment.fa").write_text((msa / "alignment.fa").read_text() + ">x\n" + "A" * 23)
    out.unlink()
    summary_path.unlink()
    with pytest.raises(InputError, match=r"source.json: .*changed since it was fetched"):
        run_stage(msa / "source.json", out, summary_path, PrepareSettings())
    assert not out.exists() and not summary_path.exists()


def test_ambiguous_drop_rule(tmp_path: Path) -> None:
    source = tmp_path / "aln.fasta"
    source.write_text(">a\nACDEFGHIKL\n>b\nACDXFGHIKL\n>c\nACDEFGHIKB\n>d\nACDEFGHIKM\n")
    out, summary_path = outputs(tmp_path)
    kept = run_stage(source, out, summary_path, PrepareSettings(test_fraction=0.0))
    assert kept["M"] == 4 and kept["ambiguous_letters"]["residues"] == 2
    assert load_encoded(out).codes[1, 3] == 0  # X read as a gap
    dropped = run_stage(source, out, summary_path,
                      PrepareSettings(test_fraction=0.0, ambiguous="drop"))
    assert dropped["M"] == 2 and dropped["removed_sequences"]["ambiguous_letters"] == 2
    assert load_encoded(out).names.tolist() == ["a", "d"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"empty file"),
        ("<html><body>Service unavailable</body></html>\n", r"HTML"),
        (">a\nACDE\n>b\nACD\n", r"ragged.*'b'"),
        (">a\nAC-----\n>b\nA------\n", r"all 2 sequences were filtered away"),
        (">a\nAC#E\n", r"unknown letter '#'"),
    ],
)
def test_bad_input_leaves_nothing(tmp_path: Path, content: str, message: str) -> None:
    source = tmp_path / "aln.fasta"
    source.write_text(content)
    out, summary_path = outputs(tmp_path)
    with pytest.raises(InputError, match=message):
        run_stage(source, out, summary_path, PrepareSettings())
    assert not out.exists() and not summary_path.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "aln.fasta"
    synthetic_fasta(source)
    out, summary_path = outputs(tmp_path)
    argv = ["prepare", str(source), "--out", str(out), "--summary", str(summary_path),
            "--identity", "0.7", "--max-gap-fraction", "0.5", "--test-fraction", "0.25",
            "--seed", "3", "--device", "cpu", "--threads", "1"]
    assert main(argv) == 0
    summary = json.loads(summary_path.read_text())
    assert summary["provenance"]["settings"]["identity"] == 0.7
    assert summary["weights"]["identity_threshold"] == 0.7 and summary["split"]["seed"] == 3
    assert "M_eff" in capsys.readouterr().out

    source.write_bytes(b"\x00\x01\x02garbage")
    out.unlink()
    summary_path.unlink()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("rbmflow prepare: error: ") and "aln.fasta: binary data" in err
    assert "Traceback" not in err and not out.exists()


def test_cluster_split_keeps_clusters_whole_and_both_splits_record_the_leak(
        tmp_path: Path) -> None:
    """With split=cluster no test sequence has a train neighbour at identity >= 0.8; the
    random split of the same clustered data has many. summary.json records, for both, the
    distribution of the test sequences' maximum identity to train."""
    source = tmp_path / "aln.fasta"
    synthetic_fasta(source, num_sequences=211, seed=9)
    results = {}
    for split in ("random", "cluster"):
        out, summary_path = tmp_path / split / "alignment.npz", tmp_path / split / "summary.json"
        settings = PrepareSettings(test_fraction=0.25, seed=3, split=split)
        summary = run_stage(source, out, summary_path, settings)
        data = load_encoded(out)
        test, train = data.codes[data.split == TEST], data.codes[data.split == TRAIN]
        identity = np.array([[np.mean(a == b) for b in train] for a in test]).max(axis=1)
        recorded = summary["split"]["test_max_identity_to_train"]
        assert summary["split"]["method"] == split
        assert data.provenance["summary"]["split"]["method"] == split
        assert recorded["n"] == len(test)
        assert recorded["mean"] == pytest.approx(identity.mean())
        assert recorded["quantiles"]["1"] == pytest.approx(identity.max())
        assert recorded["fraction_at_or_above_threshold"] == pytest.approx(
            np.mean(identity >= 0.8))
        assert sum(recorded["histogram"]["counts"]) == len(test)
        results[split] = (summary, identity)
    cluster, cluster_identity = results["cluster"]
    random, random_identity = results["random"]
    assert cluster_identity.max() < 0.8 and random_identity.max() >= 0.8
    assert np.mean(random_identity >= 0.8) > 0.5
    target = int(np.floor(0.25 * cluster["M"] + 0.5))
    assert 0 < cluster["M_test"] <= target and cluster["split"]["clusters"] > 1


def test_cluster_split_aims_at_the_fraction_and_refuses_one_cluster() -> None:
    from rbmflow.data.prepare import cluster_split

    components = np.repeat(np.arange(40), np.arange(1, 41))  # sizes 1..40, M = 820
    split = cluster_split(components, 0.2, seed=5)
    assert (split == TEST).sum() == 164  # small clusters fill the target exactly
    for label in range(40):
        assert len(set(split[components == label])) == 1
    assert np.array_equal(split, cluster_split(components, 0.2, seed=5))
    giant = np.r_[np.zeros(50, int), [50, 51]]
    assert (cluster_split(giant, 0.5, seed=0) == TEST).sum() == 2
    with pytest.raises(ValueError, match="one cluster"):
        cluster_split(np.zeros(9, int), 0.2, seed=0)
