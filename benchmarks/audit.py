"""Audit of bad inputs and faults: every case must end with one clear line or a correct result.

    python benchmarks/audit.py [--only CLASS[,CLASS]] [--list] [--json audit.json]
    AUDIT_PACKAGE=/other/checkout/workflow python benchmarks/audit.py   # audit another one
    (AUDIT_TIMEOUT: seconds before a case counts as a hang, default 120; AUDIT_MEMORY_GB:
    the address-space limit of each case, default 12)

Each case runs one `rbmflow` sub-command (in a child forked from this process, so torch is
imported once) on a bad input, a hostile server, a fault of the environment (read-only or
full folder, file-size limit) or a kill, and is judged:

- `error` cases must exit non-zero with exactly one line holding "error:", no traceback, the
  line naming the file or option at fault, nothing new left in the case's folder and every
  input byte for byte as before;
- `ok` cases must exit 0 with outputs that load (the stage's own reader) and inputs intact;
- `either` cases may end either way, each judged as above;
- `kill` cases are killed after a delay: no visible output may be left without the others of
  its job (hidden temporary files are allowed after SIGKILL; the next run removes them).

Classes: baseline (every stage on the good inputs, which must succeed), outin (an output that
is an input), alignment (malformed alignment files), npz (malformed alignment.npz), archive
(tampered model.h5), options (huge, negative, NaN, non-integer values and long names), server
(a hostile InterPro on loopback), inputs (score, mutations, contacts with wrong input),
environment (read-only, full disk, file-size limit), kill (SIGTERM and SIGKILL during a
stage). The machine's load affects only the run time.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
# AUDIT_PACKAGE: the folder holding the `rbmflow` package to audit (default: this checkout's)
sys.path[:0] = [os.environ.get("AUDIT_PACKAGE", str(REPO / "workflow")), str(REPO / "tests")]
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from rbmflow import ALPHABET  # noqa: E402
from rbmflow.cli import main as cli_main  # noqa: E402
from rbmflow.data.dataset import EncodedAlignment, load_encoded, save_encoded  # noqa: E402
from rbmflow.model import archive  # noqa: E402
from rbmflow.model.rbm import PottsRBM  # noqa: E402

L, M, NH, Q = 11, 53, 3, len(ALPHABET)
COMPUTE = ["--device", "cpu", "--threads", "1"]


@dataclass
class Case:
    """One audited invocation. `argv` may hold `{o}` (the case's output folder) and `{c}`
    (the case's folder); `setup(folder)` makes its files; `token` is what the error line must
    name (alternatives separated by '|'); `expect` is error, ok, either or kill."""

    klass: str
    name: str
    argv: list
    expect: str = "error"
    token: str | None = None
    setup: Callable[[Path], None] | None = None
    check: Callable[[Path], str | None] | None = None
    kill: tuple[float, int] | None = None
    fault: str | None = None
    timeout: float = 120.0
    guard: list[str] = field(default_factory=list)


# -- good inputs ------------------------------------------------------------------------------


def rows(num: int, seed: int, length: int = L) -> list[str]:
    rng = np.random.default_rng(seed)
    letters = np.array(list(ALPHABET[1:]))
    return ["".join(rng.choice(letters, length)) for _ in range(num)]


def fasta(records: list[str], prefix: str = "s") -> str:
    return "".join(f">{prefix}{i}\n{row}\n" for i, row in enumerate(records))


def good_data(seed: int = 1, num: int = M) -> EncodedAlignment:
    rng = np.random.default_rng(seed)
    return EncodedAlignment(
        codes=rng.integers(0, Q, size=(num, L)).astype(np.uint8),
        weights=np.ones(num, np.float32), split=(np.arange(num) % 5 == 0).astype(np.uint8),
        names=np.array([f"s{i}" for i in range(num)]), columns=np.arange(L), alphabet=ALPHABET)


def write_model(path: Path, updates: tuple[int, ...] = (1, 2), hidden: int = NH) -> Path:
    g = torch.Generator().manual_seed(0)
    hyper = {"batch_size": M, "gibbs_steps": 2, "learning_rate": 0.1, "L1": 0.0, "L2": 0.0,
             "seed": 0, "num_hiddens": hidden, "num_visibles": L, "num_chains": 13,
             "num_states": Q, "updates": updates[-1], "method": "pcd"}
    for update in updates:
        model = PottsRBM(0.3 * torch.randn(L, Q, hidden, generator=g),
                         torch.randn(L, Q, generator=g), torch.randn(hidden, generator=g))
        model.apply_zero_sum_gauge_()
        chains = torch.randint(0, Q, (13, L), generator=g)
        archive.save_checkpoint(path, model, chains, update, 0.1 * update, None, hyper,
                                {"alphabet": ALPHABET, "method": "pcd", "gibbs_steps": 2})
    return path


def make_good(base: Path) -> dict[str, Path]:
    base.mkdir(parents=True, exist_ok=True)
    data = good_data()
    aligned = ["".join(ALPHABET[c] for c in row) for row in data.codes[:7]]
    # rows holding a gap: aligned input as it is (a gapless row of L letters is checked
    # against the profile HMM of this random, signal-free family and refused)
    gapped = ["".join(ALPHABET[c] for c in row) for row in data.codes if (row == 0).any()][:7]
    files = {"fasta": base / "family.fasta", "model": base / "model.h5",
             "data": base / "alignment.npz", "seqs": base / "seqs.fasta",
             "wt": base / "wt.fasta", "samples": base / "samples.fasta"}
    files["fasta"].write_text(fasta(rows(M, 2)))
    files["seqs"].write_text(fasta(gapped))
    files["wt"].write_text(fasta(aligned[:1]))
    files["samples"].write_text(fasta(rows(19, 4), "sample_"))
    write_model(files["model"])
    save_encoded(files["data"], data)
    for path in files.values():
        path.chmod(0o444)
    return files


# -- stage invocations ------------------------------------------------------------------------


def stage(name: str, g: dict[str, Path], **over: object) -> list:
    """A cheap invocation of sub-command `name` on the good inputs `g`, `over` replacing
    inputs (model, data, fasta, seqs, wt, samples) by other paths."""
    f = {**g, **over}
    o = "{o}"
    return {
        "prepare": ["prepare", f["fasta"], "--out", f"{o}/alignment.npz", "--summary",
                    f"{o}/summary.json", *COMPUTE],
        "fetch": ["fetch", "--family", "fam", "--source", f["fasta"], "--outdir", o],
        "train": ["train", f["data"], "--out", f"{o}/model.h5", "--log", f"{o}/log.csv",
                  "--hidden", 3, "--updates", 3, "--chains", 7, "--gibbs-steps", 1,
                  "--checkpoints", 2, "--monitor", "false", *COMPUTE],
        "loglik": ["loglik", f["model"], f["data"], "--out", f"{o}/loglik.json", "--method",
                   "exact", *COMPUTE],
        "sample": ["sample", f["model"], f["data"], "--out", f"{o}/samples.fasta", "--info",
                   f"{o}/sampling.json", "--chains", 5, "--sweeps", 4, "--auto-extend",
                   "false", "--method", "gibbs", "--reference-chains", 0, *COMPUTE],
        "contacts": ["contacts", f["model"], "--out", f"{o}/contacts.csv", "--alignment",
                     f["data"], *COMPUTE],
        "score": ["score", f["model"], f["seqs"], "--out", f"{o}/scores.csv", "--data",
                  f["data"], *COMPUTE],
        "mutations": ["mutations", f["model"], f["data"], "--wildtype", f["wt"], "--out",
                      f"{o}/mutations.csv", *COMPUTE],
        "report": ["report", "--data", f["data"], "--samples", f["samples"], "--model",
                   f["model"], "--outdir", f"{o}/report", "--nn-samples", 10,
                   "--nn-reference", 40, "--triplets", 10, *COMPUTE],
    }[name]


def outputs_valid(folder: Path) -> str | None:
    """None if every output in `folder` loads with the project's readers, else the problem."""
    out = folder / "out"
    try:
        if (out / "alignment.npz").exists():
            load_encoded(out / "alignment.npz")
        if (out / "model.h5").exists():
            archive.load_rbm(out / "model.h5")
        for name in ("loglik.json", "sampling.json", "summary.json", "source.json"):
            if (out / name).exists():
                json.loads((out / name).read_text())
        if (out / "loglik.json").exists():
            value = json.loads((out / "loglik.json").read_text())["log_z"]
            if not np.isfinite(value):
                return f"log_z {value}"
        report = out / "report"
        if report.exists() and not (report / "report.html").is_file():
            return "report folder without report.html"
        if (out / "contacts.csv").exists() and not (out / "contacts.csv").read_text(
                ).startswith("i,j,score"):
            return "contacts.csv without its header"
    except Exception as err:  # noqa: BLE001 (any failure to read back is the finding)
        return f"output does not load: {err}"
    if not out.exists() or not any(out.iterdir()):
        return "no output"
    return None


# -- the case classes -------------------------------------------------------------------------


def baseline_cases(g: dict[str, Path]) -> list[Case]:
    """Every stage on the good inputs must succeed: a fixture the stages refuse would make the
    other classes judge the wrong refusal."""
    return [Case("baseline", stage_name, stage(stage_name, g), expect="ok", check=outputs_valid)
            for stage_name in ("prepare", "fetch", "train", "loglik", "sample", "contacts",
                               "score", "mutations", "report")]


def outin_cases(g: dict[str, Path]) -> list[Case]:
    """Every output option pointed at an input, spelled four ways."""
    specs = [  # (stage, input key, output option, extra argv replacement)
        ("sample", "model", "--out"), ("sample", "data", "--info"),
        ("loglik", "model", "--out"), ("loglik", "data", "--out"),
        ("contacts", "model", "--out"), ("contacts", "data", "--out"),
        ("train", "data", "--log"), ("train", "data", "--out"),
        ("prepare", "fasta", "--out"), ("prepare", "fasta", "--summary"),
        ("mutations", "wt", "--out"), ("mutations", "model", "--heatmap"),
        ("mutations", "data", "--summary"), ("score", "seqs", "--out"),
        ("score", "model", "--summary"),
    ]
    cases = []
    for stage_name, key, option in specs:
        for spelling in ("same", "symlink", "hardlink", "dotted"):
            def setup(folder: Path, key: str = key, spelling: str = spelling) -> None:
                work = folder / "in"
                work.mkdir()
                copy = work / g[key].name
                shutil.copyfile(g[key], copy)
                target = {"same": copy, "dotted": work / "." / copy.name,
                          "symlink": work / f"link-{copy.name}",
                          "hardlink": work / f"hard-{copy.name}"}[spelling]
                if spelling == "symlink":
                    target.symlink_to(copy)
                elif spelling == "hardlink":
                    os.link(copy, target)
                (folder / "target").write_text(str(target))

            argv = stage(stage_name, g, **{key: "{c}/in/" + g[key].name})
            if option in argv:
                argv[argv.index(option) + 1] = "@target"
            else:
                argv += [option, "@target"]
            cases.append(Case("outin", f"{stage_name} {option} = {key} ({spelling})", argv,
                              token="refusing to overwrite", setup=setup,
                              guard=[f"in/{g[key].name}"]))
    for spelling in ("same", "dotted"):
        def setup_report(folder: Path, spelling: str = spelling) -> None:
            (folder / "out" / "report").mkdir(parents=True)
            (folder / "out" / "report" / "metrics.json").write_text('{"log_z": 1.0}\n')
            sub = "report" if spelling == "same" else "report/."
            (folder / "target").write_text(str(folder / "out" / sub / "metrics.json"))

        cases.append(Case("outin", f"report --loglik in --outdir ({spelling})",
                          [*stage("report", g), "--loglik", "@target"],
                          token="refusing to overwrite", setup=setup_report,
                          guard=["out/report/metrics.json"]))
    return cases


ALIGNMENTS: dict[str, tuple[str, bytes | Callable[[], bytes]]] = {
    # name: (expect, content)
    "empty": ("error", b""),
    "blank_lines": ("error", b"\n\n   \n"),
    "binary": ("error", bytes(range(256)) * 40),
    "nul_in_sequence": ("error", fasta(rows(9, 1)).replace("A", "\0", 3).encode()),
    "html": ("error", b"<!DOCTYPE html><html><body>Service unavailable</body></html>\n"),
    "json": ("error", b'{"results": []}\n'),
    "stockholm_no_end": ("error", b"# STOCKHOLM 1.0\ns1 ACDEF\ns2 ACDEG\n"),
    "stockholm_header_only": ("error", b"# STOCKHOLM 1.0\n//\n"),
    "fasta_headers_only": ("error", b">a\n>b\n>c\n"),
    "fasta_ragged": ("error", b">a\nACDEFGH\n>b\nACD\n>c\nACDEFGH\n"),
    "sequence_without_header": ("error", b"ACDEFGHIK\nACDEFGHIK\n"),
    "digits": ("error", b">a\nAC1EF\n>b\nACDE9\n>c\nACDEF\n"),
    "only_inserts": ("error", b">a\nacdef\n>b\nacdeg\n>c\nacdeh\n"),
    "duplicate_stockholm_names": ("error", b"# STOCKHOLM 1.0\ns1 ACDEF\ns1 ACDEG\n//\n"),
    "stockholm_ragged": ("error", b"# STOCKHOLM 1.0\ns1 ACDEF\ns2 ACD\n//\n"),
    "one_sequence": ("either", b">a\nACDEFGHIK\n"),
    "two_sequences": ("either", b">a\nACDEFGHIK\n>b\nACDEFGHIL\n"),
    "all_gaps": ("error", b">a\n---------\n>b\n---------\n>c\n---------\n"),
    "gz_truncated": ("error", lambda: gzip.compress(fasta(rows(40, 3)).encode())[:200]),
    "gz_garbage": ("error", lambda: gzip.compress(bytes(range(256)) * 50)),
    "gz_double": ("either", lambda: gzip.compress(gzip.compress(fasta(rows(40, 3)).encode()))),
    "bom": ("ok", ("\ufeff" + fasta(rows(40, 5))).encode()),
    "crlf": ("ok", fasta(rows(40, 6)).replace("\n", "\r\n").encode()),
    "huge_name": ("ok", (">" + "N" * 3_000_000 + "\n" + rows(1, 7)[0] + "\n"
                         + fasta(rows(40, 7))).encode()),
    "name_with_spaces": ("ok", fasta(rows(40, 8)).replace(">s1", ">s1 a description").encode()),
    "latin1_name": ("either", b">caf\xe9\nACDEFGHIKLM\n" + fasta(rows(40, 9)).encode()),
    "lowercase_a2m": ("ok", b"".join(f">a{i}\n{r[:3]}acd{r[3:]}\n".encode()
                                     for i, r in enumerate(rows(40, 10))))
    ,
    "ambiguous_letters": ("ok", fasta([r[:5] + "X" + r[6:] for r in rows(40, 11)]).encode()),
    "long_line": ("either", lambda: b">a\n" + b"A" * 5_000_000 + b"\n>b\n" + b"A" * 4 + b"\n"),
    "utf16": ("error", fasta(rows(20, 12)).encode("utf-16")),
}


def alignment_cases(g: dict[str, Path]) -> list[Case]:
    cases = []
    for name, (expect, content) in ALIGNMENTS.items():
        suffix = ".fasta.gz" if name.startswith("gz_") else ".fasta"
        file_name = f"bad_{name}{suffix}"

        def setup(folder: Path, content=content, file_name: str = file_name) -> None:
            data = content() if callable(content) else content
            (folder / file_name).write_bytes(data)

        for stage_name in ("prepare", "fetch"):  # fetch records a local file, unread
            cases.append(Case("alignment", f"{stage_name} {name}",
                              stage(stage_name, g, fasta="{c}/" + file_name),
                              expect=expect if stage_name == "prepare" else "either",
                              token=file_name, setup=setup, check=outputs_valid,
                              guard=[file_name]))
    return cases


def _npz_variants() -> dict[str, tuple[str, Callable[[Path], None]]]:
    def arrays(**over: object) -> dict:
        d = good_data()
        base = {"codes": d.codes, "weights": d.weights, "split": d.split,
                "names": np.asarray(d.names, dtype=str), "columns": d.columns,
                "alphabet": np.asarray(d.alphabet)}
        base.update(over)
        return {k: v for k, v in base.items() if v is not None}

    def saver(**over: object) -> Callable[[Path], None]:
        return lambda p: np.savez(p, **arrays(**over))

    def raw(data: bytes) -> Callable[[Path], None]:
        return lambda p: p.write_bytes(data)

    def truncated(p: Path) -> None:
        save_encoded(p, good_data())
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])

    def bomb(p: Path) -> None:
        np.savez_compressed(p, **arrays(names=np.zeros(2**29, np.uint8)))

    def object_array(p: Path) -> None:
        np.savez(p, **arrays(names=np.array([{"x": 1}] * M, dtype=object)))

    def offsets(bad: np.ndarray) -> Callable[[Path], None]:
        return lambda p: np.savez(p, **arrays(names=None), names_utf8=np.zeros(10, np.uint8),
                                  names_offsets=bad)

    d = good_data()
    return {
        "empty_file": ("error", raw(b"")), "not_zip": ("error", raw(b"hello" * 100)),
        "truncated": ("error", truncated), "zip_bomb": ("error", bomb),
        "object_names": ("error", object_array),
        "no_codes": ("error", saver(codes=None)), "no_alphabet": ("error", saver(alphabet=None)),
        "no_names": ("error", saver(names=None)),
        "codes_1d": ("error", saver(codes=d.codes[0])),
        "codes_float": ("error", saver(codes=d.codes.astype(np.float32))),
        "codes_outside": ("error", saver(codes=np.full_like(d.codes, 40))),
        "codes_negative": ("error", saver(codes=-d.codes.astype(np.int16) - 1)),
        "weights_nan": ("error", saver(weights=np.full(M, np.nan, np.float32))),
        "weights_negative": ("error", saver(weights=-d.weights)),
        "weights_short": ("error", saver(weights=d.weights[:3])),
        "weights_zero": ("error", saver(weights=np.zeros(M, np.float32))),
        "no_train_rows": ("error", saver(split=np.ones(M, np.uint8))),
        "split_two": ("error", saver(split=np.full(M, 2, np.uint8))),
        "alphabet_one_letter": ("error", saver(alphabet=np.asarray("A"))),
        "alphabet_repeats": ("error", saver(alphabet=np.asarray("AA" + ALPHABET[2:]))),
        "columns_short": ("error", saver(columns=np.arange(3))),
        "offsets_decreasing": ("error", offsets(np.r_[0, 5, 3, np.full(M - 2, 10)])),
        "offsets_short": ("error", offsets(np.arange(4))),
        "zero_sequences": ("error", saver(codes=np.zeros((0, L), np.uint8),
                                          weights=np.zeros(0, np.float32),
                                          split=np.zeros(0, np.uint8),
                                          names=np.zeros(0, str))),
        "other_alphabet": ("error", saver(alphabet=np.asarray("01"),
                                          codes=(d.codes % 2).astype(np.uint8))),
    }


