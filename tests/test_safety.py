"""Nothing destroyed, bounded resources, one clear line.

An output that is an input is refused in every sub-command; a damaged checkpoint (a missing
array, flipped bytes, a declared shape its bytes cannot hold) is refused, never replaced by
an older one; names cost memory linear in their length; tempering, refresh and numbering
options are bounded; a slow server is abandoned; inputs are checked before anything is
written, and a killed report leaves no figures without their page.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
import rbmflow
import torch
from interpro_server import FakeInterPro, Reply
from rbmflow import ALPHABET
from rbmflow.data.dataset import EncodedAlignment, load_encoded, save_encoded
from rbmflow.data.fetch import RetryPolicy, run_stage
from rbmflow.errors import FetchError, InputError
from rbmflow.evaluation import stats
from rbmflow.model import archive
from test_bad_input import (
    L,
    M,
    _rows,
    good_data,
    run_cli,
    snapshot,
    write_fasta,
    write_model,
)
from test_fetch import ACCESSION, FULL_PATH, STOCKHOLM, leftovers

REPO = Path(__file__).resolve().parents[1]
PACKAGE_ROOT = Path(rbmflow.__file__).resolve().parents[1]  # what subprocesses import
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One valid input of every kind, in a folder of their own."""
    base = tmp_path_factory.mktemp("inputs")
    data = good_data()
    aligned = ["".join(ALPHABET[c] for c in row) for row in data.codes[:5]]
    paths = {
        "fasta": write_fasta(base / "family.fasta", _rows(M, 2)),
        "model": write_model(base / "model.h5"),
        "data": base / "alignment.npz",
        "sequences": write_fasta(base / "seqs.fasta", aligned),
        "wildtype": write_fasta(base / "wt.fasta", aligned[:1]),
    }
    save_encoded(paths["data"], data)
    return paths


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- 1. an output that is an input ------------------------------------------------------------

CHEAP = {"sample": ["--chains", 3, "--sweeps", 2, "--auto-extend", "false", "--method", "gibbs",
                    "--reference-chains", 0, "--data-chains", 0],
         "loglik": ["--method", "exact"], "score": ["--input", "aligned"],
         "mutations": ["--input", "aligned"]}


def _argv(stage: str, f: dict[str, Path], target: str, out_dir: Path) -> list:
    """`stage` with its output option pointing at the input `target` (a path)."""
    o = out_dir
    argv = {
        "sample": ["sample", f["model"], f["data"], "--out", target, "--info", o / "s.json"],
        "loglik": ["loglik", f["model"], f["data"], "--out", target],
        "contacts": ["contacts", f["model"], "--out", target, "--alignment", f["data"]],
        "train": ["train", f["data"], "--out", o / "m.h5", "--log", target, "--hidden", 2,
                  "--updates", 2, "--chains", 5, "--checkpoints", 1],
        "prepare": ["prepare", f["fasta"], "--out", target, "--summary", o / "summary.json"],
        "mutations": ["mutations", f["model"], f["data"], "--wildtype", f["wildtype"],
                      "--out", target],
        "score": ["score", f["model"], f["sequences"], "--out", target],
    }[stage]
    return [*argv, *CHEAP.get(stage, []), "--device", "cpu", "--threads", 1]


TARGETS = {"sample": "model", "loglik": "model", "contacts": "model", "train": "data",
           "prepare": "fasta", "mutations": "wildtype", "score": "sequences"}


SPELLINGS = ["same", "symlink", "hardlink", "dotted"]


