"""What the hidden units of a Potts RBM encode (Tubiana, Cocco, Monasson, eLife 2019).

Each hidden unit mu has a weight matrix W[:, :, mu] (L, q) over positions and residues. In the
zero-sum gauge (every column of W[i, :, mu] sums to zero), its norm says how strongly it acts;
its input I_mu(v) = sum_i W[i, v_i, mu] (no hbias) places every sequence on one axis: a unit
that separates sub-families or encodes a contact pattern shows as a multimodal distribution of
I_mu over the natural sequences, which generated sequences should reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rbmflow.model.rbm import PottsRBM


@dataclass
class UnitSummary:
    """One hidden unit: index (0-based), weight norm, and its strongest weights as
    (position 1-based, residue, weight) tuples, positive and negative separately."""

    index: int
    norm: float
    positive: list[tuple[int, str, float]]
    negative: list[tuple[int, str, float]]
    positions: list[int]

    def describe(self) -> str:
        """One sentence: which positions and residues carry the unit's weight."""
        def part(items: list[tuple[int, str, float]]) -> str:
            return ", ".join(f"{'a gap at ' if letter == '-' else letter}{pos} ({value:+.2f})"
                             for pos, letter, value in items)

        text = (f"Hidden unit {self.index + 1} (|W| = {self.norm:.2f}) is carried by positions "
                f"{', '.join(str(p) for p in self.positions)}.")
        if self.positive:
            text += f" It is activated by {part(self.positive)}"
        if self.negative:
            text += (f"{'; ' if self.positive else ' It is '}repressed by "
                     f"{part(self.negative)}")
        return text + "."


def gauged_weights(model: PottsRBM) -> np.ndarray:
    """W in the zero-sum gauge over the states, (L, q, Nh) float64 numpy."""
    W = model.weight_matrix.detach().to("cpu", torch.float64).numpy()
    return W - W.mean(1, keepdims=True)


def weight_norms(model: PottsRBM, exclude_state: int | None = None) -> np.ndarray:
    """Frobenius norm of each unit's gauged weights (Nh,), optionally without one state."""
    W = gauged_weights(model)
    if exclude_state is not None:
        W = np.delete(W, exclude_state, axis=1)
    return np.sqrt((W ** 2).sum((0, 1)))


def top_units(model: PottsRBM, count: int) -> np.ndarray:
    """Indices of the `count` units with the largest weight norms, largest first."""
    norms = weight_norms(model)
    return np.argsort(-norms, kind="stable")[:count]


def unit_inputs(model: PottsRBM, codes: torch.Tensor, units: np.ndarray,
                batch: int = 4096) -> np.ndarray:
    """I_mu(v) = sum_i W[i, v_i, mu] without hbias, for the chosen units; (n, len(units))."""
    W = model.weight_matrix.detach()
    hbias = model.hbias.detach()
    out = []
    for start in range(0, codes.shape[0], batch):
        inputs = model.hidden_inputs(codes[start:start + batch].to(W.device)) - hbias
        out.append(inputs[:, torch.as_tensor(units, device=W.device)].cpu())
    return torch.cat(out).to(torch.float64).numpy()


def summarize_unit(model: PottsRBM, unit: int, alphabet: str, top: int = 4,
                   positions: int = 5) -> UnitSummary:
    """The unit's largest positive and negative gauged weights (gaps included) and the
    positions with the largest weight norm."""
    W = gauged_weights(model)[:, :, unit]
    flat = W.ravel()
    order = np.argsort(flat)
    def entries(indices: np.ndarray) -> list[tuple[int, str, float]]:
        return [(int(k // W.shape[1]) + 1, alphabet[k % W.shape[1]], float(flat[k]))
                for k in indices]
    positive = entries(order[::-1][:top])
    positive = [e for e in positive if e[2] > 0]
    negative = [e for e in entries(order[:top]) if e[2] < 0]
    site_norms = np.sqrt((W ** 2).sum(1))
    best_sites = sorted(int(i) + 1 for i in np.argsort(-site_norms)[:positions])
    return UnitSummary(int(unit), float(np.sqrt((W ** 2).sum())), positive, negative,
                       best_sites)
