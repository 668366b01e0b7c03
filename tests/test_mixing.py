"""Equilibrium diagnostics: stuck chains are flagged, mixing chains pass."""

from __future__ import annotations

import math

import pytest
import torch
from rbmflow.model.rbm import PottsRBM
from rbmflow.sampling.mixing import (
    Criteria,
    compare_energies,
    compare_sets,
    derangement,
    mixing_test,
    mixing_time,
    overlap,
)
from rbmflow.sampling.sample import (
    DATA,
    RANDOM,
    SamplingSettings,
    combined_mixing_time,
    run_sampling,
)

L, Q, NH = 11, 5, 3
SITES = torch.arange(L)
PATTERN_A = SITES % Q
PATTERN_B = (SITES + 2) % Q  # differs from A at every site


def two_mode_model(strength: float = 3.0) -> PottsRBM:
    """One hidden unit switches between two far-apart patterns.

    h_0 = 0: vbias favours pattern B; h_0 = 1: W cancels that and favours pattern A. The
    model is symmetric under A <-> B, and p(h_0 = 1 | v) = sigmoid(strength (n_A - n_B)),
    n_X the number of sites matching pattern X: from either mode, leaving it takes of the
    order of exp(strength * L / 2) sweeps.
    """
    weight_matrix = torch.zeros(L, Q, NH)
    vbias = torch.zeros(L, Q)
    weight_matrix[SITES, PATTERN_A, 0] = strength
    weight_matrix[SITES, PATTERN_B, 0] = -strength
    vbias[SITES, PATTERN_B] = strength
    return PottsRBM(weight_matrix, vbias, torch.zeros(NH))


def independent_model(seed: int = 7) -> PottsRBM:
    """No couplings: one sweep draws an exact, independent sample."""
    g = torch.Generator().manual_seed(seed)
    return PottsRBM(torch.zeros(L, Q, NH), torch.randn(L, Q, generator=g), torch.zeros(NH))


