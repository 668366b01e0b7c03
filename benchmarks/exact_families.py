"""Real families with few hidden units, where the model's equilibrium is known exactly.

    python benchmarks/exact_families.py --outdir /tmp/exact [--families ww,PF00014,PF13354]
        [--hidden 12] [--updates 600] [--threads 1] [-- extra `rbmflow train` flags]

For each family, runs `rbmflow prepare` and `rbmflow train --hidden 12` (every other setting
at its default unless given after --), then, at the last checkpoint, compares three sets:
the weighted training sequences, 20,000 exact samples of the model (its 2^Nh hidden
configurations enumerated, `partition.sample_exact`) and the persistent chains stored in
model.h5:

- `ks`, `ks_critical`: the equilibrium monitor's test of the chains against the exact
  samples (largest two-sample KS distance along the top three singular directions of W,
  and its critical value at alpha = 1e-3);
- `quadrant_gap_exact`, `quadrant_gap_chains`: the largest difference, over the four
  quadrants of the data's top two principal components (weighted one-hot sequences, around
  the weighted mean), between the weighted data's occupancy and that of the exact samples,
  resp. of the chains;
- `test_loglik`: the exact mean log-likelihood of the test sequences (log Z enumerated).

Targets: KS under its critical value and quadrant_gap_exact <= 0.02. Writes
`exact_families.json` in the output directory and prints one line per family.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rbmflow.data.dataset import TEST, TRAIN, load_encoded
from rbmflow.data.fetch import locate_example
from rbmflow.model import archive
from rbmflow.model.partition import log_partition_exact, mean_log_likelihood, sample_exact
from rbmflow.model.rbm import one_hot
from rbmflow.sampling.equilibrium import compare_with_equilibrium

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pfam"
SOURCES = {"ww": None, "PF00014": DATA / "PF00014_mgap6.fasta.gz",
           "PF13354": DATA / "PF13354_wo_ref_seqs.fasta.gz"}


def rbmflow(*args: str) -> float:
    """Run one `rbmflow` sub-command with this interpreter; its wall time (s)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rbmflow", *args], check=True)
    return time.perf_counter() - started


def quadrant_occupancy(codes: torch.Tensor, weights: torch.Tensor | None, mean: torch.Tensor,
                       axes: torch.Tensor, num_states: int) -> np.ndarray:
    """Weighted occupancy of the four quadrants of the projections on `axes` (2, L q) around
    `mean` (L q,), (4,)."""
    x = one_hot(codes.long(), num_states, torch.float64).reshape(codes.shape[0], -1)
    proj = (x - mean) @ axes.T
    cell = (proj[:, 0] > 0).long() + 2 * (proj[:, 1] > 0).long()
    w = torch.ones(codes.shape[0], dtype=torch.float64) if weights is None else weights.double()
    return (torch.zeros(4, dtype=torch.float64).index_add_(0, cell, w) / w.sum()).numpy()


def principal_axes(codes: torch.Tensor, weights: torch.Tensor, num_states: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean (L q,) and top two principal axes (2, L q) of one-hot codes."""
    x = one_hot(codes.long(), num_states, torch.float64).reshape(codes.shape[0], -1)
    w = weights.double() / weights.double().sum()
    mean = w @ x
    centred = (x - mean) * w.sqrt()[:, None]
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return mean, vh[:2]


def analyse(out: Path, exact_samples: int) -> dict[str, float]:
    """The comparisons of the module docstring at the last checkpoint of out/model.h5."""
    data = load_encoded(out / "alignment.npz")
    train, test = data.subset(TRAIN), data.subset(TEST)
    model = archive.load_rbm(out / "model.h5").to(dtype=torch.float64)
    chains = archive.load_chains(out / "model.h5").long()
    exact = sample_exact(model, exact_samples, torch.Generator().manual_seed(1))
    verdict = compare_with_equilibrium(model, chains, exact, "exact")
    codes, weights = train.codes_tensor(), train.weights_tensor(dtype=torch.float64)
    mean, axes = principal_axes(codes, weights, data.num_states)
    occupancy = {name: quadrant_occupancy(c, w, mean, axes, data.num_states)
                 for name, (c, w) in {"data": (codes, weights), "exact": (exact, None),
                                      "chains": (chains, None)}.items()}
    log_z = log_partition_exact(model)
    return {
        "ks": max(verdict.ks), "ks_critical": verdict.critical,
        "quadrants_data": occupancy["data"].round(4).tolist(),
        "quadrants_exact": occupancy["exact"].round(4).tolist(),
        "quadrants_chains": occupancy["chains"].round(4).tolist(),
        "quadrant_gap_exact": float(np.abs(occupancy["exact"] - occupancy["data"]).max()),
        "quadrant_gap_chains": float(np.abs(occupancy["chains"] - occupancy["data"]).max()),
        "test_loglik": mean_log_likelihood(model, test.codes_tensor(), log_z,
                                           test.weights_tensor(dtype=torch.float64)),
        "training_chains": archive.read_metadata(out / "model.h5").get("training_chains"),
    }


def run_family(name: str, args: argparse.Namespace) -> dict:
    """prepare, train and analyse one family in args.outdir / name."""
    out = args.outdir / name
    out.mkdir(parents=True, exist_ok=True)
    source = SOURCES[name] or locate_example("example:ww")[0]
    timing = {}
    if not (out / "alignment.npz").exists():
        timing["prepare"] = rbmflow("prepare", str(source), "--out", str(out / "alignment.npz"),
                                    "--summary", str(out / "summary.json"),
                                    "--threads", str(args.threads))
    timing["train"] = rbmflow("train", str(out / "alignment.npz"), "--out",
                              str(out / "model.h5"), "--log", str(out / "train_log.csv"),
                              "--hidden", str(args.hidden), "--updates", str(args.updates),
                              "--threads", str(args.threads), "--restart", *args.train_flags)
    return {"family": name, **analyse(out, args.exact_samples), "timing_s": timing,
            "train_flags": args.train_flags}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outdir", type=Path, required=True)
    parser.add_argument("--families", default="ww,PF00014,PF13354")
    parser.add_argument("--hidden", type=int, default=12)
    parser.add_argument("--updates", type=int, default=600)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--exact-samples", type=int, default=20000)
    parser.add_argument("train_flags", nargs="*", help="extra `rbmflow train` flags (after --)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for name in args.families.split(","):
        row = run_family(name, args)
        results.append(row)
        print(f"{name}: KS {row['ks']:.3f} (critical {row['ks_critical']:.3f}), quadrant gap "
              f"exact {row['quadrant_gap_exact']:.3f}, chains {row['quadrant_gap_chains']:.3f}, "
              f"test log-likelihood {row['test_loglik']:.2f}, train "
              f"{row['timing_s']['train']:.0f} s", flush=True)
    (args.outdir / "exact_families.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
