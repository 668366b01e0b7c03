"""Statistics of aligned sequences: site and pair frequencies, connected correlations.

All functions take integer codes (M, L) and optional weights (M,); natural statistics are
weighted, generated ones unweighted, and no pseudocount is added.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rbmflow.errors import InputError
from rbmflow.model.rbm import one_hot


def _normalised_weights(codes: Tensor, weights: Tensor | None, dtype: torch.dtype) -> Tensor:
    if weights is None:
        weights = torch.ones(codes.shape[0], device=codes.device, dtype=dtype)
    weights = weights.to(device=codes.device, dtype=dtype)
    return weights / weights.sum()


def site_frequencies(codes: Tensor, num_states: int, weights: Tensor | None = None,
                     dtype: torch.dtype = torch.float64) -> Tensor:
    """f_i(a), shape (L, q)."""
    w = _normalised_weights(codes, weights, dtype)
    L = codes.shape[1]
    flat = codes.long() + torch.arange(L, device=codes.device) * num_states
    counts = torch.zeros(L * num_states, device=codes.device, dtype=dtype)
    counts.index_add_(0, flat.reshape(-1), w.repeat_interleave(L))
    return counts.view(L, num_states)


MAX_PAIR_ENTRIES = 2**28  # (L q)^2 entries of the pair statistics: 2 GiB in float64


def pair_statistics_fit(length: int, num_states: int) -> bool:
    """Whether the (L q)^2 pair statistics of L columns and q states stay within
    MAX_PAIR_ENTRIES."""
    return (length * num_states) ** 2 <= MAX_PAIR_ENTRIES


def check_pair_size(length: int, num_states: int) -> None:
    """InputError naming the size when the pair statistics would exceed MAX_PAIR_ENTRIES."""
    if not pair_statistics_fit(length, num_states):
        size = (length * num_states) ** 2
        raise InputError(
            f"the pair statistics of L = {length} columns x q = {num_states} states hold "
            f"(L q)^2 = {size} values ({size * 8 / 2**30:.1f} GiB in float64), more than the "
            f"limit of {MAX_PAIR_ENTRIES}; use fewer columns (prepare: max_gap_fraction, or "
            "a shorter alignment)")


def pair_frequencies(codes: Tensor, num_states: int, weights: Tensor | None = None,
                     dtype: torch.dtype = torch.float64, chunk: int = 4096) -> Tensor:
    """f_ij(a, b), shape (L, q, L, q); the diagonal blocks i = j hold diag(f_i)."""
    check_pair_size(codes.shape[1], num_states)
    w = _normalised_weights(codes, weights, dtype)
    L = codes.shape[1]
    out = torch.zeros(L * num_states, L * num_states, device=codes.device, dtype=dtype)
    for start in range(0, codes.shape[0], chunk):
        x = one_hot(codes[start:start + chunk], num_states, dtype).view(-1, L * num_states)
        out += (x * w[start:start + chunk, None]).T @ x
    return out.view(L, num_states, L, num_states)


def connected_correlations(codes: Tensor, num_states: int, weights: Tensor | None = None,
                           dtype: torch.dtype = torch.float64) -> Tensor:
    """C_ij(a, b) = f_ij(a, b) - f_i(a) f_j(b) for all i < j and all q^2 (a, b), flattened.

    Returns a vector of length L (L - 1) / 2 * q^2, pairs in row-major (i, j) order.
    """
    L = codes.shape[1]
    fi = site_frequencies(codes, num_states, weights, dtype)
    fij = pair_frequencies(codes, num_states, weights, dtype)
    cij = fij - fi[:, :, None, None] * fi[None, None, :, :]
    i, j = torch.triu_indices(L, L, offset=1, device=codes.device)
    return cij[i, :, j, :].reshape(-1)


def pearson(x: Tensor, y: Tensor) -> float:
    """Pearson correlation coefficient of two flat tensors."""
    x = x.double().reshape(-1) - x.double().mean()
    y = y.double().reshape(-1) - y.double().mean()
    return float((x @ y) / torch.sqrt((x @ x) * (y @ y)))


def slope_tls(x: Tensor, y: Tensor) -> float:
    """Total-least-squares slope of y against x (orthogonal regression, equal noise on both).

    Unlike the least-squares slope it is not attenuated by noise in x: for y = x plus noise
    on both coordinates it tends to 1.
    """
    x = x.double().reshape(-1) - x.double().mean()
    y = y.double().reshape(-1) - y.double().mean()
    sxx, syy, sxy = float(x @ x), float(y @ y), float(x @ y)
    if sxy == 0.0:
        return 0.0 if sxx >= syy else float("inf")
    return (syy - sxx + ((syy - sxx) ** 2 + 4 * sxy * sxy) ** 0.5) / (2 * sxy)


def slope(x: Tensor, y: Tensor) -> float:
    """Least-squares slope of y against x (y = a + slope * x)."""
    x = x.double().reshape(-1) - x.double().mean()
    y = y.double().reshape(-1) - y.double().mean()
    return float((x @ y) / (x @ x))
