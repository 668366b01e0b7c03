"""Tempering samplers against exact enumeration: swap rates, multimodal sampling, ladders."""

from __future__ import annotations

import math

import pytest
import torch
from rbmflow.data.synthetic import planted_pattern_rbm
from rbmflow.model.partition import interpolate, sample_exact, visible_configurations
from rbmflow.model.rbm import PottsRBM
from rbmflow.sampling.mixing import (
    chi_square_two_sample,
    integrated_autocorrelation_time,
    ks_two_sample,
    split_rhat,
)
from rbmflow.sampling.tempering import (
    Level,
    beta_levels,
    expected_swap_rate,
    interpolate_levels,
    ptt_sample,
    select_ladder,
    temper,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int, scale: float = 1.5) -> PottsRBM:
    g = torch.Generator().manual_seed(seed)
    return PottsRBM(scale * torch.randn(2, 3, 2, generator=g, dtype=torch.float64),
                    torch.randn(2, 3, generator=g, dtype=torch.float64),
                    torch.randn(2, generator=g, dtype=torch.float64))


def exact_swap_rate(lower: Level, upper: Level) -> float:
    """sum_{x, y} p_lower(x) p_upper(y) min(1, exp(F_l(x) + F_u(y) - F_l(y) - F_u(x)))."""
    states = visible_configurations(2, 3)
    f_l, f_u = lower.free_energy(states), upper.free_energy(states)
    p_l, p_u = torch.softmax(-f_l, 0), torch.softmax(-f_u, 0)
    log_ratio = f_l[:, None] + f_u[None, :] - f_l[None, :] - f_u[:, None]
    return float((p_l[:, None] * p_u[None, :] * log_ratio.clamp(max=0).exp()).sum())


