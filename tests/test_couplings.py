"""Effective couplings of the RBM marginal against exact enumeration, and the contact scores."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from rbmflow.model import couplings as C
from rbmflow.model.partition import log_partition_exact_visible, visible_configurations
from rbmflow.model.rbm import PottsRBM
from torch.nn import functional as F

pytestmark = pytest.mark.usefixtures("one_thread")


def _random_rbm(L: int, q: int, nh: int, scale: float, seed: int) -> PottsRBM:
    g = torch.Generator().manual_seed(seed)
    return PottsRBM(scale * torch.randn(L, q, nh, generator=g, dtype=torch.float64),
                    0.5 * torch.randn(L, q, generator=g, dtype=torch.float64),
                    0.5 * torch.randn(nh, generator=g, dtype=torch.float64))


def _pairwise_design(codes: torch.Tensor, q: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """One-hot design matrix of a full pairwise Potts model: constant, fields, all couplings."""
    n, L = codes.shape
    x = np.asarray(codes)
    onehot = np.eye(q)[x]  # (n, L, q)
    pairs = list(itertools.combinations(range(L), 2))
    columns = [np.ones((n, 1)), onehot.reshape(n, L * q)]
    for i, j in pairs:
        columns.append((onehot[:, i, :, None] * onehot[:, j, None, :]).reshape(n, q * q))
    return np.concatenate(columns, 1), pairs


def _fitted_pairwise_couplings(model: PottsRBM) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares pairwise Potts fit of the exact log p over all q^L states, zero-sum gauge.

    Returns (J (L, L, q, q), h (L, q), largest absolute residual of the fit).
    """
    L, q = model.num_visibles, model.num_states
    codes = visible_configurations(L, q)
    log_p = -model.free_energy(codes) - log_partition_exact_visible(model)
    design, pairs = _pairwise_design(codes, q)
    theta, *_ = np.linalg.lstsq(design, log_p.numpy(), rcond=None)
    h = theta[1:1 + L * q].reshape(L, q)
    J = np.zeros((L, L, q, q))
    offset = 1 + L * q
    for k, (i, j) in enumerate(pairs):
        block = theta[offset + k * q * q: offset + (k + 1) * q * q].reshape(q, q)
        J[i, j], J[j, i] = block, block.T
    residual = np.abs(design @ theta - log_p.numpy()).max()
    J0, h0 = C.zero_sum_gauge(J, h)
    return J0, h0, float(residual)


def test_zero_sum_gauge_leaves_the_energy_unchanged():
    rng = np.random.default_rng(3)
    L, q = 5, 3
    J = rng.normal(size=(L, L, q, q))
    J = J + J.transpose(1, 0, 3, 2)
    J[np.arange(L), np.arange(L)] = 0
    h = rng.normal(size=(L, q))
    J0, h0 = C.zero_sum_gauge(J, h)
    codes = np.asarray(visible_configurations(L, q))

    def energy(J, h):
        e = h[np.arange(L), codes].sum(1)
        for i, j in itertools.combinations(range(L), 2):
            e = e + J[i, j, codes[:, i], codes[:, j]]
        return e

    diff = energy(J, h) - energy(J0, h0)
    assert np.allclose(diff, diff[0])
    assert np.allclose(J0.sum(2), 0) and np.allclose(J0.sum(3), 0) and np.allclose(h0.sum(1), 0)


def test_uniform_background_gives_the_exact_pairwise_fit_of_log_p():
    """Averaged over all q^L states, the second differences are the zero-sum pairwise part of
    log p, i.e. the least-squares pairwise Potts fit of the exact marginal."""
    model = _random_rbm(L=4, q=3, nh=5, scale=1.0, seed=7)
    J_fit, h_fit, residual = _fitted_pairwise_couplings(model)
    assert residual > 1e-3  # the marginal has higher-order terms: the fit is not exact
    everything = visible_configurations(4, 3)
    J = C.effective_couplings(model, everything, method="background")
    np.testing.assert_allclose(J, J_fit, atol=1e-10)
    h = C.effective_fields(model, everything)
    np.testing.assert_allclose(h, h_fit, atol=1e-10)


