"""Report metrics against direct NumPy computations and known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from rbmflow.evaluation.metrics import (
    EvaluationSettings,
    adversarial_accuracy,
    copy_fraction,
    evaluate,
    nearest_hamming,
    one_hot_pca,
    random_triplets,
    three_site_correlations,
    wasserstein_1d,
)
from rbmflow.evaluation.stats import connected_correlations, pearson
from rbmflow.model.rbm import PottsRBM

L, Q = 7, 5


def _one_hot_np(codes: np.ndarray, q: int) -> np.ndarray:
    return np.eye(q)[codes].reshape(codes.shape[0], -1)


def _independent_codes(num: int, length: int, q: int, seed: int) -> np.ndarray:
    """Sites drawn independently, each from its own random distribution."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(q), size=length)
    return np.stack([rng.choice(q, size=num, p=p) for p in probs], axis=1)


def test_connected_correlations_match_numpy_with_weights() -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, Q, (13, L))
    w = rng.random(13) + 0.1
    x = _one_hot_np(codes, Q)
    p = w / w.sum()
    mean = p @ x
    cov = (x * p[:, None]).T @ x - np.outer(mean, mean)
    expected = [cov[i * Q:(i + 1) * Q, j * Q:(j + 1) * Q].ravel()
                for i in range(L) for j in range(i + 1, L)]
    got = connected_correlations(torch.from_numpy(codes), Q, torch.from_numpy(w))
    np.testing.assert_allclose(got.numpy(), np.concatenate(expected), atol=1e-12)


def test_three_site_correlations_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    length, q, num = 5, 3, 11
    codes = rng.integers(0, q, (num, length))
    w = rng.random(num) + 0.2
    p = w / w.sum()
    triplets = np.array([[0, 1, 2], [1, 3, 4], [0, 2, 4]])
    expected = []
    for i, j, k in triplets:
        for a, b, c in itertools.product(range(q), repeat=3):
            xi, xj, xk = ((codes[:, s] == state) * 1.0 for s, state in ((i, a), (j, b), (k, c)))
            expected.append(np.sum(p * (xi - p @ xi) * (xj - p @ xj) * (xk - p @ xk)))
    got = three_site_correlations(torch.from_numpy(codes), q, triplets, torch.from_numpy(w),
                                  chunk=2)
    np.testing.assert_allclose(got.numpy(), np.array(expected), atol=1e-12)


def test_independent_sites_have_no_connected_correlations() -> None:
    num = 20000
    codes = torch.from_numpy(_independent_codes(num, L, Q, seed=2))
    cij = connected_correlations(codes, Q)
    cijk = three_site_correlations(codes, Q, random_triplets(L, 20, seed=0))
    # The standard error of a product of two indicators is at most 0.5 / sqrt(M).
    assert cij.abs().max() < 5 * 0.5 / num**0.5
    assert cijk.abs().max() < 5 * 0.5 / num**0.5
    # ...while a strongly coupled pair is far from zero.
    coupled = codes.clone()
    coupled[:, 1] = coupled[:, 0]
    assert connected_correlations(coupled, Q).abs().max() > 0.1