@pytest.mark.parametrize("kind", ["trajectory", "temperature"])
def test_measured_swap_rate_equals_the_enumerated_one(kind: str) -> None:
    """L=2, q=3, Nh=2: the rate of accepted swaps at stationarity is the expectation of the
    Metropolis acceptance over independent pairs drawn from the two levels (9 x 9 states)."""
    first, second = tiny_model(1), tiny_model(2)
    if kind == "trajectory":
        levels = [Level(first, 1.0, "a"), Level(second, 1.0, "b")]
    else:
        levels = [Level(second, 0.3, "hot"), Level(second, 1.0, "cold")]
    expected = exact_swap_rate(*levels)
    assert 0.05 < expected < 0.95
    g = torch.Generator().manual_seed(3)
    chains, sweeps = 3001, 60
    result = temper(levels, chains, sweeps, g)
    attempts = result.swap_attempts[0]
    assert attempts == chains * (sweeps // 2)
    stderr = math.sqrt(expected * (1 - expected) / attempts)
    # The first sweeps are not yet at stationarity; allow for it and for correlations.
    assert abs(result.swap_rates[0] - expected) < 6 * stderr + 0.01
    # The estimate from samples of each level agrees too.
    samples = [sample_exact(lv.model if lv.beta == 1.0 else PottsRBM(
        *(lv.beta * t for t in lv.model.tensors())), 20011, g) for lv in levels]
    assert abs(expected_swap_rate(*levels, *samples) - expected) < 0.01


def test_swaps_between_identical_levels_are_always_accepted() -> None:
    model = tiny_model(4)
    result = ptt_sample([model, model, model], 101, 6, torch.Generator().manual_seed(0))
    assert result.swap_rates == [1.0, 1.0]
    assert result.swap_attempts == [303, 303]


# -- a multimodal model where plain Gibbs is stuck -----------------------------------------

L_PLANTED, Q_PLANTED, PATTERNS = 11, 3, 3


def planted_model() -> tuple[PottsRBM, Tensor]:
    """Three planted patterns with mode weights about 0.6 / 0.3 / 0.1 (hbias offsets)."""
    g = torch.Generator().manual_seed(0)
    model = planted_pattern_rbm(L_PLANTED, Q_PLANTED, PATTERNS, coupling=6.0, threshold=0.6,
                                generator=g)
    model.hbias += torch.tensor([0.0, -0.7, -1.8], dtype=torch.float64)
    model = model.to(dtype=torch.float32)
    return model, model.weight_matrix.argmax(1).T


def mode_counts(codes: Tensor, patterns: Tensor) -> Tensor:
    """Chains per planted pattern (overlap > 0.6 with it), plus one bin for the rest."""
    overlaps = (codes[:, None, :] == patterns[None]).double().mean(-1)
    best = torch.where(overlaps.max(1).values > 0.6, overlaps.argmax(1),
                       torch.full((codes.shape[0],), patterns.shape[0]))
    return torch.bincount(best, minlength=patterns.shape[0] + 1)


Tensor = torch.Tensor


@pytest.fixture(scope="module")
def planted() -> dict:
    model, patterns = planted_model()
    g = torch.Generator().manual_seed(1)
    exact = mode_counts(sample_exact(model, 20000, g), patterns)
    return {"model": model, "patterns": patterns, "exact": exact}


def test_plain_gibbs_from_one_mode_fails_the_two_sample_test(planted: dict) -> None:
    model, patterns = planted["model"], planted["patterns"]
    g = torch.Generator().manual_seed(2)
    start = patterns[0].repeat(301, 1)
    stuck = mode_counts(model.gibbs(start, 300, 1.0, g), patterns)
    assert chi_square_two_sample(stuck, planted["exact"])["p_value"] < 1e-6


def test_pt_samples_pass_the_two_sample_test_against_exact_samples(planted: dict) -> None:
    model, patterns = planted["model"], planted["patterns"]
    g = torch.Generator().manual_seed(3)
    ladder = select_ladder(beta_levels(model, 6), 128, 30, floor=0.5, generator=g)
    assert min(ladder.swap_rates) > 0.3
    result = temper(ladder.levels, 301, 200, g)
    counts = mode_counts(result.codes, patterns)
    test = chi_square_two_sample(counts, planted["exact"])
    assert test["p_value"] > 1e-3, (counts, planted["exact"], result.swap_rates)


def test_ptt_samples_pass_the_two_sample_test_against_exact_samples(planted: dict) -> None:
    """A trajectory of models whose patterns grow from nothing, as in a training run."""
    model, patterns = planted["model"], planted["patterns"]
    zero = PottsRBM(*(torch.zeros_like(t) for t in model.tensors()))
    trajectory = [interpolate(zero, model, t) for t in torch.linspace(0, 1, 8).tolist()]
    g = torch.Generator().manual_seed(4)
    result = ptt_sample(trajectory, 301, 200, g)
    counts = mode_counts(result.codes, patterns)
    test = chi_square_two_sample(counts, planted["exact"])
    assert test["p_value"] > 1e-3, (counts, planted["exact"], result.swap_rates)
    assert min(result.swap_rates) > 0.3 and result.passages > 100


def test_ladder_drops_redundant_levels_and_keeps_rates_above_the_floor(planted: dict) -> None:
    model = planted["model"]
    g = torch.Generator().manual_seed(5)
    dense = beta_levels(model, 30)
    ladder = select_ladder(dense, 128, 30, floor=0.5, generator=g)
    assert len(ladder.levels) < 15
    assert ladder.levels[0].beta == 0.0 and ladder.levels[-1].beta == 1.0
    sparse = select_ladder(beta_levels(model, 2), 128, 30, floor=0.5, generator=g)
    assert len(sparse.levels) > 2  # levels were inserted between beta 0 and 1
    assert min(sparse.swap_rates) > 0.35


# -- R-hat and autocorrelation time on series with a known answer --------------------------

def ar1(steps: int, chains: int, r: float, generator: torch.Generator) -> Tensor:
    x = torch.empty(steps, chains, 1, dtype=torch.float64)
    x[0] = torch.randn(chains, 1, generator=generator, dtype=torch.float64)
    noise = torch.randn(steps, chains, 1, generator=generator, dtype=torch.float64)
    for t in range(1, steps):
        x[t] = r * x[t - 1] + math.sqrt(1 - r * r) * noise[t]
    return x


def test_autocorrelation_time_of_ar1_series() -> None:
    g = torch.Generator().manual_seed(6)
    for r in (0.0, 0.5, 0.8):
        tau = float(integrated_autocorrelation_time(ar1(4000, 53, r, g))[0])
        expected = (1 + r) / (1 - r)
        assert abs(tau - expected) < 0.1 * expected, (r, tau)


def test_rhat_is_one_for_mixed_chains_and_large_for_separated_ones() -> None:
    g = torch.Generator().manual_seed(7)
    mixed = ar1(400, 61, 0.5, g)
    assert abs(float(split_rhat(mixed)[0]) - 1) < 0.01
    stuck = mixed.clone()
    stuck[:, :30] += 3.0  # half the chains sit in another mode
    # Exact value: within-variance 1, between-chain variance of the means ~ 9/4.
    assert float(split_rhat(stuck)[0]) > 1.5


def test_two_sample_tests_accept_equal_and_reject_different_distributions() -> None:
    g = torch.Generator().manual_seed(8)
    a, b = torch.randn(3000, generator=g), torch.randn(2000, generator=g)
    assert ks_two_sample(a, b)["p_value"] > 1e-3
    assert ks_two_sample(a, b + 0.3)["p_value"] < 1e-6
    counts = torch.tensor([600, 300, 100])
    assert chi_square_two_sample(counts, torch.tensor([1190, 610, 200]))["p_value"] > 0.05
    assert chi_square_two_sample(counts, torch.tensor([1000, 800, 200]))["p_value"] < 1e-6


def test_every_level_of_a_batched_run_follows_its_exact_distribution() -> None:
    """Three levels of different models and temperatures advance as one batch: after the
    run, the chains of each level are distributed as that level's exact p_k(v) (9 states,
    L=2, q=3), including the interpolated ones."""
    first, second = tiny_model(5), tiny_model(6)
    levels = [Level(first, 0.4, "a"), interpolate_levels(Level(first, 0.4), Level(second, 1.0),
                                                         0.5), Level(second, 1.0, "c")]
    g = torch.Generator().manual_seed(11)
    chains = 4001
    result = temper(levels, chains, 40, g, init=torch.zeros(chains, 2, dtype=torch.long))
    states = visible_configurations(2, 3)
    for level, codes in zip(levels, result.level_codes, strict=True):
        exact = torch.softmax(-level.free_energy(states), 0)
        index = codes[:, 0] * 3 + codes[:, 1]
        counts = torch.bincount(index, minlength=9).double()
        expected = exact * chains
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 26.1, (level.label, counts, expected)  # chi2(8) at p = 0.001


def test_batched_run_leaves_its_initial_codes_and_counts_swaps_per_pair() -> None:
    model = tiny_model(7)
    init = torch.zeros(53, 2, dtype=torch.long)
    result = temper(beta_levels(model, 5), 53, 7, torch.Generator().manual_seed(1), init=init)
    assert (init == 0).all()
    assert result.swap_attempts == [53 * 3, 53 * 4, 53 * 3, 53 * 4]
    assert all(0.0 <= r <= 1.0 for r in result.swap_rates)
    assert [c.shape for c in result.level_codes] == [(53, 2)] * 5


def test_gpu_check_runs_on_the_cpu_in_toy_mode(tmp_path) -> None:
    """benchmarks/gpu_check.py end to end at toy size: sweep rate, tempering versus plain
    Gibbs, couplings, and its JSON summary."""
    import json
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    bench = runpy.run_path(str(script))
    out = tmp_path / "gpu_check.json"
    result = bench["run"](bench["parse_args"](["--toy", "--device", "cpu", "--out", str(out)]))
    assert result["sweep"]["sweeps_per_s"] > 0
    assert math.isfinite(result["tempering"]["tempering_over_gibbs"])
    assert result["couplings"]["couplings_s"] > 0
    assert json.loads(out.read_text())["toy"] is True