def test_pairwise_only_model_is_recovered_exactly_from_any_background():
    """Hidden units that touch two sites each make the marginal exactly pairwise: every
    method of second differences must then give its couplings, for any background."""
    L, q, nh = 5, 3, 7
    g = torch.Generator().manual_seed(11)
    W = torch.zeros(L, q, nh, dtype=torch.float64)
    for mu in range(nh):
        i, j = torch.randperm(L, generator=g)[:2].tolist()
        W[i, :, mu] = 1.5 * torch.randn(q, generator=g, dtype=torch.float64)
        W[j, :, mu] = 1.5 * torch.randn(q, generator=g, dtype=torch.float64)
    model = PottsRBM(W, torch.randn(L, q, generator=g, dtype=torch.float64),
                     torch.randn(nh, generator=g, dtype=torch.float64))
    J_fit, _, residual = _fitted_pairwise_couplings(model)
    assert residual < 1e-9
    backgrounds = torch.randint(0, q, (13, L), generator=g)
    weights = torch.rand(13, generator=g, dtype=torch.float64)
    J = C.effective_couplings(model, backgrounds, weights, method="background")
    np.testing.assert_allclose(J, J_fit, atol=1e-10)
    assert np.abs(J_fit).max() > 0.1


def test_fields_and_couplings_are_the_exact_potts_model_of_a_pairwise_rbm():
    """On an exactly pairwise marginal, (J, h) from any non-uniform weighted backgrounds must
    reproduce log p up to a constant over all q^L states: h may not double-count the mean
    field of the couplings."""
    L, q, nh = 5, 3, 7
    g = torch.Generator().manual_seed(13)
    W = torch.zeros(L, q, nh, dtype=torch.float64)
    for mu in range(nh):
        i, j = torch.randperm(L, generator=g)[:2].tolist()
        W[i, :, mu] = 1.5 * torch.randn(q, generator=g, dtype=torch.float64)
        W[j, :, mu] = 1.5 * torch.randn(q, generator=g, dtype=torch.float64)
    model = PottsRBM(W, torch.randn(L, q, generator=g, dtype=torch.float64),
                     torch.randn(nh, generator=g, dtype=torch.float64))
    J_fit, h_fit, residual = _fitted_pairwise_couplings(model)
    assert residual < 1e-9
    backgrounds = torch.cat([torch.zeros(11, L, dtype=torch.long),
                             torch.randint(0, q, (7, L), generator=g)])
    weights = torch.rand(18, generator=g, dtype=torch.float64)
    J = C.effective_couplings(model, backgrounds, weights, method="background")
    np.testing.assert_allclose(C.effective_fields(model, backgrounds, weights), h_fit,
                               atol=1e-10)
    h = C.effective_fields(model, backgrounds, weights, J)
    np.testing.assert_allclose(h, h_fit, atol=1e-10)
    codes = np.asarray(visible_configurations(L, q))
    log_p = np.asarray(-model.free_energy(visible_configurations(L, q)))
    potts = h[np.arange(L), codes].sum(1)
    for i, j in itertools.combinations(range(L), 2):
        potts = potts + J[i, j, codes[:, i], codes[:, j]]
    np.testing.assert_allclose(potts - log_p, (potts - log_p)[0], atol=1e-9)


def test_gaussian_and_tubiana_approach_the_exact_couplings_for_weak_weights():
    """Weak weights: the marginal is nearly pairwise and both approximations close in on the
    background-averaged couplings, the second-order one with an error of order W^3."""
    errors = {}
    for scale in (0.05, 0.1):
        model = _random_rbm(L=4, q=3, nh=6, scale=scale, seed=5)
        everything = visible_configurations(4, 3)
        exact = C.effective_couplings(model, everything, method="background")
        for method in ("gaussian", "tubiana"):
            approx = C.effective_couplings(model, everything, method=method)
            errors[method, scale] = np.abs(approx - exact).max() / np.abs(exact).max()
    for method in ("gaussian", "tubiana"):
        assert errors[method, 0.05] < 0.05
        assert errors[method, 0.05] < errors[method, 0.1]


def test_background_method_is_symmetric_and_gauge_fixed():
    model = _random_rbm(L=6, q=4, nh=3, scale=0.8, seed=2)
    backgrounds = torch.randint(0, 4, (17, 6))
    J = C.effective_couplings(model, backgrounds, method="background")
    np.testing.assert_allclose(J, J.transpose(1, 0, 3, 2), atol=1e-12)
    np.testing.assert_allclose(J.sum(2), 0, atol=1e-10)
    assert np.all(J[np.arange(6), np.arange(6)] == 0)