def _spelled(original: Path, spelling: str) -> Path:
    """Another path to the file (or folder) `original`."""
    folder = original.parent
    if spelling == "same":
        return original
    if spelling == "dotted":
        return folder / "." / original.name
    target = folder.parent / f"{spelling}-{original.name}"
    if spelling == "symlink":
        target.symlink_to(original)
    else:
        os.link(original, target)
    return target


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("stage", TARGETS)
def test_an_output_that_is_an_input_is_refused(stage, spelling, files, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    original = work / files[TARGETS[stage]].name
    original.write_bytes(files[TARGETS[stage]].read_bytes())
    target = _spelled(original, spelling)
    before, digest = snapshot(work), _sha(original)
    outcome = run_cli(_argv(stage, {**files, TARGETS[stage]: original}, str(target), tmp_path),
                      capsys)
    assert outcome.code == 1, outcome.text
    assert len(outcome.error_lines) == 1 and "refusing to overwrite" in outcome.error_lines[0], \
        outcome.text
    assert _sha(original) == digest
    assert snapshot(work) == before


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_report_input_among_the_report_files_is_refused(spelling, files, tmp_path, capsys):
    """--loglik outdir/metrics.json, spelled several ways: the report would replace it."""
    work = tmp_path / "report"
    work.mkdir()
    original = work / "metrics.json"
    original.write_text('{"log_z": 1.0}\n')
    loglik = _spelled(original, spelling)
    before, digest = snapshot(tmp_path), _sha(original)
    outcome = run_cli(["report", "--data", files["data"], "--samples", files["sequences"],
                       "--loglik", loglik, "--outdir", work, "--nn-samples", 5,
                       "--nn-reference", 10, "--triplets", 5], capsys)
    assert outcome.code == 1, outcome.text
    assert len(outcome.error_lines) == 1 and "refusing to overwrite" in outcome.error_lines[0], \
        outcome.text
    assert _sha(original) == digest
    assert snapshot(tmp_path) == before


# -- 3, 10, 12. a damaged archive -------------------------------------------------------------


def _damaged(files: dict[str, Path], tmp_path: Path, edit) -> Path:
    path = tmp_path / "model.h5"
    path.write_bytes(files["model"].read_bytes())
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


STAGES_READING_A_MODEL = {
    "contacts": lambda m, f, o: ["contacts", m, "--out", o / "c.csv", "--alignment", f["data"]],
    "sample": lambda m, f, o: ["sample", m, f["data"], "--out", o / "s.fa", "--info",
                               o / "s.json", *CHEAP["sample"]],
    "loglik": lambda m, f, o: ["loglik", m, f["data"], "--out", o / "l.json", "--method",
                               "exact"],
    "score": lambda m, f, o: ["score", m, f["sequences"], "--out", o / "s.csv", "--input",
                              "aligned"],
    "report": lambda m, f, o: ["report", "--data", f["data"], "--samples", f["sequences"],
                               "--model", m, "--outdir", o / "report", "--nn-samples", 5,
                               "--nn-reference", 10, "--triplets", 5],
}


@pytest.mark.parametrize("stage", STAGES_READING_A_MODEL)
def test_an_incomplete_last_checkpoint_is_refused_not_replaced(stage, files, tmp_path, capsys):
    model = _damaged(files, tmp_path, lambda f: f.__delitem__("update_2/params/weight_matrix"))
    out = tmp_path / "out"
    out.mkdir()
    outcome = run_cli([*STAGES_READING_A_MODEL[stage](model, files, out), "--device", "cpu"],
                      capsys)
    assert outcome.code == 1, outcome.text
    assert len(outcome.error_lines) == 1, outcome.text
    assert "update_2 is incomplete" in outcome.error_lines[0]
    assert snapshot(out) == set()


def _flip_bytes(path: Path, name: str, count: int) -> None:
    """Flip `count` bytes of dataset `name`'s raw data in place (finite values stay finite
    when only the low mantissa byte of each float32 changes)."""
    with h5py.File(path, "r") as f:
        offset, size = f[name].id.get_offset(), f[name].id.get_storage_size()
    data = bytearray(path.read_bytes())
    for k in range(0, min(count * 4, size), 4):
        data[offset + k] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["update_2/params/weight_matrix", "update_2/params/vbias",
                                  "parallel_chains"])
