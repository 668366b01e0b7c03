"""Synthetic data and models with known answers, for tests and benchmarks.

Random multimodal RBMs and planted-pattern RBMs (a first-order transition), small enough to
enumerate; and protein-like families with well-separated subfamilies (modes).


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
from rbmflow.model.rbm import PottsRBM


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


def random_structured_rbm(num_visibles: int, num_states: int, num_hiddens: int,
                          coupling: float = 1.5, noise: float = 0.3, field_std: float = 0.5,
                          activation: float = 0.25,
                          generator: torch.Generator | None = None) -> PottsRBM:
    """A random RBM with several modes, in float64 and the zero-sum gauge.

    Hidden unit mu rewards a random pattern P_mu: W[i, a, mu] = coupling 1[a = P_mu(i)] +
    noise N(0, 1); vbias ~ N(0, field_std^2); hbias = -activation * coupling * L, so a unit
    switches on only when about that fraction of the sites agree with its pattern. Each
    active unit pulls the visibles to its pattern: one mode per set of active units.
    """
    L, q, nh = num_visibles, num_states, num_hiddens
    patterns = torch.randint(0, q, (nh, L), generator=generator)
    weight_matrix = noise * torch.randn(L, q, nh, generator=generator, dtype=torch.float64)
    weight_matrix[torch.arange(L)[:, None], patterns.T, torch.arange(nh)[None, :]] += coupling
    vbias = field_std * torch.randn(L, q, generator=generator, dtype=torch.float64)
    hbias = torch.full((nh,), -activation * coupling * L, dtype=torch.float64)
    model = PottsRBM(weight_matrix, vbias, hbias)
    model.apply_zero_sum_gauge_()
    return model


def planted_pattern_rbm(num_visibles: int, num_states: int, num_patterns: int,
                        coupling: float = 4.0, threshold: float = 0.75,
                        generator: torch.Generator | None = None) -> PottsRBM:
    """An RBM with a first-order transition between a paramagnetic and an ordered phase.

    Hidden unit mu rewards its planted pattern P_mu by `coupling` per matching site, and
    hbias = -threshold * coupling * L keeps it off unless most sites match. vbias = 0. In
    the paramagnetic phase (uniform v, units off, about L / q matches) no unit switches on,
    so chains started there stay there; the ordered states (v near a pattern, its unit on)
    hold most of the probability when L log((e^coupling + q - 1) / q) exceeds
    threshold * coupling * L. Float64, not gauged (the planted patterns stay readable).
    """
    L, q, nh = num_visibles, num_states, num_patterns
    patterns = torch.randint(0, q, (nh, L), generator=generator)
    weight_matrix = torch.zeros(L, q, nh, dtype=torch.float64)
    weight_matrix[torch.arange(L)[:, None], patterns.T, torch.arange(nh)[None, :]] = coupling
    vbias = torch.zeros(L, q, dtype=torch.float64)
    hbias = torch.full((nh,), -threshold * coupling * L, dtype=torch.float64)
    return PottsRBM(weight_matrix, vbias, hbias)


# -- genotype families -----------------------------------------------------------------------


@dataclass(frozen=True)
class FounderGenomes:
    """Diploid individuals from founder populations, for tests and benchmarks.

    haplotypes uint8 (2N, L): rows 2n and 2n+1 are individual n's two haplotypes;
    populations (N,) index of each individual's population; chrom (L,) str and pos (L,) int64
    (1-based base pairs, increasing within a chromosome); shares (K,) the mixture weights.
    """

    haplotypes: np.ndarray
    populations: np.ndarray
    chrom: np.ndarray
    pos: np.ndarray
    shares: tuple[float, ...]

    @property
    def samples(self) -> list[str]:
        return [f"IND{n + 1}" for n in range(self.populations.size)]

    def population_names(self) -> list[str]:
        return [f"POP{k + 1}" for k in self.populations]

    def vcf(self, unphased: bool = False) -> str:
        """VCF 4.2 text, REF A and ALT G at every SNP; phased calls unless `unphased`."""
        sep = "/" if unphased else "|"
        h = self.haplotypes.astype(str)
        calls = np.char.add(np.char.add(h[0::2], sep), h[1::2])  # (N, L)
        lines = ["##fileformat=VCFv4.2",
                 *(f"##contig=<ID={c}>" for c in dict.fromkeys(self.chrom.tolist())),
                 '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
                 "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO",
                            "FORMAT", *self.samples])]
        lines += ["\t".join([str(self.chrom[j]), str(self.pos[j]), f"snp{j + 1}", "A", "G",
                             ".", "PASS", ".", "GT", *calls[:, j]])
                  for j in range(self.pos.size)]
        return "\n".join(lines) + "\n"

    def hapt(self) -> str:
        """The haplotype matrix as `.hapt` text: population, `{sample}_A|B`, then 0/1 values."""
        names = self.population_names()
        return "".join(f"{names[r // 2]} {self.samples[r // 2]}_{'AB'[r % 2]} "
                       f"{' '.join(map(str, row))}\n" for r, row in enumerate(self.haplotypes))

    def populations_tsv(self) -> str:
        return "sample\tpopulation\n" + "".join(
            f"{s}\t{p}\n" for s, p in zip(self.samples, self.population_names(), strict=True))


def founder_genomes(num_individuals: int = 300, num_snps: int = 60,
                    shares: tuple[float, ...] = (0.5, 0.3, 0.2), founders: int = 4,
                    chromosomes: int = 2, fst: float = 0.2, switch_per_mb: float = 0.5,
                    mutation_rate: float = 0.01, seed: int = 0) -> FounderGenomes:
    """Haplotypes as mosaics of founder haplotypes of their population, with recombination.

    Ancestral ALT frequencies p ~ U(0.1, 0.9); each population's frequencies
    ~ Beta(p (1-F)/F, (1-p)(1-F)/F) with F = `fst` (Balding-Nichols); each population has
    `founders` haplotypes drawn from its frequencies. A haplotype copies one founder of its
    individual's population and switches to a random founder between neighbouring SNPs with
    probability 1 - exp(-switch_per_mb * distance in Mb) (none across chromosomes), then
    each allele flips with probability `mutation_rate`. SNPs are spread at random over
    `chromosomes` chromosomes of 10 Mb. Individuals draw their population from `shares`.
    """
    rng = np.random.default_rng(seed)
    num_pops = len(shares)
    chrom = np.sort(rng.integers(0, chromosomes, num_snps))
    pos = np.zeros(num_snps, dtype=np.int64)
    for c in range(chromosomes):
        members = np.flatnonzero(chrom == c)
        pos[members] = np.sort(rng.choice(10_000_000, members.size, replace=False) + 1)
    ancestral = rng.uniform(0.1, 0.9, num_snps)
    scale = (1.0 - fst) / fst
    freqs = rng.beta(ancestral * scale, (1.0 - ancestral) * scale, (num_pops, num_snps))
    founder_haps = (rng.random((num_pops, founders, num_snps)) < freqs[:, None]).astype(np.uint8)
    populations = rng.choice(num_pops, num_individuals, p=np.asarray(shares) / sum(shares))
    gap_mb = np.diff(pos, prepend=pos[0]) / 1e6
    switch = 1.0 - np.exp(-switch_per_mb * gap_mb)
    switch[np.r_[True, chrom[1:] != chrom[:-1]]] = 1.0
    rows = 2 * num_individuals
    source = np.zeros((rows, num_snps), dtype=np.int64)
    current = rng.integers(0, founders, rows)
    for j in range(num_snps):
        jump = rng.random(rows) < switch[j]
        current = np.where(jump, rng.integers(0, founders, rows), current)
        source[:, j] = current
    pop_of_row = np.repeat(populations, 2)
    haps = founder_haps[pop_of_row[:, None], source, np.arange(num_snps)[None, :]]
    haps ^= (rng.random(haps.shape) < mutation_rate).astype(np.uint8)
    return FounderGenomes(haps.astype(np.uint8), populations,
                          np.array([str(c + 1) for c in chrom]), pos, tuple(shares))
