"""Equilibrium diagnostics for sets of Markov chains: is the sampler mixing, and where does it go?

All tests compare mean overlaps, the overlap of two sequences being the fraction of sites
where they carry the same state, q(a, b) = (1/L) sum_i 1[a_i = b_i].

Mixing (the t versus t/2 test): a chain that has forgotten where it was at sweep t/2 overlaps
its own earlier state no more than the earlier state of any other chain. Per chain c,

    same_c      = q(x_c(t), x_c(t/2))
    different_c = q(x_c(t), x_{pi(c)}(t/2))      pi a random permutation without fixed points

and the chains have mixed over the lag t - t/2 when mean(same - different) is zero within its
statistical error. The decorrelation time is the smallest such lag from which the test keeps
passing. From a uniformly random start the test is weak at first (a uniform x(t/2) overlaps
anything by about 1/q), so the relaxation of the energy towards the chains started from the
data is tracked beside it (rbmflow.sampling.sample).

Two sets (chains started from random, chains started from natural sequences) sample the same
distribution only if they end alike: equal mean energies, and a mean overlap between the sets
equal to the mean overlap within them. In expectation (within_a + within_b) / 2 - cross
= (1/2L) sum_i ||f_i^a - f_i^b||^2 >= 0, so it measures how far apart the sets' site
frequencies are.

A gap passes when it is statistically indistinguishable from zero (|gap| <= z_max standard
errors) or too small to matter (|gap| <= effect_max times the spread of the quantity).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class Criteria:
    """Thresholds of the equilibrium tests.

    z_max: a gap below z_max standard errors passes. effect_max: a gap below effect_max
    standard deviations of the underlying per-chain quantity passes (an effect too small to
    matter, whatever the number of chains). pearson_tolerance: largest accepted difference
    between the two sets' Pearson of connected correlations against the training data.
    """

    z_max: float = 3.0
    effect_max: float = 0.1
    pearson_tolerance: float = 0.05

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def overlap(a: Tensor, b: Tensor) -> Tensor:
    """Fraction of identical sites between rows of codes a and b, both (C, L); returns (C,)."""
    return (a == b).to(torch.float64).mean(dim=1)


def derangement(num: int, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> Tensor:
    """A random permutation of range(num) with no fixed point (num >= 2), int64 (num,)."""
    if num < 2:
        raise ValueError("a derangement needs at least 2 elements")
    order = torch.randperm(num, generator=generator, device=device)
    perm = torch.empty_like(order)
    perm[order] = order.roll(-1)
    return perm


def _gap_verdict(gap: float, stderr: float, spread: float, criteria: Criteria) -> dict[str, Any]:
    z = abs(gap) / stderr if stderr > 0 else (0.0 if gap == 0 else math.inf)
    effect = abs(gap) / spread if spread > 0 else (0.0 if gap == 0 else math.inf)
    passed = abs(gap) <= max(criteria.z_max * stderr, criteria.effect_max * spread)
    return {"gap": gap, "stderr": stderr, "z": _finite(z), "effect": _finite(effect),
            "passed": bool(passed)}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def mixing_test(current: Tensor, earlier: Tensor, criteria: Criteria = Criteria(),
                generator: torch.Generator | None = None) -> dict[str, Any]:
    """The t versus t/2 test for chains `current` = x(t) and `earlier` = x(t/2), both (C, L).

    Returns overlap_same and overlap_different (means), their difference `gap` with its
    standard error (paired per chain), `z`, `effect` (gap over the pooled standard deviation
    of the two overlaps) and `passed`.
    """
    num = current.shape[0]
    perm = derangement(num, generator, "cpu").to(current.device)
    same = overlap(current, earlier)
    different = overlap(current, earlier[perm])
    diff = same - different
    stderr = float(diff.std() / math.sqrt(num)) if num > 1 else 0.0
    spread = math.sqrt(float(same.var() + different.var())) if num > 1 else 0.0
    out = {"overlap_same": float(same.mean()), "overlap_different": float(different.mean())}
    out.update(_gap_verdict(float(diff.mean()), stderr, spread, criteria))
    return out


def compare_energies(energy_a: Tensor, energy_b: Tensor,
                     criteria: Criteria = Criteria()) -> dict[str, Any]:
    """Two-sample comparison of mean energies (C_a,) and (C_b,), Welch standard error."""
    ea, eb = energy_a.double(), energy_b.double()
    va, vb = float(ea.var()), float(eb.var())
    stderr = math.sqrt(va / ea.numel() + vb / eb.numel())
    spread = math.sqrt((va + vb) / 2)
    out = {"mean_a": float(ea.mean()), "mean_b": float(eb.mean())}
    out.update(_gap_verdict(out["mean_a"] - out["mean_b"], stderr, spread, criteria))
    return out


def compare_sets(codes_a: Tensor, codes_b: Tensor, criteria: Criteria = Criteria(),
                 generator: torch.Generator | None = None) -> dict[str, Any]:
    """Overlap within each set against overlap across the sets, codes (C_a, L) and (C_b, L).

    gap = (within_a + within_b) / 2 - cross, zero in expectation when both sets sample the
    same site frequencies. Each mean comes from its own random pairing of chains, taken as
    independent for the standard error.
    """
    na, nb = codes_a.shape[0], codes_b.shape[0]
    within_a = overlap(codes_a, codes_a[derangement(na, generator).to(codes_a.device)])
    within_b = overlap(codes_b, codes_b[derangement(nb, generator).to(codes_b.device)])
    partner = torch.randint(0, nb, (na,), generator=generator).to(codes_b.device)
    cross = overlap(codes_a, codes_b[partner])
    gap = float((within_a.mean() + within_b.mean()) / 2 - cross.mean())
    stderr = math.sqrt(float(within_a.var()) / na / 4 + float(within_b.var()) / nb / 4
                       + float(cross.var()) / na)
    spread = math.sqrt(float(within_a.var() + within_b.var()) / 2 + float(cross.var()))
    out = {"overlap_within_a": float(within_a.mean()), "overlap_within_b": float(within_b.mean()),
           "overlap_cross": float(cross.mean())}
    out.update(_gap_verdict(gap, stderr, spread, criteria))
    return out


def first_stable_pass(sweeps: list[int], passed: list[bool]) -> int | None:
    """The first record sweep from which a test passes at every later record (None: fails last)."""
    first = None
    for t, ok in zip(sweeps, passed, strict=True):
        if ok and first is None:
            first = t
        elif not ok:
            first = None
    return first


def mixing_time(sweeps: list[int], passed: list[bool]) -> int | None:
    """Lag t - t//2 at the first record t from which the mixing test passes at every record.

    sweeps: record times (increasing, > 0); passed: the test's outcome at each. None when the
    test fails at the last record.
    """
    first = first_stable_pass(sweeps, passed)
    return None if first is None else first - first // 2


# -- tests that can see modes: projections on W's top singular vectors ---------------------

def top_directions(weight_matrix: Tensor, num: int) -> Tensor:
    """The `num` top left singular vectors of W flattened to (L*q, Nh); returns (L*q, num).

    The hidden units read a sequence only through W, so its dominant directions are where
    the modes of the model separate.
    """
    L, q, nh = weight_matrix.shape
    u, _, _ = torch.linalg.svd(weight_matrix.reshape(L * q, nh).double(), full_matrices=False)
    u = u[:, :min(num, u.shape[1])]
    # A sign convention, so that projections are comparable between calls: the largest entry
    # in absolute value of each direction is positive.
    return u * torch.sign(u.gather(0, u.abs().argmax(0, keepdim=True)))


def project(codes: Tensor, directions: Tensor) -> Tensor:
    """Projections of the one-hot sequences on `directions` (L*q, d), divided by sqrt(L):
    sum_i directions[i*q + v_i] / sqrt(L) for codes (C, L); returns (C, d) float64."""
    L = codes.shape[1]
    q = directions.shape[0] // L
    flat = codes.long() + torch.arange(L, device=codes.device) * q
    return torch.nn.functional.embedding_bag(flat, directions.to(codes.device), mode="sum") \
        / math.sqrt(L)


def split_rhat(trace: Tensor) -> Tensor:
    """Split-chain potential scale reduction factor R-hat (Gelman et al.) of each observable.

    trace: (T, C, d), the values of d observables along T recorded steps of C chains; each
    chain is split into halves (2C chains of T // 2 steps). R-hat = sqrt(((n - 1)/n W + B/n)
    / W), W the mean within-chain variance, B / n the variance of the chain means; 1 at
    equilibrium, above when the chains sample different regions (modes). Returns (d,).
    """
    T = trace.shape[0]
    n = T // 2
    if n < 2:
        raise ValueError("R-hat needs at least 4 recorded steps")
    x = torch.cat([trace[:n], trace[T - n:]], dim=1).double()  # (n, 2C, d)
    means = x.mean(0)
    within = x.var(0).mean(0)
    between_over_n = means.var(0)
    pooled = (n - 1) / n * within + between_over_n
    return torch.sqrt(pooled / within.clamp_min(1e-300))


def integrated_autocorrelation_time(trace: Tensor, window: float = 5.0) -> Tensor:
    """Integrated autocorrelation time tau = 1 + 2 sum_t rho(t) of each observable, in steps.

    trace: (T, C, d). rho is the autocorrelation averaged over chains, with each chain's mean
    removed (FFT); the sum runs to Sokal's window, the first M with M >= window * tau(M).
    An AR(1) series x_t = r x_{t-1} + noise has tau = (1 + r) / (1 - r). Returns (d,).
    """
    T = trace.shape[0]
    x = trace.double() - trace.double().mean(0, keepdim=True)
    f = torch.fft.rfft(x, n=2 * T, dim=0)
    acov = torch.fft.irfft(f * f.conj(), n=2 * T, dim=0)[:T].mean(1)  # (T, d)
    rho = acov / acov[:1].clamp_min(1e-300)
    out = torch.empty(rho.shape[1], dtype=torch.float64)
    for k in range(rho.shape[1]):
        tau = 2 * torch.cumsum(rho[:, k], 0) - 1
        ok = torch.arange(T, dtype=torch.float64) >= window * tau
        m = int(ok.nonzero()[0]) if bool(ok.any()) else T - 1
        out[k] = tau[m]
    return out


def weighted_ks(x: Tensor, y: Tensor, wx: Tensor | None = None, wy: Tensor | None = None
                ) -> float:
    """Two-sample Kolmogorov-Smirnov distance sup_t |F_x(t) - F_y(t)| between the (weighted)
    empirical distributions of x (n,) and y (m,)."""
    wx = torch.full_like(x, 1.0 / x.shape[0], dtype=torch.float64) if wx is None else wx.double()
    wy = torch.full_like(y, 1.0 / y.shape[0], dtype=torch.float64) if wy is None else wy.double()
    values = torch.cat([x.double(), y.double()])
    mass = torch.cat([wx / wx.sum(), -wy / wy.sum()])
    order = torch.argsort(values, stable=True)
    sorted_values, steps = values[order], torch.cumsum(mass[order], 0)
    last_of_tie = torch.ones_like(sorted_values, dtype=torch.bool)
    last_of_tie[:-1] = sorted_values[1:] != sorted_values[:-1]
    return float(steps[last_of_tie].abs().max())


def ks_two_sample(a: Tensor, b: Tensor) -> dict[str, float]:
    """Kolmogorov-Smirnov two-sample test of 1-D samples a and b.

    Returns the statistic D (largest gap of the empirical CDFs) and its asymptotic p-value
    Q_KS(sqrt(n_eff) D), n_eff = n_a n_b / (n_a + n_b).
    """
    a, b = a.double().flatten().cpu(), b.double().flatten().cpu()
    d = weighted_ks(a, b)
    n_eff = a.numel() * b.numel() / (a.numel() + b.numel())
    lam = (math.sqrt(n_eff) + 0.12 + 0.11 / math.sqrt(n_eff)) * d
    return {"statistic": d, "p_value": _kolmogorov_q(lam)}


def _kolmogorov_q(lam: float) -> float:
    if lam < 1e-3:
        return 1.0
    total = sum(2 * (-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return min(max(total, 0.0), 1.0)


def chi_square_two_sample(counts_a: Tensor, counts_b: Tensor) -> dict[str, float]:
    """Chi-square test that two vectors of category counts come from one distribution.

    The 2 x k contingency table without its empty categories; returns the statistic, the
    degrees of freedom and the p-value (regularised upper incomplete gamma).
    """
    table = torch.stack([counts_a.double().cpu(), counts_b.double().cpu()])
    table = table[:, table.sum(0) > 0]
    dof = table.shape[1] - 1
    if dof < 1:
        return {"statistic": 0.0, "dof": 0, "p_value": 1.0}
    expected = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / table.sum()
    stat = float(((table - expected) ** 2 / expected).sum())
    p = float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64),
                                      torch.tensor(stat / 2, dtype=torch.float64)))
    return {"statistic": stat, "dof": dof, "p_value": p}


def compare_projections(reference: Tensor, other: Tensor, alpha: float = 1e-3,
                        effect_max: float = 0.05) -> dict[str, Any]:
    """Do two sets of projections (C_a, d) and (C_b, d) come from one distribution?

    A two-sample KS test per direction at level alpha / d (Bonferroni); a direction passes
    when its p-value is above that level or its KS distance is at most `effect_max` (a gap
    of mode weights too small to matter). Returns per-direction statistics and `passed`.
    """
    d = reference.shape[1]
    tests = [ks_two_sample(reference[:, k], other[:, k]) for k in range(d)]
    level = alpha / max(d, 1)
    passed = [t["p_value"] > level or t["statistic"] <= effect_max for t in tests]
    return {"ks_statistic": [t["statistic"] for t in tests],
            "p_value": [t["p_value"] for t in tests], "level": level,
            "effect_max": effect_max, "passed": bool(all(passed))}
