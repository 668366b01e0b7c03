"""Chains that stay at the model's equilibrium while it is trained, and a monitor that checks.

- `estimated_swap_rate`, `CheckpointDensity`: the expected swap acceptance between two models
  from samples of each, and checkpoints saved dense where the model moves fast.
- `EquilibriumMonitor`: compares the persistent chains with equilibrium samples of the
  current model, exact (hidden enumeration) or drawn by tempering from fresh replicas
  (`tempered_reference`), which owe nothing to the chains under test.
- `TrajectoryTempering`: a ladder of snapshots of the model taken during training whose
  chains persist, used to refresh (or to replace) the persistent chains.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from rbmflow.model.rbm import PottsRBM, sample_categorical
from rbmflow.sampling.mixing import project, top_directions, weighted_ks
from rbmflow.sampling.tempering import (
    Level,
    expected_swap_rate,
    rebuild_ladder,
    select_ladder,
    temper,
)

log = logging.getLogger(__name__)


# -- swap acceptance between two models, and checkpoints dense where the model moves ----------


def estimated_swap_rate(model_a: PottsRBM, codes_a: Tensor, model_b: PottsRBM, codes_b: Tensor,
                        weights_b: Tensor | None = None) -> float:
    """Expected Metropolis acceptance of exchanging a sample of model a with one of model b,

        < min(1, exp(F_a(x_a) + F_b(x_b) - F_a(x_b) - F_b(x_a))) >,

    over pairs (x_a, x_b) = (codes_a[c], codes_b[c]) of samples of each (the first
    min(C_a, C_b) rows), weighted by weights_b (C_b,) when the samples of b are weighted."""
    n = min(codes_a.shape[0], codes_b.shape[0])
    x_a, x_b = codes_a[:n], codes_b[:n]
    log_ratio = (model_a.free_energy(x_a).double() + model_b.free_energy(x_b).double()
                 - model_a.free_energy(x_b).double() - model_b.free_energy(x_a).double())
    accept = log_ratio.clamp(max=0).exp()
    if weights_b is None:
        return float(accept.mean())
    w = weights_b[:n].double()
    return float((accept * w).sum() / w.sum())


class CheckpointDensity:
    """Says when to save an extra checkpoint: when the estimated swap acceptance between the
    last saved model and the current one (on `num_chains` of their persistent chains) falls
    under `threshold`, so that tempering over the checkpoints has no rate near zero."""

    def __init__(self, threshold: float, num_chains: int = 512) -> None:
        self.threshold = threshold
        self.num_chains = num_chains
        self.model: PottsRBM | None = None
        self.codes: Tensor | None = None

    def reset(self, model: PottsRBM, chains: Tensor) -> None:
        """Remember the model just saved and its chains (equally weighted)."""
        self.model = model.clone()
        self.codes = chains[:self.num_chains].clone()

    def rate(self, model: PottsRBM, chains: Tensor, weights: Tensor | None = None) -> float:
        """Estimated swap acceptance between the last saved model and `model` (nan before the
        first save)."""
        if self.model is None or self.codes is None:
            return math.nan
        sub = None if weights is None else weights[:self.num_chains]
        return estimated_swap_rate(self.model, self.codes, model, chains[:self.num_chains], sub)

    def due(self, model: PottsRBM, chains: Tensor, weights: Tensor | None = None) -> bool:
        return self.threshold > 0 and self.rate(model, chains, weights) < self.threshold


# -- the equilibrium monitor ----------------------------------------------------------------


def occupancy_distance(proj_chains: Tensor, proj_reference: Tensor,
                       w_chains: Tensor | None = None) -> float:
    """Total variation distance between the occupancies of the 2^d orthants around the
    reference's mean, in the projections (C, d) of the chains (weighted) and the reference."""
    centre = proj_reference.mean(0)
    d = proj_chains.shape[1]
    powers = 2 ** torch.arange(d, device=proj_chains.device)

    def occupancy(proj: Tensor, w: Tensor | None) -> Tensor:
        cell = ((proj > centre).long() * powers).sum(1)
        weights = (torch.full((proj.shape[0],), 1.0 / proj.shape[0], dtype=torch.float64,
                              device=proj.device) if w is None else w.double() / w.sum())
        return torch.zeros(2**d, dtype=torch.float64, device=proj.device).index_add_(
            0, cell, weights)

    return 0.5 * float((occupancy(proj_chains, w_chains) - occupancy(proj_reference, None)
                        ).abs().sum())


