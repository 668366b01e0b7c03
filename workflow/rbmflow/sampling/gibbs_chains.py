"""Plain block-Gibbs chains with their equilibrium diagnostics.

Two sets of independent chains run side by side, block-Gibbs sweeps v -> h -> v at inverse
temperature beta:

- `random`: started from uniformly random sequences; these are the samples;
- `data`: started from training sequences (drawn with their weights), the reference end
  point that the random chains must reach if the model is sampled at equilibrium.

At log-spaced record times (1, 2, 3, 4, 6, 8, 12, 16, ... and the final sweep) each set
records its mean free energy F(v) (nats, at beta = 1), the Pearson of its connected
correlations against the training data, and the t versus t/2 mixing test
(rbmflow.sampling.mixing). At the end the two sets are compared (energies, overlaps,
correlations Pearson), and the mixing time must be at most half the sweeps run (the chains
spent the second half mixed). With `auto_extend` the sweeps double until every check passes
or a cap is reached.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from rbmflow.evaluation.stats import connected_correlations, pearson
from rbmflow.model.rbm import PottsRBM, random_codes
from rbmflow.sampling.mixing import (
    Criteria,
    compare_energies,
    compare_sets,
    first_stable_pass,
    mixing_test,
)
from rbmflow.sampling.mixing import mixing_time as estimate_mixing_time
from rbmflow.sampling.settings import ModeChoice, SamplingSettings, choose_mode

log = logging.getLogger(__name__)

RANDOM, DATA = "random", "data"


def record_times(total: int, every: int = 0) -> list[int]:
    """Record sweeps up to `total`: 2^k and 3 * 2^k, multiples of `every` (if > 0), and total.

    Two points per doubling keep the cost logarithmic in `total`.
    """
    times = {total}
    t = 1
    while t <= total:
        times.add(t)
        if 3 * t // 2 <= total and t >= 2:
            times.add(3 * t // 2)
        t *= 2
    if every > 0:
        times.update(range(every, total + 1, every))
    return sorted(times)


@dataclass
class ChainSetTrajectory:
    """Diagnostics of one set of chains at its record times (lists aligned with `sweep`)."""

    sweep: list[int] = field(default_factory=list)
    energy_mean: list[float] = field(default_factory=list)
    energy_std: list[float] = field(default_factory=list)
    pearson_cij_train: list[float | None] = field(default_factory=list)
    overlap_same: list[float | None] = field(default_factory=list)
    overlap_different: list[float | None] = field(default_factory=list)
    mixing_z: list[float | None] = field(default_factory=list)
    mixing_effect: list[float | None] = field(default_factory=list)
    mixing_passed: list[bool | None] = field(default_factory=list)

    def mixing_time(self) -> int | None:
        pairs = [(t, ok) for t, ok in zip(self.sweep, self.mixing_passed, strict=True)
                 if ok is not None]
        if not pairs:
            return None
        return estimate_mixing_time([t for t, _ in pairs], [ok for _, ok in pairs])


@dataclass
class MeetingTrajectory:
    """Random-start against data-start chains at each record: mean energies and their test."""

    sweep: list[int] = field(default_factory=list)
    energy_gap: list[float] = field(default_factory=list)
    energy_z: list[float | None] = field(default_factory=list)
    energy_passed: list[bool] = field(default_factory=list)

    def relaxation_time(self) -> int | None:
        """First record sweep from which the two sets' mean energies agree at every record."""
        return first_stable_pass(self.sweep, self.energy_passed) if self.sweep else None


def combined_mixing_time(decorrelation: int | None, relaxation: int | None,
                         with_data: bool) -> int | None:
    """Sweeps after which the random-start chains are mixed, on both evidences.

    The larger of the decorrelation time (t vs t/2 test) and, when data-start chains ran,
    the relaxation time (sweeps until both sets' mean energies agree for good); None when
    either was not reached.
    """
    if decorrelation is None or (with_data and relaxation is None):
        return None
    return decorrelation if not with_data else max(decorrelation, relaxation or 0)


