"""Sequence weights that correct for phylogenetic redundancy.

    w_m = 1 / #{m' : identity(m, m') >= threshold},    identity(m, m') = matches / L,

where `matches` counts the positions at which the two sequences hold the same symbol, gaps
included (a gap matches a gap), and the count includes m itself, so 0 < w_m <= 1. The
effective number of sequences is M_eff = sum_m w_m.

The identity test is done on integers: `min_matches(L, threshold)` is the smallest k with
k / L >= threshold in float64, and the match counts (exact integers in the product dtype)
are converted to int32 before `>= k`, so the result is exactly that of a double loop
comparing `matches / L >= threshold`, whatever dtype the products use.

Matches come from one-hot products, block by block: for row blocks A and B of one-hot
vectors (only the (position, symbol) pairs that occur in the alignment), A @ B.T counts the
matches of every pair. Only blocks on and above the diagonal are computed (the relation is
symmetric), so the cost is about M^2 * K / 2 multiply-adds with K <= L * q, and the memory
is a few blocks: O(block_size * (K + block_size)), never M x M or M x L x q.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

DEFAULT_BLOCK_SIZE = {"cpu": 2048, "cuda": 8192}
"""Rows per block; the largest buffer is a block_size x block_size matrix of match counts."""


def min_matches(length: int, threshold: float) -> int:
    """Smallest integer k with k / length >= threshold (float64), i.e. identity >= threshold."""
    if length <= 0:
        raise ValueError("alignment length must be positive")
    k = max(0, math.ceil(threshold * length))
    while k > 0 and (k - 1) / length >= threshold:
        k -= 1
    while k / length < threshold:
        k += 1
    return k


def product_dtype(device: torch.device, length: int) -> torch.dtype:
    """The fastest dtype whose one-hot products give match counts (integers <= L) exactly.

    float16 on CUDA for L <= 2048, bfloat16 on CPUs with native bf16 dot products for
    L <= 256 (both accumulate in float32 and represent those integers exactly), else float32.
    """
    if device.type == "cuda" and length <= 2048:
        return torch.float16
    if device.type == "cpu" and length <= 256 and _cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


@functools.cache
def _cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def neighbour_counts(
    codes: np.ndarray | torch.Tensor,
    threshold: float = 0.8,
    num_states: int = 21,
    device: torch.device | str = "cpu",
    block_size: int | None = None,
    dtype: torch.dtype | None = None,
) -> np.ndarray:
    """#{m' : identity(m, m') >= threshold} for every sequence m (itself included).

    `codes` (M, L) integer alphabet indices in [0, num_states). Returns int64 (M,).
    `dtype` of the one-hot products: None picks `product_dtype(device, L)`.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"identity threshold must lie in (0, 1], got {threshold}")
    device = torch.device(device)
    codes_t = torch.as_tensor(np.asarray(codes) if not isinstance(codes, torch.Tensor)
                              else codes).to(device=device, dtype=torch.int64)
    if codes_t.ndim != 2:
        raise ValueError(f"codes must be 2-D (M, L), got shape {tuple(codes_t.shape)}")
    num_sequences, length = codes_t.shape
    counts = torch.zeros(num_sequences, dtype=torch.int64, device=device)
    if num_sequences == 0:
        return counts.cpu().numpy()
    if int(codes_t.min()) < 0 or int(codes_t.max()) >= num_states:
        raise ValueError(f"codes must lie in [0, {num_states})")
    needed = min_matches(length, threshold)

    # Index the (position, symbol) pairs that occur; absent ones never contribute a match.
    flat = codes_t + torch.arange(length, device=device) * num_states
    present = torch.zeros(length * num_states, dtype=torch.bool, device=device)
    present[flat.reshape(-1)] = True
    compact = torch.cumsum(present, 0) - 1
    onehot_index = compact[flat]
    width = int(present.sum())
    dtype = dtype or product_dtype(device, length)
    block = block_size or DEFAULT_BLOCK_SIZE.get(device.type, DEFAULT_BLOCK_SIZE["cpu"])

    def one_hot(start: int, stop: int) -> torch.Tensor:
        out = torch.zeros(stop - start, width, dtype=dtype, device=device)
        out.scatter_(1, onehot_index[start:stop], 1.0)
        return out

    for row_start in range(0, num_sequences, block):
        row_stop = min(row_start + block, num_sequences)
        rows = one_hot(row_start, row_stop)
        for col_start in range(row_start, num_sequences, block):
            col_stop = min(col_start + block, num_sequences)
            cols = rows if col_start == row_start else one_hot(col_start, col_stop)
            # Exact integers in `dtype` (see product_dtype), compared as integers: a
            # half-integer threshold would itself be rounded in a 16-bit float.
            close = (rows @ cols.T).to(torch.int32) >= needed
            counts[row_start:row_stop] += close.sum(dim=1)
            if col_start != row_start:
                counts[col_start:col_stop] += close.sum(dim=0)
    return counts.cpu().numpy()


def sequence_weights(
    codes: np.ndarray | torch.Tensor,
    threshold: float = 0.8,
    num_states: int = 21,
    device: torch.device | str = "cpu",
    block_size: int | None = None,
) -> np.ndarray:
    """w_m = 1 / neighbour_counts(m) as float64 (M,); M_eff is their sum."""
    counts = neighbour_counts(codes, threshold, num_states, device, block_size)
    return 1.0 / counts.astype(np.float64)
