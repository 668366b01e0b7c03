"""Gibbs sweeps per second on a GPU, and the fraction of its matmul throughput they reach.

    .venv/bin/python benchmarks/gpu_sweeps.py      # CUDA: L=112, 5000 chains, 500 hidden
    .venv/bin/python benchmarks/gpu_sweeps.py --device cpu --length 31 --chains 300 --hidden 40

A block-Gibbs sweep of a Potts RBM does the work of two (chains x L*q) by (L*q x Nh) products
(hidden inputs, visible logits) plus a categorical draw over chains x L x q logits. Its
nominal rate is 2 * 2 * chains * L * q * Nh flop per sweep divided by the sweep time; the
reference is a plain matrix product of the same shape and dtype timed in the same run, so
"fraction of matmul throughput" = nominal sweep rate / reference rate (1.0 would mean the
sweep costs no more than its two products done as dense matmuls). rbmflow computes the
hidden inputs as an embedding-bag, so the fraction can exceed what the products alone allow.
Runs in well under 5 minutes at the default size.
"""

from __future__ import annotations

import argparse
import time

import torch
from rbmflow.device import resolve_device
from rbmflow.model.rbm import PottsRBM, random_codes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--length", type=int, default=112, help="L, number of sites")
    p.add_argument("--states", type=int, default=21, help="q, states per site")
    p.add_argument("--chains", type=int, default=5000)
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--sweeps", type=int, default=100, help="sweeps per timed call")
    p.add_argument("--repeats", type=int, default=5, help="timed calls (best is reported)")
    p.add_argument("--tf32", action="store_true",
                   help="allow TF32 matmuls (sweep and reference alike)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn, device: torch.device, repeats: int) -> float:  # noqa: ANN001
    fn()
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best


def run(args: argparse.Namespace) -> dict[str, float]:
    device = resolve_device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    L, q, nh, chains = args.length, args.states, args.hidden, args.chains
    generator = torch.Generator(device=device).manual_seed(args.seed)
    model = PottsRBM(
        weight_matrix=0.05 * torch.randn(L, q, nh, device=device, generator=generator),
        vbias=torch.randn(L, q, device=device, generator=generator),
        hbias=0.1 * torch.randn(nh, device=device, generator=generator),
    )
    model.apply_zero_sum_gauge_()
    codes = random_codes(chains, L, q, device, generator)

    sweep_s = best_seconds(lambda: model.gibbs(codes, args.sweeps, generator=generator),
                           device, args.repeats) / args.sweeps
    dense = torch.rand(chains, L * q, device=device, generator=generator)
    weights = model.weight_matrix.reshape(L * q, nh)
    products = max(1, args.sweeps)
    matmul_s = best_seconds(lambda: [dense @ weights for _ in range(products)],
                            device, args.repeats) / products
    flop = 2.0 * chains * L * q * nh
    sweep_rate = 2 * flop / sweep_s
    matmul_rate = flop / matmul_s
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, TF32 {'on' if args.tf32 else 'off'}")
    print(f"L = {L}, q = {q}, Nh = {nh}, {chains} chains, float32")
    print(f"Gibbs: {1 / sweep_s:.1f} sweeps/s ({sweep_s * 1e3:.3f} ms per sweep, "
          f"{chains / sweep_s:.3g} chain-sweeps/s)")
    print(f"reference matmul ({chains} x {L * q}) @ ({L * q} x {nh}): "
          f"{matmul_s * 1e3:.3f} ms, {matmul_rate / 1e12:.2f} TFLOP/s")
    print(f"sweep nominal rate {sweep_rate / 1e12:.2f} TFLOP/s = "
          f"{sweep_rate / matmul_rate:.1%} of the matmul throughput "
          f"(one sweep = {sweep_s / matmul_s:.2f} reference products)")
    return {"sweeps_per_s": 1 / sweep_s, "matmul_tflops": matmul_rate / 1e12,
            "fraction_of_matmul": sweep_rate / matmul_rate}


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