def test_flipped_bytes_fail_the_checksum(name, files, tmp_path):
    path = tmp_path / "model.h5"
    path.write_bytes(files["model"].read_bytes())
    _flip_bytes(path, name, 7)
    with pytest.raises(InputError, match="checksum"):
        archive.load_chains(path) if name == "parallel_chains" else archive.load_rbm(path)


def test_an_archive_without_our_checksum_loads_as_written(files, tmp_path):
    def strip(f: h5py.File) -> None:
        for key in ("update_1", "update_2"):
            f[key].attrs.pop(archive.CHECKSUM_ATTR, None)
        f["parallel_chains"].attrs.pop(archive.CHECKSUM_ATTR, None)

    path = _damaged(files, tmp_path, strip)
    model = archive.load_rbm(path)
    with h5py.File(path, "r") as f:
        expected = f["update_2/params/weight_matrix"][()]
    assert np.array_equal(model.weight_matrix.numpy(), expected)
    assert archive.load_chains(path).shape == (13, L)


def test_the_checksum_covers_exactly_what_is_loaded(files):
    """The stored checksum is the one computed from the arrays read back (so a re-save by
    the same code verifies) and changes with any single value."""
    with h5py.File(files["model"], "r") as f:
        arrays = {n: f[f"update_1/params/{n}"][()] for n in ("weight_matrix", "vbias", "hbias")}
        stored = f["update_1"].attrs[archive.CHECKSUM_ATTR]
    assert archive.checksum(arrays) == stored
    arrays["hbias"] = arrays["hbias"].copy()
    arrays["hbias"][0] = np.nextafter(arrays["hbias"][0], np.float32(np.inf))
    assert archive.checksum(arrays) != stored


