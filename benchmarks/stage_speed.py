"""The sample, loglik and contacts stages of two revisions side by side, on one model.

    .venv/bin/python benchmarks/stage_speed.py --base ../rbmflow-main/workflow \\
        --model results/WW/default/model.h5 --data results/WW/data/alignment.npz \\
        --outdir /tmp/speed [--stages sample,loglik,contacts] [--threads 2] \\
        [--structure PF13354_struct.dat] [--multimodal]

Runs `python -m rbmflow STAGE` with the package of `--base` (another checkout's workflow/
folder) and with this checkout's, one after the other for each stage, with the default
settings of config.yaml, and reports per stage: wall and CPU seconds of each (the CPU time
of the child process, which a loaded machine inflates less than the wall time), their ratio,
and what the stage concluded (sample: equilibrated, sweeps, the plain-Gibbs comparison;
loglik: log Z with its error and method; contacts: PPV at L with --structure). With
--multimodal (a model of at most 16 hidden units trained on the default family of
benchmarks/multimodal.py), the samples' cluster weights are compared with the model's exact
ones. Writes stage_speed.json in --outdir.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1] / "workflow"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=Path, required=True, help="the other revision's workflow/")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--outdir", type=Path, required=True)
    p.add_argument("--stages", default="sample,loglik")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--structure", type=Path, default=None, help="contacts: distance table")
    p.add_argument("--multimodal", action="store_true",
                   help="the model is trained on benchmarks/multimodal.py's default family: "
                        "compare the samples' cluster weights with the exact ones")
    return p.parse_args(argv)


def run_stage(package: Path, stage: str, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    """One stage with one revision's package; wall and CPU seconds and its outputs."""
    out = args.outdir / tag
    out.mkdir(parents=True, exist_ok=True)
    common = ["--threads", str(args.threads)]
    if stage == "sample":
        cmd = ["sample", str(args.model), str(args.data), "--out", str(out / "samples.fasta"),
               "--info", str(out / "sampling.json")]
    elif stage == "loglik":
        cmd = ["loglik", str(args.model), str(args.data), "--out", str(out / "loglik.json"),
               "--trajectory-csv", str(out / "trajectory.csv")]
    else:
        cmd = ["contacts", str(args.model), "--alignment", str(args.data), "--out",
               str(out / "contacts.csv")]
        if args.structure is not None:
            cmd += ["--structure", str(args.structure), "--ppv-json", str(out / "ppv.json")]
    env = dict(os.environ, PYTHONPATH=str(package), OMP_NUM_THREADS="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rbmflow", *cmd, *common], check=True, env=env,
                   stderr=open(out / f"{stage}.log", "w"))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, **outcome(stage, out, args)}


def outcome(stage: str, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """What a stage concluded, from its outputs."""
    if stage == "sample":
        info = json.loads((out / "sampling.json").read_text())
        result = {"equilibrated": info.get("equilibrated"), "sweeps": info.get("sweeps"),
                  "method": info.get("method"),
                  "gibbs_agrees": (info.get("gibbs_vs_tempering") or {}).get("passed"),
                  "failed_checks": info.get("equilibrium", {}).get("failed_checks")}
        if args.multimodal:
            result["cluster_weights"] = cluster_weights(out / "samples.fasta", args)
        return result
    if stage == "loglik":
        doc = json.loads((out / "loglik.json").read_text())
        return {"log_z": doc["log_z"], "log_z_std": doc["log_z_std"], "method": doc["method"],
                "estimates": {m: [e["log_z"], e["log_z_std"]]
                              for m, e in doc["estimates"].items()},
                "warnings": doc["warnings"]}
    ppv = out / "ppv.json"
    return {"ppv": json.loads(ppv.read_text()) if ppv.exists() else None}


def cluster_weights(samples: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    """Cluster shares of the samples and the model's exact ones (nearest consensus)."""
    import torch
    from rbmflow.data.alignment import encode_alignment, read_alignment
    from rbmflow.data.synthetic import cluster_shares, nearest_consensus
    from rbmflow.model import archive
    from rbmflow.model.partition import sample_exact

    consensus = family_consensus()
    k = consensus.shape[0]
    drawn = encode_alignment(read_alignment(samples)).codes
    model = archive.load_rbm(args.model)
    exact = sample_exact(model, 20000, torch.Generator().manual_seed(1))
    return {"samples": cluster_shares(nearest_consensus(drawn, consensus), k).tolist(),
            "exact": cluster_shares(nearest_consensus(exact, consensus), k).tolist()}


def family_consensus():  # noqa: ANN201
    """The consensus codes of benchmarks/multimodal.py's default family (seed 0)."""
    from rbmflow.data.synthetic import multimodal_family

    return multimodal_family(4000, 40, 21, (0.6, 0.3, 0.1), 0.12, seed=0).consensus


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"load_before": os.getloadavg()}
    for stage in args.stages.split(","):
        old = run_stage(args.base, stage, args, f"base_{stage}")
        new = run_stage(HERE, stage, args, f"new_{stage}")
        report[stage] = {"base": old, "new": new,
                         "speedup_wall": old["wall_s"] / new["wall_s"],
                         "speedup_cpu": old["cpu_s"] / max(new["cpu_s"], 1e-9)}
        print(f"{stage}: base {old['wall_s']:.1f} s wall / {old['cpu_s']:.1f} s CPU, new "
              f"{new['wall_s']:.1f} s / {new['cpu_s']:.1f} s: {report[stage]['speedup_wall']:.1f}x "
              f"wall, {report[stage]['speedup_cpu']:.1f}x CPU", flush=True)
        for side in ("base", "new"):
            print(f"  {side}: " + json.dumps({k: v for k, v in report[stage][side].items()
                                               if k not in ("wall_s", "cpu_s")}), flush=True)
    report["load_after"] = os.getloadavg()
    (args.outdir / "stage_speed.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
