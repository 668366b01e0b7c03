"""Training at equilibrium: the equilibrium monitor, checked against exact enumeration of the
hidden layer and against planted models whose exact samples are known."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest
import torch
from rbmflow import ALPHABET
from rbmflow.data.dataset import EncodedAlignment
from rbmflow.data.synthetic import (
    cluster_shares,
    multimodal_family,
    nearest_consensus,
    random_structured_rbm,
)
from rbmflow.model.archive import read_metadata
from rbmflow.model.partition import sample_exact
from rbmflow.model.rbm import PottsRBM
from rbmflow.sampling.equilibrium import (
    CheckpointDensity,
    EquilibriumMonitor,
    estimated_swap_rate,
    occupancy_distance,
)
from rbmflow.sampling.mixing import project, top_directions, weighted_ks
from rbmflow.training.train import TrainSettings, train

pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_weighted_ks_and_orthant_occupancy_worked_by_hand():
    # x = {0, 1, 2, 3} equally weighted, y = {1.5, 2.5}: F_x - F_y is 0.25, 0.5, 0, 0.25, 0
    # after 0, 1, 1.5, 2, 2.5: sup = 0.5.
    x, y = torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([1.5, 2.5])
    assert weighted_ks(x, y) == pytest.approx(0.5)
    # weights 0.7 on 0, 0.1 on the others: F_x(1) = 0.8, F_y = 0 there.
    assert weighted_ks(x, y, torch.tensor([0.7, 0.1, 0.1, 0.1])) == pytest.approx(0.8)
    assert weighted_ks(x, x) == 0.0
    # reference centred at (0, 0): its occupancy is 1/2 in orthants (+,+) and (-,-); the
    # chains put 3/4 in (+,+) and 1/4 in (+,-): TV = (1/4 + 1/4 + 1/2) / 2 = 1/2.
    reference = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    chains = torch.tensor([[2.0, 2.0], [1.0, 3.0], [0.5, 0.5], [1.0, -1.0]])
    assert occupancy_distance(chains, reference) == pytest.approx(0.5)


def test_top_directions_and_projections_of_a_rank_one_model():
    # W[i, a, mu] = x[i, a] y[mu] with x the zero-sum pattern +1 on state 0, -1 on state 1:
    # the top direction is x / |x|, and a sequence of all state 0 projects on 1 / sqrt(2).
    L, q = 4, 3
    x = torch.zeros(L, q, dtype=torch.float64)
    x[:, 0], x[:, 1] = 1.0, -1.0
    y = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    model = PottsRBM(x[:, :, None] * y, torch.zeros(L, q, dtype=torch.float64),
                     torch.zeros(3, dtype=torch.float64))
    u = top_directions(model.weight_matrix, 1)
    assert torch.allclose(u[:, 0], x.reshape(-1) / x.norm())
    codes = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2], [0, 1, 0, 1]])
    assert torch.allclose(project(codes, u)[:, 0],
                          torch.tensor([1, -1, 0, 0], dtype=torch.float64) / 2**0.5)


def test_monitor_flags_chains_stuck_in_one_mode_and_passes_exact_samples():
    target = two_mode_rbm(13, 3, coupling=3.0, bias_gap=1.5)
    g = torch.Generator().manual_seed(17)
    stuck = sample_exact(target, 4000, g)
    mode = target.hidden_inputs(stuck).argmax(1)
    stuck = stuck[mode == 1]  # the chains of the minor mode only (unit 1 dominant)
    monitor = EquilibriumMonitor(samples=2000)
    result = monitor.compare(target, stuck, None, update=1)
    assert result.reference == "exact" and result.disagree
    assert max(result.ks) > 0.2 and result.occupancy_tv > 0.1
    fair = monitor.compare(target, sample_exact(target, 2000, g), None, update=2)
    assert not fair.disagree


def test_swap_rate_is_one_between_equal_models_and_matches_its_formula():
    g = torch.Generator().manual_seed(19)
    a = random_structured_rbm(6, 3, 4, coupling=1.0, generator=g)
    b = PottsRBM(a.weight_matrix * 1.3, a.vbias.clone(), a.hbias.clone())
    x_a, x_b = sample_exact(a, 50, g), sample_exact(b, 50, g)
    assert estimated_swap_rate(a, x_a, a, x_b) == pytest.approx(1.0)
    log_ratio = (a.free_energy(x_a) + b.free_energy(x_b) - a.free_energy(x_b)
                 - b.free_energy(x_a))
    expected = float(torch.minimum(torch.ones(50, dtype=torch.float64), log_ratio.exp()).mean())
    assert estimated_swap_rate(a, x_a, b, x_b) == pytest.approx(expected)
    density = CheckpointDensity(threshold=expected + 0.01)
    density.reset(a, x_a)
    assert density.due(b, x_b) and not density.due(a, x_b)


def _three_cluster_run(tmp_path, name: str, **settings_kw):
    family = multimodal_family(600, 20, 21, (0.6, 0.3, 0.1), 0.12, seed=0)
    m = family.codes.shape[0]
    data = EncodedAlignment(codes=family.codes.astype(np.uint8), weights=np.ones(m, np.float32),
                            split=np.zeros(m, np.uint8),
                            names=np.array([f"s{i}" for i in range(m)]),
                            columns=np.arange(20), alphabet=ALPHABET)
    settings = TrainSettings(**{"hidden": 8, "updates": 300, "chains": 500, "seed": 1,
                                "log_every": 50, **settings_kw})
    model = train(data, tmp_path / f"{name}.h5", tmp_path / f"{name}.csv", settings,
                  progress=False)
    exact = cluster_shares(nearest_consensus(
        sample_exact(model.to(dtype=torch.float64), 20000, torch.Generator().manual_seed(0)),
        family.consensus), 3)
    with open(tmp_path / f"{name}.csv") as handle:
        rows = list(csv.DictReader(handle))
    return float(np.abs(exact - cluster_shares(family.labels, 3)).max()), rows


@pytest.mark.slow
def test_three_clusters_monitor_flags_plain_pcd_and_jarzynski_chains_fix_it(tmp_path, caplog):
    """Plain PCD: the chains' Pearson is near 1 while the model's exact cluster weights are
    far from the data's; the monitor (exact reference, Nh = 8) says so, loudly. With
    `equilibrium_chains: monitor` the same run moves to tempered chains at the first
    disagreeing check (whether those end at equilibrium depends on the seed: 1 of 3 here).
    With Jarzynski-weighted chains the monitor finds them at the model's equilibrium and the
    model's cluster weights come close to the data's."""
    plain = {"refresh_every": 0, "lr_decay": 1.0, "equilibrium_chains": "never"}
    with caplog.at_level(logging.WARNING):
        plain_gap, rows = _three_cluster_run(tmp_path, "plain", **plain)
    last = rows[-1]
    assert float(last["pearson_cij_train"]) > 0.95 and plain_gap > 0.3
    assert last["monitor_reference"] == "exact"
    assert float(last["monitor_ks"]) > float(last["monitor_ks_critical"])
    assert "NOT at the model's equilibrium" in caplog.text
    assert "train with equilibrium_chains: monitor" in caplog.text  # the warning names the remedy
    _three_cluster_run(tmp_path, "monitor", refresh_every=0, equilibrium_chains="monitor")
    decided = read_metadata(tmp_path / "monitor.h5")["training_chains"]
    assert decided["source"] == "tempered" and decided["switched_at"] == 50
    gap, rows = _three_cluster_run(tmp_path, "jarzynski", equilibrium_chains="jarzynski",
                                   gibbs_steps=20)
    assert all(float(r["monitor_ks"]) <= float(r["monitor_ks_critical"]) for r in rows[-3:])
    assert gap < 0.15 and gap < plain_gap - 0.3, (gap, plain_gap)


@pytest.mark.slow
def test_three_clusters_default_training_is_exact_and_gets_the_cluster_weights(
        tmp_path, caplog):
    """The default ("auto") with 8 hidden units computes the model term exactly over the
    hidden configurations, with Adam steps: the model's exact cluster weights end within 0.05
    of the data's (plain PCD: more than 0.3 off). With the chains that larger models use
    (`equilibrium_chains: never`), "auto" sees separated subfamilies and refreshes the
    persistent chains with a decaying step, which ends closer than plain PCD but further
    than the exact term (0.04 to 0.18 off at seeds 1 to 7). Whether its chains agree with
    exact samples of the model at the last check follows that gap (not at 2 seeds of 7)."""
    gap, rows = _three_cluster_run(tmp_path, "auto", updates=300)
    decided = read_metadata(tmp_path / "auto.h5")["training_chains"]
    assert decided["source"] == "exact" and "2^8 hidden configurations" in decided["why"]
    assert read_metadata(tmp_path / "auto.h5")["settings"]["optimizer"] == "adam"
    assert read_metadata(tmp_path / "auto.h5")["settings"]["batch_size"] == "all"
    assert float(rows[-1]["monitor_ks"]) <= float(rows[-1]["monitor_ks_critical"])
    assert gap < 0.05, gap
    with caplog.at_level(logging.INFO, logger="rbmflow.training.train"):
        refreshed_gap, rows = _three_cluster_run(tmp_path, "refreshed", updates=600,
                                                 equilibrium_chains="never")
    assert "separated subfamilies: 3 groups" in caplog.text
    assert "refresh_every 5, lr_decay 0.05" in caplog.text
    assert rows[-1]["monitor_reference"] == "exact"
    assert refreshed_gap < 0.2, refreshed_gap


def test_training_figure_has_a_panel_comparing_chains_with_equilibrium():
    import pandas as pd
    from rbmflow.report import fig_training

    frame = pd.DataFrame({"update": [0, 50, 100], "pearson_cij_train": [0.1, 0.9, 0.99],
                          "monitor_reference": ["", "exact", "exact"],
                          "monitor_ks": [None, 0.3, 0.6],
                          "monitor_ks_critical": [None, 0.12, 0.12]})
    fig = fig_training(frame)
    panels = {ax.get_ylabel(): [line.get_label() for line in ax.get_lines()]
              for ax in fig.axes}
    assert panels["chains vs equilibrium"] == ["monitor_ks", "monitor_ks_critical"]


def padded(model: PottsRBM, num_hiddens: int) -> PottsRBM:
    """`model` with zero-weight hidden units added up to `num_hiddens`: the same distribution
    of v, so exact samples of `model` are exact samples of the padded one."""
    extra = num_hiddens - model.num_hiddens
    g = torch.Generator().manual_seed(41)
    return PottsRBM(torch.cat([model.weight_matrix, model.weight_matrix.new_zeros(
                        *model.weight_matrix.shape[:2], extra)], 2), model.vbias.clone(),
                    torch.cat([model.hbias, torch.randn(extra, generator=g,
                                                        dtype=model.hbias.dtype)]))


def three_mode_rbm(length: int, coupling: float) -> PottsRBM:
    """Hidden unit k pulls every site to state k (k = 0, 1, 2), with biases that give the
    three modes unequal weights; the barriers stop Gibbs chains for thousands of sweeps."""
    g = torch.Generator().manual_seed(3)
    weight_matrix = torch.zeros(length, 4, 3, dtype=torch.float64)
    for k in range(3):
        weight_matrix[:, k, k] = coupling
    vbias = 0.2 * torch.randn(length, 4, generator=g, dtype=torch.float64)
    hbias = -0.5 * coupling * length + torch.tensor([1.0, 0.0, -0.7], dtype=torch.float64)
    model = PottsRBM(weight_matrix, vbias, hbias)
    model.apply_zero_sum_gauge_()
    return model


def test_monitor_with_100_hidden_units_flags_chains_stuck_in_one_mode_and_not_exact_samples():
    """Nh = 100 (no enumeration): the reference comes from tempering over snapshots along a
    path from the independent-site model, started from fresh replicas. Chains stuck in one
    mode of a planted three-mode model are flagged; exact samples are not."""
    small = three_mode_rbm(13, coupling=3.0)
    target = padded(small, 100)
    g = torch.Generator().manual_seed(29)
    exact = sample_exact(small, 6000, g)
    assert torch.allclose(target.free_energy(exact) - small.free_energy(exact),
                          (target.free_energy(exact) - small.free_energy(exact))[0])
    mode = small.hidden_inputs(exact).argmax(1)
    shares = torch.bincount(mode, minlength=3).double() / mode.shape[0]
    assert float(shares.min()) > 0.05  # three real modes
    monitor = EquilibriumMonitor(samples=300, seed=5)
    for k in range(1, 8):
        monitor.remember(_path_to(target, k / 8))
    stuck = exact[mode == 0][:300]
    result = monitor.compare(target, stuck, None, update=3)
    assert result.reference == "ptt" and result.settled and result.disagree
    assert result.passages >= 300 and min(result.swap_rates) > 0.05
    fair = monitor.compare(target, exact[-300:], None, update=4)
    assert fair.reference == "ptt" and fair.settled and not fair.disagree
    assert fair.columns()["monitor_passages"] == str(fair.passages)


def test_tempered_reference_ignores_the_chains_under_test():
    """The reference depends on the models, the seed and the update only: the same for
    chains stuck in one mode as for exact samples."""
    small = three_mode_rbm(11, coupling=3.0)
    target = padded(small, 19)
    monitor = EquilibriumMonitor(samples=200, seed=2)
    for k in range(1, 6):
        monitor.remember(_path_to(target, k / 6))
    g = torch.Generator().manual_seed(3)
    exact = sample_exact(small, 2000, g)
    stuck = exact[small.hidden_inputs(exact).argmax(1) == 1][:200]
    one = monitor.compare(target, stuck, None, update=7)
    two = monitor.compare(target, exact[:200], None, update=7)
    assert one.passages == two.passages and one.swap_rates == two.swap_rates
    assert one.disagree and not two.disagree


@pytest.mark.slow
def test_monitor_rebuilds_its_ladder_on_resume(tmp_path):
    """A run extended from a finished, shorter archive logs the same tempered reference
    (passages, swap rates, KS) as a run made in one go: the monitor's levels come back
    from the saved checkpoints."""
    g = np.random.default_rng(7)
    codes = g.integers(0, 3, (53, 7)).astype(np.uint8)
    data = EncodedAlignment(codes=codes, weights=np.ones(53, np.float32),
                            split=np.zeros(53, np.uint8),
                            names=np.array([f"s{i}" for i in range(53)]),
                            columns=np.arange(7), alphabet=ALPHABET)
    base = {"hidden": 17, "chains": 41, "log_every": 3, "refresh_every": 0, "lr_decay": 1.0}

    def rows(name: str) -> list[dict[str, str]]:
        with open(tmp_path / f"{name}.csv") as handle:
            return [{k: v for k, v in r.items() if k != "time_s"} for r in csv.DictReader(handle)]

    train(data, tmp_path / "one.h5", tmp_path / "one.csv", TrainSettings(updates=9, **base),
          progress=False)
    train(data, tmp_path / "two.h5", tmp_path / "two.csv", TrainSettings(updates=5, **base),
          progress=False)
    train(data, tmp_path / "two.h5", tmp_path / "two.csv", TrainSettings(updates=9, **base),
          progress=False)
    extended = [r for r in rows("two") if r["update"] != "5"]  # the shorter run's last row
    assert rows("one") == extended
    last = rows("one")[-1]
    assert last["monitor_reference"] == "ptt" and int(last["monitor_passages"]) > 0