def ks_critical(n: float, m: float, alpha: float = 1e-3) -> float:
    """Asymptotic critical value of the two-sample KS distance at level alpha, sizes n, m."""
    return math.sqrt(-0.5 * math.log(alpha / 2)) * math.sqrt((n + m) / (n * m))


@dataclass
class MonitorResult:
    """Persistent chains vs equilibrium samples of the same model (a `train_log.csv` row).

    ks: KS distance on each of the top directions of W; occupancy_tv: total variation of the
    orthant occupancies on the top two; critical: the KS value above which they disagree
    (alpha = 1e-3 at the chains' effective size, and at least `min_effect`); reference:
    "exact" or "ptt"; passages, swap_rates: of the tempering run that drew the reference
    (None and [] for exact samples); settled: whether that run had at least as many
    passages from the ladder's first level to its last as it has chains (always true for
    exact samples)."""

    ks: list[float]
    occupancy_tv: float
    critical: float
    reference: str
    passages: int | None = None
    swap_rates: list[float] = field(default_factory=list)
    settled: bool = True

    @property
    def disagree(self) -> bool:
        return max(self.ks) > self.critical

    def columns(self) -> dict[str, str]:
        return {"monitor_reference": self.reference,
                "monitor_ks": f"{max(self.ks):.4f}",
                "monitor_occupancy_tv": f"{self.occupancy_tv:.4f}",
                "monitor_ks_critical": f"{self.critical:.4f}",
                "monitor_passages": "" if self.passages is None else str(self.passages),
                "monitor_swap_min": (f"{min(self.swap_rates):.3f}" if self.swap_rates
                                     else "")}


def compare_with_equilibrium(model: PottsRBM, chains: Tensor, reference: Tensor,
                             reference_name: str, chain_weights: Tensor | None = None,
                             directions: int = 3, min_effect: float = 0.05) -> MonitorResult:
    """Compare the chains (C, L), weighted or not, with equilibrium samples `reference` (R, L)
    of `model` along the top `directions` singular directions of W."""
    u = top_directions(model.weight_matrix, directions)
    p_chains, p_ref = project(chains, u), project(reference, u)
    ks = [weighted_ks(p_chains[:, k], p_ref[:, k], chain_weights) for k in range(u.shape[1])]
    n_eff = (float(1.0 / (chain_weights.double() / chain_weights.sum()).pow(2).sum())
             if chain_weights is not None else float(chains.shape[0]))
    critical = max(min_effect, ks_critical(n_eff, float(reference.shape[0])))
    tv = occupancy_distance(p_chains[:, :2], p_ref[:, :2], chain_weights)
    return MonitorResult(ks, tv, critical, reference_name)


@dataclass
class TemperedReference:
    """Equilibrium samples drawn by tempering: codes (R, L) of the target level, the ladder's
    swap rates, its labels, the passages from the first level to the last, the sweeps."""

    codes: Tensor
    swap_rates: list[float]
    labels: list[str]
    passages: int
    sweeps: int

    @property
    def settled(self) -> bool:
        return self.passages >= self.codes.shape[0]


def independent_site_level(model: PottsRBM) -> Level:
    """The easy end of a ladder: `model`'s fields without couplings (W = 0), exactly
    sampled by one sweep from any start."""
    return Level(PottsRBM(torch.zeros_like(model.weight_matrix), model.vbias.clone(),
                          model.hbias.clone()), 1.0, "independent sites")