CACHE: list[Path] = []  # the folder where each bad file is made once


def cached(maker: Callable[[Path], None], file_name: str) -> Callable[[Path], None]:
    """A setup copying the file `maker` writes (made once, in CACHE[0]) into the case."""
    def setup(folder: Path) -> None:
        source = CACHE[0] / file_name
        if not source.exists():
            maker(source)
            if not source.exists() and Path(f"{source}.npz").exists():
                Path(f"{source}.npz").rename(source)
        shutil.copyfile(source, folder / file_name)
    return setup


def npz_cases(g: dict[str, Path]) -> list[Case]:
    cases = []
    for name, (expect, maker) in _npz_variants().items():
        file_name = f"bad_{name}.npz"

        setup = cached(maker, file_name)
        for stage_name in ("train", "loglik", "sample", "contacts", "report", "mutations",
                           "score"):
            either = stage_name == "train" and name == "other_alphabet"  # q = 2 is valid
            cases.append(Case("npz", f"{stage_name} {name}",
                              stage(stage_name, g, data="{c}/" + file_name),
                              expect="either" if either else expect,
                              token=(file_name if name != "other_alphabet" else
                                     f"{file_name}|samples.fasta"),
                              setup=setup, check=outputs_valid, guard=[file_name]))
    return cases


