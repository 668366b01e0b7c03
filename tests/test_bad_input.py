"""Bad input and faults, stage by stage: each must end in exactly one clear error line that
names the file (or the option), no traceback, and nothing left in the output folder.

Every case drives the CLI (`rbmflow.cli.main`) the way a careless user, a hostile file, a
read-only folder or a full disk would; `pytest --collect-only -q tests/test_bad_input.py`
counts them.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from interpro_server import FakeInterPro, Reply
from rbmflow import ALPHABET
from rbmflow.cli import main as cli_main
from rbmflow.data import alignment, dataset
from rbmflow.data.dataset import EncodedAlignment, save_encoded
from rbmflow.errors import InputError
from rbmflow.model import archive
from rbmflow.model.rbm import PottsRBM

REPO = Path(__file__).resolve().parents[1]
L, M, NH, Q = 11, 53, 3, len(ALPHABET)

pytestmark = pytest.mark.usefixtures("one_thread")


# -- good inputs ------------------------------------------------------------------------------


def _rows(num: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    letters = np.array(list(ALPHABET[1:]))
    return ["".join(rng.choice(letters, L)) for _ in range(num)]


def write_fasta(path: Path, rows: list[str], prefix: str = "s") -> Path:
    path.write_text("".join(f">{prefix}{i}\n{row}\n" for i, row in enumerate(rows)))
    return path


def write_stockholm(path: Path, rows: list[str]) -> Path:
    body = "".join(f"s{i} {row}\n" for i, row in enumerate(rows))
    path.write_text(f"# STOCKHOLM 1.0\n{body}//\n")
    return path


def good_data(seed: int = 1) -> EncodedAlignment:
    rng = np.random.default_rng(seed)
    return EncodedAlignment(
        codes=rng.integers(0, Q, size=(M, L)).astype(np.uint8),
        weights=np.ones(M, np.float32), split=(np.arange(M) % 5 == 0).astype(np.uint8),
        names=np.array([f"s{i}" for i in range(M)]), columns=np.arange(L), alphabet=ALPHABET)


def _hyper() -> dict:
    return {"batch_size": M, "gibbs_steps": 2, "learning_rate": 0.1, "L1": 0.0, "L2": 0.0,
            "seed": 0, "num_hiddens": NH, "num_visibles": L, "num_chains": 13, "num_states": Q,
            "updates": 2, "method": "pcd"}


def write_model(path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    for update in (1, 2):
        model = PottsRBM(0.3 * torch.randn(L, Q, NH, generator=g), torch.randn(L, Q, generator=g),
                         torch.randn(NH, generator=g))
        model.apply_zero_sum_gauge_()
        chains = torch.randint(0, Q, (13, L), generator=g)
        archive.save_checkpoint(path, model, chains, update, 0.1 * update, None, _hyper(),
                                {"alphabet": ALPHABET, "method": "pcd", "gibbs_steps": 2})
    return path


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    """One valid input of every kind, read-only for the cases."""
    base = tmp_path_factory.mktemp("good")
    files = {
        "fasta": write_fasta(base / "family.fasta", _rows(M, 2)),
        "stockholm": write_stockholm(base / "family.sto", _rows(M, 3)),
        "samples": write_fasta(base / "samples.fasta", _rows(19, 4), prefix="sample_"),
        "model": write_model(base / "model.h5"),
        "data": base / "alignment.npz",
    }
    save_encoded(files["data"], good_data())
    return files


# -- running a stage --------------------------------------------------------------------------


@dataclass
class Outcome:
    code: int
    error_lines: list[str]
    text: str


def run_cli(argv: list[str], capsys) -> Outcome:
    capsys.readouterr()
    try:
        code = cli_main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse usage errors
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    text = captured.out + captured.err
    errors = [line for line in text.splitlines() if "error:" in line]
    return Outcome(code, errors, text)


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def assert_one_clear_line(outcome: Outcome, names: str, before: set[str], folder: Path) -> None:
    assert outcome.code != 0, outcome.text
    assert "Traceback" not in outcome.text, outcome.text
    assert len(outcome.error_lines) == 1, outcome.text
    assert names in outcome.error_lines[0], (names, outcome.error_lines)
    assert snapshot(folder) == before, sorted(snapshot(folder) - before)


def stage_argv(stage: str, inputs: dict[str, Path], out: Path) -> list:
    """A cheap invocation of `stage` reading `inputs`, writing into the folder `out`."""
    if stage == "fetch":
        return ["fetch", "--family", "fam", "--source", inputs["alignment"], "--outdir", out]
    if stage == "prepare":
        return ["prepare", inputs["alignment"], "--out", out / "alignment.npz", "--summary",
                out / "summary.json", "--device", "cpu", "--threads", "1"]
    if stage == "train":
        return ["train", inputs["data"], "--out", out / "model.h5", "--log", out / "log.csv",
                "--hidden", 3, "--updates", 3, "--chains", 7, "--gibbs-steps", 1,
                "--checkpoints", 2, "--device", "cpu", "--threads", 1]
    if stage == "loglik":
        return ["loglik", inputs["model"], inputs["data"], "--out", out / "loglik.json",
                "--trajectory-csv", out / "trajectory.csv", "--method", "exact",
                "--device", "cpu", "--threads", 1]
    if stage == "sample":
        return ["sample", inputs["model"], inputs["data"], "--out", out / "samples.fasta",
                "--info", out / "sampling.json", "--chains", 5, "--sweeps", 4,
                "--auto-extend", "false", "--device", "cpu", "--threads", 1]
    if stage == "report":
        return ["report", "--data", inputs["data"], "--samples", inputs["samples"],
                "--model", inputs["model"], "--outdir", out / "report", "--device", "cpu",
                "--nn-samples", 10, "--nn-reference", 40, "--triplets", 10]
    raise ValueError(stage)


def default_inputs(good: dict[str, Path]) -> dict[str, Path]:
    return {"alignment": good["fasta"], "data": good["data"], "model": good["model"],
            "samples": good["samples"]}


# -- the cases: broken files ------------------------------------------------------------------


def _alignment_cases() -> dict[str, Callable[[Path], None]]:
    rows = _rows(7, 5)

    def no_terminator(p: Path) -> None:
        body = "".join(f"s{i} {r}\n" for i, r in enumerate(rows))
        p.write_text(f"# STOCKHOLM 1.0\n{body}\n{body}")

    def zero_sequences(p: Path) -> None:
        p.write_text("# STOCKHOLM 1.0\n#=GF ID empty\n//\n")

    return {
        "stockholm_without_terminator": no_terminator,
        "stockholm_zero_sequences": zero_sequences,
        "headers_only": lambda p: p.write_text(">a\n>b\n>c\n"),
        "empty": lambda p: p.write_text(""),
        "binary": lambda p: p.write_bytes(bytes(range(256)) * 4),
        "html_page": lambda p: p.write_text("<!DOCTYPE html><html>error</html>\n"),
        "json_page": lambda p: p.write_text('{"detail": "not found"}\n'),
        "ragged": lambda p: p.write_text(">a\nACDEF\n>b\nACD\n"),
        "bad_character": lambda p: p.write_text(">a\nACDEF\n>b\nAC%EF\n"),
        "text_before_first_record": lambda p: p.write_text("hello\n>a\nACD\n"),
        "huge_record": lambda p: p.write_text(
            ">a\n" + "A" * (getattr(alignment, "MAX_COLUMNS", 200_000) + 7) + "\n>b\nAC\n"),
        "corrupt_gzip": lambda p: p.write_bytes(
            gzip.compress("".join(f">{i}\n{r}\n" for i, r in enumerate(_rows(50, 6))).encode())
            [:300]),
        "missing": lambda p: None,
    }


def _npz(p: Path, **overrides) -> None:
    data = good_data()
    arrays = {"codes": data.codes, "weights": data.weights, "split": data.split,
              "names": data.names, "columns": data.columns, "alphabet": np.asarray(ALPHABET)}
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    with open(p, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def _data_cases() -> dict[str, Callable[[Path], None]]:
    codes = good_data().codes
    return {
        "codes_out_of_range": lambda p: _npz(p, codes=np.where(codes == 3, 40, codes)),
        "codes_1d": lambda p: _npz(p, codes=codes[0]),
        "codes_float": lambda p: _npz(p, codes=codes.astype(np.float32) + 0.5),
        "short_weights": lambda p: _npz(p, weights=np.ones(M - 2, np.float32)),
        "nan_weights": lambda p: _npz(p, weights=np.full(M, np.nan, np.float32)),
        "split_values": lambda p: _npz(p, split=np.full(M, 2, np.uint8)),
        "non_ascii_alphabet": lambda p: _npz(p, alphabet=np.asarray("-ACDEFGHIKLMNPQRSTVWé")),
        "missing_array": lambda p: _npz(p, columns=None),
        "zip_bomb": lambda p: _npz(p, names=np.zeros(dataset.MAX_BYTES // 8 + 10, np.uint64)),
        "not_a_zip": lambda p: p.write_text("codes,weights\n1,2\n"),
        "truncated": lambda p: (_npz(p), p.write_bytes(p.read_bytes()[:300])),
        "missing": lambda p: None,
    }


def _edit_model(p: Path, edit: Callable[[h5py.File, Path], None]) -> None:
    write_model(p)
    with h5py.File(p, "a") as f:
        edit(f, p)


def _replace(f: h5py.File, name: str, **kwargs) -> None:
    del f[name]
    f.create_dataset(name, **kwargs)


def _set(name: str, index: tuple, value: float) -> Callable[[h5py.File, Path], None]:
    def edit(f: h5py.File, _p: Path) -> None:
        for u in (1, 2):
            f[f"update_{u}/params/{name}"][index] = value
    return edit


def _external_link(f: h5py.File, p: Path, target_exists: bool = True) -> None:
    other = p.with_name(p.stem + "_other.h5")
    if target_exists:
        with h5py.File(other, "w") as g:
            g["w"] = np.zeros((L, Q, NH), np.float32)
    for u in (1, 2):
        del f[f"update_{u}/params/weight_matrix"]
        f[f"update_{u}/params/weight_matrix"] = h5py.ExternalLink(other.name, "/w")


def _external_storage(f: h5py.File, p: Path) -> None:
    raw = p.with_name(p.stem + "_raw.bin")
    raw.write_bytes(np.zeros((L, Q, NH), np.float32).tobytes())
    for u in (1, 2):
        _replace(f, f"update_{u}/params/weight_matrix", shape=(L, Q, NH), dtype="f4",
                 external=[(raw.name, 0, L * Q * NH * 4)])


def _model_cases() -> dict[str, Callable[[Path], None]]:
    def each(edit: Callable[[h5py.File, str], None]) -> Callable[[h5py.File, Path], None]:
        return lambda f, _p: [edit(f, f"update_{u}/params") for u in (1, 2)]

    edits: dict[str, Callable[[h5py.File, Path], None]] = {
        "nan_weight_matrix": _set("weight_matrix", (0, 1, 2), float("nan")),
        "inf_vbias": _set("vbias", (3, 4), float("inf")),
        "nan_hbias": _set("hbias", (1,), float("nan")),
        "inconsistent_shapes": each(lambda f, g: _replace(
            f, f"{g}/vbias", data=np.zeros((L, Q + 1), np.float32))),
        "weight_matrix_2d": each(lambda f, g: _replace(
            f, f"{g}/weight_matrix", data=np.zeros((L, Q), np.float32))),
        "huge_declared_shape": each(lambda f, g: _replace(
            f, f"{g}/weight_matrix", shape=(L, Q, 2**31), dtype="f4", chunks=(1, 1, 4096))),
        "string_dtype": each(lambda f, g: _replace(
            f, f"{g}/hbias", data=np.array([b"a", b"b", b"c"]))),
        "external_link": _external_link,
        "broken_external_link": lambda f, p: _external_link(f, p, target_exists=False),
        "external_storage": _external_storage,
        "bad_metadata_json": lambda f, _p: f["rbmflow"].attrs.__setitem__(
            "metadata_json", "{not json"),
        "non_numeric_hyperparameter": lambda f, _p: _replace(
            f, "hyperparameters/num_hiddens", data="three"),
    }
    cases: dict[str, Callable[[Path], None]] = {
        name: (lambda p, e=edit: _edit_model(p, e)) for name, edit in edits.items()}
    cases["not_hdf5"] = lambda p: p.write_text("not a model\n")
    cases["truncated"] = lambda p: (write_model(p), p.write_bytes(p.read_bytes()[:2000]))
    cases["missing"] = lambda p: None
    return cases


FILE_CASES = (
    [("alignment", name, stage) for name in _alignment_cases() for stage in ("prepare",)]
    + [("data", name, stage) for name in _data_cases()
       for stage in ("train", "loglik", "sample", "report")]
    + [("model", name, stage) for name in _model_cases()
       for stage in ("loglik", "sample", "report")]
)
MAKERS = {"alignment": _alignment_cases(), "data": _data_cases(), "model": _model_cases()}
SUFFIX = {"alignment": ".fasta", "data": ".npz", "model": ".h5"}


@pytest.mark.parametrize(("kind", "case", "stage"), FILE_CASES,
                         ids=[f"{s}-{k}-{c}" for k, c, s in FILE_CASES])
def test_bad_file(kind, case, stage, good, tmp_path, capsys, monkeypatch):
    # the zip bomb case, at a small scale
    monkeypatch.setattr(dataset, "MAX_BYTES", 2**20, raising=False)
    bad = tmp_path / "inputs" / f"bad_{case}{SUFFIX[kind]}"
    bad.parent.mkdir()
    MAKERS[kind][case](bad)
    inputs = default_inputs(good) | {kind: bad}
    out = tmp_path / "out"
    out.mkdir()
    outcome = run_cli(stage_argv(stage, inputs, out), capsys)
    assert_one_clear_line(outcome, bad.name, set(), out)


REPORT_CASES = {
    "samples-bad_letters": lambda p: p.write_text(">a\nAC%EFGHIKLM\n"),
    "samples-wrong_length": lambda p: p.write_text(">a\nACDEF\n"),
    "samples-empty": lambda p: p.write_text(""),
    "sampling-not_json": lambda p: p.write_text("{oops"),
    "sampling-a_list": lambda p: p.write_text("[1, 2]"),
    "loglik-not_json": lambda p: p.write_text("nope"),
    "train_log-no_update_column": lambda p: p.write_text("a,b\n1,2\n"),
    "train_log-binary": lambda p: p.write_bytes(bytes(range(256))),
    "trajectory-text_values": lambda p: p.write_text("update,log_z\nfoo,bar\n"),
}


@pytest.mark.parametrize("case", list(REPORT_CASES))
def test_bad_report_input(case, good, tmp_path, capsys):
    flag = case.split("-")[0]
    bad = tmp_path / f"bad_{case}"
    REPORT_CASES[case](bad)
    out = tmp_path / "out"
    out.mkdir()
    argv = [*stage_argv("report", default_inputs(good), out), f"--{flag.replace('_', '-')}",
            bad]
    outcome = run_cli(argv, capsys)
    assert_one_clear_line(outcome, bad.name, set(), out)


# -- the cases: numbers out of range ----------------------------------------------------------

NUMBER_CASES = [
    ("train", "--seed", str(2**63)), ("train", "--seed", "-1"),
    ("train", "--hidden", str(10**9)), ("train", "--chains", str(10**9)),
    ("train", "--checkpoints", str(10**9)), ("train", "--updates", str(10**12)),
    ("train", "--l1", "nan"), ("train", "--l2", "nan"), ("train", "--learning-rate", "nan"),
    ("train", "--lr-decay", "inf"), ("train", "--hidden", "4.0"),
    ("prepare", "--identity", "nan"), ("prepare", "--seed", str(2**63)),
    ("prepare", "--max-gap-fraction", "nan"), ("prepare", "--test-fraction", "nan"),
    ("sample", "--seed", str(2**63)), ("sample", "--chains", str(10**10)),
    ("sample", "--beta", "nan"),
    ("loglik", "--seed", str(2**63)), ("loglik", "--chains", str(10**10)),
    ("loglik", "--betas", str(10**10)),
    ("report", "--seed", str(2**63)),
]


@pytest.mark.parametrize(("stage", "flag", "value"), NUMBER_CASES,
                         ids=[f"{s}{f}={v}" for s, f, v in NUMBER_CASES])
def test_number_out_of_range(stage, flag, value, good, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    argv = [*stage_argv(stage, default_inputs(good), out), flag, value]
    outcome = run_cli(argv, capsys)
    line = outcome.error_lines[0] if outcome.error_lines else ""
    named = flag if flag in line else flag.lstrip("-").replace("-", "_")
    assert_one_clear_line(outcome, named, set(), out)


# -- the cases: the environment ---------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(folder: Path, options: str) -> Iterator[Path]:
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@contextlib.contextmanager
def read_only_folder(folder: Path) -> Iterator[Path]:
    """A folder nobody may write to: a read-only tmpfs as root, else mode 0555."""
    if os.geteuid() == 0:
        with _tmpfs(folder, "ro,size=64k") as mounted:
            yield mounted
        return
    folder.mkdir()
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        folder.chmod(0o755)


@contextlib.contextmanager
def full_disk(folder: Path) -> Iterator[Path]:
    """A tiny tmpfs filled to the last byte (root only)."""
    with _tmpfs(folder, "size=64k") as mounted:
        with open(mounted / "filler", "wb", buffering=0) as handle:
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * 1024)
        yield mounted


STAGES = ("fetch", "prepare", "train", "loglik", "sample", "report")


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("fault", ["read_only", "full_disk"])
def test_environment_fault(stage, fault, good, tmp_path, capsys):
    inputs = default_inputs(good)
    folder = tmp_path / "out"
    manager = read_only_folder(folder) if fault == "read_only" else full_disk(folder)
    with manager:
        before = snapshot(folder)
        outcome = run_cli(stage_argv(stage, inputs, folder), capsys)
        assert_one_clear_line(outcome, str(folder), before, folder)


def test_file_size_limit_in_training_is_one_line_not_a_crash(good, tmp_path):
    """RLIMIT_FSIZE: writes past the limit fail (EFBIG) instead of killing the process."""
    out = tmp_path / "out"
    out.mkdir()
    argv = [str(a) for a in stage_argv("train", default_inputs(good), out)]

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))

    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    proc = subprocess.run([sys.executable, "-m", "rbmflow", *argv], env=env, timeout=120,
                          capture_output=True, text=True, preexec_fn=limit, check=False)
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr
    assert "model.h5" in errors[0] and "too large" in errors[0].lower(), errors
    assert snapshot(out) == set()


# -- inputs that must be accepted -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fasta", "stockholm"])
def test_utf8_byte_order_mark_is_accepted(kind, good, tmp_path):
    with_bom = tmp_path / f"bom{good[kind].suffix}"
    with_bom.write_bytes(b"\xef\xbb\xbf" + good[kind].read_bytes())
    assert alignment.read_alignment(with_bom).rows == alignment.read_alignment(good[kind]).rows


def test_headers_only_file_says_so(tmp_path):
    path = tmp_path / "headers.fasta"
    path.write_text(">a\n>b\n")
    with pytest.raises(InputError, match="headers only"):
        alignment.load_alignment(path)


def test_stockholm_cut_after_its_first_block_is_refused(good, tmp_path):
    lines = good["stockholm"].read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.sto"
    cut.write_text("".join(lines[:-1]))  # without the closing '//'
    with pytest.raises(InputError, match=r"cut\.sto.*'//'"):
        alignment.read_alignment(cut)


@pytest.mark.parametrize("case", ["nan_weight_matrix", "inf_vbias", "nan_hbias"])
def test_non_finite_parameters_are_refused_when_loading(case, tmp_path):
    path = tmp_path / "model.h5"
    MAKERS["model"][case](path)
    with pytest.raises(InputError, match=r"model\.h5: update_1/params/.* NaN or inf"):
        archive.load_rbm(path, 1)


def test_good_inputs_pass_every_stage(good, tmp_path, capsys):
    """The harness itself: the same invocations succeed on good inputs."""
    inputs = default_inputs(good)
    for stage in STAGES:
        out = tmp_path / stage
        outcome = run_cli(stage_argv(stage, inputs, out), capsys)
        assert outcome.code == 0, (stage, outcome.text)


# -- the cases: a hostile server (fetch) ------------------------------------------------------

SERVER_CASES = {
    "html_page": Reply(body=b"<!DOCTYPE html><html>maintenance</html>",
                       headers={"Content-Type": "text/html"}),
    "json_error": Reply(body=b'{"detail": "oops"}', headers={"Content-Type": "application/json"}),
    "no_terminator": Reply(body=b"# STOCKHOLM 1.0\ns1 ACDEF\n"),
    "zero_sequences": Reply(body=gzip.compress(b"# STOCKHOLM 1.0\n#=GF ID x\n//\n")),
    "broken_gzip": Reply(body=gzip.compress(b"# STOCKHOLM 1.0\n" + b"s1 ACD\n" * 500)[:100]),
    "truncated": Reply(body=b"# STOCKHOLM 1.0\ns1 ACDEF\n//\n", announce_length=1000),
    "empty": Reply(body=b""),
    "not_found": Reply(status=404, body=b"{}"),
    "forbidden": Reply(status=403, body=b"no"),
    "server_error": Reply(status=503, body=b"busy"),
    "endless": Reply(body=b"x" * 65536, endless=True),
    "trickle": Reply(body=b"# STOCKHOLM 1.0\n" * 100, trickle_s=0.05),
    "one_long_line": Reply(body=gzip.compress(b"# STOCKHOLM 1.0\ns1 " + b"A" * (5 << 20))),
}


@pytest.mark.parametrize("case", list(SERVER_CASES))
def test_hostile_server(case, tmp_path, capsys):
    path = "/entry/pfam/PF00397/?annotation=alignment:full"
    out = tmp_path / "msa" / "WW"
    with FakeInterPro() as server:
        server.script(path, SERVER_CASES[case])
        outcome = run_cli(["fetch", "--family", "WW", "--source", "pfam", "--accession",
                           "PF00397", "--outdir", out, "--base-url", server.base_url,
                           "--attempts", "1", "--timeout", "2", "--deadline", "2"], capsys)
    assert_one_clear_line(outcome, "PF00397", set(), out)
    assert not (tmp_path / "msa").exists()
