"""rbmflow against the `rbms` package: Gibbs sweeps and PCD training, same data and settings.

    .venv/bin/python benchmarks/train_vs_rbms.py                 # PF00014, 100 updates each
    .venv/bin/python benchmarks/train_vs_rbms.py --updates 1000 --threads 2

One run, one process, one thread setting; idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE,
as the rbmflow CLI sets it) unless the environment says otherwise. Both sides get the same
alignment, the same random 80/20 train/test split (sequence weights computed within each
part, identity 0.8), and the same settings: hidden units, persistent chains, batch size, Gibbs
sweeps per update, learning rate, number of updates, PCD with the centred, norm-1 gradient and
the zero-sum gauge after every update (what both packages do by default).

1. Sweeps: `PottsRBM.gibbs` against `rbms`' `PBRBM.sample_state` on the same parameters and
   starting chains, interleaved and repeated (best of the repeats is reported).
2. Training: `rbmflow.training.train.train` (the `rbmflow train` stage, archive and log included)
   against the training loop of `rbms.training.pcd.train` (`fit_batch_pcd`, SGD step,
   `ensure_zero_sum_gauge`) run here without its per-update HDF5 bookkeeping, so the `rbms`
   figure is if anything optimistic. Updates per second exclude data loading on both sides.
   The two sides take turns (`--rounds`): each round runs rbmflow's whole training once and
   the next slice of the `rbms` training, so that both see the same spells of load on a
   shared machine; each side's rate is its updates over its summed time. Then each side's
   persistent chains (rbmflow's last run, `rbms` at the end) are compared with the test
   split: Pearson of the connected correlations (all i < j, all q^2 entries, as in the
   README).

Needs ../shared/data (or --data) and the `rbms` package (a test dependency of rbmflow).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Idle OpenMP threads sleep, as under the rbmflow CLI (both sides): on a shared machine spinning
# threads burn the CPU seconds this benchmark reports. Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rbmflow import ALPHABET
from rbmflow.data.alignment import load_alignment
from rbmflow.data.dataset import TEST, TRAIN, EncodedAlignment
from rbmflow.data.weights import sequence_weights
from rbmflow.evaluation.stats import connected_correlations, pearson
from rbmflow.model.rbm import PottsRBM
from rbmflow.training.train import TrainSettings, init_model, train

DEFAULT_DATA = (Path(__file__).resolve().parents[1].parent
                / "shared" / "data" / "pfam" / "PF00014_mgap6.fasta.gz")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="alignment (FASTA/A2M/Sto)")
    p.add_argument("--updates", type=int, default=100,
                   help="gradient updates per package (at least 2)")
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--chains", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=2000)
    p.add_argument("--gibbs-steps", type=int, default=10)
    p.add_argument("--learning-rate", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (both sides)")
    p.add_argument("--sweep-repeats", type=int, default=5,
                   help="interleaved repeats of the sweep timing (best is reported)")
    p.add_argument("--rounds", type=int, default=3,
                   help="turns of the training comparison (rbmflow's run, a slice of rbms')")
    p.add_argument("--skip-training", action="store_true", help="sweep comparison only")
    return p.parse_args(argv)


def load_split(path: Path, seed: int, test_fraction: float
               ) -> tuple[EncodedAlignment, EncodedAlignment]:
    """Encode the alignment, split it at random, weight each part within itself."""
    encoded = load_alignment(path)
    codes = encoded.codes
    rng = np.random.default_rng(seed)
    split = (rng.random(codes.shape[0]) < test_fraction).astype(np.uint8)
    weights = np.zeros(codes.shape[0], dtype=np.float32)
    for part in (TRAIN, TEST):
        keep = split == part
        weights[keep] = sequence_weights(codes[keep], 0.8, len(ALPHABET))
    data = EncodedAlignment(codes, weights, split, np.asarray(encoded.names),
                            encoded.columns, ALPHABET)
    return data.subset(TRAIN), data.subset(TEST)


def rbms_params(model: PottsRBM):  # noqa: ANN201 (rbms is optional at import time)
    from rbms.potts_bernoulli.classes import PBRBM

    return PBRBM(weight_matrix=model.weight_matrix.clone(), vbias=model.vbias.clone(),
                 hbias=model.hbias.clone())


class Clock:
    """Wall and process CPU seconds of a block (CPU time is steadier on a shared machine)."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def compare_sweeps(model: PottsRBM, start: torch.Tensor, sweeps: int, repeats: int
                   ) -> dict[str, tuple[float, float]]:
    """(sweeps per wall second, per CPU second) of both samplers, interleaved, best of
    `repeats`."""
    params = rbms_params(model)
    chains = params.init_chains(start.shape[0], start_v=start.to(model.dtype))
    generator = torch.Generator().manual_seed(0)
    samplers = {
        "rbmflow": lambda: model.gibbs(start, sweeps, generator=generator),
        "rbms": lambda: params.sample_state(chains=chains, n_steps=sweeps),
    }
    best = {name: [float("inf"), float("inf")] for name in samplers}
    with torch.no_grad():
        for sample in samplers.values():
            sample()
        for _ in range(repeats):
            for name, sample in samplers.items():
                with Clock() as clock:
                    sample()
                best[name] = [min(best[name][0], clock.wall), min(best[name][1], clock.cpu)]
    return {name: (sweeps / wall, sweeps / cpu) for name, (wall, cpu) in best.items()}


