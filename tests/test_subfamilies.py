"""Separated subfamilies, decided from the data: the spanning tree against brute force, known
answers on planted families, bridged groups, small groups and subsampling; and what training
does with the decision."""

from __future__ import annotations

import itertools
import json
import logging

import numpy as np
import pytest
import torch
from rbmflow import ALPHABET
from rbmflow.data.alignment import load_alignment
from rbmflow.data.dataset import EncodedAlignment
from rbmflow.data.fetch import locate_example
from rbmflow.data.subfamilies import MIN_SPLIT_DISTANCE, separation, spanning_tree
from rbmflow.data.synthetic import multimodal_family
from rbmflow.data.weights import sequence_weights
from rbmflow.model.archive import read_metadata
from rbmflow.report import training_chains
from rbmflow.training.train import TrainSettings, train


def _kruskal_length(codes: np.ndarray) -> float:
    """Total length of a minimum spanning tree, by brute force over all pairs."""
    n, length = codes.shape
    pairs = sorted(((codes[i] != codes[j]).sum() / length, i, j)
                   for i, j in itertools.combinations(range(n), 2))
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    total = 0.0
    for d, i, j in pairs:
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[ri] = rj
            total += d
    return total


def test_spanning_tree_is_minimal_and_spans():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 3, (29, 7))
    lengths, a, b = spanning_tree(torch.as_tensor(codes))
    assert lengths.shape == (28,)
    assert float(lengths.sum()) == pytest.approx(_kruskal_length(codes))
    for d, i, j in zip(lengths.tolist(), a.tolist(), b.tolist(), strict=True):
        assert d == pytest.approx((codes[i] != codes[j]).mean())
    reached = {0} | set(a.tolist()) | set(b.tolist())
    assert reached == set(range(29))


def test_planted_subfamilies_are_separated_with_their_weight_shares():
    family = multimodal_family(311, 23, 21, (0.5, 0.3, 0.2), 0.1, seed=7)
    weights = torch.linspace(0.5, 1.5, 311)  # unequal weights: shares are weighted
    found = separation(torch.as_tensor(family.codes), weights)
    assert found.separated and found.groups == 3 and found.sequences == 311
    expected = sorted((float(weights[torch.as_tensor(family.labels == k)].sum() / weights.sum())
                       for k in range(3)), reverse=True)
    assert found.shares == pytest.approx(expected, abs=1e-4)
    assert found.split_distance >= found.threshold >= MIN_SPLIT_DISTANCE
    assert "separated subfamilies: 3 groups" in found.describe()
    json.dumps(found.as_dict())


def test_random_sequences_and_bridged_groups_are_one_family():
    rng = np.random.default_rng(5)
    uniform = separation(torch.as_tensor(rng.integers(0, 21, (200, 31))), torch.ones(200))
    assert not uniform.separated and uniform.groups == 1
    assert "one family" in uniform.describe()
    # two far-apart consensus sequences joined by a path that changes one site at a time
    L = 30
    first, second = rng.integers(0, 21, L), rng.integers(0, 21, L)
    path = [np.where(np.arange(L) < k, second, first) for k in range(L + 1)]
    codes = np.concatenate([np.repeat(first[None], 100, 0), np.repeat(second[None], 100, 0),
                            np.array(path)])
    bridged = separation(torch.as_tensor(codes), torch.ones(len(codes)))
    assert not bridged.separated
    cut = separation(torch.as_tensor(codes[:200]), torch.ones(200))  # without the path
    assert cut.separated and cut.shares == pytest.approx((0.5, 0.5))


def test_groups_under_the_minimum_share_do_not_count():
    family = multimodal_family(400, 20, 21, (0.97, 0.03), 0.1, seed=2)
    found = separation(torch.as_tensor(family.codes), torch.ones(400))
    assert not found.separated and found.groups == 1
    assert separation(torch.as_tensor(family.codes), torch.ones(400), min_share=0.02).separated


def test_large_alignments_are_subsampled_reproducibly():
    family = multimodal_family(503, 17, 21, (0.6, 0.4), 0.1, seed=4)
    codes, weights = torch.as_tensor(family.codes), torch.ones(503)
    first = separation(codes, weights, max_sequences=101, seed=1)
    assert first.sequences == 101 and first.separated and first.groups == 2
    assert first == separation(codes, weights, max_sequences=101, seed=1)


