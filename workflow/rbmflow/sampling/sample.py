"""The sampling stage: Gibbs chains from a trained model, with their equilibrium checked.

Two sets of independent chains run side by side, block-Gibbs sweeps v -> h -> v at inverse
temperature beta:

- `random`: started from uniformly random sequences; these are the samples written out;
- `data`: started from training sequences (drawn with their weights), the reference end
  point that the random chains must reach if the model is sampled at equilibrium.

At log-spaced record times (1, 2, 3, 4, 6, 8, 12, 16, ... and the final sweep) each set
records its mean free energy F(v) (nats, at beta = 1), the Pearson of its connected
correlations against the training data, and the t versus t/2 mixing test (rbmflow.sampling.mixing).
At the end the two sets are compared (energies, overlaps, correlations Pearson), and the
mixing time must be at most half the sweeps run (the chains spent the second half mixed).
The verdict `equilibrated` needs every one of those checks to pass; with `auto_extend` the
sweeps double until it does or a cap is reached.

A model trained with Rdm-k (chains restarted from random, k sweeps per update) is fitted so
that k sweeps from a random start reproduce the data, not the equilibrium distribution
(Decelle, Furtlehner, Seoane, NeurIPS 2021); in `auto` mode it is sampled that way: k sweeps
from random, one set, no equilibrium verdict.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rbmflow.data.dataset import TRAIN, load_encoded
from rbmflow.data.genotypes import write_samples_vcf
from rbmflow.device import resolve_device
from rbmflow.errors import InputError
from rbmflow.evaluation.stats import connected_correlations, pearson
from rbmflow.model.archive import load_rbm, read_metadata
from rbmflow.model.rbm import PottsRBM, random_codes
from rbmflow.provenance import FORMAT_VERSION, atomic_paths, provenance, write_json
from rbmflow.sampling.mixing import (
    Criteria,
    compare_energies,
    compare_projections,
    compare_sets,
    first_stable_pass,
    integrated_autocorrelation_time,
    mixing_test,
    project,
    split_rhat,
    top_directions,
)
from rbmflow.sampling.mixing import mixing_time as estimate_mixing_time
from rbmflow.sampling.tempering import Level, TemperingResult, beta_levels, select_ladder, temper

log = logging.getLogger(__name__)

MODES = ("auto", "equilibrium", "rdm")
METHODS = ("auto", "gibbs", "pt", "ptt")
RANDOM, DATA = "random", "data"


@dataclass(frozen=True)
class SamplingSettings:
    """What the sample stage does.

    chains: number of random-start chains (the samples); sweeps: sweeps to run (in rdm mode,
    the model's training gibbs_steps replace it); beta: inverse temperature; data_chains:
    chains started from training sequences (None: as many as `chains`, at most the training
    set; 0: no such set); auto_extend: double the sweeps until the chains look equilibrated
    or max_sweeps is reached; record_every: also record every that many sweeps (0: only the
    log-spaced record times).
    """

    chains: int = 5000
    sweeps: int = 1000
    beta: float = 1.0
    seed: int = 0
    mode: str = "auto"
    record_every: int = 0
    auto_extend: bool = True
    max_sweeps: int = 8000
    data_chains: int | None = None
    criteria: Criteria = field(default_factory=Criteria)
    method: str = "auto"
    swap_floor: float = 0.3
    min_swap_rate: float = 0.1
    max_levels: int = 32
    pt_levels: int = 8
    reference_chains: int = 1000
    directions: int = 3
    rhat_max: float = 1.1

    def __post_init__(self) -> None:
        if self.chains < 2:
            raise ValueError("the equilibrium tests need at least 2 chains")
        if self.data_chains == 1:
            raise ValueError("data_chains must be 0 (none) or at least 2")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {self.method!r}")
        if self.reference_chains < 0 or self.reference_chains == 1:
            raise ValueError("reference_chains must be 0 (none) or at least 2")

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["criteria"] = self.criteria.as_dict()
        return out


@dataclass(frozen=True)
class ModeChoice:
    """The resolved sampling mode: `equilibrium` or `rdm`, its sweeps and why."""

    mode: str
    sweeps: int
    reason: str


def choose_mode(requested: str, sweeps: int, metadata: dict[str, Any] | None) -> ModeChoice:
    """Resolve `auto` from the model's training metadata (keys `method`, `gibbs_steps`).

    auto: a model trained with Rdm-k is sampled with k sweeps from random; any other model at
    equilibrium with `sweeps`. rdm: needs gibbs_steps in the metadata. equilibrium: as asked.
    """
    if requested not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {requested!r}")
    metadata = metadata or {}
    method = str(metadata.get("method", "pcd")).lower()
    if requested == "equilibrium" or (requested == "auto" and method != "rdm"):
        why = "requested" if requested == "equilibrium" else f"model trained with {method}"
        return ModeChoice("equilibrium", sweeps, f"{why}: sampled at equilibrium")
    steps = metadata.get("gibbs_steps")
    if steps is None or int(steps) < 1:
        raise ValueError("rdm sampling needs the model's training gibbs_steps in its metadata")
    steps = int(steps)
    why = "requested" if requested == "rdm" else "model trained with rdm"
    return ModeChoice("rdm", steps, f"{why}-{steps}: {steps} sweeps from uniformly random "
                      "sequences, as in training (reproduces the data out of equilibrium)")


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
    device = model.device
    choice = choose_mode(settings.mode, settings.sweeps, metadata)
    criteria = settings.criteria
    L, q = model.num_visibles, model.num_states
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    diag_generator = torch.Generator().manual_seed(settings.seed + 1)

    starts: dict[str, Tensor] = {}
    initial = initial or {}
    starts[RANDOM] = (initial[RANDOM].to(device).long() if RANDOM in initial
                      else random_codes(settings.chains, L, q, device, generator))
    equilibrium = choice.mode == "equilibrium"
    if equilibrium:
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

    target_cij = None
    if train_codes is not None and train_codes.shape[0] > 1:
        target_cij = connected_correlations(train_codes.to(device), q, train_weights,
                                            dtype=torch.float64).to(torch.float32)
    trackers = {name: _Tracker(name, target_cij, q, criteria) for name in starts}

    if equilibrium and settings.auto_extend:
        cap = max(settings.max_sweeps, choice.sweeps)
        targets = [choice.sweeps]
        while targets[-1] * 2 <= cap:
            targets.append(targets[-1] * 2)
        if targets[-1] < cap:
            targets.append(cap)
    else:
        targets = [choice.sweeps]
    records = sorted(set(record_times(targets[-1], settings.record_every)) | set(targets))
    needed_snapshots = {t // 2 for t in records}
    trace_every = max(1, targets[-1] // 128)
    trace_times = set(range(trace_every, targets[-1] + 1, trace_every)) if observable else set()
    trace: list[Tensor] = []
    trace_sweeps: list[int] = []

    names = list(starts)
    sizes = [starts[name].shape[0] for name in names]
    state = torch.cat([starts[name] for name in names])
    snapshots: dict[int, Tensor] = {}
    snapshot_dtype = torch.uint8 if q <= 256 else torch.int64

    def split(codes: Tensor) -> dict[str, Tensor]:
        return dict(zip(names, codes.split(sizes), strict=True))

    def take_snapshot(sweep: int) -> None:
        if sweep in needed_snapshots:
            snapshots[sweep] = state.to(snapshot_dtype).clone()

    meeting = MeetingTrajectory() if DATA in starts else None

    def record(sweep: int, earlier: dict[str, Tensor] | None) -> None:
        energies = {name: trackers[name].record(model, sweep, codes,
                                                None if earlier is None else earlier[name],
                                                diag_generator)
                    for name, codes in split(state).items()}
        if meeting is not None:
            test = compare_energies(energies[RANDOM], energies[DATA], criteria)
            meeting.sweep.append(sweep)
            meeting.energy_gap.append(test["gap"])
            meeting.energy_z.append(test["z"])
            meeting.energy_passed.append(test["passed"])

    take_snapshot(0)
    record(0, None)

    extensions: list[dict[str, Any]] = []
    checks: dict[str, dict[str, Any]] = {}
    equilibrated: bool | None = None
    events = sorted(needed_snapshots | set(records) | trace_times)
    sweep = 0
    sweep_seconds = 0.0
    started = time.perf_counter()
    target_index = 0
    with torch.no_grad():
        while True:
            target = targets[target_index]
            for event in (e for e in events if sweep < e <= target):
                t0 = time.perf_counter()
                state = model.gibbs(state, event - sweep, settings.beta, generator)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                sweep_seconds += time.perf_counter() - t0
                sweep = event
                take_snapshot(sweep)
                if sweep in trace_times and observable is not None:
                    trace.append(observable(state).float().cpu())
                    trace_sweeps.append(sweep)
                if sweep in records:
                    record(sweep, split(snapshots[sweep // 2]))
                    _log_record(sweep, trackers)
                for done in [s for s in snapshots if all(t // 2 != s or t <= sweep
                                                         for t in records)]:
                    del snapshots[done]
            if not equilibrium:
                break
            checks = _final_checks(model, split(state), trackers, criteria, diag_generator)
            mixed_after = combined_mixing_time(
                trackers[RANDOM].trajectory.mixing_time(),
                None if meeting is None else meeting.relaxation_time(), meeting is not None)
            checks["mixing_time"] = {
                "mixing_time": mixed_after, "sweeps": sweep,
                "passed": mixed_after is not None and 2 * mixed_after <= sweep}
            equilibrated = all(check["passed"] for check in checks.values()) if checks else None
            extensions.append({"sweeps": sweep, "equilibrated": equilibrated,
                               "failed_checks": [n for n, c in checks.items() if not c["passed"]]})
            if equilibrated or target_index == len(targets) - 1:
                break
            target_index += 1
            log.info("sweep %d: not equilibrated yet (%s); extending to %d sweeps", sweep,
                     ", ".join(extensions[-1]["failed_checks"]), targets[target_index])

    trajectories = {name: tracker.trajectory for name, tracker in trackers.items()}
    return SamplingResult(
        codes=split(state)[RANDOM],
        mode=choice,
        sweeps=sweep,
        trajectories=trajectories,
        meeting=meeting,
        checks=checks,
        equilibrated=equilibrated,
        decorrelation_time=trajectories[RANDOM].mixing_time(),
        relaxation_time=None if meeting is None else meeting.relaxation_time(),
        extensions=extensions if settings.auto_extend else [],
        elapsed_s=time.perf_counter() - started,
        sweep_seconds=sweep_seconds,
        chain_counts=dict(zip(names, sizes, strict=True)),
        trace=torch.stack(trace) if trace else None,
        trace_sweeps=trace_sweeps,
    )


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



# -- tempering and the tests that can see modes ---------------------------------------------

def choose_method(requested: str, num_checkpoints: int) -> tuple[str, str]:
    """Resolve `auto`: ptt when the archive holds at least 2 checkpoints, else pt.

    Returns (method, reason). Asking for ptt with fewer than 2 checkpoints falls back to pt.
    """
    if requested not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {requested!r}")
    if requested in ("auto", "ptt"):
        if num_checkpoints >= 2:
            return "ptt", (f"{'requested' if requested == 'ptt' else 'auto'}: parallel "
                           f"trajectory tempering over the archive's {num_checkpoints} "
                           "checkpoints")
        return "pt", (f"{'ptt requested' if requested == 'ptt' else 'auto'}: the archive has "
                      f"{num_checkpoints} checkpoint(s), no trajectory; parallel tempering in "
                      "inverse temperature")
    if requested == "pt":
        return "pt", "requested: parallel tempering in inverse temperature"
    return "gibbs", "requested: plain block-Gibbs chains, checked against a tempering reference"


def gibbs_mode_checks(trace: Tensor | None, trace_sweeps: list[int], sweeps: int,
                      rhat_max: float) -> dict[str, dict[str, Any]]:
    """R-hat and integrated autocorrelation time of projections over the second half of a run.

    trace: (T, C, d) recorded at `trace_sweeps` (evenly spaced); only records after sweeps / 2
    are used. rhat passes when every direction's split R-hat is <= rhat_max; autocorrelation
    passes when the second half spans at least 10 autocorrelation times (in sweeps).
    """
    if trace is None:
        return {}
    keep = [k for k, t in enumerate(trace_sweeps) if 2 * t > sweeps]
    if len(keep) < 4:
        return {}
    part = trace[keep]
    step = trace_sweeps[keep[1]] - trace_sweeps[keep[0]]
    rhat = split_rhat(part)
    tau = integrated_autocorrelation_time(part) * step
    span = trace_sweeps[keep[-1]] - trace_sweeps[keep[0]] + step
    return {
        "rhat": {"rhat": rhat.tolist(), "rhat_max": rhat_max, "records": len(keep),
                 "passed": bool((rhat <= rhat_max).all())},
        "autocorrelation": {"tau_sweeps": tau.tolist(), "span_sweeps": span,
                            "resolution_sweeps": step,
                            "passed": bool((10 * tau <= span).all())},
    }


@dataclass
class TemperingRun:
    """A tempering run of the sample stage: its samples, ladder, swap rates and checks."""

    method: str
    result: TemperingResult
    ladder_rounds: int
    checks: dict[str, dict[str, Any]]
    equilibrated: bool
    ladder_s: float
    levels: list[Level] = field(default_factory=list)
    total_sweeps: int = 0  # sweeps since the start, earlier runs continued included
    sampling_s: float = 0.0  # likewise

    @property
    def codes(self) -> Tensor:
        return self.result.codes

    def summary(self) -> dict[str, Any]:
        r = self.result
        return {
            "method": self.method, "levels": r.labels, "num_levels": len(r.labels),
            "swap_rates": r.swap_rates, "swap_attempts": r.swap_attempts,
            "min_swap_rate": r.min_swap_rate, "passages": r.passages,
            "chains": int(r.codes.shape[0]), "sweeps": self.total_sweeps,
            "sweeps_last_segment": r.sweeps,
            "ladder_rounds": self.ladder_rounds, "equilibrated": self.equilibrated,
            "failed_checks": [n for n, c in self.checks.items() if not c["passed"]],
            "checks": self.checks,
            "timing": {"ladder_s": self.ladder_s, "sampling_s": self.sampling_s},
        }


def tempering_candidates(method: str, model: PottsRBM, checkpoints: list[tuple[int, PottsRBM]],
                         pt_levels: int) -> list[Level]:
    """The candidate ladder: the checkpoints in order (ptt) or `pt_levels` inverse
    temperatures evenly spaced from 0 to 1 (pt)."""
    if method == "ptt":
        return [Level(m, 1.0, f"update_{u}") for u, m in checkpoints]
    return beta_levels(model, pt_levels)


def run_tempering(method: str, candidates: list[Level], num_chains: int, sweeps: int,
                  settings: SamplingSettings, directions: Tensor,
                  generator: torch.Generator,
                  previous: TemperingRun | None = None) -> TemperingRun:
    """Select a ladder from `candidates`, run tempering and check its target chains.

    With `previous`, its ladder and chains are continued for `sweeps` more sweeps instead
    (the checks then look at the new sweeps only).

    Checks: every neighbouring swap rate >= settings.min_swap_rate (none near zero); at
    least as many first-to-last-level passages as chains (on average every target chain
    was renewed from the easy end of the ladder); split R-hat of the projections of the
    target chains over the second half <= rhat_max; that half spans >= 10 autocorrelation
    times.
    """
    t0 = time.perf_counter()
    if previous is not None:
        levels, init = previous.levels, previous.result.level_codes
        rounds, ladder_s = previous.ladder_rounds, previous.ladder_s
    else:
        ladder = select_ladder(candidates, min(256, num_chains),
                               max(20, min(100, sweeps // 10)), settings.swap_floor,
                               settings.max_levels, generator=generator)
        ladder_s = time.perf_counter() - t0
        rounds = ladder.rounds
        levels = ladder.levels if ladder.levels else candidates
        init = None
        if ladder.codes:
            pick = (torch.arange(num_chains, device=ladder.codes[0].device)
                    % ladder.codes[0].shape[0])
            init = [codes[pick] for codes in ladder.codes]
        log.info("%s ladder of %d levels (%s), swap rates %s", method, len(levels),
                 ", ".join(level.label for level in levels),
                 ", ".join(f"{r:.2f}" for r in ladder.swap_rates))
    record_every = max(1, sweeps // 200)
    result = temper(levels, num_chains, sweeps, generator, init,
                    lambda codes: project(codes, directions), record_every,
                    log_every=max(1, sweeps // 10) if sweeps >= 100 else 0)
    checks: dict[str, dict[str, Any]] = {}
    if len(levels) > 1:
        checks["swap_rates"] = {"min_swap_rate": result.min_swap_rate,
                                "threshold": settings.min_swap_rate,
                                "passed": bool(result.min_swap_rate is not None
                                               and result.min_swap_rate >= settings.min_swap_rate)}
        checks["passages"] = {"passages": result.passages, "chains": num_chains,
                              "passed": result.passages >= num_chains}
    checks.update(gibbs_mode_checks(result.trace, result.trace_sweeps, sweeps, settings.rhat_max))
    equilibrated = bool(checks) and all(c["passed"] for c in checks.values())
    log.info("%s: swap rates %s, %d passages, %s", method,
             ", ".join(f"{r:.2f}" for r in result.swap_rates), result.passages,
             "equilibrated" if equilibrated else "NOT equilibrated (failed: " + ", ".join(
                 n for n, c in checks.items() if not c["passed"]) + ")")
    return TemperingRun(method, result, rounds, checks, equilibrated, ladder_s, list(levels),
                        sweeps + (previous.total_sweeps if previous else 0),
                        result.elapsed_s + (previous.sampling_s if previous else 0.0))


def compare_with_reference(reference: Tensor, plain: Tensor, directions: Tensor,
                           criteria: Criteria) -> dict[str, Any]:
    """Tempering samples against plain Gibbs samples, codes (C_a, L) and (C_b, L): a KS test
    per projection on W's top singular vectors (`compare_projections`), with the mean of
    each projection in both sets."""
    a, b = project(reference, directions), project(plain, directions)
    out = compare_projections(a, b, effect_max=criteria.effect_max / 2)
    out["mean_tempering"] = a.mean(0).tolist()
    out["mean_gibbs"] = b.mean(0).tolist()
    return out


def fasta_records(codes: Tensor, alphabet: str, sweep: int, prefix: str = "sample") -> str:
    """FASTA text, one record per chain: `>{prefix}_{c} sweep={sweep} chain={c}`."""
    table = np.frombuffer(alphabet.encode("ascii"), dtype=np.uint8)
    rows = table[codes.detach().cpu().numpy()]
    return "".join(f">{prefix}_{c} sweep={sweep} chain={c}\n{row.tobytes().decode('ascii')}\n"
                   for c, row in enumerate(rows))


@dataclass
class StageResult:
    """What the sample stage wrote: the samples (C, L) and sampling.json's summary."""

    codes: Tensor
    summary: dict[str, Any]


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def run_stage(
    model_path: str | os.PathLike[str],
    data_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    info_path: str | os.PathLike[str],
    settings: SamplingSettings,
    device: str = "auto",
    update: int | None = None,
) -> StageResult:
    """Run the sample stage: write `out_path` (FASTA) and `info_path` (sampling.json).

    The model's training metadata chooses the mode (see choose_mode) and, at equilibrium,
    the archive's checkpoints the method (see choose_method): ptt or pt samples come with a
    plain Gibbs run beside them (`reference_chains`), gibbs samples with a tempering
    reference; sampling.json compares the two. The alignment gives the alphabet and the
    training sequences (correlations target, data-start chains).
    """
    torch_device = resolve_device(device)
    metadata = read_metadata(model_path)
    model = load_rbm(model_path, update=update, device=torch_device, dtype=torch.float32)
    try:
        data = load_encoded(data_path)
    except ValueError as err:
        raise InputError(str(err)) from err
    if data.length != model.num_visibles or data.num_states != model.num_states:
        raise InputError(
            f"{data_path}: alignment has L={data.length}, q={data.num_states} but the model "
            f"{model_path} has L={model.num_visibles}, q={model.num_states}")
    model_alphabet = metadata.get("alphabet")
    if model_alphabet and model_alphabet != data.alphabet:
        raise InputError(f"{data_path}: alphabet {data.alphabet!r} differs from the model's "
                         f"{model_alphabet!r} ({model_path})")
    if settings.mode == "rdm" and metadata.get("gibbs_steps") is None:
        raise InputError(f"{model_path}: rdm sampling needs the model's training gibbs_steps, "
                         "which its metadata lacks")
    train = data.subset(TRAIN)
    train_codes = train.codes_tensor(torch_device)
    train_weights = train.weights_tensor(torch_device, torch.float64)
    updates = [u for u in metadata.get("updates") or [] if update is None or u <= update]
    choice = choose_mode(settings.mode, settings.sweeps, metadata)
    if choice.mode == "rdm":
        method, method_reason = "gibbs", choice.reason
    else:
        method, method_reason = choose_method(settings.method, len(updates))
    log.info("sampling %s: L=%d q=%d Nh=%d on %s, %d chains, mode %s, method %s (%s)",
             model_path, model.num_visibles, model.num_states, model.num_hiddens,
             torch_device, settings.chains, choice.mode, method, method_reason)
    directions = top_directions(model.weight_matrix, settings.directions).to(model.dtype)

    def observe(codes: Tensor) -> Tensor:
        return project(codes, directions)

    def tempering(which: str, chains: int, sweeps: int) -> TemperingRun:
        checkpoints = []
        if which == "ptt":
            checkpoints = [(u, load_rbm(model_path, update=u, device=torch_device,
                                        dtype=torch.float32)) for u in updates]
        generator = torch.Generator(device=torch_device).manual_seed(settings.seed + 7)
        candidates = tempering_candidates(which, model, checkpoints, settings.pt_levels)
        run = run_tempering(which, candidates, chains, sweeps, settings, directions, generator)
        while (not run.equilibrated and settings.auto_extend
               and 2 * run.total_sweeps <= max(settings.max_sweeps, settings.sweeps)):
            log.info("%s not equilibrated (%s); continuing to %d sweeps", which,
                     ", ".join(run.summary()["failed_checks"]), 2 * run.total_sweeps)
            run = run_tempering(which, candidates, chains, run.total_sweeps, settings,
                                directions, generator, previous=run)
        return run

    tempering_run: TemperingRun | None = None
    comparison: dict[str, Any] | None = None
    mode_checks: dict[str, dict[str, Any]] = {}
    if choice.mode == "rdm" or method == "gibbs":
        result = run_sampling(model, settings, train_codes, train_weights, metadata,
                              observable=observe if choice.mode == "equilibrium" else None)
        samples = result.codes
        summary = result_summary(result)
        if choice.mode == "equilibrium":
            mode_checks = gibbs_mode_checks(result.trace, result.trace_sweeps, result.sweeps,
                                            settings.rhat_max)
            if settings.reference_chains >= 2:
                reference_method = choose_method("auto", len(updates))[0]
                tempering_run = tempering(reference_method,
                                          min(settings.reference_chains, settings.chains),
                                          result.sweeps)
                comparison = compare_with_reference(tempering_run.codes, samples, directions,
                                                    settings.criteria)
                comparison["reference_equilibrated"] = tempering_run.equilibrated
                mode_checks["tempering_reference"] = {
                    **comparison, "passed": bool(comparison["passed"]
                                                 and tempering_run.equilibrated)}
            else:
                mode_checks["tempering_reference"] = {
                    "passed": False, "reason": "no tempering reference (reference_chains 0): "
                    "nothing that can see modes backs a verdict"}
            failed = [n for n, c in mode_checks.items() if not c["passed"]]
            equilibrated = bool(result.equilibrated) and not failed
            summary["equilibrium"]["failed_checks"] += failed
            summary["equilibrium"]["checks"].update(mode_checks)
            summary["equilibrated"] = summary["equilibrium"]["equilibrated"] = equilibrated
            summary["not_equilibrated"] = not equilibrated
            if not equilibrated:
                all_failed = summary["equilibrium"]["failed_checks"]
                summary["warning"] = (
                    f"plain Gibbs chains do not look equilibrated after {result.sweeps} sweeps "
                    f"(failed: {', '.join(all_failed)}); the samples may not represent the "
                    "model's distribution (sample.method: ptt or pt crosses between modes)")
    else:
        tempering_run = tempering(method, settings.chains, settings.sweeps)
        samples = tempering_run.codes
        summary = {}
        if settings.reference_chains >= 2:
            plain = replace(settings, chains=min(settings.reference_chains, settings.chains),
                            auto_extend=False,
                            data_chains=(None if settings.data_chains is None
                                         else min(settings.data_chains,
                                                  settings.reference_chains)))
            result = run_sampling(model, plain, train_codes, train_weights, metadata)
            summary = result_summary(result)
            comparison = compare_with_reference(samples, result.codes, directions,
                                                settings.criteria)
            summary["equilibrium"]["plain_gibbs_equilibrated"] = result.equilibrated
        equilibrated = tempering_run.equilibrated
        failed = tempering_run.summary()["failed_checks"]
        warning = None
        if not equilibrated:
            warning = (f"{method} chains do not look equilibrated after "
                       f"{tempering_run.total_sweeps} sweeps (failed: {', '.join(failed)}); "
                       "the samples may not represent the model's distribution")
        summary.update({
            "sweeps": tempering_run.total_sweeps, "sweeps_planned": settings.sweeps,
            "equilibrated": equilibrated, "not_equilibrated": not equilibrated,
            "warning": warning,
        })
        equilibrium = summary.setdefault("equilibrium", {"checks": {}})
        equilibrium.update({"checked": True, "equilibrated": equilibrated,
                            "failed_checks": failed})
        equilibrium["checks"] = {f"tempering_{n}": c for n, c in tempering_run.checks.items()}
        summary.setdefault("mode", choice.mode)
        summary.setdefault("mode_reason", choice.reason)
    if comparison is not None and not comparison["passed"]:
        message = ("plain Gibbs chains and the tempering samples disagree on the projections "
                   "on W's top singular vectors (KS distances "
                   + ", ".join(f"{d:.3f}" for d in comparison["ks_statistic"])
                   + "): the model has modes that plain Gibbs does not cross")
        log.warning(message)
        summary["gibbs_vs_tempering_warning"] = message
    summary["method"] = method
    summary["method_reason"] = method_reason
    summary["tempering"] = tempering_run.summary() if tempering_run is not None else None
    summary["swap_rates"] = (tempering_run.result.swap_rates
                             if tempering_run is not None else None)
    summary["swap_pairs"] = ([f"{a} / {b}" for a, b in zip(tempering_run.result.labels,
                                                           tempering_run.result.labels[1:],
                                                           strict=False)]
                             if tempering_run is not None else None)
    summary["gibbs_vs_tempering"] = comparison

    if summary["not_equilibrated"]:
        banner = "!" * 78
        log.warning("%s\nWARNING: %s.\nWARNING: samples written anyway to %s; run more sweeps "
                    "(--sweeps, --auto-extend) before trusting them.\n%s", banner,
                    summary["warning"], out_path, banner)
    elif choice.mode == "equilibrium":
        log.info("%s samples look equilibrated after %d sweeps", method, summary["sweeps"])
    else:
        log.info("rdm sampling: %s", choice.reason)

    record = {
        "format_version": FORMAT_VERSION,
        "samples": str(out_path),
        "n_samples": int(samples.shape[0]),
        "alphabet": data.alphabet,
        "training_method": metadata.get("method"),
        "training_gibbs_steps": metadata.get("gibbs_steps"),
        "model_update": update if update is not None else (metadata.get("updates") or [None])[-1],
        "beta": settings.beta,
        "seed": settings.seed,
        "device": str(torch_device),
        **summary,
        "provenance": provenance(
            "sample", inputs={"model": model_path, "data": data_path},
            settings={**settings.as_dict(), "device": device, "update": update},
            seed=settings.seed),
    }
    with atomic_paths(out_path, info_path) as (fasta_tmp, info_tmp):
        fasta_tmp.write_text(fasta_records(samples, data.alphabet, summary["sweeps"]))
        write_json(info_tmp, _json_safe(record))
        write_samples_vcf(out_path, samples, data_path, record)  # genotype families only
    return StageResult(samples, summary)
