"""Partition function: exact enumeration both ways, exact sampling, the annealed kernel, AIS."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from rbmflow.data import synthetic
from rbmflow.model import partition as P
from rbmflow.model.rbm import PottsRBM

pytestmark = pytest.mark.usefixtures("one_thread")


def _random_rbm(L: int, q: int, nh: int, scale: float, seed: int) -> PottsRBM:
    g = torch.Generator().manual_seed(seed)
    return PottsRBM(scale * torch.randn(L, q, nh, generator=g, dtype=torch.float64),
                    torch.randn(L, q, generator=g, dtype=torch.float64),
                    torch.randn(nh, generator=g, dtype=torch.float64))


def _brute_force_log_z(model: PottsRBM) -> float:
    """log sum over every (v, h) pair of exp(-E(v, h)) (E includes -hbias . h)."""
    L, q, nh = model.weight_matrix.shape
    terms = []
    for v in itertools.product(range(q), repeat=L):
        codes = torch.tensor([v])
        for h in itertools.product((0.0, 1.0), repeat=nh):
            terms.append(-model.energy(codes, torch.tensor([h], dtype=torch.float64)))
    return float(torch.logsumexp(torch.cat(terms), 0))


def test_brute_force_double_sum_matches_both_enumerations():
    model = _random_rbm(3, 2, 2, 1.0, seed=0)
    brute = _brute_force_log_z(model)
    assert P.log_partition_exact(model) == pytest.approx(brute, abs=1e-10)
    assert P.log_partition_exact_visible(model) == pytest.approx(brute, abs=1e-10)


@pytest.mark.parametrize(("L", "q", "nh", "scale"), [(5, 3, 7, 1.0), (4, 5, 3, 2.5),
                                                      (7, 2, 11, 0.7)])
def test_hidden_and_visible_enumeration_agree(L, q, nh, scale):
    model = _random_rbm(L, q, nh, scale, seed=L * q * nh)
    hidden = P.log_partition_exact(model, batch_size=64)
    visible = P.log_partition_exact_visible(model, batch_size=100)
    assert hidden == pytest.approx(visible, abs=1e-9)


def test_visible_configurations_enumerate_each_state_once():
    codes = P.visible_configurations(3, 5)
    assert codes.shape == (125, 3)
    assert len({tuple(c) for c in codes.tolist()}) == 125
    assert torch.equal(P.visible_configurations(3, 5, 17, 40), codes[17:40])


def test_exact_sampling_reproduces_exact_marginals():
    model = _random_rbm(3, 3, 5, 1.5, seed=3)
    g = torch.Generator().manual_seed(0)
    samples = P.sample_exact(model, 40000, g)
    every = P.visible_configurations(3, 3)
    p = torch.softmax(-model.free_energy(every), 0)
    counts = torch.bincount(samples[:, 0] * 9 + samples[:, 1] * 3 + samples[:, 2],
                            minlength=27).double() / 40000
    assert torch.all((counts - p).abs() <= 5 * torch.sqrt(p * (1 - p) / 40000) + 1e-4)


def test_independent_sites_fit_and_log_partition():
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 5, (300, 7), generator=g)
    weights = torch.rand(300, generator=g, dtype=torch.float64)
    base = P.IndependentSites.from_codes(codes, 5, weights, pseudocount=0.0)
    freqs = torch.zeros(7, 5, dtype=torch.float64)
    for i in range(7):
        freqs[i].index_add_(0, codes[:, i], weights)
    assert torch.allclose(base.fields.exp(), freqs / weights.sum())
    assert base.log_partition() == pytest.approx(0.0, abs=1e-12)
    shifted = P.IndependentSites(base.fields + 0.3)
    assert shifted.log_partition() == pytest.approx(7 * 0.3, abs=1e-12)


@pytest.mark.parametrize("kind", P.SCHEDULES)
def test_schedules_rise_from_zero_to_one(kind):
    betas = P.beta_schedule(101, kind)
    assert betas[0] == 0.0 and betas[-1] == 1.0
    assert torch.all(betas[1:] > betas[:-1])
    with pytest.raises(ValueError):
        P.beta_schedule(1, kind)


def test_annealed_gibbs_kernel_leaves_interpolated_distribution_invariant():
    """p_beta(v) ∝ exp(-F_beta(v)) by enumeration vs frequencies of long Gibbs runs."""
    L, q = 3, 3
    model = _random_rbm(L, q, 4, 1.5, seed=5)
    base = P.IndependentSites(torch.randn(L, q, generator=torch.Generator().manual_seed(2),
                                          dtype=torch.float64))
    point = P.PathPoint(model, 0.6)
    every = P.visible_configurations(L, q)
    p = torch.softmax(-P.annealed_free_energy(point, base, every), 0)
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, q, (4000, L), generator=g)
    counts = torch.zeros(q**L, dtype=torch.float64)
    for sweep in range(60):
        codes = P.annealed_gibbs_sweep(point, base, codes, generator=g)
        if sweep >= 20:
            counts += torch.bincount(codes[:, 0] * 9 + codes[:, 1] * 3 + codes[:, 2],
                                     minlength=q**L)
    freq = counts / counts.sum()
    # 40 correlated sweeps of 4000 chains: allow for an effective sample of 40000.
    assert torch.all((freq - p).abs() <= 5 * torch.sqrt(p * (1 - p) / 40000) + 1e-4)


def test_annealed_free_energy_endpoints():
    model = _random_rbm(4, 3, 5, 1.0, seed=6)
    base = P.IndependentSites(torch.randn(4, 3, dtype=torch.float64))
    codes = P.visible_configurations(4, 3)
    at_one = P.annealed_free_energy(P.PathPoint(model, 1.0), base, codes)
    assert torch.allclose(at_one, model.free_energy(codes))
    at_zero = P.annealed_free_energy(P.PathPoint(model, 0.0), base, codes)
    assert torch.allclose(at_zero, -base.site_fields(codes) - 5 * math.log(2.0))


def test_log_likelihood_of_all_configurations_normalises():
    model = _random_rbm(3, 4, 5, 1.0, seed=8)
    every = P.visible_configurations(3, 4)
    log_z = P.log_partition_exact(model)
    log_p = -P.free_energies(model, every, batch_size=7) - log_z
    assert float(torch.logsumexp(log_p, 0)) == pytest.approx(0.0, abs=1e-10)
    w = torch.rand(every.shape[0], dtype=torch.float64)
    assert P.mean_log_likelihood(model, every, log_z, w) == pytest.approx(
        float((w * log_p).sum() / w.sum()), abs=1e-10)


@pytest.mark.parametrize(("seed", "nh"), [(11, 12), (12, 16)])
def test_ais_matches_exact_on_multimodal_models(seed, nh):
    """L = 20, q = 21: units switch on for their patterns, so p(v) has one mode per set of
    active units; forward AIS from the data-fitted base and reverse AIS from exact samples
    both agree with exact enumeration within their error bars and within 0.1 nats."""
    g = torch.Generator().manual_seed(seed)
    model = synthetic.random_structured_rbm(20, 21, nh, coupling=3.0, activation=0.25, generator=g)
    exact = P.log_partition_exact(model)
    data = P.sample_exact(model, 3000, g)
    inputs = model.hidden_inputs(data)
    strongest = torch.bincount(inputs.argmax(1)[(inputs > 0).any(1)], minlength=nh) / 3000
    # several modes carry the probability, none most of it
    assert (strongest > 0.02).sum() >= 3 and strongest.max() < 0.8
    base = P.IndependentSites.from_codes(data, 21)
    m32 = model.to(dtype=torch.float32)
    forward = P.ais_log_partition(m32, base, n_chains=200, n_betas=600, repeats=2, generator=g)
    reverse = P.reverse_ais_log_partition(m32, base, data[:400], n_betas=600, repeats=2,
                                          generator=g)
    for result in (forward, reverse):
        error = abs(result.log_z - exact)
        assert error <= 0.1
        assert error <= 3 * result.log_z_std + 0.01
        assert result.ess_fraction > 0.3
        assert len(result.repeat_log_z) == 2


def test_uniform_base_ais_on_a_weak_model():
    g = torch.Generator().manual_seed(3)
    model = _random_rbm(11, 7, 5, 0.3, seed=9)
    forward = P.ais_log_partition(model, P.IndependentSites.uniform(11, 7), n_chains=300,
                                  n_betas=300, schedule="linear", generator=g)
    assert forward.log_z == pytest.approx(P.log_partition_exact(model), abs=0.05)


def test_first_order_transition_is_exposed_by_reverse_ais():
    """Planted patterns behind a barrier: forward AIS from a uniform base stays paramagnetic
    and returns a log Z many nats too low with an ESS near 1; reverse AIS from model samples
    lands far above it, so the pair exposes the failure."""
    from rbmflow.evaluation.loglik import check_estimates

    g = torch.Generator().manual_seed(0)
    model = synthetic.planted_pattern_rbm(40, 21, 8, coupling=5.0, threshold=0.3, generator=g)
    exact = P.log_partition_exact(model)
    samples = P.sample_exact(model, 200, g)
    m32 = model.to(dtype=torch.float32)
    uniform = P.IndependentSites.uniform(40, 21)
    forward = P.ais_log_partition(m32, uniform, n_chains=100, n_betas=300, generator=g)
    reverse = P.reverse_ais_log_partition(m32, uniform, samples, n_betas=300, generator=g)
    assert exact - forward.log_z > 10  # the known failure ...
    assert forward.ess_fraction > 0.9  # ... with a perfect-looking ESS
    assert reverse.log_z - forward.log_z > 10
    estimates = {"ais": forward.summary() | {"n_chains_total": 100},
                 "reverse": reverse.summary() | {"n_chains_total": 200}}
    warnings = check_estimates(estimates, tolerance=0.5, min_ess=0.1)
    assert any("disagree" in w and "ais" in w and "reverse" in w for w in warnings)


def test_trajectory_ais_follows_a_path_of_models():
    """log Z at every model of an interpolation path matches exact enumeration."""
    g = torch.Generator().manual_seed(4)
    start = synthetic.random_structured_rbm(13, 7, 6, coupling=0.2, generator=g)
    end = synthetic.random_structured_rbm(13, 7, 6, coupling=2.5, activation=0.3, generator=g)
    models = [P.interpolate(start, end, t) for t in (0.0, 0.2, 0.5, 1.0)]
    data = P.sample_exact(end, 2000, g)
    base = P.IndependentSites.from_codes(data, 7)
    result = P.trajectory_ais(models, base, n_chains=300, n_steps=300, n_betas_first=200,
                              reference_codes=data, generator=g)
    assert len(result.log_z) == 4 and sum(result.steps) >= 300 - 3
    for model, log_z, std in zip(models, result.log_z, result.log_z_std, strict=True):
        exact = P.log_partition_exact(model)
        assert abs(log_z - exact) <= max(3 * std, 0.02) and abs(log_z - exact) < 0.1


def test_allocate_steps_follows_the_free_energy_spread():
    g = torch.Generator().manual_seed(6)
    a = synthetic.random_structured_rbm(9, 5, 4, coupling=0.5, generator=g)
    b = synthetic.random_structured_rbm(9, 5, 4, coupling=2.0, generator=g)
    models = [a, P.interpolate(a, b, 0.1), b]
    codes = torch.randint(0, 5, (500, 9), generator=g)
    steps = P.allocate_steps(models, 100, codes)
    assert all(s >= 1 for s in steps) and steps[1] > steps[0]
    assert P.allocate_steps(models, 100) == [50, 50]


def test_exact_moments_match_the_sum_over_every_visible_configuration():
    """The model term of the gradient, computed over the 2^Nh hidden configurations, equals
    the weighted sum over all q^L visible configurations of 1[v_i = a], m(v), 1[v_i = a] m(v)."""
    from rbmflow.model.partition import exact_moments, visible_configurations
    from rbmflow.training.moments import moments

    g = torch.Generator().manual_seed(23)
    model = PottsRBM(torch.randn(5, 3, 7, generator=g, dtype=torch.float64),
                     torch.randn(5, 3, generator=g, dtype=torch.float64),
                     torch.randn(7, generator=g, dtype=torch.float64))
    every = visible_configurations(5, 3)
    reference = moments(model, every, torch.softmax(-model.free_energy(every), 0))
    v, h, vh = exact_moments(model, batch_size=11)  # several blocks of hidden configurations
    torch.testing.assert_close(v, reference.v, rtol=0, atol=1e-12)
    torch.testing.assert_close(h, reference.h, rtol=0, atol=1e-12)
    torch.testing.assert_close(vh, reference.vh, rtol=0, atol=1e-12)


def test_ais_final_chains_with_their_weights_give_the_exact_mode_weights():
    """The final chains of forward AIS, weighted, are draws of the model even where Gibbs
    chains cannot cross between its modes: on the two-mode model of test_refresh the
    weighted share of the second mode is the exact 0.69, the unweighted one is not."""
    from test_refresh import L, Q, exact_second_mode_weight, in_second_mode, two_mode_model

    model = two_mode_model()
    exact = exact_second_mode_weight(model)
    g = torch.Generator().manual_seed(5)
    result = P.ais_log_partition(model, P.IndependentSites.uniform(L, Q, "cpu"),
                                 n_chains=1009, n_betas=300, generator=g)
    second = in_second_mode(result.final_codes).double()
    weights = torch.softmax(result.log_weights, 0)
    tolerance = 4 * (exact * (1 - exact) / result.ess) ** 0.5 + 0.02
    assert abs(float((weights * second).sum()) - exact) < tolerance
    assert abs(float(second.mean()) - exact) > 0.05
