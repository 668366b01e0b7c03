"""Scores of synthetic genomes in population-genetics terms, each beside its natural ceiling.

Rows are haplotypes (codes 0/1) or individuals (codes 0/1/2 = ALT allele counts). The
distance between two rows is the number of differing alleles, sum_i |a_i - b_i| (the
Hamming distance for haplotypes).

- Allele frequencies: ALT frequency per SNP (haplotypes: mean code; counts: mean code / 2).
- LD: r^2, the squared Pearson correlation of two SNPs' codes over rows (for counts the
  genotypic r^2), for every pair of SNPs on the same chromosome; undefined (left out) where a
  SNP is constant in a set.
- AATS (Yelmen et al., PLoS Genet. 2021): nearest-neighbour adversarial accuracy of a real
  set T and a synthetic set S of equal size, AATS = (AA_TS + AA_ST) / 2 with
  AA_TS = mean_t 1[d_TS(t) > d_TT(t)] and AA_ST = mean_s 1[d_ST(s) > d_SS(s)]; d_TS(t) is the
  distance from t to its nearest member of S, d_TT(t) to its nearest other member of T. Ties
  count one half. 0.5: indistinguishable; below: S too close to T (copies); above: too far.
- Privacy loss: AATS(S vs test) - AATS(S vs train); near 0 when the model has not memorised
  its training rows, positive when it generates closer to them than to unseen ones.
- Population shares: each row is given the population of its nearest labelled training row
  (ties: the most frequent label among the tied, then alphabetical order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

CHUNK = 2048
PRIVACY_REPEATS = 20
"""Draws of the equal-size subsets that AATS and the privacy loss are averaged over."""


def allele_frequencies(codes: np.ndarray, encoding: str) -> np.ndarray:
    """float64 (L,): ALT allele frequency of each SNP over the rows of codes (M, L)."""
    scale = 2.0 if encoding == "counts" else 1.0
    return np.asarray(codes, dtype=np.float64).mean(0) / scale


def same_chromosome_pairs(chrom: np.ndarray, pos: np.ndarray, max_pairs: int = 200_000,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SNP pairs i < j on the same chromosome and their distance |pos_j - pos_i| (bp);
    a seeded random subset when there are more than `max_pairs`."""
    chrom = np.asarray(chrom).astype(str)
    first, second = np.triu_indices(chrom.size, k=1)
    same = chrom[first] == chrom[second]
    first, second = first[same], second[same]
    if first.size > max_pairs:
        keep = np.sort(np.random.default_rng(seed).choice(first.size, max_pairs, replace=False))
        first, second = first[keep], second[keep]
    distance = np.abs(np.asarray(pos, dtype=np.int64)[second]
                      - np.asarray(pos, dtype=np.int64)[first])
    return first, second, distance