def _archive_variants() -> dict[str, tuple[str, Callable[[Path], None]]]:
    def edit(action: Callable[[h5py.File], None]) -> Callable[[Path], None]:
        def make(p: Path) -> None:
            write_model(p)
            with h5py.File(p, "r+") as f:
                action(f)
        return make

    def flip(name: str, count: int) -> Callable[[Path], None]:
        def make(p: Path) -> None:
            write_model(p)
            with h5py.File(p, "r") as f:
                offset, size = f[name].id.get_offset(), f[name].id.get_storage_size()
            data = bytearray(p.read_bytes())
            for k in range(0, min(count * 4, size), 4):
                data[offset + k] ^= 0x21
            p.write_bytes(bytes(data))
        return make

    def truncate(fraction: float) -> Callable[[Path], None]:
        def make(p: Path) -> None:
            write_model(p)
            p.write_bytes(p.read_bytes()[: int(p.stat().st_size * fraction)])
        return make

    def replace(name: str, value: np.ndarray) -> Callable[[h5py.File], None]:
        def action(f: h5py.File) -> None:
            del f[name]
            f[name] = value
        return action

    def huge(hbias: int) -> Callable[[h5py.File], None]:
        def action(f: h5py.File) -> None:
            del f["update_2/params/weight_matrix"]
            f.create_dataset("update_2/params/weight_matrix", shape=(L, Q, 400_000),
                             dtype=np.float32, chunks=(1, Q, 4000))
            del f["update_2/params/hbias"]
            f["update_2/params/hbias"] = np.zeros(hbias, np.float32)
        return action

    def external(f: h5py.File) -> None:
        del f["update_2"]
        f["update_2"] = h5py.ExternalLink("/etc/hostname", "/x")

    variants: dict[str, tuple[str, Callable[[Path], None]]] = {
        "empty_file": ("error", lambda p: p.write_bytes(b"")),
        "not_hdf5": ("error", lambda p: p.write_bytes(b"\x89HDF\r\n" + b"x" * 5000)),
        "no_update_params": ("error", edit(lambda f: f.__delitem__("update_2/params"))),
        "no_weight_matrix": ("error", edit(lambda f: f.__delitem__(
            "update_2/params/weight_matrix"))),
        "no_hbias_first": ("error", edit(lambda f: f.__delitem__("update_1/params/hbias"))),
        "update_is_dataset": ("error", edit(lambda f: (f.__delitem__("update_2"),
                                                       f.__setitem__("update_2", 1.0)))),
        "huge_declared_consistent": ("error", edit(huge(400_000))),
        "huge_declared_inconsistent": ("error", edit(huge(5))),
        "vbias_wrong_shape": ("error", edit(replace("update_2/params/vbias",
                                                    np.zeros((L, Q + 1), np.float32)))),
        "weights_nan": ("error", edit(replace("update_2/params/weight_matrix",
                                              np.full((L, Q, NH), np.nan, np.float32)))),
        "weights_text": ("error", edit(replace("update_2/params/weight_matrix",
                                               np.array(["x"] * 3, dtype="S1")))),
        "model_type_other": ("error", edit(replace("model_type", np.array(b"BBRBM")))),
        "metadata_not_json": ("error", edit(lambda f: f["rbmflow"].attrs.__setitem__(
            "metadata_json", "{not json"))),
        "external_link": ("error", edit(external)),
        "chains_negative": ("either", edit(replace("parallel_chains",
                                                   np.full((13, L), -3.0, np.float32)))),
        "chains_nan": ("either", edit(replace("parallel_chains",
                                              np.full((13, L), np.nan, np.float32)))),
        "hyper_huge_hiddens": ("either", edit(replace("hyperparameters/num_hiddens",
                                                      np.array(10**12)))),
    }
    for count in (1, 7, 100):
        variants[f"flip_weights_{count}"] = ("error", flip("update_2/params/weight_matrix",
                                                           count))
        variants[f"flip_vbias_{count}"] = ("error", flip("update_2/params/vbias", count))
    variants["flip_hbias_1"] = ("error", flip("update_2/params/hbias", 1))
    for fraction in (0.1, 0.5, 0.9, 0.99):
        variants[f"truncated_{fraction}"] = ("error", truncate(fraction))
    return variants


