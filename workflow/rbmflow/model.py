"""The Potts-Bernoulli RBM: parameters, energies and the conditional distributions.

Conventions (DESIGN.md): visible units are categorical with q states, given as integer codes
(C, L); hidden units are binary {0, 1}.

    E(v, h) = - sum_{i,mu} W[i, v_i, mu] h_mu - sum_i vbias[i, v_i] - sum_mu hbias[mu] h_mu
    F(v)    = - sum_i vbias[i, v_i] - sum_mu softplus(hbias[mu] + sum_i W[i, v_i, mu])

An inverse temperature `beta` multiplies every energy term. Energies are in nats.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F


@dataclass
class PottsRBM:
    """Parameters of a Potts-Bernoulli RBM.

    weight_matrix: (L, q, Nh); vbias: (L, q); hbias: (Nh,). All on one device, one dtype.
    """

    weight_matrix: Tensor
    vbias: Tensor
    hbias: Tensor

    def __post_init__(self) -> None:
        L, q, nh = self.weight_matrix.shape
        if self.vbias.shape != (L, q) or self.hbias.shape != (nh,):
            raise ValueError(
                f"inconsistent shapes: weight_matrix {tuple(self.weight_matrix.shape)}, "
                f"vbias {tuple(self.vbias.shape)}, hbias {tuple(self.hbias.shape)}"
            )

    @property
    def num_visibles(self) -> int:
        return int(self.weight_matrix.shape[0])

    @property
    def num_states(self) -> int:
        return int(self.weight_matrix.shape[1])

    @property
    def num_hiddens(self) -> int:
        return int(self.weight_matrix.shape[2])

    @property
    def device(self) -> torch.device:
        return self.weight_matrix.device

    @property
    def dtype(self) -> torch.dtype:
        return self.weight_matrix.dtype

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> PottsRBM:
        return PottsRBM(*(t.to(device=device, dtype=dtype) for t in self.tensors()))

    def clone(self) -> PottsRBM:
        return PottsRBM(*(t.detach().clone() for t in self.tensors()))

    def tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.weight_matrix, self.vbias, self.hbias

    def named_parameters(self) -> dict[str, Tensor]:
        """Names as in the `rbms` package's HDF5 archives."""
        return {"weight_matrix": self.weight_matrix, "vbias": self.vbias, "hbias": self.hbias}

    # -- energies ---------------------------------------------------------------------------

    def hidden_inputs(self, codes: Tensor) -> Tensor:
        """sum_i W[i, v_i, :] + hbias for codes (C, L); returns (C, Nh).

        An embedding-bag over the rows of W picked by the codes: no one-hot is built.
        """
        L, q, nh = self.weight_matrix.shape
        offsets = torch.arange(L, device=codes.device, dtype=torch.long) * q
        flat = codes.long() + offsets
        return F.embedding_bag(flat, self.weight_matrix.reshape(L * q, nh), mode="sum") + self.hbias

    def visible_fields(self, codes: Tensor) -> Tensor:
        """sum_i vbias[i, v_i] for codes (C, L); returns (C,)."""
        return torch.gather(self.vbias.expand(codes.shape[0], -1, -1), 2,
                            codes.long().unsqueeze(-1)).squeeze(-1).sum(-1)

    def free_energy(self, codes: Tensor, beta: float = 1.0) -> Tensor:
        """F(v) at inverse temperature beta: -beta vbias . v - sum softplus(beta * inputs); (C,)."""
        return -beta * self.visible_fields(codes) - F.softplus(
            beta * self.hidden_inputs(codes)).sum(-1)

    def energy(self, codes: Tensor, hiddens: Tensor) -> Tensor:
        """E(v, h) for codes (C, L) and hiddens (C, Nh); returns (C,)."""
        return -self.visible_fields(codes) - (self.hidden_inputs(codes) * hiddens).sum(-1)

    def visible_logits(self, hiddens: Tensor, beta: float = 1.0) -> Tensor:
        """beta * (vbias + W h) for hiddens (C, Nh); returns (C, L, q)."""
        L, q, nh = self.weight_matrix.shape
        logits = (hiddens @ self.weight_matrix.reshape(L * q, nh).T).view(-1, L, q) + self.vbias
        return beta * logits

    # -- conditional sampling ---------------------------------------------------------------

    def sample_hiddens(self, codes: Tensor, beta: float = 1.0,
                       generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw h ~ p(h | v); returns (h, p(h = 1 | v)), each (C, Nh)."""
        mag = torch.sigmoid(beta * self.hidden_inputs(codes))
        h = (torch.rand(mag.shape, generator=generator, device=mag.device, dtype=mag.dtype)
             < mag).to(mag.dtype)
        return h, mag

    def sample_visibles(self, hiddens: Tensor, beta: float = 1.0,
                        generator: torch.Generator | None = None) -> Tensor:
        """Draw v ~ p(v | h); returns codes (C, L) as int64."""
        return sample_categorical(self.visible_logits(hiddens, beta), generator)

    def gibbs(self, codes: Tensor, sweeps: int, beta: float = 1.0,
              generator: torch.Generator | None = None) -> Tensor:
        """Run `sweeps` alternating block-Gibbs sweeps v -> h -> v from codes (C, L)."""
        for _ in range(sweeps):
            h, _ = self.sample_hiddens(codes, beta, generator)
            codes = self.sample_visibles(h, beta, generator)
        return codes

    # -- gauge ------------------------------------------------------------------------------

    @torch.no_grad()
    def apply_zero_sum_gauge_(self) -> None:
        """Make sum_a W[i, a, mu] = 0 and sum_a vbias[i, a] = 0, in place.

        The shift taken out of W is put into hbias, so p(v) is unchanged exactly; the shift of
        vbias is a constant energy offset, so p(v) is unchanged too (log Z moves by it).
        """
        w_mean = self.weight_matrix.mean(dim=1, keepdim=True)
        self.hbias += w_mean.sum(dim=(0, 1))
        self.weight_matrix -= w_mean
        self.vbias -= self.vbias.mean(dim=1, keepdim=True)


def sample_categorical(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row of logits (..., q) by inverse CDF; returns int64 codes (...)."""
    probs = torch.softmax(logits, dim=-1)
    cdf = probs.cumsum(dim=-1)
    u = torch.rand(cdf.shape[:-1] + (1,), generator=generator, device=cdf.device, dtype=cdf.dtype)
    return (cdf < u * cdf[..., -1:]).sum(dim=-1).clamp_(max=logits.shape[-1] - 1)


def random_codes(num: int, length: int, num_states: int, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> Tensor:
    """Uniformly random codes (num, length), int64."""
    return torch.randint(0, num_states, (num, length), device=device, generator=generator)


def one_hot(codes: Tensor, num_states: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """(C, L) codes to a (C, L, q) one-hot tensor."""
    return F.one_hot(codes.long(), num_states).to(dtype)