def tempered_reference(snapshots: list[PottsRBM], target: PottsRBM, samples: int,
                       generator: torch.Generator, floor: float = 0.2, max_levels: int = 16,
                       chunk: int = 50, max_sweeps: int = 1000) -> TemperedReference:
    """Equilibrium samples of `target` that owe nothing to any chains under test.

    The candidate levels are the independent-site model of the first snapshot, the
    `snapshots` (models in training order) and the target; `select_ladder` keeps those that
    swap at `floor` or more and interpolates where neighbours swap less. `samples` fresh
    replicas per level, drawn from the independent-site model, then run by `temper` in
    chunks of `chunk` sweeps until the replicas have made at least `samples` passages from
    the first level to the last, or `max_sweeps` sweeps were spent.
    """
    first = snapshots[0] if snapshots else target
    candidates = [independent_site_level(first)] + [Level(m, 1.0, f"snapshot_{k}")
                                                    for k, m in enumerate(snapshots)]
    candidates.append(Level(target, 1.0, "target"))
    ladder = select_ladder(candidates, num_chains=min(samples, 256), sweeps=32, floor=floor,
                           max_levels=max_levels, rounds=3, generator=generator)
    fresh = first.vbias.expand(samples, -1, -1)
    codes: list[Tensor] = [sample_categorical(fresh, generator) for _ in ladder.levels]
    passages = sweeps = 0
    accepted = [0.0] * (len(ladder.levels) - 1)
    while sweeps < max_sweeps and passages < samples:
        result = temper(ladder.levels, samples, chunk, generator, codes)
        codes, sweeps, passages = result.level_codes, sweeps + chunk, passages + result.passages
        accepted = [a + r * chunk for a, r in zip(accepted, result.swap_rates, strict=True)]
    return TemperedReference(codes[-1], [a / sweeps for a in accepted], ladder.labels,
                             passages, sweeps)


class EquilibriumMonitor:
    """Compares the persistent chains with equilibrium samples of the current model: exact
    samples (hidden enumeration) when Nh <= `exact_max_hiddens`, otherwise
    `tempered_reference` over the models saved so far (`remember`), started from fresh
    replicas. Holds those models: at most 2 `max_levels`, thinned by dropping every other
    one (first and last kept); `restore` takes them back from saved checkpoints."""

    def __init__(self, samples: int = 500, exact_max_hiddens: int = 16, max_levels: int = 16,
                 max_sweeps: int = 1000, seed: int = 0) -> None:
        self.samples = samples
        self.exact_max_hiddens = exact_max_hiddens
        self.max_levels = max_levels
        self.max_sweeps = max_sweeps
        self.seed = seed
        self.models: list[PottsRBM] = []

    def remember(self, model: PottsRBM) -> None:
        """Keep a saved model as a candidate tempering level."""
        self.models.append(model.clone())
        if len(self.models) > 2 * self.max_levels:
            self.models = self.models[:-1:2] + self.models[-1:]

    def restore(self, models: list[PottsRBM]) -> None:
        """Start over from `models`, the saved checkpoints in training order (a resume)."""
        self.models = []
        for model in models:
            self.remember(model)

    def compare(self, model: PottsRBM, chains: Tensor, chain_weights: Tensor | None,
                update: int) -> MonitorResult:
        """The chains (C, L; weights (C,) or None) vs equilibrium samples of `model`; the
        samples depend only on the models, the seed and `update`."""
        generator = torch.Generator(device=model.device).manual_seed(self.seed * 1_000_003
                                                                     + update)
        if model.num_hiddens <= self.exact_max_hiddens:
            from rbmflow.model.partition import sample_exact
            reference = sample_exact(model, self.samples, generator)
            return compare_with_equilibrium(model, chains, reference, "exact", chain_weights)
        drawn = tempered_reference(self.models, model, self.samples, generator,
                                   max_levels=self.max_levels, max_sweeps=self.max_sweeps)
        result = compare_with_equilibrium(model, chains, drawn.codes, "ptt", chain_weights)
        return replace(result, passages=drawn.passages, swap_rates=drawn.swap_rates,
                       settled=drawn.settled)


# -- persistent chains refreshed by tempering over the trajectory ---------------------------


