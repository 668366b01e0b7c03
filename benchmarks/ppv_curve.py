"""PPV at L/5, L/2, L, 2L (8 Å) of the checkpoints of one training run, against training time.

    python benchmarks/ppv_curve.py RUN.h5 alignment.npz STRUCTURE [--updates 52,105,212]

RUN.h5 is a finished archive, or the name of an interrupted run whose checkpoints are still
in `.RUN.h5.partial/` (a run stopped by `timeout` keeps its pieces). Each checkpoint's
couplings are those of `rbmflow contacts` (gaussian, the weighted training sequences as
backgrounds); `train_s` is the checkpoint's training time in seconds (`time_s` of the log,
observers excluded). Prints CSV rows, then the run's train_log.csv (test Pearson C_ij of the
persistent chains at its rows). One thread.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import h5py
import torch
from rbmflow.data.dataset import TRAIN, load_encoded
from rbmflow.evaluation.contacts import ppv_summary, predict_contacts, read_structure
from rbmflow.model import archive


def checkpoint_files(run: Path) -> dict[int, Path]:
    """update -> file holding it: the archive, else the pieces of an interrupted run."""
    if run.is_file():
        return dict.fromkeys(archive.list_updates(run), run)
    return dict(archive.list_pieces(run.with_name(f".{run.name}.partial")))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("alignment", type=Path)
    p.add_argument("structure", type=Path, help="distance table (i j score distance)")
    p.add_argument("--updates", help="comma-separated checkpoints (default: all)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    full = load_encoded(args.alignment)
    data = full.subset(TRAIN)
    backgrounds = data.codes_tensor("cpu")
    weights = data.weights_tensor("cpu", torch.float64)
    structure = read_structure(args.structure, data.length, None, full)
    files = checkpoint_files(args.run)
    if not files:
        raise SystemExit(f"{args.run}: no checkpoint")
    wanted = None if args.updates is None else {int(u) for u in args.updates.split(",")}
    out = csv.writer(sys.stdout)
    out.writerow(["update", "train_s", "ppv_L5", "ppv_L2", "ppv_L", "ppv_2L"])
    for update in sorted(u for u in files if wanted is None or u in wanted):
        with h5py.File(files[update], "r") as f:
            train_s = float(f[f"update_{update}/time"][()])
        model = archive.load_rbm(files[update], update, dtype=torch.float64)
        result = predict_contacts(model, backgrounds, weights, "gaussian")
        ppv = ppv_summary(result.scores, structure)["ppv_8A"]
        out.writerow([update, f"{train_s:.1f}",
                      *(f"{ppv[k]:.3f}" for k in ("L/5", "L/2", "L", "2L"))])
        sys.stdout.flush()
    with h5py.File(files[max(files)], "r") as f:
        if "rbmflow/train_log" in f:
            print(f["rbmflow/train_log"][()].decode())


if __name__ == "__main__":
    main()