def archive_cases(g: dict[str, Path]) -> list[Case]:
    cases = []
    for name, (expect, maker) in _archive_variants().items():
        file_name = f"bad_{name}.h5"

        setup = cached(maker, file_name)
        for stage_name in ("loglik", "sample", "contacts", "score", "mutations", "report"):
            if name.startswith("chains_") and stage_name != "contacts":
                continue
            argv = stage(stage_name, g, model="{c}/" + file_name)
            if name.startswith("chains_"):
                argv.remove("--alignment")
                argv.remove(g["data"])
            cases.append(Case("archive", f"{stage_name} {name}", argv, expect=expect,
                              token=file_name, setup=setup, check=outputs_valid,
                              guard=[file_name]))
    return cases


def option_cases(g: dict[str, Path]) -> list[Case]:
    specs = {  # stage: [(option, value)]
        "train": [("--hidden", "1000000000"), ("--updates", str(10**12)), ("--chains", "-1"),
                  ("--refresh-sweeps", str(10**12)), ("--refresh-every", str(10**12)),
                  ("--gibbs-steps", "0"), ("--learning-rate", "nan"), ("--learning-rate",
                                                                        "inf"),
                  ("--l2", "-1"), ("--checkpoints", "4.0"), ("--seed", str(2**64)),
                  ("--family", "F" * 300), ("--run-name", "R" * 300), ("--log-every", "0"),
                  ("--batch-size", str(10**12)), ("--lr-decay", "1e300")],
        "sample": [("--pt-levels", str(10**9)), ("--max-levels", str(10**9)),
                   ("--chains", str(10**12)), ("--sweeps", str(10**12)), ("--beta", "nan"),
                   ("--beta", "1e300"), ("--directions", str(10**9)),
                   ("--reference-chains", str(10**12)), ("--max-sweeps", str(10**15)),
                   ("--update", str(10**15)), ("--swap-floor", "5"), ("--rhat-max", "inf")],
        "loglik": [("--betas", str(10**12)), ("--chains", str(10**12)),
                   ("--repeats", str(10**9)), ("--checkpoint", "-5"), ("--tolerance", "nan"),
                   ("--exact-max-hiddens", "64"), ("--trajectory-steps", str(10**12))],
        "mutations": [("--first", str(10**30)), ("--first", "-" + str(10**30)),
                      ("--first", "1.5"), ("--min-coverage", "2"), ("--max-evalue", "nan")],
        "contacts": [("--backgrounds", str(10**12)), ("--seed", "-1"), ("--chain", "C" * 300)],
        "report": [("--triplets", str(10**12)), ("--nn-samples", str(10**12)),
                   ("--pca-components", str(10**9)), ("--seed", "-3")],
        "prepare": [("--identity", "nan"), ("--identity", "7"), ("--test-fraction", "1.5"),
                    ("--max-gap-fraction", "-0.1"), ("--seed", str(2**70))],
        "fetch": [("--deadline", "1e12"), ("--timeout", "inf"), ("--attempts", str(10**9)),
                  ("--min-rate", "-1"), ("--backoff", "1e9")],
    }
    cases = []
    for stage_name, options in specs.items():
        for option, value in options:
            argv = stage(stage_name, g)
            if option in argv:
                argv[argv.index(option) + 1] = value
            else:
                argv += [option, value]
            cases.append(Case("options", f"{stage_name} {option} {value[:12]}", argv,
                              token=option, check=outputs_valid))
    return cases