def test_random_triplets_are_fixed_distinct_and_ordered() -> None:
    a, b = random_triplets(31, 50, seed=3), random_triplets(31, 50, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (50, 3)
    assert np.all((a[:, 0] < a[:, 1]) & (a[:, 1] < a[:, 2]))
    assert len({tuple(t) for t in a}) == 50
    assert not np.array_equal(a, random_triplets(31, 50, seed=4))
    everything = random_triplets(6, 100, seed=0)
    assert {tuple(t) for t in everything} == set(itertools.combinations(range(6), 3))
    assert random_triplets(2, 10).shape == (0, 3)


@pytest.mark.parametrize("dense_limit", [10_000, 0], ids=["dense", "streaming"])
def test_one_hot_pca_matches_dense_eigendecomposition(dense_limit: int) -> None:
    rng = np.random.default_rng(5)
    length, q, num = 11, 3, 97
    latent = rng.integers(0, 2, num)
    codes = np.where(rng.random((num, length)) < 0.85, latent[:, None] * 2,
                     rng.integers(0, q, (num, length)))
    w = rng.random(num) + 0.5
    x = _one_hot_np(codes, q)
    p = w / w.sum()
    mean = p @ x
    cov = (x * p[:, None]).T @ x - np.outer(mean, mean)
    values, vectors = np.linalg.eigh(cov)
    values, vectors = values[::-1], vectors[:, ::-1]
    pca = one_hot_pca(torch.from_numpy(codes), q, torch.from_numpy(w), num_components=3,
                      iterations=60, chunk=13, dense_limit=dense_limit)
    np.testing.assert_allclose(pca.explained_variance.numpy(), values[:3], rtol=1e-6, atol=1e-10)
    assert pca.total_variance == pytest.approx(np.trace(cov))
    proj = pca.project(torch.from_numpy(codes), chunk=17).numpy()
    dense = (x - mean) @ vectors[:, :3]
    np.testing.assert_allclose(np.abs(proj), np.abs(dense), atol=1e-6)
    # the leading component separates the two latent groups
    assert abs(np.corrcoef(proj[:, 0], latent)[0, 1]) > 0.9


def test_wasserstein_1d_known_answers() -> None:
    x = np.array([0.0, 1.0, 3.0])
    assert wasserstein_1d(x, x + 2.5) == pytest.approx(2.5)
    assert wasserstein_1d(x, x) == pytest.approx(0.0)
    # an integer weight equals repeating the point
    assert wasserstein_1d(x, np.array([1.0, 2.0]), np.array([2.0, 1.0, 1.0])) == pytest.approx(
        wasserstein_1d(np.array([0.0, 0.0, 1.0, 3.0]), np.array([1.0, 2.0])))


def test_nearest_hamming_matches_brute_force() -> None:
    rng = np.random.default_rng(6)
    queries = rng.integers(0, 2, (23, L))
    reference = rng.integers(0, 2, (29, L))
    reference[3] = queries[0]
    dist = np.abs(queries[:, None, :] != reference[None, :, :]).sum(-1)
    got = nearest_hamming(torch.from_numpy(queries), torch.from_numpy(reference), 2, chunk=8)
    np.testing.assert_array_equal(got.numpy(), dist.min(1))
    assert got[0] == 0
    own = (reference[:, None, :] != reference[None, :, :]).sum(-1) + np.eye(29, dtype=int) * 99
    got_self = nearest_hamming(torch.from_numpy(reference), torch.from_numpy(reference), 2,
                               exclude_self=True, chunk=8)
    np.testing.assert_array_equal(got_self.numpy(), own.min(1))


def _nnaa_brute_force(truth: np.ndarray, syn: np.ndarray) -> tuple[float, float]:
    def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a[:, None, :] != b[None, :, :]).sum(-1).astype(float)

    d_tt, d_ss = dist(truth, truth), dist(syn, syn)
    np.fill_diagonal(d_tt, np.inf)
    np.fill_diagonal(d_ss, np.inf)
    d_ts, d_st = dist(truth, syn).min(1), dist(syn, truth).min(1)

    def score(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(np.where(x > y, 1.0, np.where(x == y, 0.5, 0.0))))

    return score(d_ts, d_tt.min(1)), score(d_st, d_ss.min(1))


def test_adversarial_accuracy_known_answers() -> None:
    rng = np.random.default_rng(7)
    truth = np.unique(rng.integers(0, Q, (41, 13)), axis=0)
    copies = adversarial_accuracy(torch.from_numpy(truth), torch.from_numpy(truth[::-1].copy()), Q)
    assert copies == {"AA_truth": 0.0, "AA_syn": 0.0, "AA": 0.0}
    far = adversarial_accuracy(torch.from_numpy(truth % 2), torch.from_numpy(truth % 2 + 2), Q)
    assert far == {"AA_truth": 1.0, "AA_syn": 1.0, "AA": 1.0}
    # ties count one half: small binary sets are full of them
    small_t, small_s = rng.integers(0, 2, (17, 4)), rng.integers(0, 2, (17, 4))
    got = adversarial_accuracy(torch.from_numpy(small_t), torch.from_numpy(small_s), 2)
    aa_truth, aa_syn = _nnaa_brute_force(small_t, small_s)
    assert got["AA_truth"] == pytest.approx(aa_truth)
    assert got["AA_syn"] == pytest.approx(aa_syn)
    assert got["AA"] == pytest.approx((aa_truth + aa_syn) / 2)
    # two large samples of one distribution are indistinguishable
    same = _independent_codes(1200, 6, 3, seed=8)
    halves = adversarial_accuracy(torch.from_numpy(same[:600]), torch.from_numpy(same[600:]), 3)
    assert halves["AA"] == pytest.approx(0.5, abs=0.05)