def test_subsampled_shares_are_weight_shares_not_squared_weights():
    """A clade of few heavy sequences holding 2 % of the weight, beside a light majority
    (76.6 %) and a heavier group (21.4 %): 500 draws out of 5474 sequences must give each
    group its share of the weight. Weighting the drawn sequences again (shares as sum w^2)
    would make the clade a group of its own (about 7 %)."""
    family = multimodal_family(8000, 23, 21, (0.7, 0.15, 0.15), 0.1, seed=11)
    labels = family.labels
    order = np.argsort(labels, kind="stable")
    codes = torch.as_tensor(family.codes[order])
    labels = labels[order]
    sizes = {0: 5360, 1: 100, 2: 14}
    keep = np.concatenate([np.flatnonzero(labels == k)[:sizes[k]] for k in range(3)])
    codes, labels = codes[torch.as_tensor(keep)], labels[keep]
    weights = torch.as_tensor(np.select([labels == 0, labels == 1, labels == 2],
                                        [1.0, 15.0, 10.0]))
    truth = [float(weights[torch.as_tensor(labels == k)].sum() / weights.sum())
             for k in range(3)]
    assert truth == pytest.approx([0.766, 0.214, 0.020], abs=1e-3)
    found = separation(codes, weights, max_sequences=500, seed=3)
    assert found.sequences == 500 and found.separated
    assert found.groups == 2, found.shares  # the 2 % clade is under the 5 % minimum
    assert found.shares == pytest.approx(truth[:2], abs=0.06)


@pytest.mark.parametrize("family", ["WW", "PF00014"])
def test_real_families_are_one_family(request, family):
    """Known answers on real data: the embedded WW alignment and Pfam PF00014 (subsampled to
    5,000 sequences by weight) have no separated subfamilies, so `auto` trains them with
    plain PCD, as before."""
    if family == "WW":
        enc = load_alignment(*locate_example("example:ww"))
    else:
        enc = load_alignment(request.getfixturevalue("shared_data") / "pfam"
                             / "PF00014_mgap6.fasta.gz")
    weights = sequence_weights(enc.codes, 0.8, len(ALPHABET))
    found = separation(torch.as_tensor(enc.codes), torch.as_tensor(weights))
    assert not found.separated and found.groups == 1
    assert found.sequences == min(len(weights), 5000)
    assert 0.2 < found.neighbour_distance < 0.4


def _encoded(codes: np.ndarray) -> EncodedAlignment:
    m, length = codes.shape
    return EncodedAlignment(codes=codes.astype(np.uint8), weights=np.ones(m, np.float32),
                            split=np.zeros(m, np.uint8),
                            names=np.array([f"s{i}" for i in range(m)]),
                            columns=np.arange(length), alphabet=ALPHABET)


@pytest.mark.parametrize("separated", [True, False])
def test_training_decides_auto_settings_and_records_why(tmp_path, caplog, separated):
    if separated:
        codes = multimodal_family(211, 13, 21, (0.6, 0.4), 0.1, seed=1).codes
    else:
        codes = np.random.default_rng(1).integers(1, 21, (211, 13))
    settings = TrainSettings(hidden=5, updates=11, chains=37, batch_size=53, log_every=5,
                             checkpoints=3, monitor=False, equilibrium_chains="never")
    with caplog.at_level(logging.INFO, logger="rbmflow.training.train"):
        train(_encoded(codes), tmp_path / "m.h5", tmp_path / "log.csv", settings,
              progress=False)
    meta = read_metadata(tmp_path / "m.h5")
    assert meta["subfamilies"]["separated"] is separated
    want = (5, 0.05) if separated else (0, 1.0)
    assert (meta["settings"]["refresh_every"], meta["settings"]["lr_decay"]) == want
    assert f"refresh_every {want[0]}, lr_decay {want[1]}" in caplog.text
    rates = [float(line.split(",")[2]) for line in
             (tmp_path / "log.csv").read_text().splitlines()[1:]]
    assert (rates[-1] < rates[0]) is separated
    assert training_chains(None) is None  # a report without a model
    said = training_chains(meta)  # the report's row
    assert said == ("refreshed by trajectory tempering every 5 updates, step decaying to 0.05 x "
                    "(auto: separated subfamilies, weight shares "
                    + "/".join(f"{x:.2f}" for x in meta["subfamilies"]["shares"]) + ")"
                    if separated else "plain PCD (auto: one family)") + (
                    "; equilibrium_chains: never")
    assert meta["training_chains"]["switched_at"] is None
