"""The tempering sampler of the sample stage: samples harvested from a ladder run until its
checks pass.

The ladder (levels from the swap rates, `select_ladder`) runs as one batched computation
(`tempering.temper`) in segments. Its size follows what is asked of it: `num_samples`
sequences come from `chains_per_level` chains of the target level, each read at several
sweeps spaced by twice the measured integrated autocorrelation time, so that the snapshots
are independent draws. After every segment the checks of the second half of the run are
computed (`verdict.tempering_checks`: swap rates, first-to-last passages, split R-hat of the
projections on W's top singular vectors, on sweeps thinned by the autocorrelation time, and
the span in autocorrelation times); the run stops as soon as they pass and enough
independent snapshots are in hand, or at its sweep cap.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from rbmflow.model.rbm import PottsRBM
from rbmflow.sampling.mixing import project
from rbmflow.sampling.tempering import Level, TemperingResult, beta_levels, select_ladder, temper
from rbmflow.sampling.verdict import tempering_checks

log = logging.getLogger(__name__)

SNAPSHOTS = 8
"""Independent snapshots of the target level a run aims at: chains per level = samples / 8."""
MIN_CHAINS_PER_LEVEL = 100
LADDER_CANDIDATES = 16
"""At most this many candidates (evenly spaced, first and last kept) start the ladder search;
where neighbours then swap too rarely, interpolated levels are inserted."""
LADDER_CHAINS = 128


@dataclass(frozen=True)
class TemperingPlan:
    """How a tempering run is sized: chains per level, the sweeps between records, the first
    segment and the cap on sweeps, the swap-rate floor of the verdict and its R-hat bound."""

    num_samples: int
    chains_per_level: int
    record_every: int
    first_segment: int
    max_sweeps: int
    min_swap_rate: float
    rhat_max: float
    swap_floor: float
    max_levels: int
    ladder_sweeps: int


def plan_tempering(num_samples: int, sweeps: int, max_sweeps: int, min_swap_rate: float,
                   rhat_max: float, swap_floor: float, max_levels: int) -> TemperingPlan:
    """Chains per level from the samples needed (SNAPSHOTS independent reads of each chain,
    at least MIN_CHAINS_PER_LEVEL), records every sweeps / 250 sweeps, a first segment of a
    tenth of `sweeps` (at least 50) and at most max(sweeps, max_sweeps) sweeps."""
    chains = min(num_samples, max(MIN_CHAINS_PER_LEVEL, math.ceil(num_samples / SNAPSHOTS)))
    every = max(1, sweeps // 250)
    first = every * math.ceil(min(sweeps, max(50, sweeps // 10)) / every)
    return TemperingPlan(num_samples, chains, every, first, max(sweeps, max_sweeps),
                         min_swap_rate, rhat_max, swap_floor, max_levels,
                         max(20, min(50, sweeps // 20)))


@dataclass
class TemperingRun:
    """A tempering run of the sample stage: its samples, ladder, swaps and checks.

    samples: (num_samples, L) codes, snapshots of the target chains; sample_sweeps and
    sample_chains: the sweep and chain each row was read at.
    """

    method: str
    levels: list[Level]
    ladder_rounds: int
    ladder_s: float
    plan: TemperingPlan
    samples: Tensor
    sample_sweeps: list[int]
    sample_chains: list[int]
    checks: dict[str, dict[str, Any]]
    equilibrated: bool
    total_sweeps: int
    sampling_s: float
    swap_rates: list[float]
    swap_attempts: list[int]
    passages: int
    segments: list[dict[str, Any]] = field(default_factory=list)

    @property
    def codes(self) -> Tensor:
        return self.samples

    @property
    def labels(self) -> list[str]:
        return [level.label for level in self.levels]

    def summary(self) -> dict[str, Any]:
        rates = self.swap_rates
        return {
            "method": self.method, "levels": self.labels, "num_levels": len(self.levels),
            "swap_rates": rates, "swap_attempts": self.swap_attempts,
            "min_swap_rate": min(rates) if rates else None, "passages": self.passages,
            "chains": int(self.samples.shape[0]),
            "chains_per_level": self.plan.chains_per_level,
            "snapshots": len(set(self.sample_sweeps)), "sweeps": self.total_sweeps,
            "segments": self.segments,
            "ladder_rounds": self.ladder_rounds, "equilibrated": self.equilibrated,
            "failed_checks": [n for n, c in self.checks.items() if not c["passed"]],
            "checks": self.checks,
            "timing": {"ladder_s": self.ladder_s, "sampling_s": self.sampling_s},
        }


def tempering_candidates(method: str, model: PottsRBM, checkpoints: list[tuple[int, PottsRBM]],
                         pt_levels: int, beta: float = 1.0) -> list[Level]:
    """The candidate ladder, every level's inverse temperature multiplied by `beta` (the
    target is the model at beta): the checkpoints in order (ptt) or `pt_levels` inverse
    temperatures evenly spaced from 0 to beta (pt)."""
    if method == "ptt":
        return [Level(m, beta, f"update_{u}" if beta == 1.0 else f"update_{u}@beta={beta:g}")
                for u, m in checkpoints]
    return [Level(lv.model, lv.beta * beta, f"beta={lv.beta * beta:.4g}")
            for lv in beta_levels(model, pt_levels)]


@dataclass
class _Segments:
    """What a run has gathered: projections (T, C, d) and target codes (T, C, L) as uint8 at
    the record sweeps, swap counts and passages so far."""

    sweeps: list[int] = field(default_factory=list)
    projections: list[Tensor] = field(default_factory=list)
    codes: list[Tensor] = field(default_factory=list)
    accepted: Tensor | None = None
    attempts: list[int] = field(default_factory=list)
    passages: int = 0
    total: int = 0

    def add(self, result: TemperingResult, num_directions: int) -> None:
        assert result.trace is not None
        self.sweeps += [self.total + t for t in result.trace_sweeps]
        self.projections.append(result.trace[..., :num_directions])
        self.codes.append(result.trace[..., num_directions:].to(torch.uint8))
        accepted = torch.tensor(result.swaps_accepted, dtype=torch.float64)
        self.accepted = accepted if self.accepted is None else self.accepted + accepted
        self.attempts = [a + b for a, b in zip(self.attempts or [0] * len(result.swap_attempts),
                                               result.swap_attempts, strict=True)]
        self.passages += result.passages
        self.total += result.sweeps

    @property
    def swap_rates(self) -> list[float]:
        if self.accepted is None:
            return []
        return [a / n if n else math.nan
                for a, n in zip(self.accepted.tolist(), self.attempts, strict=True)]


def run_tempering(method: str, candidates: list[Level], plan: TemperingPlan,
                  directions: Tensor, generator: torch.Generator) -> TemperingRun:
    """Select a ladder from `candidates`, then run it in segments until the checks pass with
    enough independent snapshots (see the module docstring), or plan.max_sweeps."""
    t0 = time.perf_counter()
    C = plan.chains_per_level
    picks = torch.linspace(0, len(candidates) - 1, min(len(candidates), LADDER_CANDIDATES))
    ladder = select_ladder([candidates[int(k)] for k in picks.round().long().unique()],
                           min(LADDER_CHAINS, C), plan.ladder_sweeps, plan.swap_floor,
                           plan.max_levels, generator=generator)
    ladder_s = time.perf_counter() - t0
    levels = ladder.levels if ladder.levels else list(candidates)
    state: list[Tensor] | None = None
    if ladder.codes:
        pick = torch.arange(C, device=ladder.codes[0].device) % ladder.codes[0].shape[0]
        state = [codes[pick] for codes in ladder.codes]
    log.info("%s ladder of %d levels (%s), %d chains per level", method, len(levels),
             ", ".join(level.label for level in levels), C)
    d = directions.shape[1]

    def observe(codes: Tensor) -> Tensor:
        return torch.cat([project(codes, directions), codes.double()], dim=1)

    gathered, segments = _Segments(), []
    started = time.perf_counter()
    segment = plan.first_segment
    while True:
        result = temper(levels, C, segment, generator, state, observe, plan.record_every)
        state = result.level_codes
        gathered.add(result, d)
        checks, spacing = tempering_checks(gathered, C, plan, len(levels) > 1)
        passed = all(c["passed"] for c in checks.values())
        segments.append({"sweeps": gathered.total, "passed": passed,
                         "failed_checks": [n for n, c in checks.items() if not c["passed"]]})
        log.info("%s: %d sweeps, %s", method, gathered.total,
                 "checks pass" if passed else "failed: " + ", ".join(
                     segments[-1]["failed_checks"]))
        if passed or gathered.total >= plan.max_sweeps:
            break
        segment = plan.record_every * math.ceil(
            max(plan.first_segment, gathered.total // 4) / plan.record_every)
        segment = min(plan.max_sweeps - gathered.total, segment)
    samples, sample_sweeps, sample_chains = harvest(gathered, spacing, plan.num_samples)
    return TemperingRun(method, list(levels), ladder.rounds, ladder_s, plan, samples,
                        sample_sweeps, sample_chains, checks, passed, gathered.total,
                        time.perf_counter() - started, gathered.swap_rates,
                        gathered.attempts, gathered.passages, segments)


def harvest(gathered: _Segments, spacing: int, num_samples: int
            ) -> tuple[Tensor, list[int], list[int]]:
    """`num_samples` rows of target codes: the chains at the last record, then at the records
    `spacing` sweeps apart going back (reads of one chain that far apart are independent);
    returns the codes (int64) and each row's sweep and chain."""
    records = len(gathered.sweeps)
    step = max(1, spacing // max(1, gathered.sweeps[1] - gathered.sweeps[0])
               if records > 1 else 1)
    chains = gathered.codes[0].shape[1]
    needed = math.ceil(num_samples / chains)
    picks = list(range(records - 1, -1, -step))[:needed]
    if len(picks) < needed:  # too few independent reads: closer ones fill the rest
        picks += [t for t in range(records - 1, -1, -1) if t not in picks][:needed - len(picks)]
    all_codes = torch.cat(gathered.codes, dim=0)
    rows = torch.cat([all_codes[t] for t in picks])[:num_samples].long()
    sweeps = [gathered.sweeps[t] for t in picks for _ in range(chains)][:num_samples]
    chain_ids = [c for _ in picks for c in range(chains)][:num_samples]
    return rows, sweeps, chain_ids