def test_copy_fraction() -> None:
    train = np.array([[0, 1, 2], [2, 2, 2], [1, 0, 1]], dtype=np.uint8)
    gen = np.array([[0, 1, 2], [0, 1, 1], [2, 2, 2], [1, 1, 1]], dtype=np.uint8)
    assert copy_fraction(gen, train) == 0.5
    assert copy_fraction(train, train) == 1.0


def test_evaluate_on_identical_sets_gives_perfect_scores() -> None:
    rng = np.random.default_rng(9)
    train = torch.from_numpy(_independent_codes(150, L, Q, seed=10))
    test = torch.from_numpy(rng.integers(0, Q, (60, L)))
    ones_train = torch.ones(150, dtype=torch.float64)
    ones_test = torch.ones(60, dtype=torch.float64)
    model = PottsRBM(torch.randn(L, Q, 3) * 0.1, torch.randn(L, Q) * 0.1, torch.zeros(3))
    settings = EvaluationSettings(seed=0, triplets=13, nn_samples=50, pca_components=3)
    result = evaluate(train, ones_train, test, ones_test, test.clone(), Q, settings, model)
    m = result.metrics
    assert m["pearson_fi"] == pytest.approx(1.0)
    assert m["pearson_cij"] == pytest.approx(1.0)
    assert m["slope_cij"] == pytest.approx(1.0)
    assert m["pearson_cijk"] == pytest.approx(1.0)
    assert m["pca"]["distance"] == pytest.approx(0.0, abs=1e-9)
    assert m["hamming_nn_median"] == pytest.approx(m["hamming_nn_median_test"])
    assert m["n_triplets"] == 13 and m["n_generated"] == 60
    # train (structured) vs test (uniform) is a poor ceiling, and the test copies no training row
    assert m["pearson_cij_train_vs_test"] < 0.9
    assert m["energy"]["generated"]["mean"] == pytest.approx(m["energy"]["test"]["mean"])
    expected_f = model.free_energy(test).mean().item()
    assert m["energy"]["test"]["mean"] == pytest.approx(expected_f, rel=1e-5)
    # copies of the training set: all copies, AA 0, nearest distance 0
    copied = evaluate(train, ones_train, test, ones_test, train.clone(), Q, settings)
    assert copied.metrics["copy_fraction"] == 1.0
    assert copied.metrics["hamming_nn_median"] == 0.0
    assert copied.metrics["energy"] is None
    assert pearson(torch.from_numpy(result.arrays["cij_generated"]),
                   torch.from_numpy(result.arrays["cij_reference"])) == pytest.approx(1.0)


def test_total_least_squares_slope_is_not_attenuated() -> None:
    from rbmflow.evaluation.stats import slope, slope_tls

    g = torch.Generator().manual_seed(0)
    truth = torch.randn(20011, generator=g, dtype=torch.float64)
    x = truth + 0.5 * torch.randn(20011, generator=g, dtype=torch.float64)
    y = 2.0 + truth + 0.5 * torch.randn(20011, generator=g, dtype=torch.float64)
    assert slope(x, y) == pytest.approx(0.8, abs=0.02)  # 1 / (1 + 0.25): attenuated
    assert slope_tls(x, y) == pytest.approx(1.0, abs=0.02)
    assert slope_tls(x, 3 * x) == pytest.approx(3.0)
    assert slope_tls(x, -0.5 * x) == pytest.approx(-0.5)


