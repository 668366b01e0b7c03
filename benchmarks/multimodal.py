"""Training at equilibrium across modes: a synthetic family of well-separated subfamilies.

    python benchmarks/multimodal.py --outdir /tmp/mm [--shares 0.6,0.3,0.1] [--length 40]
        [--sequences 4000] [--hidden 12] [--updates 1500] [--threads 1] [--sample]
        [-- extra `rbmflow train` flags]

Writes the family (`multimodal.fasta`: random consensus sequences, 12 % random
substitutions, `rbmflow.data.synthetic.multimodal_family`), runs `rbmflow prepare` and
`rbmflow train` on it, then compares, cluster by cluster (each sequence assigned to its
nearest consensus):

- the weighted shares of the train split (what maximum likelihood should reproduce);
- the trained model's exact cluster weights, from exact samples (`partition.sample_exact`:
  the 2^Nh hidden states enumerated) at every checkpoint;
- the persistent chains' shares at the end of training;
- with --sample, the shares of `rbmflow sample`'s sequences;
- the swap acceptance between neighbouring checkpoints (exact samples of each), what
  tempering over the checkpoints would see.

Goal: exact weights within 0.05 of the weighted train shares. Prints one line per checkpoint
and writes `multimodal.json` in the output directory.
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
from rbmflow.data.alignment import encode_alignment, read_alignment
from rbmflow.data.dataset import TRAIN, load_encoded
from rbmflow.data.synthetic import cluster_shares, multimodal_family, nearest_consensus
from rbmflow.model import archive
from rbmflow.model.partition import sample_exact
from rbmflow.sampling.equilibrium import estimated_swap_rate


def rbmflow(*args: str) -> float:
    """Run one `rbmflow` sub-command with this interpreter; returns its wall time (s)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rbmflow", *args], check=True)
    return time.perf_counter() - started


def train_and_prepare(args: argparse.Namespace, out: Path) -> dict[str, float]:
    """Run `rbmflow prepare` and `rbmflow train` on out/multimodal.fasta; wall times (s)."""
    timing = {"prepare": rbmflow("prepare", str(out / "multimodal.fasta"),
                                 "--out", str(out / "alignment.npz"),
                                 "--summary", str(out / "summary.json"),
                                 "--threads", str(args.threads))}
    timing["train"] = rbmflow("train", str(out / "alignment.npz"), "--out", str(out / "model.h5"),
                              "--log", str(out / "train_log.csv"), "--hidden", str(args.hidden),
                              "--updates", str(args.updates), "--threads", str(args.threads),
                              "--restart", *args.train_flags)
    return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outdir", type=Path, required=True)
    parser.add_argument("--shares", default="0.6,0.3,0.1")
    parser.add_argument("--length", type=int, default=40)
    parser.add_argument("--sequences", type=int, default=4000)
    parser.add_argument("--substitution-rate", type=float, default=0.12)
    parser.add_argument("--hidden", type=int, default=12)
    parser.add_argument("--updates", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="seed of the family")
    parser.add_argument("--exact-samples", type=int, default=20000)
    parser.add_argument("--sample", action="store_true", help="also run `rbmflow sample`")
    parser.add_argument("--analyse-only", action="store_true",
                        help="reuse the outdir's alignment and model.h5 (no prepare, train)")
    parser.add_argument("train_flags", nargs="*", help="extra `rbmflow train` flags (after --)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.outdir
    out.mkdir(parents=True, exist_ok=True)
    shares = tuple(float(s) for s in args.shares.split(","))
    family = multimodal_family(args.sequences, args.length, 21, shares,
                               args.substitution_rate, seed=args.seed)
    k = len(shares)
    timing: dict[str, float] = {}
    if not args.analyse_only:
        (out / "multimodal.fasta").write_text(family.fasta())
        timing.update(train_and_prepare(args, out))
    train = load_encoded(out / "alignment.npz").subset(TRAIN)
    train_shares = cluster_shares(nearest_consensus(train.codes, family.consensus), k,
                                  train.weights)
    raw_shares = cluster_shares(nearest_consensus(train.codes, family.consensus), k)
    print(f"train shares: raw {np.round(raw_shares, 3)}, weighted {np.round(train_shares, 3)}")
    g = torch.Generator().manual_seed(1)
    trajectory = []
    previous = None
    for update in archive.list_updates(out / "model.h5"):
        model = archive.load_rbm(out / "model.h5", update)
        samples = sample_exact(model, args.exact_samples, g)
        exact = cluster_shares(nearest_consensus(samples, family.consensus), k)
        swap = (float("nan") if previous is None else
                estimated_swap_rate(previous[0], previous[1], model, samples))
        previous = (model, samples)
        trajectory.append({"update": update, "exact": exact.tolist(), "swap_rate": swap})
        print(f"update {update:5d}: exact cluster weights {np.round(exact, 3)}, swap rate with "
              f"the previous checkpoint {swap:.3f}", flush=True)
    rates = [row["swap_rate"] for row in trajectory[1:]]
    chains = archive.load_chains(out / "model.h5")
    chain_shares = cluster_shares(nearest_consensus(chains, family.consensus), k)
    final = np.array(trajectory[-1]["exact"])
    result = {
        "shares_raw": raw_shares.tolist(), "shares_weighted": train_shares.tolist(),
        "exact_final": final.tolist(), "chains_final": chain_shares.tolist(),
        "max_gap_exact_vs_weighted": float(np.abs(final - train_shares).max()),
        "max_gap_chains_vs_weighted": float(np.abs(chain_shares - train_shares).max()),
        "checkpoints": len(trajectory), "min_swap_rate": min(rates) if rates else None,
        "trajectory": trajectory, "timing_s": timing, "train_flags": args.train_flags,
        "settings": {key: value for key, value in vars(args).items() if key != "outdir"},
    }
    if args.sample:
        timing["sample"] = rbmflow("sample", str(out / "model.h5"), str(out / "alignment.npz"),
                                   "--out", str(out / "samples.fasta"),
                                   "--info", str(out / "sampling.json"),
                                   "--threads", str(args.threads))
        sampled = encode_alignment(read_alignment(out / "samples.fasta")).codes
        sample_shares = cluster_shares(nearest_consensus(sampled, family.consensus), k)
        result["sample_shares"] = sample_shares.tolist()
        result["max_gap_sample_vs_exact"] = float(np.abs(sample_shares - final).max())
        print(f"sample stage: {np.round(sample_shares, 3)}")
    print(f"final: exact {np.round(final, 3)} vs weighted shares {np.round(train_shares, 3)} "
          f"(max gap {result['max_gap_exact_vs_weighted']:.3f}); persistent chains "
          f"{np.round(chain_shares, 3)}; train {timing.get('train', float('nan')):.0f} s; "
          f"{len(trajectory)} "
          f"checkpoints, smallest swap rate between neighbours {result['min_swap_rate']:.3f}")
    (out / "multimodal.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
