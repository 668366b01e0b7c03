"""Synthetic protein-like families with well-separated subfamilies (modes).

A family is made of a few random consensus sequences; each member copies one consensus and
replaces a fraction of its sites by uniformly random states (a substitution may draw the
consensus state again). Such a family has one mode per consensus, separated by barriers of
about L (1 - substitution_rate) sites, which Gibbs chains do not cross: it is the test case
of training and sampling at equilibrium across modes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rbmflow import ALPHABET


@dataclass(frozen=True)
class MultimodalFamily:
    """codes (M, L) int64 in [0, q); labels (M,) index of each member's consensus;
    consensus (K, L) the consensus sequences as codes."""

    codes: np.ndarray
    labels: np.ndarray
    consensus: np.ndarray

    def fasta(self, alphabet: str = ALPHABET) -> str:
        """The family as FASTA text, `>seq_{m} cluster={k}`, in `alphabet` (q letters)."""
        letters = np.array(list(alphabet))
        return "".join(f">seq_{m} cluster={k}\n{''.join(letters[row])}\n"
                       for m, (row, k) in enumerate(zip(self.codes, self.labels, strict=True)))


def multimodal_family(num_sequences: int = 4000, length: int = 40, num_states: int = 21,
                      shares: tuple[float, ...] = (0.6, 0.3, 0.1),
                      substitution_rate: float = 0.12, seed: int = 0,
                      gap_free: bool = True) -> MultimodalFamily:
    """Draw a multimodal family: len(shares) random consensus sequences, members split among
    them by `shares` (rounded, the remainder going to the first), each site substituted with
    probability `substitution_rate` by a uniform state. gap_free: states are drawn in
    [1, q) so that no sequence is dropped by a gap filter (code 0 is the gap)."""
    if not abs(sum(shares) - 1) < 1e-9 or min(shares) < 0:
        raise ValueError(f"shares must be non-negative and sum to 1, got {shares}")
    rng = np.random.default_rng(seed)
    low = 1 if gap_free else 0
    consensus = rng.integers(low, num_states, (len(shares), length))
    counts = [int(round(s * num_sequences)) for s in shares]
    counts[0] += num_sequences - sum(counts)
    labels = np.repeat(np.arange(len(shares)), counts)
    rng.shuffle(labels)
    codes = consensus[labels].copy()
    mutate = rng.random(codes.shape) < substitution_rate
    codes[mutate] = rng.integers(low, num_states, int(mutate.sum()))
    return MultimodalFamily(codes=codes, labels=labels, consensus=consensus)


def nearest_consensus(codes: Tensor | np.ndarray, consensus: Tensor | np.ndarray) -> np.ndarray:
    """Index of the consensus with the fewest mismatches to each row of codes (C, L)."""
    c = torch.as_tensor(np.asarray(codes) if not isinstance(codes, Tensor) else codes.cpu())
    k = torch.as_tensor(np.asarray(consensus))
    distance = (c[:, None, :] != k[None, :, :]).sum(-1)
    return distance.argmin(-1).numpy()


def cluster_shares(labels: np.ndarray, num_clusters: int,
                   weights: np.ndarray | Tensor | None = None) -> np.ndarray:
    """Weighted fraction of rows in each cluster, (num_clusters,)."""
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=np.float64)
    return np.bincount(labels, weights=w, minlength=num_clusters) / w.sum()
