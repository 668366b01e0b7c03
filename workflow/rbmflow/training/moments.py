"""The averages that enter the log-likelihood gradient, over data or chains, weighted."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rbmflow.model.rbm import PottsRBM, one_hot


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