def test_apc_on_a_hand_made_matrix():
    S = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0]], dtype=float)
    # row means over j != i: 1.5, 2, 2.5; overall mean 2
    expected = S - np.outer([1.5, 2, 2.5], [1.5, 2, 2.5]) / 2
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(C.apc(S), expected)
    assert C.apc(S)[0, 1] == pytest.approx(1 - 1.5)


def test_frobenius_excludes_the_gap_state():
    L, q = 3, 3
    J = np.zeros((L, L, q, q))
    block = np.array([[4.0, -2, -2], [-2, 1, 1], [-2, 1, 1]])  # zero-sum; gap row/col large
    J[0, 1], J[1, 0] = block, block.T
    with_gaps = C.frobenius_scores(J, exclude_state=None)
    without = C.frobenius_scores(J, exclude_state=0)
    assert with_gaps[0, 1] == pytest.approx(np.sqrt((block ** 2).sum()))
    assert without[0, 1] == pytest.approx(2.0)
    assert without[1, 0] == without[0, 1] and without[0, 2] == 0


def test_frobenius_row_by_row_equals_the_norm_of_the_gauged_couplings():
    """Couplings in an arbitrary gauge (L = 11, q = 5): the score of (i, j) is the norm of the
    double-centred J_ij over the non-gap states, written out pair by pair."""
    rng = np.random.default_rng(7)
    L, q = 11, 5
    J = rng.normal(size=(L, L, q, q))
    J = J + J.transpose(1, 0, 3, 2)
    J[np.arange(L), np.arange(L)] = 0
    scores = C.frobenius_scores(J, exclude_state=0)
    for i, j in [(0, 1), (3, 9), (10, 2)]:
        block = J[i, j] - J[i, j].mean(1, keepdims=True) - J[i, j].mean(0) + J[i, j].mean()
        assert scores[i, j] == pytest.approx(np.sqrt((block[1:, 1:] ** 2).sum()), rel=1e-12)
    np.testing.assert_allclose(scores, scores.T, rtol=1e-12)
    assert np.all(np.diag(scores) == 0)


def test_ranked_pairs_are_one_based_and_sorted():
    S = np.array([[0, 0.5, 0.9], [0.5, 0, 0.1], [0.9, 0.1, 0]])
    assert C.ranked_pairs(S) == [(1, 3, 0.9), (1, 2, 0.5), (2, 3, 0.1)]


def test_gaussian_couplings_blockwise_equal_the_direct_quadrature() -> None:
    """The blockwise evaluation (products of exponentials, small blocks of sites j) equals
    the Gauss-Hermite sum written out pair by pair, with moderate weights and with weights
    large enough to force the overflow-safe softplus path in float32 (L = 7, q = 3, Nh = 5)."""
    g = torch.Generator().manual_seed(13)
    for scale, dtype, tol in ((0.7, torch.float64, 1e-8), (60.0, torch.float32, 2e-3)):
        model = PottsRBM(scale * torch.randn(7, 3, 5, generator=g, dtype=torch.float64),
                         torch.randn(7, 3, generator=g, dtype=torch.float64),
                         torch.randn(5, generator=g, dtype=torch.float64))
        backgrounds = torch.randint(0, 3, (41, 7), generator=g)
        J = C.couplings_gaussian(model, backgrounds, nodes=5, chunk=50, work_dtype=dtype)
        W = model.weight_matrix
        inputs = model.hidden_inputs(backgrounds)
        mean, std = inputs.mean(0), inputs.std(0, unbiased=False)
        site_mean = torch.stack([W[k, backgrounds[:, k]].mean(0) for k in range(7)])
        z, zw = np.polynomial.hermite_e.hermegauss(5)
        for i, j in ((0, 1), (2, 6), (5, 6)):
            table = torch.zeros(3, 3, dtype=torch.float64)
            for zk, wk in zip(z, zw / math.sqrt(2 * math.pi), strict=True):
                x = mean - site_mean[i] - site_mean[j] + zk * std
                table += wk * F.softplus(x + W[i][:, None, :] + W[j][None, :, :]).sum(-1)
            expected = C.double_centre(table).numpy()
            assert np.allclose(J[i, j], expected, atol=tol), (scale, i, j)
            assert np.allclose(J[j, i], expected.T, atol=tol)