def ld_r2(codes: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """float64 (P,): r^2 of the SNP pairs (first[p], second[p]) over the rows of codes (M, L);
    NaN where either SNP is constant."""
    x = np.asarray(codes, dtype=np.float64)
    x = x - x.mean(0)
    std = np.sqrt((x * x).mean(0))
    r = (x[:, first] * x[:, second]).mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = r / (std[first] * std[second])
    r[(std[first] == 0) | (std[second] == 0)] = np.nan
    return r * r


def pearson_finite(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation over the entries where both are finite (None if < 3 or flat)."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.std(x[ok]) == 0 or np.std(y[ok]) == 0:
        return None
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 (n, m): allele differences sum_i |a_i - b_i| between rows of a and b."""
    ta = torch.as_tensor(np.asarray(a), dtype=torch.float32)
    tb = torch.as_tensor(np.asarray(b), dtype=torch.float32)
    return torch.cdist(ta, tb, p=1.0).double().numpy()


def nearest_distance(queries: np.ndarray, reference: np.ndarray,
                     exclude_self: bool = False) -> np.ndarray:
    """float64 (n,): distance from each query to its nearest reference row; with
    `exclude_self` (same set) each row's distance to itself is left out."""
    best = np.empty(queries.shape[0])
    for start in range(0, queries.shape[0], CHUNK):
        block = distances(queries[start:start + CHUNK], reference)
        if exclude_self:
            rows = np.arange(block.shape[0])
            block[rows, start + rows] = np.inf
        best[start:start + CHUNK] = block.min(1)
    return best


def _exceeds(larger: np.ndarray, smaller: np.ndarray) -> float:
    return float(((larger > smaller) + 0.5 * (larger == smaller)).mean())


def aats(truth: np.ndarray, synthetic: np.ndarray) -> dict[str, float]:
    """AA_TS, AA_ST and AATS of two sets of rows (see the module docstring)."""
    if truth.shape[0] < 2 or synthetic.shape[0] < 2:
        raise ValueError("AATS needs at least two rows in each set")
    aa_ts = _exceeds(nearest_distance(truth, synthetic), nearest_distance(truth, truth, True))
    aa_st = _exceeds(nearest_distance(synthetic, truth),
                     nearest_distance(synthetic, synthetic, True))
    return {"AA_TS": aa_ts, "AA_ST": aa_st, "AATS": 0.5 * (aa_ts + aa_st)}


def nearest_labels(queries: np.ndarray, reference: np.ndarray, labels: np.ndarray,
                   query_groups: np.ndarray | None = None,
                   reference_groups: np.ndarray | None = None) -> np.ndarray:
    """str (n,): label of each query's nearest reference row (ties: see the module).

    With groups (e.g. individuals), reference rows of the query's own group are left out
    (leave-one-individual-out)."""
    names, index = np.unique(labels, return_inverse=True)
    onehot = np.eye(names.size)[index]
    out = np.empty(queries.shape[0], dtype=object)
    for start in range(0, queries.shape[0], CHUNK):
        block = distances(queries[start:start + CHUNK], reference)
        if query_groups is not None and reference_groups is not None:
            block[query_groups[start:start + CHUNK, None] == reference_groups[None, :]] = np.inf
        tied = block == block.min(1, keepdims=True)
        out[start:start + CHUNK] = names[(tied @ onehot).argmax(1)]
    return out.astype(str)


def shares(labels: np.ndarray, names: list[str]) -> dict[str, float]:
    """Fraction of `labels` equal to each name."""
    labels = np.asarray(labels)
    return {name: float((labels == name).mean()) if labels.size else 0.0 for name in names}


def share_gap(a: dict[str, float], b: dict[str, float]) -> float:
    """Largest absolute difference of two share tables over their populations."""
    return max(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))


@dataclass
class GenomeSets:
    """Natural train and test rows, generated rows, and what is known of the SNPs and rows."""

    train: np.ndarray
    test: np.ndarray
    generated: np.ndarray
    encoding: str
    chrom: np.ndarray
    pos: np.ndarray
    train_individuals: np.ndarray
    train_populations: np.ndarray | None = None
    test_populations: np.ndarray | None = None
    arrays: dict[str, Any] = field(default_factory=dict)


def _subsample(rows: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if rows.shape[0] <= size:
        return rows
    return rows[np.sort(rng.choice(rows.shape[0], size, replace=False))]


def frequency_and_ld_metrics(s: GenomeSets, seed: int) -> dict[str, Any]:
    """Allele-frequency and LD Pearson, generated vs test and train vs test."""
    freq = {name: allele_frequencies(rows, s.encoding)
            for name, rows in (("train", s.train), ("test", s.test), ("generated", s.generated))}
    first, second, dist = same_chromosome_pairs(s.chrom, s.pos, seed=seed)
    ld = {name: ld_r2(rows, first, second)
          for name, rows in (("train", s.train), ("test", s.test), ("generated", s.generated))}
    rows = {name: int(codes.shape[0]) for name, codes in
            (("train", s.train), ("test", s.test), ("generated", s.generated))}
    s.arrays.update({"freq": freq, "ld": ld, "ld_distance": dist, "rows": rows})
    return {
        "pearson_allele_freq": pearson_finite(freq["generated"], freq["test"]),
        "pearson_allele_freq_train_vs_test": pearson_finite(freq["train"], freq["test"]),
        "pearson_ld_r2": pearson_finite(ld["generated"], ld["test"]),
        "pearson_ld_r2_train_vs_test": pearson_finite(ld["train"], ld["test"]),
        "ld_pairs": int(first.size),
    }


def privacy_metrics(s: GenomeSets, size: int, seed: int,
                    repeats: int = PRIVACY_REPEATS) -> dict[str, Any]:
    """AATS of generated vs test and of natural train vs test; privacy loss of the generated
    rows and of an unseen natural set (half the test rows against the other half).

    Each score is the mean over `repeats` draws of the equal-size subsets (generated, train
    and test rows, and the split of the test rows in halves); `aats_spread` and
    `privacy_loss["spread"]` are standard errors of those means over the draws: subsampling
    noise only, since the test rows themselves are one draw of the population."""
    rng = np.random.default_rng(seed)
    n = min(size, s.test.shape[0], s.generated.shape[0])
    half = s.test.shape[0] // 2
    detail: dict[str, list[dict[str, float]]] = {
        "generated_vs_test": [], "generated_vs_train": [], "train_vs_test": []}
    natural_losses = []
    for _ in range(repeats):
        test, gen = _subsample(s.test, n, rng), _subsample(s.generated, n, rng)
        train = _subsample(s.train, n, rng)
        detail["generated_vs_test"].append(aats(test, gen))
        detail["generated_vs_train"].append(aats(train, gen))
        detail["train_vs_test"].append(aats(train, test))
        if half >= 2:
            order = rng.permutation(s.test.shape[0])
            fresh, held = s.test[order[:half]], s.test[order[half:2 * half]]
            natural_losses.append(aats(held, fresh)["AATS"]
                                  - aats(_subsample(s.train, half, rng), fresh)["AATS"])
    mean = {name: {k: float(np.mean([d[k] for d in draws])) for k in draws[0]}
            for name, draws in detail.items()}
    losses = [t["AATS"] - r["AATS"] for t, r in
              zip(detail["generated_vs_test"], detail["generated_vs_train"], strict=True)]
    return {
        "aats": mean["generated_vs_test"]["AATS"],
        "aats_spread": _spread([d["AATS"] for d in detail["generated_vs_test"]]),
        "aats_train_vs_test": mean["train_vs_test"]["AATS"],
        "aats_detail": {**mean, "n": int(n), "repeats": repeats},
        "privacy_loss": {"value": float(np.mean(losses)), "spread": _spread(losses),
                         "train_vs_test": (float(np.mean(natural_losses))
                                           if natural_losses else None),
                         "definition": "AATS(generated vs test) - AATS(generated vs train); "
                                       "beside it, half the test rows as the generated set; "
                                       f"means over {repeats} draws of the subsets",
                         "n": int(n), "repeats": repeats},
    }


def _spread(values: list[float]) -> float:
    """Standard error of the mean of `values` (0 for one value)."""
    if len(values) < 2:
        return 0.0
    return float(np.std(values, ddof=1) / np.sqrt(len(values)))


def population_metrics(s: GenomeSets) -> dict[str, Any] | None:
    """Population shares by nearest-neighbour vote among labelled training rows, of every
    generated row, the test rows and (leave-one-individual-out) the training rows."""
    if s.train_populations is None or s.test_populations is None:
        return None
    labelled = s.train_populations != ""
    if labelled.sum() < 2:
        return None
    reference, labels = s.train[labelled], s.train_populations[labelled]
    groups = s.train_individuals[labelled]
    names = sorted(set(labels.tolist()))
    gen = s.generated
    generated = nearest_labels(gen, reference, labels)
    test_vote = nearest_labels(s.test, reference, labels)
    train_vote = nearest_labels(reference, reference, labels, groups, groups)
    s.arrays["generated_populations"] = generated
    out = {
        "generated": shares(generated, names),
        "real": shares(test_vote, names),
        "real_train": shares(train_vote, names),
        "real_labels": shares(s.test_populations[s.test_populations != ""], names),
        "train_labels": shares(labels, names),
        "n_generated": int(gen.shape[0]),
    }
    out["gap"] = share_gap(out["generated"], out["real"])
    out["gap_train_vs_test"] = share_gap(out["real_train"], out["real"])
    out["test_vote_accuracy"] = float((test_vote == s.test_populations)[
        s.test_populations != ""].mean()) if (s.test_populations != "").any() else None
    return out


def pca_projection(real: np.ndarray, generated: np.ndarray, components: int = 2
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA fitted on the real rows (codes centred, not scaled); the real and generated rows
    projected on the top components, and the explained-variance ratios."""
    x = np.asarray(real, dtype=np.float64)
    mean = x.mean(0)
    _, singular, vt = np.linalg.svd(x - mean, full_matrices=False)
    axes = vt[:components].T
    ratio = (singular**2 / max((singular**2).sum(), 1e-300))[:components]
    return (x - mean) @ axes, (np.asarray(generated, dtype=np.float64) - mean) @ axes, ratio


def evaluate_genomes(s: GenomeSets, size: int = 2000, seed: int = 0) -> dict[str, Any]:
    """metrics.json's genome keys (see the module docstring); figure arrays in `s.arrays`."""
    metrics = frequency_and_ld_metrics(s, seed)
    if s.test.shape[0] >= 2 and s.generated.shape[0] >= 2:
        metrics.update(privacy_metrics(s, size, seed))
    metrics["population_shares"] = population_metrics(s)
    real = np.concatenate([s.train, s.test])
    real_pc, gen_pc, ratio = pca_projection(real, s.generated)
    s.arrays.update({"real_pc": real_pc, "generated_pc": gen_pc, "pc_ratio": ratio})
    metrics["genome_pca_explained"] = ratio.tolist()
    rng = np.random.default_rng(seed + 1)
    pairs = {}
    for name, (a, b) in {"test": (s.test, s.test), "generated": (s.generated, s.generated),
                         "test_vs_generated": (s.test, s.generated)}.items():
        i = rng.integers(0, a.shape[0], 5000)
        j = rng.integers(0, b.shape[0], 5000)
        keep = (i != j) if a is b else np.ones(i.size, dtype=bool)
        pairs[name] = np.abs(a[i[keep]].astype(np.int64) - b[j[keep]].astype(np.int64)).sum(1)
    s.arrays["pair_distances"] = pairs
    metrics["median_pair_distance"] = {k: float(np.median(v)) for k, v in pairs.items()}
    return metrics