def train_rbmflow(train_data: EncodedAlignment, test_data: EncodedAlignment,
                  args: argparse.Namespace, workdir: Path
                  ) -> Callable[[], tuple[float, float, float, torch.Tensor]]:
    """A function that runs rbmflow.training.train.train once and returns (its logged training
    seconds, its CPU seconds net of the stage's fixed costs, wall seconds of the whole call,
    final chains).

    The fixed costs of the stage (statistics of the data, archive) are the CPU seconds of a
    one-update run, measured here once and taken off each run's CPU seconds.
    """
    from rbmflow.model import archive

    def run(updates: int, folder: Path) -> Clock:
        settings = TrainSettings(
            hidden=args.hidden, updates=updates, chains=args.chains,
            batch_size=args.batch_size, gibbs_steps=args.gibbs_steps,
            learning_rate=args.learning_rate, method="pcd", checkpoints=1,
            log_every=updates, seed=args.seed)
        folder.mkdir()
        with Clock() as clock:
            train(train_data, folder / "model.h5", folder / "train_log.csv", settings,
                  device="cpu", test=test_data, progress=False)
        return clock

    one = run(1, workdir / "one")
    runs = iter(range(args.rounds))

    def full() -> tuple[float, float, float, torch.Tensor]:
        folder = workdir / f"full{next(runs)}"
        clock = run(args.updates, folder)
        last = (folder / "train_log.csv").read_text().strip().splitlines()[-1]
        return (float(last.split(",")[1]), clock.cpu - one.cpu, clock.wall,
                archive.load_chains(folder / "model.h5"))

    return full


def train_rbms(train_data: EncodedAlignment, args: argparse.Namespace
               ) -> Callable[[int], tuple[float, float, torch.Tensor]]:
    """A function that runs the next `n` updates of the loop of rbms.training.pcd.train and
    returns (their wall seconds, their CPU seconds, the chains so far)."""
    from rbms.potts_bernoulli.classes import PBRBM
    from rbms.potts_bernoulli.utils import ensure_zero_sum_gauge
    from rbms.training.pcd import fit_batch_pcd

    torch.manual_seed(args.seed)
    dtype = torch.float32
    data = torch.from_numpy(train_data.codes.astype(np.float32))
    weights = torch.from_numpy(train_data.weights.astype(np.float32))

    class Dataset:  # what PBRBM.init_parameters reads
        def __init__(self, values: torch.Tensor) -> None:
            self.data = values

    with torch.no_grad():
        params = PBRBM.init_parameters(args.hidden, Dataset(data), torch.device("cpu"), dtype)
        params.init_grad()
        state = {"chains": params.init_chains(num_samples=args.chains)}
        optimizer = torch.optim.SGD(params.parameters(), lr=args.learning_rate, maximize=True)

    def updates(n: int) -> tuple[float, float, torch.Tensor]:
        with torch.no_grad(), Clock() as clock:
            for _ in range(n):
                index = torch.randperm(data.shape[0])[:args.batch_size]
                optimizer.zero_grad(set_to_none=False)
                state["chains"], _ = fit_batch_pcd(
                    batch=(data[index], weights[index]), parallel_chains=state["chains"],
                    params=params, gibbs_steps=args.gibbs_steps, beta=1.0, centered=True)
                optimizer.step()
                ensure_zero_sum_gauge(params)
        return clock.wall, clock.cpu, state["chains"]["visible"].long()

    return updates


