"""Contact precision of long trainings within a fixed wall-clock budget (meant for a GPU).

    python benchmarks/contacts_gpu.py ALIGNMENT.npz STRUCT.dat --budget 420 --out results/

Trains several models of one family side by side (one `rbmflow train` process each), first
for a short probe that measures each configuration's seconds per update while all run at
once, then for as many updates as the remaining budget allows (the step decays from 0.2 to
0.01 over the whole run, so a run's schedule depends on its length, which is why the length
is fixed before it starts). Then `rbmflow contacts` scores each model against the distance
table (`i j score distance`, column 3 being another method's ranking) with the Tubiana and
the large-N couplings, and a table of PPVs at L/5, L/2, L and 2L (contact: distance < 8 A,
|i - j| > 4) is printed next to those of column 3. Everything is written under --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_CONFIGS = "400x2000x2000,600x3000x8000,1000x4000x8000"


def parse_configs(text: str) -> dict[str, tuple[int, int, int]]:
    """"400x2000x2000,..." (hidden units x chains x batch size) -> {"h400c2000b2000": (...)}."""
    configs = {}
    for item in text.split(","):
        hidden, chains, batch = (int(x) for x in item.split("x"))
        configs[f"h{hidden}c{chains}b{batch}"] = (hidden, chains, batch)
    return configs


def train_command(alignment: Path, outdir: Path, hidden: int, chains: int, batch: int,
                  updates: int, log_every: int, device: str) -> list[str]:
    return [sys.executable, "-m", "rbmflow", "train", str(alignment),
            "--out", str(outdir / "model.h5"), "--log", str(outdir / "train_log.csv"),
            "--hidden", str(hidden), "--chains", str(chains), "--batch-size", str(batch),
            "--updates", str(updates), "--learning-rate", "0.2", "--lr-decay", "0.05",
            "--checkpoints", "1", "--swap-threshold", "0", "--monitor", "false",
            "--log-every", str(log_every), "--device", device, "--progress", "false",
            "--restart"]


def run_all(commands: dict[str, list[str]], logdir: Path) -> dict[str, float]:
    """Run the commands at once; return each one's wall-clock seconds (raise if one fails)."""
    started = time.perf_counter()
    procs = {name: subprocess.Popen(cmd, stdout=open(logdir / f"{name}.log", "a"),
                                    stderr=subprocess.STDOUT)
             for name, cmd in commands.items()}
    seconds = {}
    for name, proc in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"{name} failed: see {logdir / (name + '.log')}\n"
                             + (logdir / f"{name}.log").read_text()[-3000:])
        seconds[name] = time.perf_counter() - started
    return seconds


def last_row(log_csv: Path) -> dict[str, str]:
    with open(log_csv) as f:
        return list(csv.DictReader(f))[-1]


def number(text: str) -> float | None:
    """A train_log.csv cell: None when empty (no test split)."""
    return float(text) if text else None


def seconds_per_update(log_csv: Path) -> float:
    with open(log_csv) as f:
        rows = list(csv.DictReader(f))
    first, last = rows[1], rows[-1]  # row 0 is update 0, before any warm-up
    return (float(last["time_s"]) - float(first["time_s"])) / (
        int(last["update"]) - int(first["update"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("alignment", type=Path)
    p.add_argument("structure", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget", type=float, default=420.0, help="seconds for everything")
    p.add_argument("--reserve", type=float, default=60.0,
                   help="seconds kept for the contacts and the files")
    p.add_argument("--probe", type=int, default=60, help="updates of the probe")
    p.add_argument("--max-updates", type=int, default=40000)
    p.add_argument("--configs", default=DEFAULT_CONFIGS,
                   help="hidden x chains x batch size, comma-separated")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    configs = parse_configs(args.configs)
    names = list(configs)

    probes = {}
    for name in names:
        hidden, chains, batch = configs[name]
        d = args.out / f"probe_{name}"
        d.mkdir(exist_ok=True)
        probes[name] = train_command(args.alignment, d, hidden, chains, batch, args.probe,
                                     max(args.probe // 3, 1), args.device)
    run_all(probes, args.out)
    rate = {n: seconds_per_update(args.out / f"probe_{n}" / "train_log.csv") for n in names}
    left = args.budget - (time.perf_counter() - t0) - args.reserve
    # the slowest run sets the pace: each run gets the updates that fit into what is left
    updates = {n: max(args.probe, min(args.max_updates, int(0.9 * left / rate[n]) // 100 * 100))
               for n in names}
    print(f"probe: {json.dumps({n: round(r, 5) for n, r in rate.items()})} s/update; "
          f"{left:.0f} s left -> updates {json.dumps(updates)}", flush=True)

    runs = {}
    for name in names:
        hidden, chains, batch = configs[name]
        d = args.out / name
        d.mkdir(exist_ok=True)
        runs[name] = train_command(args.alignment, d, hidden, chains, batch, updates[name],
                                   max(updates[name] // 10, 1), args.device)
    wall = run_all(runs, args.out)

    results = {}
    for name in names:
        d = args.out / name
        row = last_row(d / "train_log.csv")
        results[name] = {"hidden": configs[name][0], "chains": configs[name][1],
                         "batch_size": configs[name][2], "updates": updates[name],
                         "wall_s": round(wall[name], 1),
                         "pearson_cij_train": number(row["pearson_cij_train"]),
                         "pearson_cij_test": number(row["pearson_cij_test"])}
        for method in ("tubiana", "gaussian"):
            cmd = [sys.executable, "-m", "rbmflow", "contacts", str(d / "model.h5"),
                   "--alignment", str(args.alignment),
                   "--out", str(d / f"contacts_{method}.csv"), "--method", method,
                   "--structure", str(args.structure),
                   "--ppv-json", str(d / f"ppv_{method}.json"), "--device", args.device]
            subprocess.run(cmd, check=True, stdout=open(args.out / f"{name}.log", "a"),
                           stderr=subprocess.STDOUT)
            results[name][method] = json.loads((d / f"ppv_{method}.json").read_text())
    (args.out / "summary.json").write_text(json.dumps(results, indent=1))
    for name, r in results.items():
        print(name, {k: v for k, v in r.items() if k not in ("tubiana", "gaussian")})
        for method in ("tubiana", "gaussian"):
            print("   ", method, json.dumps(r[method]))
    table = results[names[0]]["tubiana"].get("ppv_table_score_8A")
    print("column 3 of the table:", json.dumps(table))
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
