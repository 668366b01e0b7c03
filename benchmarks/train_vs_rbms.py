"""rbmflow against the `rbms` package: Gibbs sweeps and PCD training, same data and settings.

    .venv/bin/python benchmarks/train_vs_rbms.py                 # PF00014, 200 updates each
    .venv/bin/python benchmarks/train_vs_rbms.py --updates 1000 --threads 2

One run, one process, one thread setting. Both sides get the same alignment, the same random
80/20 train/test split (sequence weights computed within each part, identity 0.8), and the
same settings: hidden units, persistent chains, batch size, Gibbs sweeps per update, learning
rate, number of updates, PCD with the centred, norm-1 gradient and the zero-sum gauge after
every update (what both packages do by default).

1. Sweeps: `PottsRBM.gibbs` against `rbms`' `PBRBM.sample_state` on the same parameters and
   starting chains, interleaved and repeated (best of the repeats is reported).
2. Training: `rbmflow.training.train` (the `rbmflow train` stage, archive and log included)
   against the training loop of `rbms.training.pcd.train` (`fit_batch_pcd`, SGD step,
   `ensure_zero_sum_gauge`) run here without its per-update HDF5 bookkeeping, so the `rbms`
   figure is if anything optimistic. Updates per second exclude data loading on both sides.
   Then each side's persistent chains are compared with the test split: Pearson of the
   connected correlations (all i < j, all q^2 entries, DESIGN.md).

Needs ../shared/data (or --data) and the `rbms` package (a test dependency of rbmflow).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rbmflow import ALPHABET
from rbmflow.alignment import load_alignment
from rbmflow.dataset import TEST, TRAIN, EncodedAlignment
from rbmflow.model import PottsRBM
from rbmflow.stats import connected_correlations, pearson
from rbmflow.training import TrainSettings, init_model, train
from rbmflow.weights import sequence_weights

DEFAULT_DATA = (Path(__file__).resolve().parents[1].parent
                / "shared" / "data" / "pfam" / "PF00014_mgap6.fasta.gz")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="alignment (FASTA/A2M/Sto)")
    p.add_argument("--updates", type=int, default=200, help="gradient updates per package")
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


def compare_sweeps(model: PottsRBM, start: torch.Tensor, sweeps: int, repeats: int
                   ) -> dict[str, float]:
    """Sweeps per second of both samplers, interleaved, best of `repeats`."""
    params = rbms_params(model)
    chains = params.init_chains(start.shape[0], start_v=start.to(model.dtype))
    generator = torch.Generator().manual_seed(0)
    best = {"rbmflow": float("inf"), "rbms": float("inf")}
    with torch.no_grad():
        model.gibbs(start, 1, generator=generator)
        params.sample_state(chains=chains, n_steps=1)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.gibbs(start, sweeps, generator=generator)
            best["rbmflow"] = min(best["rbmflow"], time.perf_counter() - t0)
            t0 = time.perf_counter()
            params.sample_state(chains=chains, n_steps=sweeps)
            best["rbms"] = min(best["rbms"], time.perf_counter() - t0)
    return {name: sweeps / seconds for name, seconds in best.items()}


def train_rbmflow(train_data: EncodedAlignment, test_data: EncodedAlignment,
                  args: argparse.Namespace, workdir: Path) -> tuple[float, float, torch.Tensor]:
    """rbmflow.training.train; returns (updates/s, wall seconds, final chains)."""
    from rbmflow import archive

    settings = TrainSettings(
        hidden=args.hidden, updates=args.updates, chains=args.chains,
        batch_size=args.batch_size, gibbs_steps=args.gibbs_steps,
        learning_rate=args.learning_rate, method="pcd", checkpoints=1,
        log_every=args.updates, seed=args.seed)
    out, log_path = workdir / "model.h5", workdir / "train_log.csv"
    t0 = time.perf_counter()
    train(train_data, out, log_path, settings, device="cpu", test=test_data, progress=False)
    wall = time.perf_counter() - t0
    last = log_path.read_text().strip().splitlines()[-1].split(",")
    training_seconds = float(last[1])
    return args.updates / training_seconds, wall, archive.load_chains(out)


def train_rbms(train_data: EncodedAlignment, args: argparse.Namespace
               ) -> tuple[float, torch.Tensor]:
    """The loop of rbms.training.pcd.train; returns (updates/s, final chains)."""
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
        chains = params.init_chains(num_samples=args.chains)
        optimizer = torch.optim.SGD(params.parameters(), lr=args.learning_rate, maximize=True)
        t0 = time.perf_counter()
        for _ in range(args.updates):
            index = torch.randperm(data.shape[0])[:args.batch_size]
            optimizer.zero_grad(set_to_none=False)
            chains, _ = fit_batch_pcd(batch=(data[index], weights[index]),
                                      parallel_chains=chains, params=params,
                                      gibbs_steps=args.gibbs_steps, beta=1.0, centered=True)
            optimizer.step()
            ensure_zero_sum_gauge(params)
        seconds = time.perf_counter() - t0
    return args.updates / seconds, chains["visible"].long()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
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
    print(f"\nGibbs sweeps/s ({args.chains} chains): rbmflow {sweeps['rbmflow']:.1f}, "
          f"rbms {sweeps['rbms']:.1f}, ratio {sweeps['rbmflow'] / sweeps['rbms']:.2f}")
    if args.skip_training:
        return

    cij_test = connected_correlations(test_data.codes_tensor(), q, test_data.weights_tensor())
    cij_train = connected_correlations(codes, q, weights)
    with tempfile.TemporaryDirectory() as tmp:
        ours_rate, ours_wall, ours_chains = train_rbmflow(train_data, test_data, args, Path(tmp))
    theirs_rate, theirs_chains = train_rbms(train_data, args)
    ours_pearson = pearson(connected_correlations(ours_chains, q), cij_test)
    theirs_pearson = pearson(connected_correlations(theirs_chains, q), cij_test)
    print(f"\nPCD training, {args.updates} updates:")
    print(f"  rbmflow  {ours_rate:7.2f} updates/s   test Pearson C_ij {ours_pearson:.4f}"
          f"   (whole stage incl. archive: {ours_wall:.1f} s)")
    print(f"  rbms     {theirs_rate:7.2f} updates/s   test Pearson C_ij {theirs_pearson:.4f}")
    print(f"  ratio    {ours_rate / theirs_rate:7.2f}x          Pearson difference "
          f"{ours_pearson - theirs_pearson:+.4f}")
    print(f"  ceiling (natural train vs test): {pearson(cij_train, cij_test):.4f}; "
          f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
