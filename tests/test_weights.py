"""Sequence weights: exact agreement with a brute-force double loop, and known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from rbmflow.data.weights import min_matches, neighbour_counts, sequence_weights


def brute_force_counts(codes: np.ndarray, threshold: float) -> np.ndarray:
    """#{m' : mean(codes[m] == codes[m']) >= threshold}, one pair at a time."""
    num_sequences = codes.shape[0]
    counts = np.zeros(num_sequences, dtype=np.int64)
    for m in range(num_sequences):
        for other in range(num_sequences):
            if np.mean(codes[m] == codes[other]) >= threshold:
                counts[m] += 1
    return counts


def clustered_alignment(rng: np.random.Generator, num_sequences: int, length: int,
                        num_states: int, mutation_rate: float) -> np.ndarray:
    """Random ancestors and mutated copies of them: identities spread around the threshold."""
    ancestors = rng.integers(0, num_states, size=(max(1, num_sequences // 6), length))
    codes = ancestors[rng.integers(0, len(ancestors), size=num_sequences)]
    mutate = rng.random(codes.shape) < mutation_rate
    codes = np.where(mutate, rng.integers(0, num_states, size=codes.shape), codes)
    return codes.astype(np.uint8)


@pytest.mark.parametrize(
    ("num_sequences", "length", "num_states", "threshold", "block_size"),
    [
        (37, 11, 5, 0.8, None),
        (53, 7, 3, 0.7, 5),
        (61, 13, 21, 0.8, 7),
        (29, 10, 4, 0.8, 3),  # 0.8 * 10 = 8 exactly: the boundary counts
        (41, 17, 21, 0.9, 41),
        (23, 5, 2, 1.0, 4),
    ],
)
def test_counts_equal_brute_force(num_sequences: int, length: int, num_states: int,
                                  threshold: float, block_size: int | None) -> None:
    rng = np.random.default_rng(num_sequences * 1000 + length)
    codes = clustered_alignment(rng, num_sequences, length, num_states, mutation_rate=0.15)
    expected = brute_force_counts(codes, threshold)
    assert expected.max() > 1  # the test must contain real neighbours
    counts = neighbour_counts(codes, threshold, num_states, block_size=block_size)
    np.testing.assert_array_equal(counts, expected)
    weights = sequence_weights(codes, threshold, num_states, block_size=block_size)
    np.testing.assert_array_equal(weights, 1.0 / expected)


def test_min_matches_is_the_float_boundary() -> None:
    for length in (1, 5, 7, 10, 53, 200, 997):
        for threshold in (0.1, 0.2, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0):
            k = min_matches(length, threshold)
            assert k / length >= threshold
            assert k == 0 or (k - 1) / length < threshold


def test_identical_copies_share_their_weight() -> None:
    rng = np.random.default_rng(3)
    distinct = rng.integers(0, 21, size=(4, 19))
    copies = np.repeat(distinct, [1, 2, 3, 5], axis=0)
    weights = sequence_weights(copies, 0.8)
    np.testing.assert_array_equal(weights, np.repeat([1.0, 1 / 2, 1 / 3, 1 / 5], [1, 2, 3, 5]))
    assert weights.sum() == pytest.approx(4.0)


def test_gaps_count_as_matching_symbols() -> None:
    # Two sequences identical except that they share 4 gaps: identity 5/5 with gaps counted.
    codes = np.array([[0, 0, 0, 0, 3], [0, 0, 0, 0, 3], [1, 2, 3, 4, 3]])
    assert neighbour_counts(codes, 0.8).tolist() == [2, 2, 1]


def test_torch_input_and_block_sizes_agree() -> None:
    rng = np.random.default_rng(11)
    codes = clustered_alignment(rng, 151, 31, 21, mutation_rate=0.1)
    reference = neighbour_counts(codes, 0.8, block_size=151)
    for block_size in (5, 17, 64, 500):
        np.testing.assert_array_equal(neighbour_counts(codes, 0.8, block_size=block_size),
                                      reference)
    np.testing.assert_array_equal(neighbour_counts(torch.from_numpy(codes)), reference)
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        np.testing.assert_array_equal(neighbour_counts(codes, 0.8, block_size=64, dtype=dtype),
                                      reference)
    np.testing.assert_array_equal(reference, brute_force_counts(codes, 0.8))


def test_invalid_input_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[0, 21\)"):
        neighbour_counts(np.array([[0, 21]]))
    with pytest.raises(ValueError, match="threshold"):
        neighbour_counts(np.zeros((2, 3), dtype=int), threshold=0.0)
    with pytest.raises(ValueError, match="2-D"):
        neighbour_counts(np.zeros(3, dtype=int))
    assert neighbour_counts(np.zeros((0, 7), dtype=int)).shape == (0,)


@pytest.mark.slow
def test_pf00014_effective_number(shared_data: Path) -> None:
    """Reference point: M_eff = 4,363.9 for PF00014_mgap6 at identity 0.8, gaps as symbols."""
    from rbmflow.data.alignment import load_alignment

    encoded = load_alignment(shared_data / "pfam" / "PF00014_mgap6.fasta.gz")
    assert encoded.codes.shape == (13600, 53)
    assert sequence_weights(encoded.codes, 0.8).sum() == pytest.approx(4363.9, abs=0.5)


def _dtype_paths(length: int) -> list[tuple[str, bool]]:
    """(device type, native bf16) pairs, one per distinct dtype product_dtype picks at length."""
    from rbmflow.data import weights

    chosen: dict[torch.dtype, tuple[str, bool]] = {}
    for device_type in ("cpu", "cuda"):
        for native_bf16 in (False, True):
            weights._cpu_has_native_bf16.cache_clear()
            original = weights._cpu_has_native_bf16
            try:
                weights._cpu_has_native_bf16 = lambda value=native_bf16: value
                dtype = weights.product_dtype(torch.device(device_type), length)
            finally:
                weights._cpu_has_native_bf16 = original
            chosen.setdefault(dtype, (device_type, native_bf16))
    return list(chosen.values())


def _force_path(monkeypatch: pytest.MonkeyPatch, device_type: str, native_bf16: bool) -> None:
    """Make neighbour_counts (on the CPU) pick the dtype it would pick on that device."""
    from rbmflow.data import weights

    original = weights.product_dtype
    monkeypatch.setattr(weights, "_cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.setattr(weights, "product_dtype",
                        lambda device, length: original(torch.device(device_type), length))


@pytest.mark.parametrize(("length", "path"), [(length, path) for length in (201, 251, 1500, 1501)
                                              for path in _dtype_paths(length)])
def test_counts_are_exact_at_the_boundary_on_every_dtype_path(
        monkeypatch: pytest.MonkeyPatch, length: int, path: tuple[str, bool]) -> None:
    """One match short of the threshold never counts, whatever dtype the products use.

    At L = 201 and 251, 0.8 L needs an odd count whose half-integer threshold rounds to the
    even number below in bfloat16; at L = 1501 the same happens in float16.
    """
    _force_path(monkeypatch, *path)
    needed = min_matches(length, 0.8)
    base = np.zeros(length, dtype=np.int64)
    short = base.copy()
    short[: length - needed + 1] = 7      # needed - 1 matches with base
    enough = base.copy()
    enough[needed:] = 5                   # needed matches with base, ~0.6 L with short
    codes = np.stack([base, short, enough])
    expected = brute_force_counts(codes, 0.8)
    assert expected.tolist() == [2, 1, 2]
    np.testing.assert_array_equal(neighbour_counts(codes, 0.8), expected)


@pytest.mark.parametrize("length", [201, 251])
def test_clustered_weights_are_exact_on_every_dtype_path(
        monkeypatch: pytest.MonkeyPatch, length: int) -> None:
    rng = np.random.default_rng(length)
    codes = clustered_alignment(rng, 307, length, 21, mutation_rate=0.11)
    expected = brute_force_counts(codes, 0.8)
    assert expected.max() > 1 and (expected == 1).any()
    for path in _dtype_paths(length):
        _force_path(monkeypatch, *path)
        np.testing.assert_array_equal(neighbour_counts(codes, 0.8, block_size=101), expected)


def brute_force_identity(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """identity[a, b] = mean(first[a] == second[b]), one pair at a time."""
    return np.array([[np.mean(a == b) for b in second] for a in first])


@pytest.mark.parametrize(("num_sequences", "length", "block_size"),
                         [(89, 13, None), (101, 17, 7), (61, 11, 60)])
def test_identity_components_equal_brute_force(num_sequences: int, length: int,
                                               block_size: int | None) -> None:
    from rbmflow.data.weights import identity_components

    rng = np.random.default_rng(num_sequences)
    codes = clustered_alignment(rng, num_sequences, length, 21, mutation_rate=0.15)
    linked = brute_force_identity(codes, codes) >= 0.8
    expected = np.full(num_sequences, -1)
    for start in range(num_sequences):  # label = smallest member, by graph search
        if expected[start] >= 0:
            continue
        stack, expected[start] = [start], start
        while stack:
            node = stack.pop()
            for other in np.flatnonzero(linked[node] & (expected < 0)):
                expected[other] = start
                stack.append(other)
    assert 1 < len(set(expected)) < num_sequences  # real clusters, more than one
    labels = identity_components(codes, 0.8, block_size=block_size)
    np.testing.assert_array_equal(labels, expected)


def test_max_identity_equals_brute_force() -> None:
    from rbmflow.data.weights import max_identity

    rng = np.random.default_rng(2)
    codes = clustered_alignment(rng, 131, 19, 21, mutation_rate=0.2)
    query, reference = codes[:37], codes[37:]
    expected = brute_force_identity(query, reference).max(axis=1)
    for block_size in (None, 5, 40):
        np.testing.assert_array_equal(max_identity(query, reference, block_size=block_size),
                                      expected)
    assert np.isnan(max_identity(query, reference[:0])).all()
