"""Metrics that compare generated sequences with natural ones, beyond one- and two-site statistics.

Conventions: sequences are integer codes (M, L) over q states, gap included;
natural statistics are weighted by the sequence weights, generated ones unweighted, and no
pseudocount is added. Hamming distances are normalised by L (fraction of differing sites).

Everything runs on torch, in chunks, so the same code uses a GPU when one is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from rbmflow.evaluation.stats import (
    connected_correlations,
    pair_frequencies,
    pearson,
    site_frequencies,
    slope,
    slope_tls,
)
from rbmflow.model.rbm import PottsRBM, one_hot

# -- three-site connected correlations -------------------------------------------------------


def random_triplets(length: int, num: int, seed: int = 0) -> np.ndarray:
    """A fixed random set of `num` distinct site triplets i < j < k, shape (T, 3), int64.

    All C(L, 3) triplets when there are no more than `num`; empty (0, 3) when L < 3. The set
    depends only on (length, num, seed), so every run of a family is scored on the same one.
    """
    total = math.comb(length, 3) if length >= 3 else 0
    if total == 0 or num <= 0:
        return np.zeros((0, 3), dtype=np.int64)
    if total <= num:
        i, j, k = np.meshgrid(*(np.arange(length),) * 3, indexing="ij")
        keep = (i < j) & (j < k)
        return np.stack([i[keep], j[keep], k[keep]], axis=1).astype(np.int64)
    rng = np.random.default_rng(seed)
    chosen: dict[tuple[int, int, int], None] = {}
    while len(chosen) < num:
        draws = np.sort(rng.integers(0, length, (2 * num, 3)), axis=1)
        for i, j, k in draws:
            if i < j < k:
                chosen.setdefault((int(i), int(j), int(k)), None)
                if len(chosen) == num:
                    break
    return np.array(list(chosen), dtype=np.int64)


def _weighted_counts(keys: Tensor, weights: Tensor, size: int) -> Tensor:
    """Sum of weights per key: keys (M, T) int64, weights (M,); returns (size,)."""
    out = torch.zeros(size, device=keys.device, dtype=weights.dtype)
    out.index_add_(0, keys.reshape(-1), weights[:, None].expand_as(keys).reshape(-1))
    return out


def three_site_correlations(codes: Tensor, num_states: int, triplets: Tensor | np.ndarray,
                            weights: Tensor | None = None, dtype: torch.dtype = torch.float64,
                            chunk: int = 64) -> Tensor:
    """Connected three-site correlations on given site triplets, all q^3 state combinations.

    C_ijk(a,b,c) = f_ijk(abc) - f_ij(ab) f_k(c) - f_ik(ac) f_j(b) - f_jk(bc) f_i(a)
                   + 2 f_i(a) f_j(b) f_k(c),
    the third cumulant of the one-hot variables. codes (M, L); triplets (T, 3) site indices;
    returns a vector of length T q^3 ordered (triplet, a, b, c). Frequencies are counted
    directly from the codes (no one-hot), so the cost is O(M T).
    """
    q = num_states
    codes = codes.long()
    triplets = torch.as_tensor(triplets, device=codes.device, dtype=torch.long)
    if weights is None:
        weights = torch.ones(codes.shape[0], device=codes.device, dtype=dtype)
    w = weights.to(device=codes.device, dtype=dtype)
    w = w / w.sum()
    fi = site_frequencies(codes, q, w, dtype)
    parts = []
    for start in range(0, triplets.shape[0], chunk):
        trip = triplets[start:start + chunk]
        n = trip.shape[0]
        offset = torch.arange(n, device=codes.device)[None, :]
        a, b, c = codes[:, trip[:, 0]], codes[:, trip[:, 1]], codes[:, trip[:, 2]]
        f3 = _weighted_counts(offset * q**3 + a * q * q + b * q + c, w, n * q**3).view(n, q, q, q)
        fij = _weighted_counts(offset * q * q + a * q + b, w, n * q * q).view(n, q, q)
        fik = _weighted_counts(offset * q * q + a * q + c, w, n * q * q).view(n, q, q)
        fjk = _weighted_counts(offset * q * q + b * q + c, w, n * q * q).view(n, q, q)
        f_i, f_j, f_k = fi[trip[:, 0]], fi[trip[:, 1]], fi[trip[:, 2]]
        cijk = (f3
                - fij[:, :, :, None] * f_k[:, None, None, :]
                - fik[:, :, None, :] * f_j[:, None, :, None]
                - fjk[:, None, :, :] * f_i[:, :, None, None]
                + 2 * f_i[:, :, None, None] * f_j[:, None, :, None] * f_k[:, None, None, :])
        parts.append(cijk.reshape(-1))
    if not parts:
        return torch.zeros(0, device=codes.device, dtype=dtype)
    return torch.cat(parts)


# -- PCA of one-hot sequences ----------------------------------------------------------------


@dataclass
class OneHotPCA:
    """Principal components of weighted one-hot sequences (flattened to L q features).

    mean: (L q,); components: (k, L q) orthonormal rows, each signed so that its largest
    loading is positive; explained_variance: (k,); total_variance: trace of the covariance.
    """

    mean: Tensor
    components: Tensor
    explained_variance: Tensor
    total_variance: float
    num_states: int

    @property
    def explained_variance_ratio(self) -> Tensor:
        return self.explained_variance / self.total_variance

    def project(self, codes: Tensor, chunk: int = 65536) -> Tensor:
        """Coordinates of codes (M, L) on the components, (M, k): (x - mean) . components."""
        table = self.components.T.contiguous()
        shift = self.mean @ table
        out = [_embedding_sum(codes[s:s + chunk], table, self.num_states) - shift
               for s in range(0, codes.shape[0], chunk)]
        return torch.cat(out) if out else torch.zeros(0, table.shape[1], dtype=table.dtype)


def _embedding_sum(codes: Tensor, table: Tensor, num_states: int) -> Tensor:
    """sum_i table[i q + v_i] for codes (C, L), table (L q, r): one_hot(v) @ table, (C, r)."""
    L = codes.shape[1]
    flat = codes.long().to(table.device) + torch.arange(L, device=table.device) * num_states
    return F.embedding_bag(flat, table, mode="sum")


def one_hot_pca(codes: Tensor, num_states: int, weights: Tensor | None = None,
                num_components: int = 5, iterations: int = 40, oversample: int = 10,
                seed: int = 0, dtype: torch.dtype = torch.float64,
                chunk: int = 65536, dense_limit: int = 6000) -> OneHotPCA:
    """Weighted PCA of one-hot sequences by block power iteration, without a one-hot matrix.

    C = sum_m w_m x_m x_m^T - mu mu^T (weights normalised, x_m one-hot of length L q). Up to
    L q = dense_limit, C is built densely (pair frequencies); beyond, it is applied to the
    block through embedding sums and index-adds, so memory stays O(M + L q r). Rayleigh-Ritz
    on the converged block gives the components.
    """
    device = codes.device
    M, L = codes.shape
    size = L * num_states
    w = torch.ones(M, device=device, dtype=dtype) if weights is None else weights.to(device, dtype)
    w = w / w.sum()
    mean = site_frequencies(codes, num_states, w, dtype).reshape(-1)
    total = float(1.0 - (mean**2).sum() / L) * L
    rank = min(num_components + oversample, size)
    offsets = torch.arange(L, device=device) * num_states

    if size <= dense_limit:
        dense = (pair_frequencies(codes, num_states, w, dtype).reshape(size, size)
                 - mean[:, None] * mean[None, :])

        def covariance_times(block: Tensor) -> Tensor:
            return dense @ block
    else:
        def covariance_times(block: Tensor) -> Tensor:
            out = torch.zeros(size, block.shape[1], device=device, dtype=dtype)
            for s in range(0, M, chunk):
                part = codes[s:s + chunk].long()
                proj = _embedding_sum(part, block, num_states) * w[s:s + chunk, None]
                flat = (part + offsets).reshape(-1)
                out.index_add_(0, flat, proj.repeat_interleave(L, dim=0))
            return out - mean[:, None] * (mean @ block)[None, :]

    generator = torch.Generator(device="cpu").manual_seed(seed)
    block = torch.randn(size, rank, generator=generator, dtype=dtype).to(device)
    block, _ = torch.linalg.qr(block)
    for _ in range(iterations):
        block, _ = torch.linalg.qr(covariance_times(block))
    small = block.T @ covariance_times(block)
    values, vectors = torch.linalg.eigh((small + small.T) / 2)
    order = torch.argsort(values, descending=True)[:num_components]
    components = (block @ vectors[:, order]).T
    signs = torch.sign(components.gather(1, components.abs().argmax(1, keepdim=True)))
    components = components * signs
    return OneHotPCA(mean, components.contiguous(), values[order].clamp(min=0.0), total,
                     num_states)


def wasserstein_1d(x: np.ndarray, y: np.ndarray, x_weights: np.ndarray | None = None,
                   y_weights: np.ndarray | None = None) -> float:
    """First Wasserstein (earth mover's) distance between two weighted 1-D samples.

    The integral of |F_x(t) - F_y(t)| dt of their cumulative distributions.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    wx = np.ones_like(x) if x_weights is None else np.asarray(x_weights, dtype=np.float64)
    wy = np.ones_like(y) if y_weights is None else np.asarray(y_weights, dtype=np.float64)
    values = np.concatenate([x, y])
    order = np.argsort(values, kind="stable")
    values = values[order]
    mass_x = np.concatenate([wx / wx.sum(), np.zeros_like(y)])[order]
    mass_y = np.concatenate([np.zeros_like(x), wy / wy.sum()])[order]
    gap = np.abs(np.cumsum(mass_x) - np.cumsum(mass_y))[:-1]
    return float(np.sum(gap * np.diff(values)))


# -- nearest neighbours in Hamming distance --------------------------------------------------


def nearest_hamming(queries: Tensor, reference: Tensor, num_states: int,
                    exclude_self: bool = False, chunk: int = 4096) -> Tensor:
    """Hamming distance (number of differing sites) from each query to its nearest reference.

    queries (n, L), reference (m, L) codes; returns (n,) int64. With `exclude_self`, queries
    and reference are the same set and each sequence's distance to itself is left out (its
    nearest *other* member; duplicates still count as distance 0). Distances come from
    one-hot products, L - one_hot(Q) one_hot(R)^T, chunked over both sets.
    """
    n, L = queries.shape
    if exclude_self and reference.shape[0] != n:
        raise ValueError("exclude_self needs queries and reference to be the same set")
    if reference.shape[0] == 0 or (exclude_self and n < 2):
        raise ValueError("nearest_hamming needs at least one reference sequence")
    dtype = torch.float32
    best = torch.full((n,), L + 1, device=queries.device, dtype=torch.long)
    for r0 in range(0, reference.shape[0], chunk):
        ref = one_hot(reference[r0:r0 + chunk], num_states, dtype).view(-1, L * num_states)
        for q0 in range(0, n, chunk):
            qry = one_hot(queries[q0:q0 + chunk], num_states, dtype).view(-1, L * num_states)
            dist = L - torch.round(qry @ ref.T).long()
            if exclude_self:
                rows = torch.arange(q0, q0 + qry.shape[0], device=dist.device)
                cols = rows - r0
                inside = (cols >= 0) & (cols < ref.shape[0])
                dist[(rows - q0)[inside], cols[inside]] = L + 1
            best[q0:q0 + qry.shape[0]] = torch.minimum(best[q0:q0 + qry.shape[0]],
                                                       dist.min(dim=1).values)
    return best


def copy_fraction(candidates: np.ndarray, training: np.ndarray) -> float:
    """Fraction of candidate sequences (n, L) identical to some training sequence (m, L)."""
    if candidates.shape[0] == 0:
        return float("nan")
    seen = {row.tobytes() for row in np.ascontiguousarray(training, dtype=np.uint8)}
    rows = np.ascontiguousarray(candidates, dtype=np.uint8)
    return float(np.mean([row.tobytes() in seen for row in rows]))


def _exceeds(larger: Tensor, smaller: Tensor) -> Tensor:
    """1 where larger > smaller, 1/2 on ties, 0 otherwise (float64)."""
    return (larger > smaller).double() + 0.5 * (larger == smaller).double()


def adversarial_accuracy(truth: Tensor, synthetic: Tensor, num_states: int,
                         chunk: int = 4096) -> dict[str, float]:
    """Nearest-neighbour adversarial accuracy (Yelmen et al., PLoS Genet. 2021).

    AA_truth = mean over true sequences of 1[d_TS > d_TT], AA_syn = mean over synthetic ones of
    1[d_ST > d_SS], ties counting one half, AA = (AA_truth + AA_syn) / 2. d_TS is the distance
    from a true sequence to its nearest synthetic one, d_TT to its nearest other true one, and
    likewise for the synthetic set. 0.5 is ideal: the two sets cannot be told apart by nearest
    neighbours; near 0 means the synthetic set copies the true one; near 1 means it is far.
    Both sets should have the same size (subsample beforehand).
    """
    d_ts = nearest_hamming(truth, synthetic, num_states, chunk=chunk)
    d_tt = nearest_hamming(truth, truth, num_states, exclude_self=True, chunk=chunk)
    d_st = nearest_hamming(synthetic, truth, num_states, chunk=chunk)
    d_ss = nearest_hamming(synthetic, synthetic, num_states, exclude_self=True, chunk=chunk)
    aa_truth = float(_exceeds(d_ts, d_tt).mean())
    aa_syn = float(_exceeds(d_st, d_ss).mean())
    return {"AA_truth": aa_truth, "AA_syn": aa_syn, "AA": 0.5 * (aa_truth + aa_syn)}


def weighted_median(values: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The smallest value at which the cumulative weight reaches half the total."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan")
    if weights is None:
        return float(np.median(values))
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(np.asarray(weights, dtype=np.float64)[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def weighted_subsample(weights: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of `size` distinct items drawn in proportion to `weights` (M,), one at
    a time without replacement (Efraimidis-Spirakis keys log(u) / w); all, in order, if
    M <= size. Items of zero weight are drawn last."""
    weights = np.asarray(weights, dtype=np.float64)
    num = weights.shape[0]
    if num <= size:
        return np.arange(num)
    u = np.random.default_rng(seed).random(num)
    with np.errstate(divide="ignore"):
        keys = np.where(weights > 0, np.log(u) / np.where(weights > 0, weights, 1.0), -np.inf)
    return np.sort(np.argsort(-keys, kind="stable")[:size])


def subsample(num: int, size: int, seed: int) -> np.ndarray:
    """Indices of a seeded random subset of `size` out of `num` (all, in order, if num <= size)."""
    if num <= size:
        return np.arange(num)
    return np.sort(np.random.default_rng(seed).choice(num, size=size, replace=False))


# -- energies -------------------------------------------------------------------------------


@torch.no_grad()
def free_energies(model: PottsRBM, codes: Tensor, chunk: int = 16384) -> Tensor:
    """F(v) in nats for codes (M, L), computed in chunks on the model's device; (M,)."""
    out = [model.free_energy(codes[s:s + chunk].to(model.device))
           for s in range(0, codes.shape[0], chunk)]
    return torch.cat(out) if out else torch.zeros(0, dtype=model.dtype)


def weighted_summary(values: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
    """Weighted mean, standard deviation, and the unweighted 5/50/95 percentiles."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "p05": float("nan"),
                "median": float("nan"), "p95": float("nan")}
    w = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64)
    mean = float(np.average(values, weights=w))
    std = float(np.sqrt(np.average((values - mean) ** 2, weights=w)))
    p05, median, p95 = np.percentile(values, [5, 50, 95])
    return {"mean": mean, "std": std, "p05": float(p05), "median": float(median),
            "p95": float(p95)}


# -- the whole comparison -------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationSettings:
    """Knobs of the comparison; every random choice is seeded.

    triplets: number of site triplets for three-site correlations; nn_samples: at most this
    many generated (and test) sequences enter the nearest-neighbour computations; nn_reference:
    at most this many training sequences serve as their reference (0: all);
    pca_components: components kept.
    """

    seed: int = 0
    triplets: int = 500
    nn_samples: int = 2000
    nn_reference: int = 50000
    pca_components: int = 5


@dataclass
class Evaluation:
    """metrics: the JSON-ready numbers; arrays: what the figures draw (NumPy, on the CPU)."""

    metrics: dict
    arrays: dict[str, np.ndarray]
    notes: list[str]


def _pearson_or_none(x: Tensor, y: Tensor) -> float | None:
    if x.numel() < 2 or float(x.double().std()) == 0.0 or float(y.double().std()) == 0.0:
        return None
    return pearson(x, y)


def amino_acid_entries(length: int, num_states: int, device: torch.device | str = "cpu"
                       ) -> Tensor:
    """Boolean mask over the entries of `connected_correlations` (pairs i < j, then (a, b)):
    True where neither state is the gap (code 0)."""
    states = torch.ones(num_states, num_states, dtype=torch.bool, device=device)
    states[0, :] = states[:, 0] = False
    return states.reshape(-1).repeat(length * (length - 1) // 2)


@dataclass(frozen=True)
class _Compared:
    """The sets one evaluation compares, all code tensors (M, L) on one device."""

    train: Tensor
    train_weights: Tensor
    test: Tensor
    test_weights: Tensor
    generated: Tensor
    num_states: int
    settings: EvaluationSettings

    @property
    def has_test(self) -> bool:
        return self.test.shape[0] > 0

    @property
    def length(self) -> int:
        return self.generated.shape[1]

    @property
    def reference(self) -> tuple[Tensor, Tensor]:
        """The natural reference (codes, weights): the test split, or train when it is empty."""
        return ((self.test, self.test_weights) if self.has_test
                else (self.train, self.train_weights))


def _site_frequency_metrics(s: _Compared) -> Evaluation:
    q, (ref, ref_w) = s.num_states, s.reference
    fi_ref = site_frequencies(ref, q, ref_w)
    fi_gen = site_frequencies(s.generated, q)
    fi_train = site_frequencies(s.train, q, s.train_weights)
    m = {"pearson_fi": _pearson_or_none(fi_gen, fi_ref),
         "pearson_fi_train_vs_test": _pearson_or_none(fi_train, fi_ref) if s.has_test else None}
    arrays = {"fi_reference": fi_ref.cpu().numpy(), "fi_generated": fi_gen.cpu().numpy(),
              "fi_train": fi_train.cpu().numpy()}
    return Evaluation(m, arrays, [])


def _correlation_metrics(s: _Compared) -> Evaluation:
    """Pearson and slopes of the connected two-site correlations, all entries and amino acids
    only."""
    q, (ref, ref_w), has_test = s.num_states, s.reference, s.has_test
    cij_ref = connected_correlations(ref, q, ref_w)
    cij_gen = connected_correlations(s.generated, q)
    cij_train = connected_correlations(s.train, q, s.train_weights)
    varies = float(cij_ref.std()) > 0
    residues = amino_acid_entries(s.length, q, cij_ref.device)
    m = {
        "pearson_cij": _pearson_or_none(cij_gen, cij_ref),
        "slope_cij": slope(cij_ref, cij_gen) if varies else None,
        "pearson_cij_train_vs_test": _pearson_or_none(cij_train, cij_ref) if has_test else None,
        "slope_cij_train_vs_test": slope(cij_ref, cij_train) if has_test and varies else None,
        "slope_cij_tls": slope_tls(cij_ref, cij_gen) if varies else None,
        "slope_cij_tls_train_vs_test": (slope_tls(cij_ref, cij_train)
                                        if has_test and varies else None),
        "pearson_cij_aa": _pearson_or_none(cij_gen[residues], cij_ref[residues]),
        "pearson_cij_aa_train_vs_test": (_pearson_or_none(cij_train[residues], cij_ref[residues])
                                         if has_test else None),
    }
    arrays = {"cij_reference": cij_ref.cpu().numpy(), "cij_generated": cij_gen.cpu().numpy(),
              "cij_train": cij_train.cpu().numpy()}
    return Evaluation(m, arrays, [])


def _three_site_metrics(s: _Compared) -> Evaluation:
    q, (ref, ref_w) = s.num_states, s.reference
    triplets = random_triplets(s.length, s.settings.triplets, s.settings.seed)
    m: dict = {"n_triplets": int(triplets.shape[0])}
    if not triplets.shape[0]:
        m["pearson_cijk"] = m["pearson_cijk_train_vs_test"] = None
        return Evaluation(m, {}, ["fewer than 3 sites: no three-site correlations"])
    cijk_ref = three_site_correlations(ref, q, triplets, ref_w)
    cijk_gen = three_site_correlations(s.generated, q, triplets)
    m["pearson_cijk"] = _pearson_or_none(cijk_gen, cijk_ref)
    m["pearson_cijk_train_vs_test"] = (
        _pearson_or_none(three_site_correlations(s.train, q, triplets, s.train_weights), cijk_ref)
        if s.has_test else None)
    arrays = {"cijk_reference": cijk_ref.cpu().numpy(), "cijk_generated": cijk_gen.cpu().numpy()}
    return Evaluation(m, arrays, [])


def _pca_metrics(s: _Compared) -> Evaluation:
    """Natural and generated sequences on the natural one-hot PCA; Wasserstein distances along
    PC1-PC2 in natural standard deviations."""
    q, L, has_test = s.num_states, s.length, s.has_test
    natural = torch.cat([s.train, s.test])
    natural_w = torch.cat([s.train_weights, s.test_weights]).double()
    k = max(1, min(s.settings.pca_components, L * q))
    pca = one_hot_pca(natural, q, natural_w, k, seed=s.settings.seed)
    nat_proj = pca.project(natural).cpu().numpy()
    gen_proj = pca.project(s.generated).cpu().numpy()
    nat_split = np.concatenate([np.zeros(s.train.shape[0], np.uint8),
                                np.ones(s.test.shape[0], np.uint8)])
    nat_w = natural_w.cpu().numpy()
    std = np.sqrt(np.maximum(pca.explained_variance.cpu().numpy(), 1e-300))
    ref_sel = nat_split == (1 if has_test else 0)
    dims = min(2, k)
    w1_gen = [wasserstein_1d(gen_proj[:, c], nat_proj[ref_sel, c], None, nat_w[ref_sel]) / std[c]
              for c in range(dims)]
    w1_ceiling = ([wasserstein_1d(nat_proj[nat_split == 0, c], nat_proj[ref_sel, c],
                                  nat_w[nat_split == 0], nat_w[ref_sel]) / std[c]
                   for c in range(dims)] if has_test else None)
    m = {"pca": {
        "n_components": int(k),
        "explained_variance_ratio": [float(v) for v in pca.explained_variance_ratio.cpu()],
        "w1_per_component": [float(v) for v in w1_gen],
        "distance": float(np.mean(w1_gen)),
        "distance_train_vs_test": float(np.mean(w1_ceiling)) if w1_ceiling else None,
        "distance_definition": "mean over PC1-PC2 of the 1-D Wasserstein distance between "
                               "generated and natural reference projections, in units of the "
                               "natural standard deviation along each component",
    }}
    arrays = {"pca_natural": nat_proj, "pca_natural_split": nat_split,
              "pca_natural_weights": nat_w, "pca_generated": gen_proj,
              "pca_explained_ratio": pca.explained_variance_ratio.cpu().numpy()}
    return Evaluation(m, arrays, [])


def _neighbour_metrics(s: _Compared) -> Evaluation:
    """Exact copies, distances to the nearest training sequence and the nearest-neighbour
    adversarial accuracy, natural sets subsampled uniformly."""
    train, test, generated, q, L = s.train, s.test, s.generated, s.num_states, s.length
    has_test, settings = s.has_test, s.settings
    m: dict = {}
    arrays: dict[str, np.ndarray] = {}
    notes: list[str] = []
    gen_np = generated.cpu().numpy().astype(np.uint8)
    train_np = train.cpu().numpy().astype(np.uint8)
    m["copy_fraction"] = copy_fraction(gen_np, train_np)
    m["copy_fraction_test"] = copy_fraction(test.cpu().numpy().astype(np.uint8), train_np) \
        if has_test else None
    if train.shape[0] < 2:
        notes.append("fewer than 2 training sequences: no nearest-neighbour metrics")
        m["hamming_nn_median"] = m["hamming_nn_median_test"] = None
        m["nnaa"] = m["nnaa_test_vs_train"] = None
        return Evaluation(m, arrays, notes)
    seed = settings.seed
    ref_idx = (subsample(train.shape[0], settings.nn_reference, seed + 1)
               if settings.nn_reference > 0 else np.arange(train.shape[0]))
    if ref_idx.size < train.shape[0]:
        notes.append(f"nearest-neighbour distances use {ref_idx.size} of "
                     f"{train.shape[0]} training sequences as reference (seeded subsample)")
    train_ref = train[torch.as_tensor(ref_idx, device=train.device)]
    gen_idx = torch.as_tensor(subsample(generated.shape[0], settings.nn_samples, seed + 2),
                              device=generated.device)
    d_gen = nearest_hamming(generated[gen_idx], train_ref, q).cpu().numpy() / L
    m["hamming_nn_median"] = float(np.median(d_gen))
    m["hamming_nn_samples"] = int(gen_idx.numel())
    arrays["hamming_generated"] = d_gen
    if has_test:
        test_idx = torch.as_tensor(subsample(test.shape[0], settings.nn_samples, seed + 3),
                                   device=test.device)
        d_test = nearest_hamming(test[test_idx], train_ref, q).cpu().numpy() / L
        m["hamming_nn_median_test"] = float(np.median(d_test))
        arrays["hamming_test"] = d_test
    else:
        m["hamming_nn_median_test"] = None

    n_aa = min(settings.nn_samples, train.shape[0], generated.shape[0])
    t_idx = torch.as_tensor(subsample(train.shape[0], n_aa, seed + 4), device=train.device)
    g_idx = torch.as_tensor(subsample(generated.shape[0], n_aa, seed + 5),
                            device=generated.device)
    if n_aa >= 2:
        m["nnaa"] = {**adversarial_accuracy(train[t_idx], generated[g_idx], q),
                     "n": int(n_aa), "truth": "train"}
    else:
        m["nnaa"] = None
        notes.append("fewer than 2 generated sequences: no adversarial accuracy")
    if has_test and test.shape[0] >= 2:
        n_ref = min(settings.nn_samples, train.shape[0], test.shape[0])
        t_idx = torch.as_tensor(subsample(train.shape[0], n_ref, seed + 4), device=train.device)
        s_idx = torch.as_tensor(subsample(test.shape[0], n_ref, seed + 6), device=test.device)
        m["nnaa_test_vs_train"] = {**adversarial_accuracy(train[t_idx], test[s_idx], q),
                                   "n": int(n_ref), "truth": "train"}
    else:
        m["nnaa_test_vs_train"] = None
    return Evaluation(m, arrays, notes)


def _weighted_neighbour_metrics(s: _Compared) -> Evaluation:
    """Nearest-neighbour scores with the natural sets subsampled in proportion to their
    sequence weights (so a model of the weighted distribution scores AA ~ 0.5), and Yelmen's
    privacy loss AA(test, generated) - AA(train, generated), both at the same size."""
    train, test, generated, q, settings = s.train, s.test, s.generated, s.num_states, s.settings
    arrays: dict[str, np.ndarray] = {}
    out: dict = {"nn_natural_sampling": "in proportion to the sequence weights, "
                                        "without replacement"}
    keys = ("hamming_nn_median_weighted", "hamming_nn_median_test_weighted", "nnaa_weighted",
            "nnaa_test_weighted", "nnaa_test_vs_train_weighted", "privacy_loss")
    out.update(dict.fromkeys(keys))
    if train.shape[0] < 2:
        return Evaluation(out, arrays, [])
    seed, L = settings.seed, s.length
    w_train = s.train_weights.double().cpu().numpy()
    w_test = s.test_weights.double().cpu().numpy()

    def pick(codes: Tensor, weights: np.ndarray | None, size: int, offset: int) -> Tensor:
        index = (subsample(codes.shape[0], size, seed + offset) if weights is None
                 else weighted_subsample(weights, size, seed + offset))
        return codes[torch.as_tensor(index, device=codes.device)]

    reference_size = settings.nn_reference if settings.nn_reference > 0 else train.shape[0]
    train_ref = pick(train, w_train, reference_size, 11)
    gen_nn = pick(generated, None, settings.nn_samples, 2)
    out["hamming_nn_median_weighted"] = float(np.median(
        nearest_hamming(gen_nn, train_ref, q).cpu().numpy() / L))
    if test.shape[0]:
        d_test = nearest_hamming(pick(test, w_test, settings.nn_samples, 13), train_ref,
                                 q).cpu().numpy() / L
        # A subsample drawn in proportion to the weights counts each member once; the whole
        # set, when small enough to be taken whole, counts each by its weight.
        whole = test.shape[0] <= settings.nn_samples
        out["hamming_nn_median_test_weighted"] = weighted_median(
            d_test, w_test if whole else None)
        arrays["hamming_test_weighted"] = d_test

    def aa(truth: Tensor, truth_w: np.ndarray, synthetic: Tensor, size: int,
           offset: int) -> dict | None:
        if size < 2:
            return None
        return {**adversarial_accuracy(pick(truth, truth_w, size, offset),
                                       pick(synthetic, None, size, offset + 1), q),
                "n": int(size)}

    n_gen = min(settings.nn_samples, train.shape[0], generated.shape[0])
    out["nnaa_weighted"] = aa(train, w_train, generated, n_gen, 14)
    if out["nnaa_weighted"] is not None:
        out["nnaa_weighted"]["truth"] = "train"
    if test.shape[0] >= 2:
        n_ref = min(settings.nn_samples, train.shape[0], test.shape[0])
        tvt = adversarial_accuracy(pick(train, w_train, n_ref, 16),
                                   pick(test, w_test, n_ref, 17), q)
        out["nnaa_test_vs_train_weighted"] = {**tvt, "n": int(n_ref), "truth": "train"}
        n_priv = min(settings.nn_samples, train.shape[0], test.shape[0], generated.shape[0])
        on_test = aa(test, w_test, generated, n_priv, 18)
        on_train = aa(train, w_train, generated, n_priv, 20)
        if on_test is not None and on_train is not None:
            out["nnaa_test_weighted"] = {**on_test, "truth": "test"}
            out["privacy_loss"] = {"value": on_test["AA"] - on_train["AA"],
                                   "AA_test": on_test["AA"], "AA_train": on_train["AA"],
                                   "n": int(n_priv),
                                   "definition": "AA(test, generated) - AA(train, generated)"
                                                 " (Yelmen et al. 2021); near 0: no "
                                                 "memorisation of the training sequences"}
    return Evaluation(out, arrays, [])


def _energy_metrics(s: _Compared, model: PottsRBM | None) -> Evaluation:
    """Free energies F(v) (nats) of train, test and generated sequences under `model`."""
    if model is None:
        return Evaluation({"energy": None}, {}, ["no model given: energies not computed"])
    energies = {"train": (s.train, s.train_weights), "test": (s.test, s.test_weights),
                "generated": (s.generated, None)}
    summaries = {}
    arrays: dict[str, np.ndarray] = {}
    for name, (codes, weights) in energies.items():
        values = free_energies(model, codes).double().cpu().numpy()
        w_np = None if weights is None else weights.double().cpu().numpy()
        arrays[f"energy_{name}"] = values
        arrays[f"energy_weights_{name}"] = (np.ones_like(values) if w_np is None else w_np)
        summaries[name] = weighted_summary(values, w_np)
    return Evaluation({"energy": summaries}, arrays, [])


def evaluate(train: Tensor, train_weights: Tensor, test: Tensor, test_weights: Tensor,
             generated: Tensor, num_states: int, settings: EvaluationSettings,
             model: PottsRBM | None = None) -> Evaluation:
    """Compare generated codes with natural train and test codes (docs/science.md: evaluation).

    All code tensors (M, L) live on the computing device. Natural statistics use the
    sequence weights, generated ones are unweighted. The natural reference is the test split;
    train vs test gives the ceiling a perfect model would reach. When the test split is empty
    the training split is the reference and no ceiling is given (stated in `notes`).
    """
    s = _Compared(train, train_weights, test, test_weights, generated, num_states, settings)
    result = Evaluation({"n_generated": int(generated.shape[0]), "n_train": int(train.shape[0]),
                         "n_test": int(test.shape[0]), "length": int(s.length),
                         "num_states": int(num_states),
                         "reference": "test" if s.has_test else "train"}, {}, [])
    if not s.has_test:
        result.notes.append("the alignment has no test split: generated sequences are compared "
                            "with the training split and no natural ceiling is given")
    for part in (_site_frequency_metrics(s), _correlation_metrics(s), _three_site_metrics(s),
                 _pca_metrics(s), _neighbour_metrics(s), _weighted_neighbour_metrics(s),
                 _energy_metrics(s, model)):
        result.metrics.update(part.metrics)
        result.arrays.update(part.arrays)
        result.notes.extend(part.notes)
    return result