def inputs_cases(g: dict[str, Path]) -> list[Case]:
    """score, mutations and contacts given the wrong thing."""
    other = rows(5, 13, length=23)
    texts = {
        "seqs_wrong_length": fasta(other), "seqs_empty": "", "seqs_binary": "\0\1\2" * 99,
        "seqs_digits": ">a\n1234567\n", "seqs_headers_only": ">a\n>b\n",
        "seqs_all_ambiguous": fasta(["J" * L] * 3), "seqs_html": "<html>x</html>\n",
    }
    cases = []
    for name, text in texts.items():
        file_name = f"{name}.fasta"

        def setup(folder: Path, text: str = text, file_name: str = file_name) -> None:
            (folder / file_name).write_text(text, encoding="latin-1")

        for stage_name, key in (("score", "seqs"), ("mutations", "wt")):
            cases.append(Case("inputs", f"{stage_name} {name}",
                              stage(stage_name, g, **{key: "{c}/" + file_name}),
                              expect="either" if name == "seqs_all_ambiguous" else "error",
                              token=file_name + ("|wild type" if key == "wt" else ""),
                              setup=setup, check=outputs_valid, guard=[file_name]))
    for value, expect in (("ACDXZ", "either"), ("", "error"), ("12345", "error"),
                          ("A" * 100_000, "either"), ("ACDE\nFGH", "error")):
        argv = stage("mutations", g)
        argv[argv.index("--wildtype") + 1] = value
        cases.append(Case("inputs", f"mutations --wildtype {value[:10]!r}", argv, expect=expect,
                          token="wild", check=outputs_valid))
    loglik_texts = {"loglik_nan": '{"log_z": NaN}', "loglik_text": '{"log_z": "big"}',
                    "loglik_list": "[1, 2]", "loglik_binary": "\0\0\0",
                    "loglik_missing_key": '{"other": 1}'}
    for name, text in loglik_texts.items():
        file_name = f"{name}.json"

        def setup_json(folder: Path, text: str = text, file_name: str = file_name) -> None:
            (folder / file_name).write_text(text)

        argv = [*stage("score", g), "--loglik", "{c}/" + file_name]
        cases.append(Case("inputs", f"score --loglik {name}", argv, token=file_name,
                          setup=setup_json, guard=[file_name]))
    structures = {"structure_missing": None, "structure_binary": b"\xff\xfe\0" * 50,
                  "structure_bad_columns": b"1 999 0.5 4.0\n", "structure_text": b"hello\n",
                  "structure_nan": b"1 5 0.5 nan\n", "structure_pdb_garbage":
                  b"ATOM      1  CA  ALA A   1      xx.xxx\nEND\n"}
    for name, content in structures.items():
        file_name = f"{name}.pdb" if "pdb" in name else f"{name}.txt"

        def setup_structure(folder: Path, content=content, file_name: str = file_name) -> None:
            if content is not None:
                (folder / file_name).write_bytes(content)

        argv = [*stage("contacts", g), "--structure", "{c}/" + file_name]
        if "pdb" in name:
            argv += ["--chain", "A"]
        cases.append(Case("inputs", f"contacts {name}", argv, token=file_name,
                          setup=setup_structure))
    wrong_l = good_data(num=M)
    wrong = EncodedAlignment(np.zeros((M, L + 2), np.uint8), wrong_l.weights, wrong_l.split,
                             wrong_l.names, np.arange(L + 2), ALPHABET)
    for stage_name in ("contacts", "score", "mutations", "loglik", "sample", "report"):
        def setup_wrong(folder: Path) -> None:
            save_encoded(folder / "wrong_length.npz", wrong)

        cases.append(Case("inputs", f"{stage_name} data of another length",
                          stage(stage_name, g, data="{c}/wrong_length.npz"),
                          token="wrong_length.npz|samples.fasta", setup=setup_wrong))
    return cases