@pytest.mark.parametrize("hbias", [400_000, 5])
def test_declared_shapes_are_checked_before_reading(hbias, tmp_path):
    """A small file declaring a (30, 21, 400000) weight matrix (storage never written) is
    refused without reading its 1 GB."""
    path = tmp_path / "model.h5"
    with h5py.File(path, "w") as f:
        f["model_type"] = "PBRBM"
        params = f.create_group("update_1/params")
        params.create_dataset("weight_matrix", shape=(30, 21, 400_000), dtype=np.float32,
                              chunks=(1, 21, 4000))
        params["vbias"] = np.zeros((30, 21), np.float32)
        params["hbias"] = np.zeros(hbias, np.float32)
    assert path.stat().st_size < 4 << 20
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="weight_matrix|shapes"):
            archive.load_rbm(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20


def test_a_huge_name_costs_its_own_size_not_m_times_it(tmp_path):
    data = good_data()
    names = np.array([f"s{i}" for i in range(M)], dtype=object)
    names[3] = "N" * 1_000_000 + "é"
    data = EncodedAlignment(data.codes, data.weights, data.split, names, data.columns,
                            data.alphabet)
    path = tmp_path / "alignment.npz"
    tracemalloc.start()
    try:
        save_encoded(path, data)
        loaded = load_encoded(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 << 20, peak  # fixed width: M x 1e6 x 4 bytes = 212 MB
    assert list(loaded.names) == list(names)
    with np.load(path, allow_pickle=False) as bundle:
        assert "names" not in bundle.files  # no fixed-width copy of a huge name


def test_files_with_fixed_width_names_still_load(tmp_path):
    data = good_data()
    path = tmp_path / "old.npz"
    np.savez_compressed(path, codes=data.codes, weights=data.weights, split=data.split,
                        names=np.asarray(data.names, dtype=str), columns=data.columns,
                        alphabet=np.asarray(data.alphabet))
    assert list(load_encoded(path).names) == [f"s{i}" for i in range(M)]


def test_pair_statistics_beyond_the_bound_name_their_size():
    length = int(np.sqrt(stats.MAX_PAIR_ENTRIES)) // 21 + 1
    codes = torch.zeros((3, length), dtype=torch.long)
    with pytest.raises(InputError, match=rf"L = {length} .*\(L q\)\^2 = {(length * 21) ** 2}"):
        stats.connected_correlations(codes, 21)
    assert stats.pair_statistics_fit(length - 1, 21)


@pytest.mark.slow
def test_training_a_long_alignment_leaves_the_pair_pearson_out(tmp_path):
    rng = np.random.default_rng(7)
    num, length = 41, 3001
    data = EncodedAlignment(rng.integers(0, 21, (num, length)).astype(np.uint8),
                            np.ones(num, np.float32), (np.arange(num) % 5 == 0).astype(np.uint8),
                            np.array([f"s{i}" for i in range(num)]), np.arange(length), ALPHABET)
    save_encoded(tmp_path / "a.npz", data)
    code = subprocess.run(
        ["bash", "-c", "ulimit -v 4000000; exec \"$0\" -m rbmflow \"$@\"", sys.executable,
         "train", str(tmp_path / "a.npz"), "--out", str(tmp_path / "m.h5"), "--log",
         str(tmp_path / "log.csv"), "--hidden", "3", "--updates", "2", "--chains", "7",
         "--monitor", "false", "--checkpoints", "1", "--threads", "1"],
        env={**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}, capture_output=True,
        text=True, timeout=120, check=False)
    assert code.returncode == 0, code.stderr[-2000:]
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[1].split(",")[3] == ""  # pearson_cij_train left out, not 31.7 GB allocated


# -- 13. bounds -------------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "flag"), [
    (["train", "{data}", "--out", "{o}/m.h5", "--log", "{o}/l.csv", "--refresh-sweeps",
      str(10**12)], "--refresh-sweeps"),
    (["sample", "{model}", "{data}", "--out", "{o}/s.fa", "--info", "{o}/s.json",
      "--pt-levels", str(10**9)], "--pt-levels"),
    (["mutations", "{model}", "{data}", "--wildtype", "{wildtype}", "--out", "{o}/m.csv",
      "--first", str(10**30)], "--first"),
    (["train", "{data}", "--out", "{o}/m.h5", "--log", "{o}/l.csv", "--family", "F" * 300],
     "--family"),
    (["sample", "{model}", "{data}", "--out", "{o}/s.fa", "--info", "{o}/s.json",
      "--max-levels", str(10**6)], "--max-levels"),
    (["contacts", "{model}", "--out", "{o}/c.csv", "--backgrounds", str(10**12)],
     "--backgrounds"),
    (["fetch", "--family", "x", "--source", "pfam", "--outdir", "{o}", "--deadline", "1e12"],
     "--deadline"),
])
def test_options_have_upper_bounds(argv, flag, files, tmp_path, capsys):
    names = {key: str(value) for key, value in files.items()}
    outcome = run_cli([a.format(o=tmp_path / "o", **names) for a in argv], capsys)
    assert outcome.code != 0 and len(outcome.error_lines) == 1, outcome.text
    assert flag in outcome.error_lines[0] and "Traceback" not in outcome.text
    assert not (tmp_path / "o").exists()


# -- 14, 15. odd inputs and leftovers ---------------------------------------------------------


@pytest.mark.parametrize("case", ["no_training_rows", "weights_zero"])
@pytest.mark.parametrize("stage", ["contacts", "sample", "report", "score", "mutations"])
def test_a_split_with_nothing_to_average_is_one_line(stage, case, files, tmp_path, capsys):
    data = good_data()
    split = np.ones_like(data.split) if case == "no_training_rows" else data.split
    weights = data.weights if case == "no_training_rows" else np.zeros_like(data.weights)
    path = tmp_path / "alignment.npz"
    save_encoded(path, EncodedAlignment(data.codes, weights, split, data.names, data.columns,
                                        data.alphabet))
    out = tmp_path / "out"
    if stage == "mutations":
        argv = ["mutations", files["model"], path, "--wildtype", files["wildtype"], "--out",
                out / "m.csv", "--input", "aligned"]
    else:
        argv = STAGES_READING_A_MODEL[stage](files["model"], {**files, "data": path}, out)
        argv += ["--data", path] if stage == "score" else []
    outcome = run_cli([*argv, "--device", "cpu"], capsys)
    assert outcome.code == 1 and "Traceback" not in outcome.text, outcome.text
    assert len(outcome.error_lines) == 1 and str(path) in outcome.error_lines[0]
    assert snapshot(out) == set()