@dataclass
class SamplingResult:
    """Final chains and everything `sampling.json` reports about how they were obtained."""

    codes: Tensor  # (chains, L) int64, the random-start chains at the last sweep
    mode: ModeChoice
    sweeps: int
    trajectories: dict[str, ChainSetTrajectory]
    meeting: MeetingTrajectory | None
    checks: dict[str, dict[str, Any]]
    equilibrated: bool | None
    decorrelation_time: int | None
    relaxation_time: int | None
    extensions: list[dict[str, Any]]
    elapsed_s: float
    sweep_seconds: float
    chain_counts: dict[str, int]
    trace: Tensor | None = None  # (T, all chains, d) observable at trace_sweeps
    trace_sweeps: list[int] = field(default_factory=list)

    @property
    def mixing_time(self) -> int | None:
        return combined_mixing_time(self.decorrelation_time, self.relaxation_time,
                                    self.meeting is not None)

    @property
    def failed_checks(self) -> list[str]:
        return [name for name, check in self.checks.items() if not check.get("passed", True)]


class _Tracker:
    """Record-time diagnostics for one set of chains."""

    def __init__(self, name: str, target_cij: Tensor | None, num_states: int,
                 criteria: Criteria) -> None:
        self.name = name
        self.target_cij = target_cij
        self.num_states = num_states
        self.criteria = criteria
        self.trajectory = ChainSetTrajectory()
        self.last_mixing: dict[str, Any] | None = None

    def record(self, model: PottsRBM, sweep: int, codes: Tensor, earlier: Tensor | None,
               diag_generator: torch.Generator) -> Tensor:
        """Append the diagnostics at `sweep`; returns the chains' free energies (C,)."""
        traj = self.trajectory
        energy = model.free_energy(codes).double()
        traj.sweep.append(sweep)
        traj.energy_mean.append(float(energy.mean()))
        traj.energy_std.append(float(energy.std()) if energy.numel() > 1 else 0.0)
        traj.pearson_cij_train.append(self._pearson(codes))
        if earlier is None or codes.shape[0] < 2:
            for values in (traj.overlap_same, traj.overlap_different, traj.mixing_z,
                           traj.mixing_effect, traj.mixing_passed):
                values.append(None)
            return energy
        test = mixing_test(codes, earlier.long(), self.criteria, diag_generator)
        self.last_mixing = test
        traj.overlap_same.append(test["overlap_same"])
        traj.overlap_different.append(test["overlap_different"])
        traj.mixing_z.append(test["z"])
        traj.mixing_effect.append(test["effect"])
        traj.mixing_passed.append(test["passed"])
        return energy

    def _pearson(self, codes: Tensor) -> float | None:
        if self.target_cij is None or codes.shape[0] < 2 or codes.shape[1] < 2:
            return None
        cij = connected_correlations(codes, self.num_states, dtype=torch.float32)
        value = pearson(cij, self.target_cij)
        return value if math.isfinite(value) else None


def pick_training_starts(codes: Tensor, weights: Tensor | None, num: int,
                         generator: torch.Generator) -> Tensor:
    """`num` training sequences drawn with probability proportional to their weights.

    Without replacement while the training set is large enough, with replacement beyond.
    Returns codes (num, L) on the device of `codes`.
    """
    if weights is None:
        weights = torch.ones(codes.shape[0], dtype=torch.float64)
    weights = weights.detach().to("cpu", torch.float64)
    replace = num > int((weights > 0).sum())
    index = torch.multinomial(weights, num, replacement=replace, generator=generator)
    return codes[index.to(codes.device)].long()


def run_sampling(
    model: PottsRBM,
    settings: SamplingSettings,
    train_codes: Tensor | None = None,
    train_weights: Tensor | None = None,
    metadata: dict[str, Any] | None = None,
    initial: dict[str, Tensor] | None = None,
    observable: Callable[[Tensor], Tensor] | None = None,
) -> SamplingResult:
    """Sample `model` as `settings` say and check equilibrium.

    train_codes (M, L) and train_weights (M,): the training data, target of the correlations
    Pearson and pool of the data-start chains (without them: no Pearson, no data set).
    metadata: the model's training metadata (mode choice). initial: optional starting codes
    per set name ('random', 'data'), replacing the default starts (used to test the
    diagnostics from chosen states). observable: maps codes (C, L) to (C, d) values (e.g.
    projections on W's top singular vectors), recorded for all chains about 128 times
    along the run for R-hat and autocorrelation times. Everything runs on the model's
    device; a run is reproduced exactly by the same settings (seed included) on the same device.
    """
    run = _GibbsRun(model, settings, metadata, observable)
    run.start(train_codes, train_weights, initial or {})
    with torch.no_grad():
        for index, target in enumerate(run.targets):
            run.advance(target)
            if run.finished(last=index == len(run.targets) - 1):
                break
            log.info("sweep %d: not equilibrated yet (%s); extending to %d sweeps", run.sweep,
                     ", ".join(run.extensions[-1]["failed_checks"]), run.targets[index + 1])
    return run.result()