def compare_training(train_data: EncodedAlignment, test_data: EncodedAlignment,
                     args: argparse.Namespace) -> dict[str, Any]:
    """Both trainings, taking turns (see the module docstring): updates per wall and per CPU
    second of each side, the rate of each rbmflow run, and each side's final chains."""
    slices = [args.updates * (r + 1) // args.rounds - args.updates * r // args.rounds
              for r in range(args.rounds)]
    totals = dict.fromkeys(("ours_s", "ours_cpu", "theirs_s", "theirs_cpu"), 0.0)
    per_run: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        ours = train_rbmflow(train_data, test_data, args, Path(tmp))
        theirs = train_rbms(train_data, args)
        for n in slices:
            seconds, cpu, wall, ours_chains = ours()
            totals["ours_s"] += seconds
            totals["ours_cpu"] += cpu
            per_run.append(args.updates / seconds)
            wall_theirs, cpu_theirs, theirs_chains = theirs(n)
            totals["theirs_s"] += wall_theirs
            totals["theirs_cpu"] += cpu_theirs
    ours_updates = args.rounds * args.updates
    return {
        "ours": ours_updates / totals["ours_s"],
        # CPU: N - 1 updates per run once the one-update run's CPU is taken off.
        "ours_cpu": args.rounds * (args.updates - 1) / max(totals["ours_cpu"], 1e-9),
        "theirs": args.updates / totals["theirs_s"],
        "theirs_cpu": args.updates / totals["theirs_cpu"],
        "ours_runs": per_run, "ours_wall": wall,
        "ours_chains": ours_chains, "theirs_chains": theirs_chains,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.updates < 2:
        raise SystemExit("--updates must be at least 2")
    if not 1 <= args.rounds <= args.updates:
        raise SystemExit("--rounds must be between 1 and --updates")
    if not args.data.exists():
        raise SystemExit(f"alignment not found: {args.data} (pass --data)")
    train_data, test_data = load_split(args.data, args.seed, args.test_fraction)
    q = train_data.num_states
    print(f"data {args.data.name}: {train_data.num_sequences} train / "
          f"{test_data.num_sequences} test sequences, L = {train_data.length}, q = {q}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"settings: hidden {args.hidden}, chains {args.chains}, batch {args.batch_size}, "
          f"{args.gibbs_steps} sweeps/update, learning rate {args.learning_rate}, "
          f"{args.updates} updates, PCD")

    codes = train_data.codes_tensor()
    weights = train_data.weights_tensor()
    generator = torch.Generator().manual_seed(args.seed)
    model = init_model(codes, weights, q, args.hidden, generator, init_std=0.05)
    start = codes[torch.randint(0, codes.shape[0], (args.chains,), generator=generator)]
    sweeps = compare_sweeps(model, start, args.gibbs_steps, args.sweep_repeats)
    (ours_wall, ours_cpu), (theirs_wall, theirs_cpu) = sweeps["rbmflow"], sweeps["rbms"]
    print(f"\nGibbs sweeps ({args.chains} chains)    per second   per CPU second")
    print(f"  rbmflow  {ours_wall:18.1f} {ours_cpu:16.1f}")
    print(f"  rbms     {theirs_wall:18.1f} {theirs_cpu:16.1f}")
    print(f"  ratio    {ours_wall / theirs_wall:17.2f}x {ours_cpu / theirs_cpu:15.2f}x")
    if args.skip_training:
        return

    cij_test = connected_correlations(test_data.codes_tensor(), q, test_data.weights_tensor())
    cij_train = connected_correlations(codes, q, weights)
    result = compare_training(train_data, test_data, args)
    ours_pearson = pearson(connected_correlations(result["ours_chains"], q), cij_test)
    theirs_pearson = pearson(connected_correlations(result["theirs_chains"], q), cij_test)
    ours, theirs = result["ours"], result["theirs"]
    ours_cpu, theirs_cpu = result["ours_cpu"], result["theirs_cpu"]
    print(f"\nPCD training, {args.updates} updates, {args.rounds} turns:  updates/s  "
          f"per CPU second  test Pearson C_ij")
    print(f"  rbmflow  {ours:18.2f} {ours_cpu:15.2f} {ours_pearson:17.4f}")
    print(f"  rbms     {theirs:18.2f} {theirs_cpu:15.2f} {theirs_pearson:17.4f}")
    print(f"  ratio    {ours / theirs:17.2f}x {ours_cpu / theirs_cpu:14.2f}x "
          f"{ours_pearson - theirs_pearson:+17.4f} (difference)")
    runs = ", ".join(f"{rate:.2f}" for rate in result["ours_runs"])
    print(f"  rbmflow's runs: {runs} updates/s; its last whole train stage (archive, log, "
          f"health checks): {result['ours_wall']:.1f} s; natural train-vs-test ceiling "
          f"{pearson(cij_train, cij_test):.4f}; load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