@pytest.mark.parametrize("structure", ["missing", "garbage"])
def test_contacts_with_a_bad_structure_writes_nothing(structure, files, tmp_path, capsys):
    path = tmp_path / "structure.pdb"
    if structure == "garbage":
        path.write_bytes(b"\x00\x01 not a structure \xff\n" * 20)
    out = tmp_path / "out"
    outcome = run_cli(["contacts", files["model"], "--out", out / "contacts.csv",
                       "--alignment", files["data"], "--structure", path, "--device", "cpu"],
                      capsys)
    assert outcome.code == 1 and len(outcome.error_lines) == 1, outcome.text
    assert snapshot(out) == set()


def _report_process(files: dict[str, Path], outdir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rbmflow", "report", "--data", str(files["data"]), "--samples",
         str(files["sequences"]), "--model", str(files["model"]), "--outdir", str(outdir),
         "--device", "cpu", "--threads", "1"],
        env={**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}, stderr=subprocess.PIPE,
        text=True)


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_report_leaves_no_figures_without_their_page(how, files, tmp_path):
    outdir = tmp_path / "F" / "R" / "report"
    proc = _report_process(files, outdir)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None and not any(
            p.suffix == ".png" and not p.name.startswith(".") for p in tmp_path.rglob("*")):
        time.sleep(0.02)  # a figure is written (wherever the report builds itself)
    proc.send_signal(how)
    _, err = proc.communicate(timeout=60)
    pngs = ([p for p in outdir.glob("*.png") if not p.name.startswith(".")]
            if outdir.exists() else [])
    assert not pngs or (outdir / "report.html").is_file(), pngs
    if how == signal.SIGTERM and proc.returncode != 0:
        assert "Traceback" not in err and len(err.strip().splitlines()[-1:]) == 1
        assert [p.name for p in tmp_path.rglob("*")] in ([], ["F"], ["F", "R"], ["R", "F"])


# -- 11. a server that drips bytes ------------------------------------------------------------


def test_a_dripping_server_is_abandoned_at_the_minimum_rate(tmp_path):
    with FakeInterPro() as server:
        server.script(FULL_PATH, Reply(body=STOCKHOLM * 20, trickle_s=0.02))  # 50 bytes/s
        start = time.monotonic()
        with pytest.raises(FetchError, match="minimum rate"):
            run_stage("WW", "pfam", tmp_path / "WW", accession=ACCESSION, alignment="full",
                      base_url=server.base_url,
                      policy=RetryPolicy(attempts=2, backoff_s=0.0, timeout_s=5.0,
                                         min_rate_bps=1000.0, min_rate_window_s=0.5))
    assert time.monotonic() - start < 6
    assert leftovers(tmp_path / "WW") == []


def test_the_deadline_bounds_every_attempt_together(tmp_path):
    with FakeInterPro() as server:
        server.script(FULL_PATH, *[Reply(body=STOCKHOLM * 20, trickle_s=0.02)] * 4)
        start = time.monotonic()
        with pytest.raises(FetchError):
            run_stage("WW", "pfam", tmp_path / "WW", accession=ACCESSION, alignment="full",
                      base_url=server.base_url,
                      policy=RetryPolicy(attempts=4, backoff_s=0.0, timeout_s=5.0,
                                         deadline_s=1.0, min_rate_bps=0.0))
    assert time.monotonic() - start < 2.5  # not 4 attempts x 1 s
    assert leftovers(tmp_path / "WW") == []