def sweep_targets(choice: ModeChoice, settings: SamplingSettings) -> list[int]:
    """The sweeps at which the checks are made: the planned sweeps, then doublings up to
    max_sweeps (and max_sweeps itself) with auto_extend at equilibrium."""
    targets = [choice.sweeps]
    if choice.mode == "equilibrium" and settings.auto_extend:
        cap = max(settings.max_sweeps, choice.sweeps)
        while targets[-1] * 2 <= cap:
            targets.append(targets[-1] * 2)
        if targets[-1] < cap:
            targets.append(cap)
    return targets


class _GibbsRun:
    """The state of `run_sampling`: the chain sets side by side in one tensor, their trackers,
    the record schedule, the snapshots the t vs t/2 tests need, and the checks so far."""

    def __init__(self, model: PottsRBM, settings: SamplingSettings,
                 metadata: dict[str, Any] | None,
                 observable: Callable[[Tensor], Tensor] | None) -> None:
        self.model, self.settings, self.observable = model, settings, observable
        self.choice = choose_mode(settings.mode, settings.sweeps, metadata)
        self.generator = torch.Generator(device=model.device).manual_seed(settings.seed)
        self.diag_generator = torch.Generator().manual_seed(settings.seed + 1)
        self.targets = sweep_targets(self.choice, settings)
        last = self.targets[-1]
        self.records = sorted(set(record_times(last, settings.record_every)) | set(self.targets))
        self.needed_snapshots = {t // 2 for t in self.records}
        every = max(1, last // 128)
        self.trace_times = set(range(every, last + 1, every)) if observable else set()
        self.events = sorted(self.needed_snapshots | set(self.records) | self.trace_times)
        self.trace: list[Tensor] = []
        self.trace_sweeps: list[int] = []
        self.snapshots: dict[int, Tensor] = {}
        self.extensions: list[dict[str, Any]] = []
        self.checks: dict[str, dict[str, Any]] = {}
        self.equilibrated: bool | None = None
        self.sweep, self.sweep_seconds = 0, 0.0
        self.started = time.perf_counter()

    def start(self, train_codes: Tensor | None, train_weights: Tensor | None,
              initial: dict[str, Tensor]) -> None:
        """The starting codes of each set, their trackers, and the record at sweep 0."""
        model, q = self.model, self.model.num_states
        starts = _starts(model, self.settings, self.choice, train_codes, train_weights,
                         initial, self.generator, self.diag_generator)
        target_cij = None
        if train_codes is not None and train_codes.shape[0] > 1:
            target_cij = connected_correlations(train_codes.to(model.device), q, train_weights,
                                                dtype=torch.float64).to(torch.float32)
        self.trackers = {name: _Tracker(name, target_cij, q, self.settings.criteria)
                         for name in starts}
        self.names = list(starts)
        self.sizes = [starts[name].shape[0] for name in self.names]
        self.state = torch.cat([starts[name] for name in self.names])
        self.meeting = MeetingTrajectory() if DATA in starts else None
        self._take_snapshot(0)
        self._record(0, None)

    def split(self, codes: Tensor) -> dict[str, Tensor]:
        return dict(zip(self.names, codes.split(self.sizes), strict=True))

    def _take_snapshot(self, sweep: int) -> None:
        if sweep in self.needed_snapshots:
            dtype = torch.uint8 if self.model.num_states <= 256 else torch.int64
            self.snapshots[sweep] = self.state.to(dtype).clone()

    def _record(self, sweep: int, earlier: dict[str, Tensor] | None) -> None:
        energies = {name: self.trackers[name].record(
            self.model, sweep, codes, None if earlier is None else earlier[name],
            self.diag_generator) for name, codes in self.split(self.state).items()}
        if self.meeting is not None:
            test = compare_energies(energies[RANDOM], energies[DATA], self.settings.criteria)
            self.meeting.sweep.append(sweep)
            self.meeting.energy_gap.append(test["gap"])
            self.meeting.energy_z.append(test["z"])
            self.meeting.energy_passed.append(test["passed"])

    def advance(self, target: int) -> None:
        """Sweep to `target`, stopping at every event (snapshot, record, trace)."""
        device = self.model.device
        for event in (e for e in self.events if self.sweep < e <= target):
            t0 = time.perf_counter()
            self.state = self.model.gibbs(self.state, event - self.sweep, self.settings.beta,
                                          self.generator)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.sweep_seconds += time.perf_counter() - t0
            self.sweep = sweep = event
            self._take_snapshot(sweep)
            if sweep in self.trace_times and self.observable is not None:
                self.trace.append(self.observable(self.state).float().cpu())
                self.trace_sweeps.append(sweep)
            if sweep in self.records:
                self._record(sweep, self.split(self.snapshots[sweep // 2]))
                _log_record(sweep, self.trackers)
            for done in [s for s in self.snapshots
                         if all(t // 2 != s or t <= sweep for t in self.records)]:
                del self.snapshots[done]

    def finished(self, last: bool) -> bool:
        """Make the checks (at equilibrium); True when the run stops here."""
        if self.choice.mode != "equilibrium":
            return True
        meeting = self.meeting
        checks = _final_checks(self.model, self.split(self.state), self.trackers,
                               self.settings.criteria, self.diag_generator)
        mixed_after = combined_mixing_time(
            self.trackers[RANDOM].trajectory.mixing_time(),
            None if meeting is None else meeting.relaxation_time(), meeting is not None)
        checks["mixing_time"] = {"mixing_time": mixed_after, "sweeps": self.sweep,
                                 "passed": mixed_after is not None
                                 and 2 * mixed_after <= self.sweep}
        self.checks = checks
        self.equilibrated = all(c["passed"] for c in checks.values()) if checks else None
        self.extensions.append({"sweeps": self.sweep, "equilibrated": self.equilibrated,
                                "failed_checks": [n for n, c in checks.items()
                                                  if not c["passed"]]})
        return bool(self.equilibrated) or last

    def result(self) -> SamplingResult:
        trajectories = {name: tracker.trajectory for name, tracker in self.trackers.items()}
        meeting = self.meeting
        return SamplingResult(
            codes=self.split(self.state)[RANDOM], mode=self.choice, sweeps=self.sweep,
            trajectories=trajectories, meeting=meeting, checks=self.checks,
            equilibrated=self.equilibrated,
            decorrelation_time=trajectories[RANDOM].mixing_time(),
            relaxation_time=None if meeting is None else meeting.relaxation_time(),
            extensions=self.extensions if self.settings.auto_extend else [],
            elapsed_s=time.perf_counter() - self.started, sweep_seconds=self.sweep_seconds,
            chain_counts=dict(zip(self.names, self.sizes, strict=True)),
            trace=torch.stack(self.trace) if self.trace else None,
            trace_sweeps=self.trace_sweeps)


def _starts(model: PottsRBM, settings: SamplingSettings, choice: ModeChoice,
            train_codes: Tensor | None, train_weights: Tensor | None,
            initial: dict[str, Tensor], generator: torch.Generator,
            diag_generator: torch.Generator) -> dict[str, Tensor]:
    """Starting codes per set: `random` (uniform) and, at equilibrium, `data` (training
    sequences drawn with their weights), unless `initial` gives them."""
    device, L, q = model.device, model.num_visibles, model.num_states
    starts = {RANDOM: (initial[RANDOM].to(device).long() if RANDOM in initial
                       else random_codes(settings.chains, L, q, device, generator))}
    if choice.mode == "equilibrium":
        if DATA in initial:
            starts[DATA] = initial[DATA].to(device).long()
        elif train_codes is not None and train_codes.shape[0] > 0 and settings.data_chains != 0:
            num = settings.data_chains or min(settings.chains, train_codes.shape[0])
            if num >= 2:
                starts[DATA] = pick_training_starts(train_codes.to(device), train_weights, num,
                                                    diag_generator)
    for name, codes in starts.items():
        if codes.shape[1] != L or int(codes.min()) < 0 or int(codes.max()) >= q:
            raise ValueError(f"{name} starting codes do not fit the model (L={L}, q={q})")
    return starts


def _final_checks(model: PottsRBM, final: dict[str, Tensor], trackers: dict[str, _Tracker],
                  criteria: Criteria, diag_generator: torch.Generator) -> dict[str, dict[str, Any]]:
    """The checks behind the equilibrium verdict, each with its numbers and `passed`."""
    checks: dict[str, dict[str, Any]] = {}
    for name, tracker in trackers.items():
        if tracker.last_mixing is not None:
            check = dict(tracker.last_mixing)
            check["sweep"] = tracker.trajectory.sweep[-1]
            checks[f"mixing_{name}"] = check
    if RANDOM in final and DATA in final and min(len(final[RANDOM]), len(final[DATA])) >= 2:
        energies = compare_energies(model.free_energy(final[RANDOM]),
                                    model.free_energy(final[DATA]), criteria)
        checks["energy_random_vs_data"] = {
            "mean_random": energies.pop("mean_a"), "mean_data": energies.pop("mean_b"),
            **energies}
        sets = compare_sets(final[RANDOM], final[DATA], criteria, diag_generator)
        checks["overlap_random_vs_data"] = {
            "overlap_within_random": sets.pop("overlap_within_a"),
            "overlap_within_data": sets.pop("overlap_within_b"), **sets}
        p_random = trackers[RANDOM].trajectory.pearson_cij_train[-1]
        p_data = trackers[DATA].trajectory.pearson_cij_train[-1]
        target = trackers[RANDOM].target_cij
        if p_random is not None and p_data is not None and target is not None:
            q = model.num_states
            stderr = math.sqrt(pearson_stderr(final[RANDOM], q, target) ** 2
                               + pearson_stderr(final[DATA], q, target) ** 2)
            gap = p_random - p_data
            checks["pearson_random_vs_data"] = {
                "pearson_cij_train_random": p_random, "pearson_cij_train_data": p_data,
                "gap": gap, "stderr": stderr, "tolerance": criteria.pearson_tolerance,
                "passed": bool(abs(gap) <= max(criteria.z_max * stderr,
                                               criteria.pearson_tolerance))}
    return checks


def pearson_stderr(codes: Tensor, num_states: int, target_cij: Tensor, folds: int = 4) -> float:
    """A conservative standard error of the Pearson of the chains' correlations to a target.

    The spread of the Pearsons of `folds` disjoint subsets of the chains. A subset's Pearson
    varies more than the full set's when the correlations carry signal (about `folds` times
    the variance) and as much when they are pure noise, so this bounds the error from above
    in both regimes. 0 when there are too few chains to split.
    """
    size = codes.shape[0] // folds
    if size < 2:
        return 0.0
    values = torch.tensor([
        pearson(connected_correlations(codes[k * size:(k + 1) * size], num_states,
                                       dtype=torch.float32), target_cij)
        for k in range(folds)], dtype=torch.float64)
    values = values[values.isfinite()]
    return float(values.std()) if values.numel() > 1 else 0.0


def _log_record(sweep: int, trackers: dict[str, _Tracker]) -> None:
    parts = []
    for name, tracker in trackers.items():
        traj = tracker.trajectory
        p = traj.pearson_cij_train[-1]
        same, diff = traj.overlap_same[-1], traj.overlap_different[-1]
        text = f"{name}: <F>={traj.energy_mean[-1]:.3f}"
        if p is not None:
            text += f" pearson_cij={p:.3f}"
        if same is not None and diff is not None:
            text += f" overlap t,t/2={same:.3f} vs other chains={diff:.3f}"
        parts.append(text)
    log.info("sweep %d | %s", sweep, " | ".join(parts))


def result_summary(result: SamplingResult) -> dict[str, Any]:
    """The JSON-ready description of a sampling run (everything but the provenance)."""
    mode = result.mode
    equilibrium = {
        "checked": mode.mode == "equilibrium",
        "equilibrated": result.equilibrated,
        "mixing_time": result.mixing_time,
        "decorrelation_time": result.decorrelation_time,
        "relaxation_time": result.relaxation_time,
        "decorrelation_time_data": (result.trajectories[DATA].mixing_time()
                                    if DATA in result.trajectories else None),
        "failed_checks": result.failed_checks,
        "checks": result.checks,
        "energy_random_vs_data": None if result.meeting is None else asdict(result.meeting),
    }
    warning = None
    if mode.mode == "equilibrium" and not result.equilibrated:
        warning = (f"chains do not look equilibrated after {result.sweeps} sweeps "
                   f"(failed: {', '.join(result.failed_checks) or 'none recorded'}); "
                   "the samples may not represent the model's distribution")
    seconds = result.sweep_seconds
    return {
        "mode": mode.mode,
        "mode_reason": mode.reason,
        "sweeps": result.sweeps,
        "sweeps_planned": mode.sweeps,
        "equilibrated": result.equilibrated,
        "not_equilibrated": mode.mode == "equilibrium" and not result.equilibrated,
        "warning": warning,
        "mixing_time": result.mixing_time,
        "equilibrium": equilibrium,
        "auto_extend": result.extensions,
        "trajectories": {name: asdict(traj) for name, traj in result.trajectories.items()},
        "timing": {"elapsed_s": result.elapsed_s, "sweep_s": seconds,
                   "sweeps_per_s": result.sweeps / seconds if seconds > 0 else None,
                   "chains": result.chain_counts},
    }