class TrajectoryTempering:
    """Persistent chains of parallel trajectory tempering over snapshots of the model taken
    during training (PTT inside PCD, Béreux et al., ICLR 2025).

    The ladder starts with the initial model (nearly independent-site: its chains mix at
    once). Each refresh (`refresh`) runs `sweeps` rounds of `tempering.temper` on the ladder
    plus the current model, the current model's level started from the persistent chains,
    and returns that level's chains: samples of the current model whose mode weights come
    from the whole trajectory. The current model then joins the ladder, which is rebuilt as
    `tempering.select_ladder` does from the swap rates its chains show: levels that their
    neighbours bridge at `floor` or more are dropped, interpolated levels are inserted
    where neighbours swap less; beyond `max_levels`, the inner level whose neighbours swap
    best with each other is dropped. Every level keeps its chains between refreshes.
    """

    def __init__(self, model: PottsRBM, chains: Tensor, sweeps: int = 20,
                 max_levels: int = 16, floor: float = 0.2) -> None:
        self.sweeps = sweeps
        self.max_levels = max_levels
        self.floor = floor
        self.levels: list[tuple[PottsRBM, Tensor]] = [(model.clone(), chains.clone())]
        self.swap_rates: list[float] = []
        self.refreshes = 0

    def refresh(self, model: PottsRBM, chains: Tensor,
                generator: torch.Generator | None = None) -> Tensor:
        """Chains (C, L) of the current `model` after `sweeps` rounds of tempering over the
        ladder, started from `chains` (the persistent chains) at the model's level."""
        n = chains.shape[0]
        if any(c.shape[0] != n for _, c in self.levels):
            self.levels = [(m, _resize(c, n, generator)) for m, c in self.levels]
        levels = [Level(m) for m, _ in self.levels] + [Level(model.clone())]
        init = [c for _, c in self.levels] + [chains]
        result = temper(levels, n, self.sweeps, generator, init)
        self.swap_rates = result.swap_rates
        self.refreshes += 1
        log.debug("refresh %d: %d levels, swap rates %s", self.refreshes, len(levels),
                  " ".join(f"{r:.2f}" for r in result.swap_rates))
        rebuilt, codes = rebuild_ladder(levels, result.level_codes, self.floor,
                                        self.max_levels)
        self.levels = [(level.model, c) for level, c in zip(rebuilt, codes, strict=True)]
        while len(self.levels) > self.max_levels:
            self._drop_one()
        return result.codes

    def advance(self, model: PottsRBM, chains: Tensor, sweeps: int, join_below: float,
                generator: torch.Generator | None = None) -> Tensor:
        """`sweeps` rounds of tempering over the ladder plus the current `model`, whose
        level starts from `chains`; every level keeps its chains. Returns the model's chains
        (C, L). The model joins the ladder (rebuilt as in `refresh`) only when its swap rate
        with the ladder's top level falls under `join_below`, so that the ladder follows
        the trajectory at the cost of a rebuild now and then."""
        levels = [Level(m) for m, _ in self.levels] + [Level(model)]
        init = [c for _, c in self.levels] + [chains]
        result = temper(levels, chains.shape[0], sweeps, generator, init)
        self.swap_rates = result.swap_rates
        if result.swap_rates and result.swap_rates[-1] >= join_below:
            self.levels = [(m, c) for (m, _), c in zip(self.levels, result.level_codes,
                                                        strict=False)]
            return result.codes
        levels[-1] = Level(model.clone())
        rebuilt, codes = rebuild_ladder(levels, result.level_codes, self.floor,
                                        self.max_levels)
        self.levels = [(level.model, c) for level, c in zip(rebuilt, codes, strict=True)]
        while len(self.levels) > self.max_levels:
            self._drop_one()
        self.refreshes += 1
        return result.codes

    def _drop_one(self) -> None:
        """Drop the inner level whose two neighbours have the highest estimated swap
        acceptance with each other (the first and the last are kept)."""
        best, best_rate = 1, -1.0
        for i in range(1, len(self.levels) - 1):
            (m_a, c_a), (m_b, c_b) = self.levels[i - 1], self.levels[i + 1]
            rate = expected_swap_rate(Level(m_a), Level(m_b), c_a, c_b)
            if rate > best_rate:
                best, best_rate = i, rate
        del self.levels[best]


def _resize(codes: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
    """n rows of codes: the first n, or all of them and random repeats."""
    if codes.shape[0] >= n:
        return codes[:n]
    extra = torch.randint(codes.shape[0], (n - codes.shape[0],), generator=generator,
                          device=codes.device)
    return torch.cat([codes, codes[extra]])
