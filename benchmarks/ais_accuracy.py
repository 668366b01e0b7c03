"""Accuracy and cost of the log Z estimators with the stage's default settings.

Two measurements:

    python benchmarks/ais_accuracy.py random [--models 10] [--threads 2]
        Random structured RBMs (Nh = 16, L = 20, q = 21; `synthetic.random_structured_rbm`,
        coupling 3, several modes): forward AIS from the base fitted to exact samples of the
        model vs exact enumeration. Goal: |AIS - exact| <= 0.05 nats for every model, under
        a minute each.

    python benchmarks/ais_accuracy.py trained MODEL.h5 ALIGNMENT.npz [--runs 5]
        A trained model (Nh too large to enumerate): `runs` forward AIS runs with different
        seeds (goal: spread <= 0.1 nats), then reverse and trajectory AIS (goal: all three
        within 0.2 nats).

Each prints one line per estimate and writes a JSON summary (--out).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from rbmflow.data import synthetic
from rbmflow.data.dataset import TRAIN, load_encoded
from rbmflow.evaluation.loglik import Checkpoint, LoglikSettings, model_samples
from rbmflow.model import archive
from rbmflow.model import partition as P


def random_models(args: argparse.Namespace) -> dict:
    s = LoglikSettings()
    rows = []
    for index in range(args.models):
        g = torch.Generator().manual_seed(1000 + index)
        model = synthetic.random_structured_rbm(20, 21, 16, coupling=3.0, activation=0.25,
                                                generator=g)
        exact = P.log_partition_exact(model)
        data = P.sample_exact(model, 5000, g)
        base = P.IndependentSites.from_codes(data, 21, pseudocount=s.pseudocount)
        inputs = model.hidden_inputs(data)
        modes = int(((torch.bincount(inputs.argmax(1)[(inputs > 0).any(1)], minlength=16)
                      / data.shape[0]) > 0.02).sum())
        started = time.perf_counter()
        result = P.ais_log_partition(model.to(dtype=torch.float32), base, s.chains, s.betas,
                                     s.schedule, s.sweeps, s.repeats, g)
        seconds = time.perf_counter() - started
        row = {"model": index, "exact": exact, "ais": result.log_z, "error": result.log_z - exact,
               "std": result.log_z_std, "ess_fraction": result.ess_fraction,
               "modes_over_2pct": modes, "time_s": seconds}
        rows.append(row)
        print(f"model {index}: exact {exact:.4f} ais {result.log_z:.4f} error "
              f"{row['error']:+.4f} std {result.log_z_std:.4f} ess {result.ess_fraction:.3f} "
              f"modes {modes} time {seconds:.1f} s", flush=True)
    worst = max(abs(r["error"]) for r in rows)
    slowest = max(r["time_s"] for r in rows)
    print(f"worst |error| {worst:.4f} nats (goal 0.05), slowest {slowest:.1f} s (goal 60)")
    return {"settings": {"betas": s.betas, "chains": s.chains, "schedule": s.schedule},
            "rows": rows, "worst_abs_error": worst, "slowest_s": slowest,
            "passed": worst <= 0.05 and slowest <= 60}


def trained_model(args: argparse.Namespace) -> dict:
    s = LoglikSettings()
    data = load_encoded(args.alignment)
    train = data.subset(TRAIN)
    codes, weights = train.codes_tensor(), train.weights_tensor(dtype=torch.float64)
    base = P.IndependentSites.from_codes(codes, data.num_states, weights, s.pseudocount)
    model = archive.load_rbm(args.model)
    out: dict = {"model": str(args.model), "num_hiddens": model.num_hiddens,
                 "settings": {"betas": s.betas, "chains": s.chains, "schedule": s.schedule,
                              "trajectory_steps": s.trajectory_steps}}
    forward = []
    for run in range(args.runs):
        g = torch.Generator().manual_seed(run)
        r = P.ais_log_partition(model, base, s.chains, s.betas, s.schedule, s.sweeps, 1, g)
        forward.append({"seed": run, "log_z": r.log_z, "std": r.log_z_std,
                        "ess_fraction": r.ess_fraction, "time_s": r.time_s})
        print(f"forward seed {run}: {r.log_z:.4f} +- {r.log_z_std:.4f} ess "
              f"{r.ess_fraction:.3f} time {r.time_s:.1f} s", flush=True)
    values = [f["log_z"] for f in forward]
    out["forward"] = forward
    out["forward_spread"] = max(values) - min(values)
    g = torch.Generator().manual_seed(100)
    started = time.perf_counter()
    samples, how = model_samples(model, codes, weights, s.chains, s.equilibration_sweeps, g,
                                 s.exact_max_hiddens)
    r = P.reverse_ais_log_partition(model, base, samples, s.betas, s.schedule, s.sweeps, 1, g)
    out["reverse"] = {"log_z": r.log_z, "std": r.log_z_std, "ess_fraction": r.ess_fraction,
                      "samples": how, "time_s": time.perf_counter() - started}
    print(f"reverse: {r.log_z:.4f} +- {r.log_z_std:.4f} ess {r.ess_fraction:.3f} time "
          f"{out['reverse']['time_s']:.1f} s ({how})", flush=True)
    checkpoints = [Checkpoint(u, archive.load_rbm(args.model, u))
                   for u in archive.list_updates(args.model)]
    t = P.trajectory_ais([c.model for c in checkpoints], base, s.chains, s.trajectory_steps,
                         s.trajectory_betas, s.schedule, s.sweeps, 1, codes, weights, g)
    out["trajectory"] = {"log_z": t.log_z[-1], "std": t.log_z_std[-1],
                         "ess_fraction": t.ess[-1] / s.chains, "time_s": t.time_s,
                         "checkpoints": len(checkpoints)}
    print(f"trajectory ({len(checkpoints)} checkpoints): {t.log_z[-1]:.4f} +- "
          f"{t.log_z_std[-1]:.4f} ess {t.ess[-1] / s.chains:.3f} time {t.time_s:.1f} s",
          flush=True)
    three = [sum(values) / len(values), out["reverse"]["log_z"], out["trajectory"]["log_z"]]
    out["forward_reverse_trajectory_spread"] = max(three) - min(three)
    print(f"forward spread over {args.runs} runs {out['forward_spread']:.4f} nats (goal 0.1); "
          f"forward/reverse/trajectory spread {out['forward_reverse_trajectory_spread']:.4f} "
          "nats (goal 0.2)")
    out["passed"] = out["forward_spread"] <= 0.1 and out["forward_reverse_trajectory_spread"] <= 0.2
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="JSON summary to write")
    sub = parser.add_subparsers(dest="mode", required=True)
    rnd = sub.add_parser("random")
    rnd.add_argument("--models", type=int, default=10)
    trn = sub.add_parser("trained")
    trn.add_argument("model", type=Path)
    trn.add_argument("alignment", type=Path)
    trn.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    summary = random_models(args) if args.mode == "random" else trained_model(args)
    summary["threads"] = args.threads
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return 0 if summary["passed"] and all(
        math.isfinite(v) for v in (summary.get("worst_abs_error", 0.0),)) else 1


if __name__ == "__main__":
    sys.exit(main())
