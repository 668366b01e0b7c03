"""Time and peak memory of the sequence weights on a synthetic alignment.

    python benchmarks/weights_benchmark.py                       # 100,000 x 200, identity 0.8
    python benchmarks/weights_benchmark.py --sequences 20000 --extrapolate-to 100000

The alignment is phylogeny-like: random ancestors, each copied with 2-30 % of its sites
redrawn, and 5 % of the sites turned into gaps, so that identities spread around the
threshold as in a real family. The cost grows as M^2 * L * q (all pairs), so a run on a
fraction of the sequences extrapolates to the full size by the square of the ratio.
Prints one JSON line: seconds, peak resident memory (MB), M_eff, device, threads.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np
import torch
from rbmflow import ALPHABET
from rbmflow.data.weights import DEFAULT_BLOCK_SIZE, product_dtype, sequence_weights
from rbmflow.device import resolve_device


def synthetic_alignment(num_sequences: int, length: int, seed: int = 0) -> np.ndarray:
    """uint8 (M, L) codes: mutated copies of M/50 random ancestors, with gaps."""
    rng = np.random.default_rng(seed)
    num_states = len(ALPHABET)
    ancestors = rng.integers(1, num_states, size=(max(1, num_sequences // 50), length),
                             dtype=np.uint8)
    codes = ancestors[rng.integers(0, len(ancestors), size=num_sequences)]
    rates = rng.uniform(0.02, 0.3, size=(num_sequences, 1))
    redraw = rng.random((num_sequences, length), dtype=np.float32) < rates
    codes[redraw] = rng.integers(1, num_states, size=int(redraw.sum()), dtype=np.uint8)
    codes[rng.random((num_sequences, length), dtype=np.float32) < 0.05] = 0
    return codes


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (ru_maxrss is in kB on Linux)."""
    scale = 1.0 if sys.platform == "darwin" else 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=100_000)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--identity", type=float, default=0.8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--block-size", type=int, default=None)
    parser.add_argument("--extrapolate-to", type=int, default=None,
                        help="also report the time scaled to this many sequences (x M^2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    codes = synthetic_alignment(args.sequences, args.length, args.seed)
    before = peak_rss_mb()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    weights = sequence_weights(codes, args.identity, len(ALPHABET), device=device,
                               block_size=args.block_size)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {
        "sequences": args.sequences,
        "length": args.length,
        "identity": args.identity,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "product_dtype": str(product_dtype(device, args.length)),
        "block_size": args.block_size or DEFAULT_BLOCK_SIZE.get(device.type, 2048),
        "seconds": round(seconds, 2),
        "pairs_per_second": round(args.sequences**2 / 2 / seconds),
        "M_eff": round(float(weights.sum()), 2),
        "peak_rss_mb_before": round(before, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    if device.type == "cuda":
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 1e6, 1)
    if args.extrapolate_to:
        result["extrapolated_sequences"] = args.extrapolate_to
        result["extrapolated_seconds"] = round(
            seconds * (args.extrapolate_to / args.sequences) ** 2, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
