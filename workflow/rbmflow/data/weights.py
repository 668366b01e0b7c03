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
from collections.abc import Iterator

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


def _as_codes(codes: np.ndarray | torch.Tensor, num_states: int,
              device: torch.device) -> torch.Tensor:
    codes_t = torch.as_tensor(np.asarray(codes) if not isinstance(codes, torch.Tensor)
                              else codes).to(device=device, dtype=torch.int64)
    if codes_t.ndim != 2:
        raise ValueError(f"codes must be 2-D (M, L), got shape {tuple(codes_t.shape)}")
    if codes_t.numel() and (int(codes_t.min()) < 0 or int(codes_t.max()) >= num_states):
        raise ValueError(f"codes must lie in [0, {num_states})")
    return codes_t


def _match_blocks(
    rows: torch.Tensor, cols: torch.Tensor | None, num_states: int, device: torch.device,
    block_size: int | None, dtype: torch.dtype | None,
) -> Iterator[tuple[int, int, int, int, torch.Tensor]]:
    """(row_start, row_stop, col_start, col_stop, int32 match counts of that block).

    cols None: the blocks on and above the diagonal of rows x rows; else every block of
    rows x cols. Both (M, L) int64 on `device`.
    """
    length = rows.shape[1]
    both = rows if cols is None else torch.cat([rows, cols])
    # Index the (position, symbol) pairs that occur; absent ones never contribute a match.
    flat = both + torch.arange(length, device=device) * num_states
    present = torch.zeros(length * num_states, dtype=torch.bool, device=device)
    present[flat.reshape(-1)] = True
    onehot_index = (torch.cumsum(present, 0) - 1)[flat]
    width = int(present.sum())
    dtype = dtype or product_dtype(device, length)
    block = block_size or DEFAULT_BLOCK_SIZE.get(device.type, DEFAULT_BLOCK_SIZE["cpu"])
    num_rows = rows.shape[0]
    num_cols = num_rows if cols is None else cols.shape[0]
    col_offset = 0 if cols is None else num_rows

    def one_hot(start: int, stop: int) -> torch.Tensor:
        out = torch.zeros(stop - start, width, dtype=dtype, device=device)
        out.scatter_(1, onehot_index[start:stop], 1.0)
        return out

    for row_start in range(0, num_rows, block):
        row_stop = min(row_start + block, num_rows)
        left = one_hot(row_start, row_stop)
        for col_start in range(row_start if cols is None else 0, num_cols, block):
            col_stop = min(col_start + block, num_cols)
            right = (left if cols is None and col_start == row_start
                     else one_hot(col_offset + col_start, col_offset + col_stop))
            # Exact integers in `dtype` (see product_dtype), compared as integers: a
            # half-integer threshold would itself be rounded in a 16-bit float.
            yield row_start, row_stop, col_start, col_stop, (left @ right.T).to(torch.int32)


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
    codes_t = _as_codes(codes, num_states, device)
    num_sequences, length = codes_t.shape
    counts = torch.zeros(num_sequences, dtype=torch.int64, device=device)
    if num_sequences == 0:
        return counts.cpu().numpy()
    needed = min_matches(length, threshold)
    for r0, r1, c0, c1, matches in _match_blocks(codes_t, None, num_states, device,
                                                 block_size, dtype):
        close = matches >= needed
        counts[r0:r1] += close.sum(dim=1)
        if c0 != r0:
            counts[c0:c1] += close.sum(dim=0)
    return counts.cpu().numpy()


def identity_components(
    codes: np.ndarray | torch.Tensor,
    threshold: float = 0.8,
    num_states: int = 21,
    device: torch.device | str = "cpu",
    block_size: int | None = None,
) -> np.ndarray:
    """Connected components of the graph linking sequences with identity >= threshold.

    Returns int64 (M,) labels: each component is labelled by its smallest member index.
    Union-find over the edges of each block, so memory stays a few blocks.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"identity threshold must lie in (0, 1], got {threshold}")
    device = torch.device(device)
    codes_t = _as_codes(codes, num_states, device)
    num_sequences, length = codes_t.shape
    parent = np.arange(num_sequences, dtype=np.int64)
    if num_sequences == 0:
        return parent
    needed = min_matches(length, threshold)

    def roots(nodes: np.ndarray) -> np.ndarray:
        while True:
            up = parent[parent]
            if np.array_equal(up, parent):
                return parent[nodes]
            parent[:] = up

    for r0, _, c0, _, matches in _match_blocks(codes_t, None, num_states, device,
                                               block_size, None):
        rows, cols = torch.nonzero(matches >= needed, as_tuple=True)
        first, second = rows.cpu().numpy() + r0, cols.cpu().numpy() + c0
        keep = first < second
        first, second = first[keep], second[keep]
        while first.size:
            a, b = roots(first), roots(second)
            apart = a != b
            if not apart.any():
                break
            low, high = np.minimum(a, b)[apart], np.maximum(a, b)[apart]
            np.minimum.at(parent, high, low)
            first, second = first[apart], second[apart]
    return roots(np.arange(num_sequences))


def max_identity(
    query: np.ndarray | torch.Tensor,
    reference: np.ndarray | torch.Tensor,
    num_states: int = 21,
    device: torch.device | str = "cpu",
    block_size: int | None = None,
) -> np.ndarray:
    """float64 (N,): for each query sequence, max over reference sequences of matches / L
    (gaps counted as symbols, as in the weights); NaN for all when `reference` is empty."""
    device = torch.device(device)
    query_t = _as_codes(query, num_states, device)
    reference_t = _as_codes(reference, num_states, device)
    if query_t.shape[1] != reference_t.shape[1]:
        raise ValueError("query and reference must have the same length")
    best = torch.full((query_t.shape[0],), -1, dtype=torch.int32, device=device)
    if reference_t.shape[0] == 0:
        return np.full(query_t.shape[0], np.nan)
    if query_t.shape[0] == 0:
        return np.zeros(0)
    for r0, r1, _, _, matches in _match_blocks(query_t, reference_t, num_states, device,
                                               block_size, None):
        best[r0:r1] = torch.maximum(best[r0:r1], matches.max(dim=1).values)
    return best.cpu().numpy().astype(np.float64) / query_t.shape[1]


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