def test_amino_acid_entries_leave_out_every_gap_entry() -> None:
    from rbmflow.evaluation.metrics import amino_acid_entries

    length, q = 5, 4
    mask = amino_acid_entries(length, q)
    expected = [a > 0 and b > 0 for _i, _j in itertools.combinations(range(length), 2)
                for a in range(q) for b in range(q)]
    assert mask.tolist() == expected
    rng = np.random.default_rng(1)
    codes = torch.from_numpy(rng.integers(0, q, (61, length)))
    assert connected_correlations(codes, q).shape == mask.shape


def _clustered(rng: np.random.Generator, ancestors: np.ndarray, members: np.ndarray,
               rate: float) -> np.ndarray:
    codes = np.repeat(ancestors, members, axis=0)
    mutate = rng.random(codes.shape) < rate
    return np.where(mutate, rng.integers(0, 21, codes.shape), codes)


def test_a_model_of_the_weighted_distribution_scores_aa_one_half() -> None:
    """Natural sequences over-sample 20 of 400 clusters; the weights undo it. Generated
    sequences come from the same process with every cluster equally likely (a perfect model
    of the weighted distribution): with weight-proportional natural subsamples AA is near
    0.5; uniform subsamples miss it by far (the over-sampled clusters crowd the natural set).
    Within 0.1, not exactly: the natural clusters hold few distinct members, fresh samples
    as many as drawn."""
    from rbmflow.data.weights import sequence_weights
    from rbmflow.evaluation.metrics import evaluate

    rng = np.random.default_rng(3)
    length, rate = 29, 0.05
    ancestors = rng.integers(0, 21, (400, length))
    members = np.r_[np.full(20, 60), np.full(380, 2)]
    natural = _clustered(rng, ancestors, members, rate)
    weights = sequence_weights(natural, 0.8)
    test_rows = rng.random(natural.shape[0]) < 0.3
    generated = _clustered(rng, ancestors[rng.integers(0, 400, 1900)], np.ones(1900, int), rate)
    train, test = natural[~test_rows], natural[test_rows]
    w_train = torch.from_numpy(sequence_weights(train, 0.8))
    w_test = torch.from_numpy(sequence_weights(test, 0.8))
    assert weights.sum() == pytest.approx(400, rel=0.1)
    settings = EvaluationSettings(seed=0, triplets=5, nn_samples=120, pca_components=2)
    m = evaluate(torch.from_numpy(train), w_train, torch.from_numpy(test), w_test,
                 torch.from_numpy(generated), 21, settings).metrics
    assert abs(m["nnaa_weighted"]["AA"] - 0.5) < 0.1, m["nnaa_weighted"]
    assert abs(m["nnaa"]["AA"] - 0.5) > 0.12, m["nnaa"]  # the uniform subsample's bias
    assert abs(m["nnaa"]["AA_truth"] - 0.5) > 0.15, m["nnaa"]
    assert m["privacy_loss"]["value"] == pytest.approx(
        m["privacy_loss"]["AA_test"] - m["privacy_loss"]["AA_train"])


def test_privacy_loss_sees_memorised_training_sequences() -> None:
    from rbmflow.evaluation.metrics import evaluate

    rng = np.random.default_rng(4)
    natural = _clustered(rng, rng.integers(0, 21, (600, 23)), np.ones(600, int), 0.3)
    train, test = natural[::2], natural[1::2]
    generated = train.copy()  # a model that memorised its training set
    ones = torch.ones(300, dtype=torch.float64)
    settings = EvaluationSettings(seed=0, triplets=5, nn_samples=400, pca_components=2)
    m = evaluate(torch.from_numpy(train), ones, torch.from_numpy(test), ones,
                 torch.from_numpy(generated), 21, settings).metrics
    assert m["privacy_loss"]["AA_train"] < 0.1 and m["privacy_loss"]["value"] > 0.2


def test_weighted_median_known_answers() -> None:
    from rbmflow.evaluation.metrics import weighted_median

    values = np.array([0.3, 0.1, 0.2, 0.4])
    assert weighted_median(values) == pytest.approx(0.25)
    assert weighted_median(values, np.array([1.0, 1.0, 1.0, 1.0])) == 0.2
    assert weighted_median(values, np.array([0.1, 0.1, 0.1, 5.0])) == 0.4
    assert weighted_median(values, np.array([0.1, 5.0, 0.1, 0.1])) == 0.1
