"""PCD chains refreshed by trajectory tempering: on an enumerable two-mode model, chains stuck
in one mode reach the exact mode occupancies after refreshes; the settings keys round-trip."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from rbmflow.cli import build_parser
from rbmflow.errors import RbmflowError
from rbmflow.model.partition import free_energies, visible_configurations
from rbmflow.model.rbm import PottsRBM, random_codes
from rbmflow.sampling.equilibrium import TrajectoryTempering
from rbmflow.training.train import AUTO_LR_DECAY, AUTO_REFRESH_EVERY, TrainSettings

pytestmark = pytest.mark.usefixtures("one_thread")

L, Q = 9, 3


def two_mode_model(scale: float = 1.0, hbias: float = 0.8) -> PottsRBM:
    """One hidden unit; h = 0 favours state 0 at every site, h = 1 state 1, with equal
    energies and entropies: mode weights sigmoid(scale * hbias) (here 0.69 for h = 1). All
    parameters times `scale` is the model at inverse temperature `scale`."""
    weight = torch.zeros(L, Q, 1, dtype=torch.float64)
    weight[:, 0, 0], weight[:, 1, 0] = -4.0, 4.0
    vbias = torch.zeros(L, Q, dtype=torch.float64)
    vbias[:, 0] = 4.0
    return PottsRBM(scale * weight, scale * vbias,
                    torch.tensor([scale * hbias], dtype=torch.float64))


def in_second_mode(codes: torch.Tensor) -> torch.Tensor:
    return (codes == 1).sum(1) > (codes == 0).sum(1)


def exact_second_mode_weight(model: PottsRBM) -> float:
    """P(more sites in state 1 than in state 0), by enumerating the Q^L sequences."""
    codes = visible_configurations(L, Q)
    log_p = -free_energies(model, codes)
    p = torch.softmax(log_p, 0)
    return float(p[in_second_mode(codes)].sum())


def test_refresh_moves_stuck_chains_to_the_exact_mode_weights() -> None:
    g = torch.Generator().manual_seed(7)
    target = two_mode_model()
    exact = exact_second_mode_weight(target)
    assert 0.6 < exact < 0.75
    num_chains = 997
    # The trajectory: the model at growing scale, like training's growing couplings.
    trajectory = [two_mode_model(t) for t in torch.linspace(0, 1, 23).tolist()]
    chains = random_codes(num_chains, L, Q, "cpu", g)  # exact samples of the scale-0 model
    tempering = TrajectoryTempering(trajectory[0], chains, sweeps=20)
    for model in trajectory[1:-1]:
        chains = tempering.refresh(model, model.gibbs(chains, 10, generator=g), g)
    assert 2 < len(tempering.levels) <= tempering.max_levels
    # PCD chains of the target all in the first mode stay there under Gibbs sampling.
    stuck = target.gibbs(torch.zeros(num_chains, L, dtype=torch.long), 200, generator=g)
    assert float(in_second_mode(stuck).double().mean()) < 0.01
    refreshed = stuck
    for _ in range(3):
        refreshed = tempering.refresh(target, target.gibbs(refreshed, 10, generator=g), g)
    occupancy = float(in_second_mode(refreshed).double().mean())
    tolerance = 4 * (exact * (1 - exact) / num_chains) ** 0.5 + 0.03
    assert abs(occupancy - exact) < tolerance, (occupancy, exact, tempering.swap_rates)
    assert min(tempering.swap_rates) > 0.1


def test_ladder_keeps_at_most_max_levels_first_and_last() -> None:
    g = torch.Generator().manual_seed(3)
    trajectory = [two_mode_model(t) for t in torch.linspace(0, 1, 31).tolist()]
    first = trajectory[0]
    tempering = TrajectoryTempering(first, random_codes(101, L, Q, "cpu", g), sweeps=2,
                                    max_levels=5, floor=0.99)  # keep and insert levels
    for model in trajectory[1:]:
        tempering.refresh(model, random_codes(101, L, Q, "cpu", g), g)
        assert len(tempering.levels) <= 5
    assert len(tempering.levels) == 5
    assert tempering.levels[0][0].tensors()[0].abs().max() == 0  # the first kept
    assert torch.equal(tempering.levels[-1][0].weight_matrix, trajectory[-1].weight_matrix)


def test_refresh_keys_round_trip_cli_and_settings() -> None:
    args = build_parser().parse_args(["train", "a.npz", "--out", "m.h5", "--log", "l.csv",
                                      "--refresh-every", "13", "--refresh-sweeps", "7"])
    assert (args.refresh_every, args.refresh_sweeps, args.lr_decay) == (13, 7, "auto")
    plain = TrainSettings(refresh_every=0, lr_decay=1.0, lr_decay_from=0.0, learning_rate=0.2)
    settings = replace(plain, refresh_every=13, refresh_sweeps=7)
    assert settings.refreshed and not plain.refreshed
    assert not replace(settings, method="cd").refreshed
    assert settings.resume_key() != plain.resume_key()
    assert replace(plain, refresh_sweeps=7).resume_key() == plain.resume_key()
    assert (replace(plain, refresh_every=5, refresh_sweeps=7).resume_key()
            != replace(plain, refresh_every=5).resume_key())
    with pytest.raises(RbmflowError):
        TrainSettings(refresh_every=-1)
    with pytest.raises(RbmflowError):
        TrainSettings(refresh_sweeps=0)


def test_auto_refresh_is_decided_by_separated_subfamilies() -> None:
    args = build_parser().parse_args(["train", "a.npz", "--out", "m.h5", "--log", "l.csv",
                                      "--refresh-every", "auto", "--lr-decay", "0.3"])
    assert (args.refresh_every, args.lr_decay) == ("auto", 0.3)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "a.npz", "--out", "m.h5", "--log", "l.csv",
                                   "--refresh-every", "often"])
    auto = TrainSettings()
    assert auto.automatic and (auto.refresh_every, auto.lr_decay) == ("auto", "auto")
    with pytest.raises(RbmflowError, match="still 'auto'"):
        auto.resume_key()
    separated, single = auto.resolved(True), auto.resolved(False)
    assert (separated.refresh_every, separated.lr_decay) == (AUTO_REFRESH_EVERY, AUTO_LR_DECAY)
    assert (single.refresh_every, single.lr_decay) == (0, 1.0)
    assert not separated.automatic and separated.refreshed and not single.refreshed
    # explicit values win; methods without persistent chains are never refreshed
    assert TrainSettings(lr_decay=0.3).resolved(True).lr_decay == 0.3
    assert TrainSettings(refresh_every=0).resolved(True).lr_decay == 1.0
    assert TrainSettings(refresh_every=7).resolved(False).lr_decay == AUTO_LR_DECAY
    cd = TrainSettings(method="cd").resolved(True)
    assert (cd.refresh_every, cd.lr_decay) == (0, 1.0)
    with pytest.raises(RbmflowError, match="number or 'auto'"):
        TrainSettings(lr_decay="fast")


def test_refreshes_follow_every_given_number_of_updates() -> None:
    settings = TrainSettings(updates=41, refresh_every=7)
    assert [u for u in range(1, 42) if settings.refresh_due(u)] == [7, 14, 21, 28, 35]
    assert not any(TrainSettings(updates=41, refresh_every=0).refresh_due(u) for u in range(42))
    assert not any(TrainSettings(updates=41, method="cd", refresh_every=7).refresh_due(u)
                   for u in range(42))
