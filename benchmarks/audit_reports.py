"""Compare two default runs of one family, field by field: metrics.json, its warnings, the
log-likelihood and sampling side files, the trained parameters, alignment.npz's array layout
and the exported couplings.

    python benchmarks/audit_reports.py BEFORE/results AFTER/results FAMILY [--run default]
        [--exports BEFORE.npz AFTER.npz]

BEFORE and AFTER are the results folders of two `snakemake` runs (e.g. of two revisions).
Prints one line per number that differs (before, after, difference), then the fields present
on one side only; nested values are flattened with dots. `--exports` compares two couplings
files written by `rbmflow contacts --export-npz` (J and the fields h, each with its largest
absolute difference). Nothing is written.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np

SKIPPED = ("provenance", "timing", "time_s", "settings", "figures", "created", "samples",
           "model", "data")
"""Fields that record where and when, not what: left out of the comparison."""


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted.key: leaf} of a JSON document (lists of numbers kept whole)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in SKIPPED:
                continue
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def differs(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return not (a == b or (math.isnan(a) and math.isnan(b)))
    return a != b


def compare_json(label: str, before: Path, after: Path) -> None:
    """Print every field of two JSON files that differs, and those on one side only."""
    if not before.exists() or not after.exists():
        print(f"{label}: only {'after' if after.exists() else 'before'}")
        return
    a, b = (flatten(json.loads(p.read_text())) for p in (before, after))
    print(f"== {label}")
    for key in a.keys() & b.keys():
        if differs(a[key], b[key]):
            delta = (f"  ({b[key] - a[key]:+.4g})" if isinstance(a[key], int | float)
                     and isinstance(b[key], int | float) and not isinstance(a[key], bool)
                     else "")
            print(f"  {key}: {str(a[key])[:300]} -> {str(b[key])[:300]}{delta}")
    for key in sorted(a.keys() - b.keys()):
        print(f"  only before: {key} = {str(a[key])[:200]}")
    for key in sorted(b.keys() - a.keys()):
        print(f"  only after: {key} = {str(b[key])[:200]}")


def last_params(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """(name, arrays) of the last checkpoint's parameters in model.h5."""
    with h5py.File(path, "r") as f:
        name = max((k for k in f if k.startswith("update_")), key=lambda k: int(k[7:]))
        return name, {k: f[f"{name}/params/{k}"][()] for k in f[f"{name}/params"]}


def compare_models(before: Path, after: Path) -> None:
    (name_a, a), (name_b, b) = last_params(before), last_params(after)
    print(f"== model.h5: last checkpoint {name_a} / {name_b}")
    for key in sorted(a.keys() | b.keys()):
        if key not in a or key not in b or a[key].shape != b[key].shape:
            print(f"  {key}: only on one side or shapes differ")
            continue
        gap = float(np.abs(a[key].astype(np.float64) - b[key]).max()) if a[key].size else 0.0
        print(f"  {key}: {'identical' if gap == 0 else f'max |difference| {gap:.3g}'}")


def npz_layout(path: Path) -> dict[str, str]:
    with np.load(path, allow_pickle=False) as z:
        return {k: f"{z[k].dtype.str}{list(z[k].shape)}" for k in z.files}


def compare_npz(label: str, before: Path, after: Path) -> None:
    a, b = npz_layout(before), npz_layout(after)
    print(f"== {label} layout")
    for key in sorted(a.keys() | b.keys()):
        if a.get(key) != b.get(key):
            print(f"  {key}: {a.get(key)} -> {b.get(key)}")


def compare_exports(before: Path, after: Path) -> None:
    compare_npz("couplings export", before, after)
    with np.load(before) as a, np.load(after) as b:
        for key in ("couplings", "fields", "scores"):
            if key in a.files and key in b.files:
                gap = float(np.abs(a[key].astype(np.float64) - b[key]).max())
                print(f"  {key}: max |after - before| {gap:.4g}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("family")
    parser.add_argument("--run", default="default")
    parser.add_argument("--exports", type=Path, nargs=2, default=None)
    args = parser.parse_args(argv)
    run_a, run_b = (p / args.family / args.run for p in (args.before, args.after))
    for name in ("report/metrics.json", "loglik.json", "sampling.json"):
        compare_json(name, run_a / name, run_b / name)
    data_a, data_b = (p / args.family / "data" for p in (args.before, args.after))
    compare_json("data/summary.json", data_a / "summary.json", data_b / "summary.json")
    compare_npz("alignment.npz", data_a / "alignment.npz", data_b / "alignment.npz")
    compare_models(run_a / "model.h5", run_b / "model.h5")
    for side, folder in (("before", run_a), ("after", run_b)):
        warnings = json.loads((folder / "report/metrics.json").read_text()).get("warnings")
        print(f"== warnings {side}: {json.dumps(warnings, indent=1)}")
    if args.exports:
        compare_exports(*args.exports)
    return 0


if __name__ == "__main__":
    sys.exit(main())
