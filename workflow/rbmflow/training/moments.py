"""The averages that enter the log-likelihood gradient, over data or chains, weighted."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import wait
from dataclasses import dataclass

import torch
from torch import Tensor

from rbmflow.model.rbm import PottsRBM, block_pool, one_hot


def site_moments(codes: Tensor, norm_weights: Tensor, num_states: int) -> Tensor:
    """sum_m w_m 1[v_mi = a] for normalised weights (M,); returns (L, q)."""
    L = codes.shape[1]
    flat = codes.long() + torch.arange(L, device=codes.device) * num_states
    out = torch.zeros(L * num_states, device=norm_weights.device, dtype=norm_weights.dtype)
    out.index_add_(0, flat.reshape(-1), norm_weights.repeat_interleave(L))
    return out.view(L, num_states)


@dataclass
class Moments:
    """Averages entering the gradient: v (L, q), m (Nh), v (x) m (L, q, Nh)."""

    v: Tensor
    h: Tensor
    vh: Tensor


def moments(model: PottsRBM, codes: Tensor, weights: Tensor | None = None,
            chunk: int = 8192) -> Moments:
    """Weighted averages of 1[v_i = a], m(v) and 1[v_i = a] m(v) over codes (C, L).

    weights (C,) are normalised here; None means a plain mean. One-hot blocks of at most
    `chunk` rows are built, so memory stays bounded on large families.
    """
    C = codes.shape[0]
    L, q, nh = model.weight_matrix.shape
    if weights is None:
        w = torch.full((C,), 1.0 / C, device=model.device, dtype=model.dtype)
    else:
        w = weights.to(device=model.device, dtype=model.dtype)
        w = w / w.sum()
    vh = torch.zeros(L * q, nh, device=model.device, dtype=model.dtype)
    h = torch.zeros(nh, device=model.device, dtype=model.dtype)
    for start in range(0, C, chunk):
        part = codes[start:start + chunk]
        weighted_mag = torch.sigmoid(model.hidden_inputs(part)) * w[start:start + chunk, None]
        vh.addmm_(one_hot(part, q, model.dtype).view(-1, L * q).T, weighted_mag)
        h += weighted_mag.sum(0)
    return Moments(v=site_moments(codes, w, q), h=h, vh=vh.view(L, q, nh))


def moments_side_by_side(model: PottsRBM, parts: Sequence[tuple[Tensor, Tensor | None]]
                         ) -> list[Moments]:
    """moments(model, codes, weights) of each (codes, weights) part.

    On the CPU with T torch threads and several parts, the parts run at once on the worker
    threads of model.rbm, each with T // len(parts) threads (at least one): an average over a
    few thousand rows is many short operations, and one part per thread waits on no other
    thread between them.
    """
    threads = torch.get_num_threads()
    if model.device.type != "cpu" or threads < 2 or len(parts) < 2:
        return [moments(model, codes, weights) for codes, weights in parts]
    each = max(1, threads // len(parts))

    def run(codes: Tensor, weights: Tensor | None) -> Moments:
        if torch.get_num_threads() != each:
            torch.set_num_threads(each)
        with torch.no_grad():
            return moments(model, codes, weights)

    jobs = [block_pool(threads).submit(run, *part) for part in parts[1:]]
    try:
        first = run(*parts[0])
    finally:
        torch.set_num_threads(threads)
        wait(jobs)
    return [first, *(job.result() for job in jobs)]
