"""Partition function of a Potts RBM: exact enumeration for small models.

log Z = log sum_v sum_h exp(-E(v, h)), in nats.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rbmflow.model import PottsRBM


def hidden_configurations(num_hiddens: int, device: torch.device | str = "cpu",
                          dtype: torch.dtype = torch.float64) -> Tensor:
    """All 2^Nh binary hidden configurations, (2^Nh, Nh), in binary counting order."""
    index = torch.arange(2**num_hiddens, device=device)
    bits = torch.arange(num_hiddens - 1, -1, -1, device=device)
    return ((index[:, None] >> bits) & 1).to(dtype)


def log_partition_exact(model: PottsRBM, batch_size: int = 4096) -> float:
    """log Z by enumerating the hidden layer (2^Nh terms); practical for Nh <= 20 or so.

    sum_v exp(-E(v, h)) factorises over sites: log Z = logsumexp_h [hbias . h +
    sum_i logsumexp_a (vbias[i, a] + sum_mu W[i, a, mu] h_mu)]. Computed in float64.
    """
    if model.num_hiddens > 24:
        raise ValueError(f"2^{model.num_hiddens} hidden configurations is too many to enumerate")
    m = model.to(dtype=torch.float64)
    hiddens = hidden_configurations(m.num_hiddens, m.device)
    terms = []
    for start in range(0, hiddens.shape[0], batch_size):
        h = hiddens[start:start + batch_size]
        terms.append(h @ m.hbias + torch.logsumexp(m.visible_logits(h), dim=-1).sum(-1))
    return float(torch.logsumexp(torch.cat(terms), dim=0))
