"""Mode weights of plain Gibbs, PTT and PT against exact samples on a planted multimodal RBM.

    python benchmarks/tempering_planted.py [--length 23] [--chains 1000] [--sweeps 1000]

The model: three planted patterns (L sites, q = 3, Nh = 3, `synthetic.planted_pattern_rbm`,
coupling 4, threshold 0.6) with hbias offsets giving unequal mode weights; its exact
distribution is sampled by enumerating the hiddens. Plain Gibbs runs from uniformly random
sequences and from the first pattern; PTT runs over a trajectory of models whose parameters
grow linearly from zero (a stand-in for training checkpoints), PT over inverse temperatures;
both ladders are chosen by `tempering.select_ladder`. Prints the mode weights, swap rates and
wall times, one thread.
"""

from __future__ import annotations

import argparse
import time

import torch
from rbmflow.data.synthetic import planted_pattern_rbm
from rbmflow.model.partition import interpolate, sample_exact
from rbmflow.model.rbm import PottsRBM
from rbmflow.sampling.tempering import Level, beta_levels, select_ladder, temper


def mode_weights(codes: torch.Tensor, patterns: torch.Tensor) -> list[float]:
    """Share of chains nearest each pattern (overlap > 0.6), and of the rest."""
    overlaps = (codes[:, None, :] == patterns[None]).double().mean(-1)
    best = torch.where(overlaps.max(1).values > 0.6, overlaps.argmax(1),
                       torch.full((codes.shape[0],), patterns.shape[0]))
    counts = torch.bincount(best, minlength=patterns.shape[0] + 1).double()
    return [round(float(c), 3) for c in counts / codes.shape[0]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=23)
    parser.add_argument("--chains", type=int, default=1000)
    parser.add_argument("--sweeps", type=int, default=1000)
    parser.add_argument("--floor", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(args.seed)
    model = planted_pattern_rbm(args.length, 3, 3, coupling=4.0, threshold=0.6, generator=g)
    model.hbias += torch.tensor([0.0, -0.7, -1.8], dtype=torch.float64)
    model = model.to(dtype=torch.float32)
    patterns = model.weight_matrix.argmax(1).T
    print(f"exact               {mode_weights(sample_exact(model, 50000, g), patterns)}")
    for name, start in (("random", torch.randint(0, 3, (args.chains, args.length),
                                                  generator=g)),
                        ("pattern 0", patterns[0].repeat(args.chains, 1))):
        t0 = time.perf_counter()
        codes = model.gibbs(start, args.sweeps, 1.0, g)
        print(f"gibbs ({name:9s})   {mode_weights(codes, patterns)}  "
              f"{time.perf_counter() - t0:.1f} s")
    zero = PottsRBM(*(torch.zeros_like(t) for t in model.tensors()))
    trajectory = [Level(interpolate(zero, model, t), 1.0, f"t={t:.2f}")
                  for t in torch.linspace(0, 1, 16).tolist()]
    for name, candidates in (("ptt", trajectory), ("pt", beta_levels(model, 8))):
        t0 = time.perf_counter()
        ladder = select_ladder(candidates, 256, 100, args.floor, generator=g)
        t1 = time.perf_counter()
        pick = torch.arange(args.chains) % ladder.codes[0].shape[0]
        result = temper(ladder.levels, args.chains, args.sweeps, g,
                        [c[pick] for c in ladder.codes])
        t2 = time.perf_counter()
        print(f"{name:19s} {mode_weights(result.codes, patterns)}  ladder {t1 - t0:.1f} s + "
              f"{t2 - t1:.1f} s; {len(ladder.levels)} levels, swap rates "
              f"{[round(r, 2) for r in result.swap_rates]}, {result.passages} passages")


if __name__ == "__main__":
    main()