def exact_independent_sample(model: PottsRBM, num: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(model.vbias, dim=-1)
    return torch.multinomial(probs, num, replacement=True, generator=g).T.contiguous()


def test_overlap_and_derangement() -> None:
    a = torch.tensor([[0, 1, 2, 3], [4, 4, 4, 4]])
    b = torch.tensor([[0, 1, 0, 0], [4, 4, 4, 4]])
    assert overlap(a, b).tolist() == [0.5, 1.0]
    g = torch.Generator().manual_seed(0)
    for num in (2, 3, 17):
        perm = derangement(num, g)
        assert sorted(perm.tolist()) == list(range(num))
        assert not (perm == torch.arange(num)).any()
    with pytest.raises(ValueError):
        derangement(1, g)


def test_mixing_time_is_the_lag_from_which_the_test_keeps_passing() -> None:
    sweeps = [1, 2, 3, 4, 6, 8, 12, 16]
    assert mixing_time(sweeps, [False, True, False, False, True, True, True, True]) == 3
    assert mixing_time(sweeps, [True] * 8) == 1
    assert mixing_time(sweeps, [True] * 7 + [False]) is None


def test_mixing_test_on_exact_independent_samples_passes() -> None:
    model = independent_model()
    g = torch.Generator().manual_seed(1)
    x_now = exact_independent_sample(model, 2003, seed=2)
    x_then = exact_independent_sample(model, 2003, seed=3)
    result = mixing_test(x_now, x_then, Criteria(), g)
    assert result["passed"]
    assert abs(result["gap"]) < 3 * result["stderr"]
    # the expected overlap of two independent draws: sum_i sum_a p_i(a)^2 / L
    expected = float((torch.softmax(model.vbias, -1) ** 2).sum() / L)
    assert result["overlap_same"] == pytest.approx(expected, abs=0.02)
    assert result["overlap_different"] == pytest.approx(expected, abs=0.02)


def test_mixing_test_flags_chains_that_remember_their_start() -> None:
    model = independent_model()
    g = torch.Generator().manual_seed(1)
    x_then = exact_independent_sample(model, 1009, seed=2)
    x_now = x_then.clone()
    x_now[:, :3] = exact_independent_sample(model, 1009, seed=3)[:, :3]  # 8 of 11 sites kept
    result = mixing_test(x_now, x_then, Criteria(), g)
    assert not result["passed"]
    assert result["overlap_same"] > result["overlap_different"] + 0.4


def test_set_comparisons_tell_apart_two_modes() -> None:
    model = two_mode_model()
    g = torch.Generator().manual_seed(5)
    in_a = model.gibbs(PATTERN_A.repeat(503, 1), 8, 1.0, g)
    in_a_again = model.gibbs(PATTERN_A.repeat(499, 1), 8, 1.0, g)
    in_b = model.gibbs(PATTERN_B.repeat(499, 1), 8, 1.0, g)
    same = compare_sets(in_a, in_a_again, Criteria(), g)
    apart = compare_sets(in_a, in_b, Criteria(), g)
    assert same["passed"]
    assert not apart["passed"]
    assert apart["overlap_cross"] < 0.3 < apart["overlap_within_a"]
    # the model is symmetric: equal energies do not tell the modes apart, overlaps do
    assert compare_energies(model.free_energy(in_a), model.free_energy(in_b))["passed"]
    shifted = compare_energies(model.free_energy(in_a), model.free_energy(in_a_again) + 1.0)
    assert not shifted["passed"] and shifted["z"] > 3


def test_stuck_chains_from_random_are_flagged() -> None:
    """Random starts fall into either mode and stay there: the t vs t/2 test fails."""
    model = two_mode_model()
    g = torch.Generator().manual_seed(11)
    train = model.gibbs(torch.cat([PATTERN_A.repeat(200, 1), PATTERN_B.repeat(200, 1)]), 10,
                        1.0, g)
    result = run_sampling(model, SamplingSettings(chains=307, sweeps=96, seed=3,
                                                  auto_extend=False), train)
    assert result.equilibrated is False
    assert "mixing_random" in result.failed_checks
    assert result.mixing_time is None
    # both modes are populated, half and half, and no chain changed mode
    in_a = (overlap(result.codes, PATTERN_A.repeat(307, 1)) > 0.5).double().mean()
    assert 0.35 < float(in_a) < 0.65
    traj = result.trajectories[RANDOM]
    assert all(ok is False for ok in traj.mixing_passed[4:])


def test_chains_started_in_one_mode_are_flagged_by_the_other_set() -> None:
    """Each set alone looks mixed; only their comparison shows they sample different modes."""
    model = two_mode_model()
    g = torch.Generator().manual_seed(13)
    train = model.gibbs(PATTERN_B.repeat(400, 1), 10, 1.0, g)
    initial = {RANDOM: PATTERN_A.repeat(211, 1), DATA: PATTERN_B.repeat(199, 1)}
    result = run_sampling(model, SamplingSettings(chains=211, sweeps=64, seed=4,
                                                  auto_extend=False), train,
                          initial=initial)
    assert result.checks["mixing_random"]["passed"]
    assert result.checks["mixing_data"]["passed"]
    assert not result.checks["overlap_random_vs_data"]["passed"]
    assert result.equilibrated is False


def test_independent_sites_mix_at_once() -> None:
    model = independent_model()
    train = exact_independent_sample(model, 997, seed=9)
    result = run_sampling(model, SamplingSettings(chains=401, sweeps=64, seed=2,
                                                  auto_extend=False), train)
    assert result.equilibrated is True, result.checks
    assert result.failed_checks == []
    assert result.decorrelation_time == 1 and result.relaxation_time == 1
    assert result.mixing_time == 1
    energy = result.checks["energy_random_vs_data"]
    exact_mean = float(model.free_energy(exact_independent_sample(model, 20011, seed=3)).mean())
    assert energy["mean_random"] == pytest.approx(exact_mean, abs=4 * math.sqrt(
        float(model.free_energy(train).var()) / 401))


def test_auto_extend_doubles_until_equilibrated_or_cap() -> None:
    model = two_mode_model()
    train = model.gibbs(PATTERN_A.repeat(300, 1), 5, 1.0, torch.Generator().manual_seed(2))
    settings = SamplingSettings(chains=101, sweeps=8, seed=1, auto_extend=True, max_sweeps=40)
    result = run_sampling(model, settings, train)
    assert [e["sweeps"] for e in result.extensions] == [8, 16, 32, 40]
    assert result.sweeps == 40 and result.equilibrated is False
    easy = run_sampling(independent_model(), settings,
                        exact_independent_sample(independent_model(), 300, seed=1))
    assert easy.equilibrated is True and easy.sweeps == 8


def test_mixing_time_needs_both_decorrelation_and_relaxation() -> None:
    assert combined_mixing_time(3, 12, with_data=True) == 12
    assert combined_mixing_time(16, 12, with_data=True) == 16
    assert combined_mixing_time(3, None, with_data=True) is None
    assert combined_mixing_time(None, 2, with_data=True) is None
    assert combined_mixing_time(3, None, with_data=False) == 3


def test_slow_mode_switching_needs_a_longer_run() -> None:
    """A weaker two-mode model switches modes every few tens of sweeps: chains started all in
    one mode fail the checks after a few sweeps and pass after many, the mixing time between."""
    model = two_mode_model(strength=1.6)
    g = torch.Generator().manual_seed(3)
    train = model.gibbs(torch.randint(0, Q, (401, L), generator=g), 600, 1.0, g)
    start = {RANDOM: PATTERN_B.repeat(293, 1)}
    short = run_sampling(model, SamplingSettings(chains=293, sweeps=8, seed=0,
                                                 auto_extend=False), train,
                         initial=start)
    assert short.equilibrated is False
    long = run_sampling(model, SamplingSettings(chains=293, sweeps=256, seed=0,
                                                auto_extend=False), train,
                        initial=start)
    assert long.equilibrated is True, long.failed_checks
    assert 8 < long.mixing_time <= 128