def server_cases(g: dict[str, Path], base_url: str) -> list[Case]:
    """fetch --source pfam against scripted replies of the loopback server (see
    `hostile_replies`)."""
    cases = []
    for index, (name, expect) in enumerate(HOSTILE):
        argv = ["fetch", "--family", "fam", "--source", "pfam", "--accession",
                f"PF{index:05d}", "--outdir", "{o}", "--base-url", base_url, "--attempts", 2,
                "--backoff", "0", "--timeout", "2", "--deadline", "6", "--min-rate", "200",
                "--min-rate-window", "1"]
        cases.append(Case("server", f"fetch {name}", argv, expect=expect,
                          token=f"PF{index:05d}" if expect == "error" else None,
                          check=outputs_valid, timeout=30))
    return cases


STOCKHOLM = ("# STOCKHOLM 1.0\n" + "".join(f"s{i}/1-11 {r}\n" for i, r in enumerate(rows(30, 21)))
             + "//\n").encode()
HOSTILE = [("ok", "ok"), ("ok_gzip", "ok"), ("404", "error"), ("410", "error"),
           ("500", "error"), ("503_retry_after", "error"), ("429", "error"), ("403", "error"),
           ("truncated", "error"), ("trickle", "error"), ("endless", "error"),
           ("gzip_bomb", "error"), ("html", "error"), ("json", "error"), ("empty_200", "error"),
           ("204", "error"), ("garbage", "error"), ("gzip_of_garbage", "error"),
           ("no_sequences", "error"), ("slow_answer", "error"), ("bad_gzip_encoding", "error"),
           ("header_drip", "error")]


