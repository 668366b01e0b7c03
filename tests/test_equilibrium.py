"""Training at equilibrium: Jarzynski-reweighted chains and the equilibrium monitor, checked
against exact enumeration of the hidden layer."""

from __future__ import annotations

import pytest
import torch
from rbmflow.equilibrium import ReweightedChains, systematic_resample
from rbmflow.model import PottsRBM, sample_categorical
from rbmflow.partition import hidden_configurations, hidden_log_marginals, random_structured_rbm
from rbmflow.stats import site_frequencies

pytestmark = pytest.mark.usefixtures("one_thread")


def exact_site_marginals(model: PottsRBM) -> torch.Tensor:
    """p(v_i = a), (L, q), by enumerating the hiddens."""
    m = model.to(dtype=torch.float64)
    hiddens = hidden_configurations(m.num_hiddens)
    p_h = torch.softmax(hidden_log_marginals(m, hiddens), 0)
    return torch.einsum("h,hia->ia", p_h, torch.softmax(m.visible_logits(hiddens), -1))


def test_systematic_resampling_copies_each_chain_floor_or_ceil_of_its_share():
    g = torch.Generator().manual_seed(3)
    weights = torch.softmax(3 * torch.randn(97, generator=g, dtype=torch.float64), 0)
    for _ in range(5):
        counts = torch.bincount(systematic_resample(weights, g), minlength=97).double()
        expected = 97 * weights
        assert bool(((counts >= expected.floor()) & (counts <= expected.ceil())).all())
        assert int(counts.sum()) == 97


def test_start_weights_make_independent_site_draws_exact_for_the_rbm():
    g = torch.Generator().manual_seed(5)
    model = random_structured_rbm(7, 3, 5, coupling=1.0, generator=g)
    chains = sample_categorical(model.vbias.expand(40000, -1, -1), g)
    weighted = ReweightedChains.start(model, chains)
    freq = site_frequencies(chains, 3, weighted.weights())
    assert torch.allclose(freq, exact_site_marginals(model), atol=0.02)


def _path_to(target: PottsRBM, t: float) -> PottsRBM:
    """W and hbias scaled by t: the independent-site model exp(vbias . v) at t = 0."""
    return PottsRBM(t * target.weight_matrix, target.vbias.clone(), t * target.hbias)


def two_mode_rbm(length: int, num_states: int, coupling: float, bias_gap: float) -> PottsRBM:
    """Hidden unit 0 pulls every site to state 0, unit 1 to state 1; unit 0 is favoured by
    `bias_gap` nats. At coupling 3 on 13 sites the two modes are separated by a barrier that
    Gibbs chains do not cross in a few hundred sweeps."""
    g = torch.Generator().manual_seed(2)
    weight_matrix = torch.zeros(length, num_states, 2, dtype=torch.float64)
    weight_matrix[:, 0, 0] = weight_matrix[:, 1, 1] = coupling
    vbias = 0.2 * torch.randn(length, num_states, generator=g, dtype=torch.float64)
    threshold = -0.5 * coupling * length
    model = PottsRBM(weight_matrix, vbias,
                     torch.tensor([threshold + bias_gap, threshold], dtype=torch.float64))
    model.apply_zero_sum_gauge_()
    return model


def test_reweighted_chains_give_exact_averages_where_plain_chains_stay_in_their_modes():
    """Anneal from the independent-site model to a two-mode RBM: the weighted averages are
    exact, the plain chains' are not (they split between the modes as the barrier rose)."""
    g = torch.Generator().manual_seed(11)
    target = two_mode_rbm(13, 3, coupling=3.0, bias_gap=1.5)
    steps, num_chains = 60, 3000
    model = _path_to(target, 0.0)
    chains = sample_categorical(model.vbias.expand(num_chains, -1, -1), g)
    plain = chains.clone()
    weighted = ReweightedChains.start(model, chains, min_ess=0.5)
    for k in range(1, steps + 1):
        chains = model.gibbs(chains, 2, generator=g)
        plain = model.gibbs(plain, 2, generator=g)
        f_before = model.free_energy(chains)
        model = _path_to(target, k / steps)
        weighted.add_free_energy_change(f_before, model.free_energy(chains))
        chains = weighted.maybe_resample(chains, g)
    exact = exact_site_marginals(target)
    reweighted_error = (site_frequencies(chains, 3, weighted.weights()) - exact).abs().max()
    plain_error = (site_frequencies(plain, 3) - exact).abs().max()
    assert reweighted_error < 0.04
    assert plain_error > 0.08


def test_resampling_keeps_the_weighted_averages():
    g = torch.Generator().manual_seed(13)
    chains = torch.randint(0, 3, (20000, 7), generator=g)
    weighted = ReweightedChains(torch.randn(20000, generator=g, dtype=torch.float64), 0.99)
    before = site_frequencies(chains, 3, weighted.weights())
    chains = weighted.maybe_resample(chains, g)
    assert weighted.resamplings == 1 and weighted.is_uniform()
    assert torch.allclose(site_frequencies(chains, 3, weighted.weights()), before, atol=0.01)
