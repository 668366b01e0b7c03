"""Run the tiny study (.test/config.yaml) at two git revisions and compare every artifact.

    python benchmarks/same_artifacts.py BEFORE [AFTER]      (AFTER: the working tree)

Each revision is checked out into a temporary worktree and run end to end by its own
Snakefile with its own package on PYTHONPATH, same seeds, one core. Then every file under
results/ is compared: FASTA, CSV (less the wall-clock columns), JSON (less times, dates,
the git commit and package versions), NPZ array by array, HDF5 dataset by dataset and
attribute by attribute (the metadata JSON less the same volatile keys). PNG figures and
report.html are compared byte for byte after dropping their creation dates. Exits 1 and
lists the files that differ; 0 when every artifact of both runs is the same.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VOLATILE_KEYS = {
    "time", "created", "git_commit", "commit", "seconds", "versions", "timing",
    "sweeps_per_s", "hostname", "sha256", "torch_rng_state", "numpy_rng_arg1",
    "numpy_rng_arg2", "numpy_rng_arg3", "numpy_rng_arg4",
}
"""Wall-clock times, dates, the commit, and the sha256 of inputs that hold those."""
WALL_CLOCK_FIGURES = {"training.png"}
"""Figures that plot a wall-clock column (train_log.csv's time_s), compared by name only."""
VOLATILE_TEXT = re.compile(  # dates, sha256 and the git commit in report.html
    rb"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}[^\"&<\s]*|\b[0-9a-f]{64}\b|_s&quot;: [0-9.e+-]+"
    rb"|git_commit&quot;: &quot;[0-9a-f]{40}")
EMBEDDED_IMAGE = re.compile(rb"data:image/png;base64,[A-Za-z0-9+/=]+")


def volatile(key: str) -> bool:
    return key in VOLATILE_KEYS or key.endswith("_s")


def run_tiny(checkout: Path, workdir: Path) -> Path:
    """Run the tiny study of `checkout` in `workdir`; return its results folder."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(checkout / "workflow"), PYTHONHASHSEED="0",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(checkout / "Snakefile"),
           "--directory", str(workdir), "--cores", "1", "--workflow-profile", "none",
           f"--configfile={checkout / '.test/config.yaml'}"]
    (workdir / ".test").mkdir(exist_ok=True)
    for item in (checkout / ".test").iterdir():
        target = workdir / ".test" / item.name
        if not target.exists():
            target.symlink_to(item)
    done = subprocess.run(cmd, env=env, cwd=workdir, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"the tiny study failed in {checkout}:\n{done.stderr[-4000:]}")
    return workdir / "results"


def scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if not volatile(k)}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return VOLATILE_TEXT.sub(b"<t>", value.encode()).decode()
    return value


def json_text(text: str) -> Any:
    try:
        return scrub(json.loads(text))
    except ValueError:
        if "," in text.partition("\n")[0]:
            return csv_rows(text)
        return VOLATILE_TEXT.sub(b"<t>", text.encode())


def csv_rows(text: str) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(text)))
    return [{k: v for k, v in r.items() if not volatile(k)} for r in rows]


def h5_items(path: Path) -> dict[str, Any]:
    items: dict[str, Any] = {}

    def attrs(name: str, obj: Any) -> None:
        for key, value in obj.attrs.items():
            if isinstance(value, bytes | str):
                text = value.decode() if isinstance(value, bytes) else value
                items[f"{name}@{key}"] = json_text(text)
            elif not volatile(key):
                items[f"{name}@{key}"] = np.asarray(value).tolist()

    def visit(name: str, obj: Any) -> None:
        attrs(name, obj)
        if isinstance(obj, h5py.Dataset) and not volatile(name.split("/")[-1]):
            data = obj[()]
            if isinstance(data, bytes | str):
                items[name] = json_text(data.decode() if isinstance(data, bytes) else data)
            else:
                items[name] = np.asarray(data).tobytes()

    with h5py.File(path, "r") as f:
        attrs("/", f)
        f.visititems(visit)
    return items


def same(a: Path, b: Path) -> bool:
    suffix = a.suffix
    if suffix == ".json":
        return json_text(a.read_text()) == json_text(b.read_text())
    if suffix == ".csv":
        return csv_rows(a.read_text()) == csv_rows(b.read_text())
    if suffix == ".npz":
        with np.load(a, allow_pickle=False) as x, np.load(b, allow_pickle=False) as y:
            return sorted(x.files) == sorted(y.files) and all(
                npz_value(x[k]) == npz_value(y[k]) for k in x.files)
    if suffix == ".h5":
        return h5_items(a) == h5_items(b)
    if a.name in WALL_CLOCK_FIGURES:
        return True
    text_a, text_b = (EMBEDDED_IMAGE.sub(b"", VOLATILE_TEXT.sub(b"", p.read_bytes()))
                      for p in (a, b))
    return text_a == text_b


def npz_value(array: np.ndarray) -> Any:
    if array.dtype.kind == "U" and array.ndim == 0:
        return json_text(str(array))
    return (array.dtype.str, array.shape, array.tobytes())


def compare(before: Path, after: Path) -> list[str]:
    names_a = {p.relative_to(before) for p in before.rglob("*") if p.is_file()}
    names_b = {p.relative_to(after) for p in after.rglob("*") if p.is_file()}
    problems = [f"only before: {n}" for n in sorted(names_a - names_b)]
    problems += [f"only after: {n}" for n in sorted(names_b - names_a)]
    for name in sorted(names_a & names_b):
        if not same(before / name, after / name):
            problems.append(f"differs: {name}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="git revision run first")
    parser.add_argument("after", nargs="?", help="git revision (default: the working tree)")
    parser.add_argument("--keep", type=Path,
                        help="run here and keep the runs (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="same-artifacts-") as tmp:
        tmp_path = args.keep or Path(tmp)
        results = []
        for label, rev in (("before", args.before), ("after", args.after)):
            if rev is None:
                checkout = ROOT
            else:
                checkout = tmp_path / f"src-{label}"
                subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                                str(checkout), rev], check=True)
            try:
                results.append(run_tiny(checkout, tmp_path / f"run-{label}"))
            finally:
                if rev is not None:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                    str(checkout)], check=False)
        problems = compare(*results)
        files = sum(1 for p in results[0].rglob("*") if p.is_file())
    for line in problems:
        print(line)
    print(f"{files} artifacts compared, {len(problems)} differ")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