def hostile_replies(server: object) -> None:
    from interpro_server import Reply

    bomb = gzip.compress(b"# STOCKHOLM 1.0\n" + b"A" * (200 << 20), 1)
    replies = {
        "ok": Reply(body=STOCKHOLM), "ok_gzip": Reply(body=gzip.compress(STOCKHOLM)),
        "404": Reply(status=404), "410": Reply(status=410), "500": Reply(status=500),
        "503_retry_after": Reply(status=503, headers={"Retry-After": "86400"}),
        "429": Reply(status=429), "403": Reply(status=403),
        "truncated": Reply(body=STOCKHOLM, announce_length=len(STOCKHOLM) * 3),
        "trickle": Reply(body=STOCKHOLM * 50, trickle_s=0.05),
        "endless": Reply(body=b"x" * 65536, endless=True),
        "gzip_bomb": Reply(body=bomb), "html": Reply(body=b"<html><body>busy</body></html>",
                                                     headers={"Content-Type": "text/html"}),
        "json": Reply(body=b'{"detail": "x"}', headers={"Content-Type": "application/json"}),
        "empty_200": Reply(body=b""), "204": Reply(status=204),
        "garbage": Reply(body=bytes(range(256)) * 100),
        "gzip_of_garbage": Reply(body=gzip.compress(bytes(range(256)) * 100)),
        "no_sequences": Reply(body=gzip.compress(b"# STOCKHOLM 1.0\n#=GF ID x\n//\n")),
        "slow_answer": Reply(body=STOCKHOLM, delay_s=5.0),
        "bad_gzip_encoding": Reply(body=b"not gzip at all", headers={"Content-Encoding":
                                                                     "gzip"}),
        "header_drip": Reply(body=STOCKHOLM * 200, trickle_s=0.5),
    }
    for index, (name, _) in enumerate(HOSTILE):
        path = f"/entry/pfam/PF{index:05d}/?annotation=alignment:full"
        server.script(path, *[replies[name]] * 3)


def environment_cases(g: dict[str, Path]) -> list[Case]:
    cases = []
    for stage_name in ("fetch", "prepare", "train", "loglik", "sample", "contacts", "score",
                       "mutations", "report"):
        for fault in ("read_only", "full_disk", "fsize_4k", "fsize_64k"):
            cases.append(Case("environment", f"{stage_name} {fault}", stage(stage_name, g),
                              expect="error" if "fsize" not in fault else "either",
                              token="out" if "fsize" not in fault else None,
                              fault=fault, check=outputs_valid))
    return cases


def kill_cases(g: dict[str, Path]) -> list[Case]:
    long = {
        "train": [*stage("train", g)[:-len(COMPUTE)], "--updates", "400", "--chains", "200",
                  "--gibbs-steps", "5", "--checkpoints", "20", *COMPUTE],
        "sample": [*stage("sample", g), "--sweeps", "3000", "--chains", "300", "--method",
                   "ptt", "--reference-chains", "100"],
        "report": stage("report", g),
        "loglik": [*stage("loglik", g)[:-len(COMPUTE)], "--method", "ais", "--betas", "20000",
                   *COMPUTE],
        "prepare": stage("prepare", g, fasta=g["fasta"]),
        "contacts": [*stage("contacts", g), "--method", "background", "--backgrounds", "53"],
    }
    cases = []
    for stage_name, argv in long.items():
        for delay in (0.3, 1.0, 2.0, 4.0):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                cases.append(Case("kill", f"{stage_name} {sig.name} after {delay} s", argv,
                                  expect="kill", kill=(delay, sig), check=outputs_valid))
    return cases


# -- running and judging ----------------------------------------------------------------------


def _resolve(argv: list, folder: Path) -> list[str]:
    out = []
    for item in argv:
        text = str(item)
        if text == "@target":
            text = (folder / "target").read_text()
        out.append(text.replace("{o}", str(folder / "out")).replace("{c}", str(folder)))
    return out


def _files(folder: Path) -> dict[str, str]:
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_file() and not path.is_symlink():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[rel] = "dir" if path.is_dir() else "link"
    return found


def _mount(folder: Path, options: str) -> bool:
    folder.mkdir(exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, check=False)
    return done.returncode == 0


def _child(argv: list[str], folder: Path, fault: str | None) -> None:
    """In the forked child: run the CLI with stdout/stderr to files; never returns."""
    code = 70
    try:
        os.chdir(folder)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            handle = os.open(folder / f".audit-{name}", os.O_WRONLY | os.O_CREAT, 0o644)
            os.dup2(handle, fd)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if fault and fault.startswith("fsize_"):
            size = {"fsize_4k": 4096, "fsize_64k": 65536}[fault]
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))
        memory = int(float(os.environ.get("AUDIT_MEMORY_GB", "12")) * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        torch.set_num_threads(1)
        code = cli_main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 (a traceback is a finding, printed for the judge)
        traceback.print_exc()
        code = 70
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_case(case: Case, folder: Path) -> dict:
    folder.mkdir(parents=True)
    if case.setup is not None:
        case.setup(folder)
    out = folder / "out"
    mounted = False
    if case.fault == "read_only":
        mounted = _mount(out, "ro,size=64k")
        if not mounted:
            out.chmod(0o555)
    elif case.fault == "full_disk":
        mounted = _mount(out, "size=64k")
        if not mounted:
            return {"verdict": "skipped", "why": "a full disk needs root (tmpfs)"}
        with open(out / "filler", "wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(b"\0" * 1024)
            except OSError:
                pass
    argv = _resolve(case.argv, folder)
    before = {k: v for k, v in _files(folder).items() if not k.startswith(".audit-")}
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(argv, folder, case.fault)
    status, killed = None, False
    while status is None:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = raw
            break
        elapsed = time.monotonic() - start
        if case.kill is not None and not killed and elapsed >= case.kill[0]:
            os.kill(pid, case.kill[1])
            killed = True
        if elapsed > min(case.timeout, float(os.environ.get("AUDIT_TIMEOUT", "inf"))):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            if mounted:
                subprocess.run(["umount", "-l", str(out)], check=False)
            return {"verdict": "FAIL", "why": f"hang: no end within {case.timeout:g} s",
                    "seconds": round(elapsed, 1)}
        time.sleep(0.01)
    seconds = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)
    text = ((folder / ".audit-stdout").read_text(errors="replace")
            + (folder / ".audit-stderr").read_text(errors="replace"))
    after = {k: v for k, v in _files(folder).items() if not k.startswith(".audit-")}
    if mounted:
        subprocess.run(["umount", "-l", str(out)], check=False)
    why = judge(case, code, text, before, after, folder, killed)
    return {"verdict": "FAIL" if why else "pass", "why": why, "exit": code,
            "seconds": round(seconds, 2),
            "error_line": next((x for x in text.splitlines() if "error:" in x), None)}


def judge(case: Case, code: int, text: str, before: dict, after: dict, folder: Path,
          killed: bool) -> str | None:
    """None if the case ended as it must, else why not."""
    changed = [k for k in case.guard if before.get(k) != after.get(k)]
    if changed:
        return f"input changed: {changed}"
    if "Traceback" in text:
        return "traceback: " + text.strip().splitlines()[-1][:200]
    new = sorted(set(after) - set(before))
    if case.expect == "kill":
        if code == 0:
            return None if not killed else outputs_valid(folder)
        visible = [k for k in new if not any(part.startswith(".") for part in Path(k).parts)
                   and after[k] != "dir"]
        if visible:
            problem = outputs_valid(folder)
            if problem is not None:
                return f"killed, left {visible[:4]}: {problem}"
        return None
    if code == 0:
        if case.expect == "error":
            return "exit 0 where an error was due"
        return outputs_valid(folder) if case.check is not None else None
    if case.expect == "ok":
        return f"exit {code} where a result was due: {text.strip()[-200:]}"
    errors = [line for line in text.splitlines() if "error:" in line]
    if len(errors) != 1:
        return f"{len(errors)} error lines: {text.strip()[-300:]}"
    tokens = case.token.split("|") if case.token is not None else []
    if tokens and not any(token in errors[0] for token in tokens):
        return f"the error line does not name {case.token!r}: {errors[0][:200]}"
    leftovers = [k for k in new if after[k] != "dir" or not _empty_dir(folder / k)]
    if case.fault in ("read_only", "full_disk"):
        leftovers = [k for k in leftovers if k != "out/filler"]
    if leftovers:
        return f"left behind: {leftovers[:5]}"
    return None


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def build_cases(g: dict[str, Path], base_url: str) -> list[Case]:
    return [*baseline_cases(g), *outin_cases(g), *alignment_cases(g), *npz_cases(g),
            *archive_cases(g), *option_cases(g), *inputs_cases(g), *server_cases(g, base_url),
            *environment_cases(g), *kill_cases(g)]


def preload() -> None:
    """Import every module of the package before forking: each case then runs the same code,
    even if files change during the audit, and starts faster."""
    import importlib
    import pkgutil

    import rbmflow
    from rbmflow.cli import build_parser

    build_parser()
    for module in pkgutil.walk_packages(rbmflow.__path__, "rbmflow."):
        if module.name != "rbmflow.__main__":
            importlib.import_module(module.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated classes to run")
    parser.add_argument("--list", action="store_true", help="list the cases and stop")
    parser.add_argument("--json", type=Path, help="write every case's outcome here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    from interpro_server import FakeInterPro

    preload()
    work = Path(tempfile.mkdtemp(prefix="rbmflow-audit-"))
    CACHE.append(work / "cache")
    CACHE[0].mkdir()
    with FakeInterPro() as server:
        hostile_replies(server)
        good = make_good(work / "good")
        cases = build_cases(good, server.base_url)
        only = {name for name in args.only.split(",") if name}
        cases = [case for case in cases if not only or case.klass in only]
        if args.list:
            for case in cases:
                print(f"{case.klass:12s} {case.expect:7s} {case.name}")
            print(f"{len(cases)} cases")
            return 0
        results = []
        for index, case in enumerate(cases):
            outcome = run_case(case, work / f"case{index:04d}")
            results.append({"class": case.klass, "case": case.name, "expect": case.expect,
                            **outcome})
            if outcome["verdict"] != "pass":
                print(f"{outcome['verdict']}: {case.klass}: {case.name}: {outcome['why']}",
                      flush=True)
    if not args.keep:
        subprocess.run(["umount", "-l", *map(str, work.glob("case*/out"))],
                       capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
    counts = Counter((r["class"], r["verdict"]) for r in results)
    print(f"{'class':12s} {'cases':>6s} {'pass':>6s} {'FAIL':>6s} {'skipped':>8s}")
    for klass in dict.fromkeys(r["class"] for r in results):
        total = sum(n for (k, _), n in counts.items() if k == klass)
        print(f"{klass:12s} {total:6d} {counts[(klass, 'pass')]:6d} "
              f"{counts[(klass, 'FAIL')]:6d} {counts[(klass, 'skipped')]:8d}")
    verdicts = Counter(r["verdict"] for r in results)
    print(f"{'all':12s} {len(results):6d} {verdicts['pass']:6d} {verdicts['FAIL']:6d} "
          f"{verdicts['skipped']:8d}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0 if verdicts["FAIL"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
