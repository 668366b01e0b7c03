"""The `loglik` stage: log Z and the log-likelihood of the train and test sequences.

log p(v) = -F(v) - log Z, in nats; loglik_train and loglik_test are its means over the
sequences of each split, weighted by the sequence weights. log Z comes from one or several
estimators of `rbmflow.model.partition`:

- exact: enumeration of the hidden layer (Nh <= `exact_max_hiddens`);
- ais: forward AIS by temperature from an independent-site base fitted to the training
  data's weighted frequencies (in expectation a lower bound on log Z);
- reverse: reverse AIS from equilibrium samples of the model (exact draws, or tempering
  across the checkpoints) back to the base (in expectation an upper bound);
- trajectory: AIS along the training checkpoints, giving log Z at every checkpoint.

The estimates are cross-checked: a low effective sample size, or two estimates further
apart than WARN_STANDARD_ERRORS (3) combined standard errors plus `tolerance` nats, produce
warnings that loglik.json carries and the report shows. Each AIS estimate also reports
Var(log w), the variance of its log importance weights (reliable when about 1 or less).
By default the chains run as independent repeats, whose spread enters the standard error.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rbmflow.data.alignment import read_alignment
from rbmflow.data.dataset import TEST, TRAIN, EncodedAlignment, load_encoded
from rbmflow.errors import InputError, RbmflowError
from rbmflow.model import archive
from rbmflow.model.partition import (
    SCHEDULES,
    AISResult,
    IndependentSites,
    TrajectoryResult,
    ais_log_partition,
    cpu_generator,
    log_partition_exact,
    mean_log_likelihood,
    reverse_ais_log_partition,
    sample_exact,
    trajectory_ais,
)
from rbmflow.model.rbm import PottsRBM
from rbmflow.provenance import (
    FORMAT_VERSION,
    atomic_path,
    atomic_paths,
    json_safe,
    provenance,
    write_json,
)
from rbmflow.sampling.tempering import Level, beta_levels, select_ladder, temper

log = logging.getLogger(__name__)

METHODS = ("auto", "exact", "ais", "reverse", "trajectory")
WARN_STANDARD_ERRORS = 3.0
"""Two estimates of log Z disagree when further apart than this many combined standard
errors, sqrt(std_a^2 + std_b^2), plus the `tolerance` floor."""
TRAJECTORY_COLUMNS = ("update", "log_z", "log_z_std", "loglik_train", "loglik_test",
                      "ess_fraction", "method")


@dataclass(frozen=True)
class LoglikSettings:
    """Options of the stage (the `loglik:` section of the config; CLI flags of the same name).

    methods: estimators to run, in order of preference for the reported log_z (exact always
    wins when computed); "auto" means exact when Nh <= exact_max_hiddens, else ais, reverse
    and (with more than one checkpoint) trajectory. betas: inverse temperatures of the
    temperature paths; chains: chains per repeat; repeats: independent groups of chains;
    sweeps: Gibbs sweeps per temperature; trajectory_steps: annealing steps shared among
    the intervals between checkpoints; trajectory_betas: temperatures from the base to the
    first checkpoint; equilibration_sweeps: sweeps of the tempering run (trajectory
    tempering over the checkpoints, else tempering in beta) that gives the reverse AIS its
    equilibrium samples; pseudocount: mixing weight of the uniform distribution in the
    base's site frequencies; tolerance (nats): floor added to WARN_STANDARD_ERRORS combined
    standard errors, the largest difference between two estimates without a warning;
    min_ess: smallest ESS / chains without one. target_std (nats): the standard error of log Z
    that the annealing is sized for (see `size_annealing`); betas, chains and
    trajectory_steps are then upper bounds (0: run them as given).
    """

    methods: tuple[str, ...] = ("auto",)
    checkpoint: int | None = None
    betas: int = 3000
    chains: int = 200
    schedule: str = "sigmoid"
    sweeps: int = 1
    repeats: int = 5
    trajectory_steps: int = 5000
    trajectory_betas: int = 1000
    equilibration_sweeps: int = 200
    pseudocount: float = 0.01
    tolerance: float = 0.05
    min_ess: float = 0.1
    exact_max_hiddens: int = 16
    seed: int = 0
    target_std: float = 0.05

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise RbmflowError(f"unknown loglik method(s) {unknown}; choose from "
                               f"{', '.join(METHODS)}")
        if self.schedule not in SCHEDULES:
            raise RbmflowError(f"schedule must be one of {', '.join(SCHEDULES)}, "
                               f"got {self.schedule!r}")
        for key in ("betas", "trajectory_betas"):
            if getattr(self, key) < 2:
                raise RbmflowError(f"{key} must be at least 2, got {getattr(self, key)}")
        for key in ("chains", "sweeps", "repeats", "trajectory_steps"):
            if getattr(self, key) < 1:
                raise RbmflowError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.equilibration_sweeps < 0 or not 0 <= self.pseudocount < 1:
            raise RbmflowError("equilibration_sweeps must be >= 0 and pseudocount in [0, 1)")
        if self.target_std < 0:
            raise RbmflowError(f"target_std must be >= 0, got {self.target_std}")
        if not self.tolerance > 0 or not 0 <= self.min_ess <= 1:
            raise RbmflowError("tolerance must be > 0 and min_ess in [0, 1]")

    def resolved_methods(self, num_hiddens: int, num_checkpoints: int) -> list[str]:
        """The estimators to run for a model with `num_hiddens` and that many checkpoints."""
        out: list[str] = []
        for method in self.methods:
            if method == "auto":
                if num_hiddens <= self.exact_max_hiddens:
                    expanded = ["exact"]
                else:
                    expanded = ["ais", "reverse"] + (["trajectory"] if num_checkpoints > 1
                                                     else [])
            else:
                expanded = [method]
            out += [m for m in expanded if m not in out]
        return out


@dataclass
class Checkpoint:
    """One saved model of a training run."""

    update: int
    model: PottsRBM


@dataclass
class LoglikResult:
    """What the stage computed: the summary (loglik.json without provenance) and the
    per-checkpoint rows of the trajectory table (empty when not computed)."""

    summary: dict[str, Any]
    trajectory: list[dict[str, Any]]


def _nan_to_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _split(data: EncodedAlignment, part: int, device: torch.device) -> tuple[Tensor, Tensor]:
    sub = data.subset(part)
    return sub.codes_tensor(device), sub.weights_tensor(device, torch.float64)


def model_samples(model: PottsRBM, checkpoints: Sequence[Checkpoint], num: int, sweeps: int,
                  generator: torch.Generator, exact_max_hiddens: int = 16,
                  swap_floor: float = 0.3, starts: Tensor | None = None,
                  repeats: int = 1) -> tuple[Tensor, dict[str, Any]]:
    """`num` equilibrium samples of the model for reverse AIS, and how they were made.

    Exact draws when Nh <= exact_max_hiddens; otherwise tempering, which crosses between
    modes: parallel trajectory tempering over `checkpoints` (>= 2, the last being `model`),
    else parallel tempering in inverse temperature, `sweeps` sweeps on a ladder whose
    neighbouring swap rates stay at or above `swap_floor` (`select_ladder`). The samples come
    in `repeats` consecutive groups of num / repeats, each from its own tempering run whose
    chains start from their own rows of `starts` (codes (n, L), e.g. training sequences,
    cycled without sharing a row between groups while n allows; default: uniformly random),
    so that the groups' estimates are independent. Reverse AIS is an upper bound on log Z in
    expectation only from such samples: started from chains stuck in part of the
    distribution, it can fall far below log Z.
    """
    if model.num_hiddens <= exact_max_hiddens:
        return sample_exact(model, num, generator), {"how": "exact"}
    if num % repeats:
        raise ValueError(f"{num} samples do not split into {repeats} repeats")
    if len(checkpoints) >= 2:
        method = "ptt"
        candidates = [Level(c.model, 1.0, f"update_{c.update}") for c in checkpoints]
    else:
        method = "pt"
        candidates = beta_levels(model, 8)
    rows = None if starts is None else (torch.arange(num, device=starts.device)
                                        % starts.shape[0])
    with torch.no_grad():
        ladder = select_ladder(candidates, min(256, num), max(20, min(100, sweeps // 10)),
                               swap_floor, generator=generator,
                               init=None if starts is None else starts[rows[:min(256, num)]])
        groups = []
        for part in (torch.arange(num).view(repeats, -1) if rows is not None
                     else [None] * repeats):
            init = None if part is None else starts[rows[part.to(rows.device)]].long()
            groups.append(temper(ladder.levels, num // repeats, sweeps, generator, init))
    rates = [sum(g.swap_rates[k] for g in groups) / repeats
             for k in range(len(groups[0].swap_rates))]
    how = (f"{method} over {len(ladder.levels)} levels, {sweeps} sweeps, {repeats} independent "
           f"run(s), smallest swap rate {min(rates):.2f}" if rates
           else f"{method}, {sweeps} sweeps")
    return torch.cat([g.codes for g in groups]), {
        "how": how, "method": method, "levels": groups[0].labels, "swap_rates": rates,
        "passages": sum(g.passages for g in groups), "runs": repeats}


def check_estimates(estimates: dict[str, dict[str, Any]], tolerance: float,
                    min_ess: float) -> list[str]:
    """Warnings about the estimates of log Z: low effective sample sizes, and pairs of
    estimates further apart than WARN_STANDARD_ERRORS combined standard errors plus
    `tolerance` nats (the forward/reverse pair brackets log Z in expectation, so a wide gap
    means that at least one of them missed part of the distribution: a first-order
    transition, or chains that do not mix)."""
    warnings = []
    for name, est in estimates.items():
        frac = est.get("ess_fraction")
        if frac is not None and frac < min_ess:
            warnings.append(
                f"{name}: effective sample size {est['ess']:.1f} of {est['n_chains_total']} "
                f"chains ({frac:.1%} < {min_ess:.0%}): this log Z is not to be trusted; "
                "use more chains or temperatures")
    names = [n for n in ("exact", "ais", "reverse", "trajectory") if n in estimates]
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            a, b = estimates[first]["log_z"], estimates[second]["log_z"]
            std = math.hypot(estimates[first].get("log_z_std") or 0.0,
                             estimates[second].get("log_z_std") or 0.0)
            allowed = WARN_STANDARD_ERRORS * std + tolerance
            if abs(a - b) > allowed:
                hint = _bracket_hint(estimates, first, second)
                warnings.append(
                    f"log Z estimates disagree: {first} {a:.3f} vs {second} {b:.3f} "
                    f"(difference {abs(a - b):.3f} nats > {WARN_STANDARD_ERRORS:g} x "
                    f"{std:.3f} combined standard error + {tolerance} nats).{hint}")
    return warnings


def _bracket_hint(estimates: dict[str, dict[str, Any]], first: str, second: str) -> str:
    """What a forward/reverse disagreement means: a bracket of log Z when reverse >= forward,
    a broken bracket otherwise."""
    if {first, second} != {"ais", "reverse"}:
        return ""
    if estimates["reverse"]["log_z"] >= estimates["ais"]["log_z"]:
        return (" Forward AIS is in expectation a lower bound and reverse AIS an upper bound: "
                "the true log Z lies between them, and the gap says the annealing missed part "
                "of the distribution (a first-order transition or slow mixing).")
    return (" Reverse AIS lies below forward AIS, so the two do not bracket log Z: the reverse "
            "chains did not start from the model's equilibrium (samples stuck in part of the "
            "distribution), or the forward estimate is off by more than its error bar.")


def _reliable(estimate: dict[str, Any], min_ess: float) -> bool:
    frac = estimate.get("ess_fraction")
    return frac is None or frac >= min_ess


def _agrees(a: dict[str, Any], b: dict[str, Any], tolerance: float) -> bool:
    std = math.hypot(a.get("log_z_std") or 0.0, b.get("log_z_std") or 0.0)
    return abs(a["log_z"] - b["log_z"]) <= WARN_STANDARD_ERRORS * std + tolerance


def choose_log_z(estimates: dict[str, dict[str, Any]], methods: Sequence[str],
                 num_checkpoints: int, tolerance: float = 0.05,
                 min_ess: float = 0.1) -> tuple[str, str]:
    """Which estimate is reported as log_z, and why, following the diagnostics.

    exact when computed. Else trajectory AIS (it follows the training path, through which
    the modes appeared one by one; the last row of loglik_trajectory.csv) when its
    ESS / chains >= min_ess and it agrees (within WARN_STANDARD_ERRORS combined standard
    errors + tolerance) with every reliable forward or reverse estimate. Else the first
    requested of forward and reverse AIS that is reliable; else the first requested one,
    flagged as unreliable.
    """
    if "exact" in estimates:
        return "exact", "exact enumeration of the 2^Nh hidden states"
    others = {m: estimates[m] for m in ("ais", "reverse") if m in estimates}
    reliable = {m: e for m, e in others.items() if _reliable(e, min_ess)}
    rejected = ""
    if "trajectory" in estimates:
        traj = estimates["trajectory"]
        against = [m for m, e in reliable.items() if not _agrees(traj, e, tolerance)]
        if _reliable(traj, min_ess) and not against:
            return "trajectory", (f"trajectory AIS along the {num_checkpoints} checkpoints "
                                  "(the last row of loglik_trajectory.csv)")
        rejected = ("trajectory AIS not reported: " + (
            f"its effective sample size is {traj.get('ess_fraction', 0):.1%} of its chains "
            f"(< {min_ess:.0%})" if not _reliable(traj, min_ess)
            else f"it disagrees with {' and '.join(against)}") + "; ")
    elif num_checkpoints < 2:
        rejected = "the archive holds one checkpoint, so there is no trajectory; "
    else:
        rejected = "trajectory AIS was not requested (loglik.method); "
    if reliable:
        best = next(m for m in methods if m in reliable)
        return best, f"{rejected}{best} reported (the first requested reliable estimate)"
    first = next(m for m in methods if m in estimates)
    return first, (f"{rejected}{first} reported, but no estimate has an effective sample size "
                   f"of at least {min_ess:.0%} of its chains: not to be trusted")


PILOT_BETAS = 100
PILOT_CHAINS = 200
MIN_CHAINS_PER_REPEAT = 20


@dataclass(frozen=True)
class AnnealingSize:
    """Resolution (inverse temperatures, or annealing steps of a trajectory) and chains per
    repeat of an AIS run, and the pilot run they were chosen from."""

    resolution: int
    chains: int
    pilot_resolution: int
    pilot_chains: int
    pilot_log_w_var: float
    predicted_std: float


def size_annealing(pilot_log_w_var: float, pilot_resolution: int, pilot_chains: int,
                   max_resolution: int, max_chains: int, repeats: int, target_std: float,
                   min_resolution: int = PILOT_BETAS) -> AnnealingSize:
    """Resolution and chains for a standard error of log Z of about `target_std` nats.

    Along a fixed path Var(log w) falls as 1 / resolution, c / K with c measured by the
    pilot (c = pilot variance x pilot resolution), and the error of log mean w over N chains
    is about sqrt(s / N), s = exp(Var(log w)) - 1 (log-normal weights). K is chosen so that
    Var(log w) is about 0.5 (the weights stay reliable, ESS / N about exp(-0.5)), N so that
    sqrt(1.5 s / N) <= target_std. Both are clipped to [min, max]; with a pilot
    variance too large for the maxima, the maxima are used and the ESS shows it.
    """
    c = max(pilot_log_w_var, 0.0) * pilot_resolution
    resolution = int(min(max(math.ceil(2 * c), min_resolution), max_resolution))
    spread = math.expm1(c / resolution)  # Var(w) / E[w]^2 for log-normal weights
    total = math.ceil(1.5 * spread / target_std ** 2)
    chains = int(min(max(math.ceil(total / repeats), MIN_CHAINS_PER_REPEAT), max_chains))
    return AnnealingSize(resolution, chains, pilot_resolution, pilot_chains, pilot_log_w_var,
                         math.sqrt(spread / (chains * repeats)))


def _log_w_var(result: AISResult) -> float:
    log_w = result.log_weights.double()
    return float(log_w.var()) if log_w.numel() > 1 else 0.0


def _ais_summary(result: AISResult) -> dict[str, Any]:
    out = result.summary()
    out["n_chains_total"] = result.log_weights.shape[0]
    log_w = result.log_weights.double()
    out["log_w_var"] = float(log_w.var()) if log_w.numel() > 1 else 0.0
    return out


class _Annealing:
    """The AIS estimators of one model, sized from a pilot run (see `size_annealing`)."""

    def __init__(self, model: PottsRBM, checkpoints: list[Checkpoint], base: IndependentSites,
                 settings: LoglikSettings, generator: torch.Generator, train_codes: Tensor,
                 train_weights: Tensor, samples: Tensor | None) -> None:
        self.model, self.checkpoints, self.base, self.s = model, checkpoints, base, settings
        self.generator, self.samples = generator, samples
        self.train_codes, self.train_weights = train_codes, train_weights
        self._size: AnnealingSize | None = None
        self.trajectory: TrajectoryResult | None = None

    def estimate(self, method: str) -> dict[str, Any]:
        if method == "exact":
            if self.model.num_hiddens > 24:
                raise RbmflowError(f"exact log Z needs Nh <= 24 (the model has "
                                   f"{self.model.num_hiddens}); use --method ais")
            t0 = time.perf_counter()
            return {"log_z": log_partition_exact(self.model), "log_z_std": 0.0,
                    "time_s": time.perf_counter() - t0}
        return {"ais": self.forward, "reverse": self.reverse,
                "trajectory": self.along_trajectory}[method]()

    def size(self) -> AnnealingSize | None:
        """The temperature path's size, from a forward pilot (shared by forward and reverse
        AIS); None when settings.target_std is 0."""
        s = self.s
        if s.target_std <= 0:
            return None
        if self._size is None:
            betas, chains = min(PILOT_BETAS, s.betas), min(PILOT_CHAINS, s.chains * s.repeats)
            pilot = ais_log_partition(self.model, self.base, chains, betas, s.schedule,
                                      s.sweeps, 1, self.generator)
            self._size = size_annealing(_log_w_var(pilot), betas, chains, s.betas, s.chains,
                                        s.repeats, s.target_std)
        return self._size

    def forward(self) -> dict[str, Any]:
        s, size = self.s, self.size()
        betas, chains = (size.resolution, size.chains) if size else (s.betas, s.chains)
        result = ais_log_partition(self.model, self.base, chains, betas, s.schedule, s.sweeps,
                                   s.repeats, self.generator)
        return _ais_summary(result) | {"spent": _spent_on(size, betas, chains, s.repeats,
                                                          result.time_s)}

    def reverse(self) -> dict[str, Any]:
        s, size = self.s, self.size()
        t0 = time.perf_counter()
        betas, chains = (size.resolution, size.chains) if size else (s.betas, s.chains)
        samples, how = self._reverse_starts(chains)
        chains = samples.shape[0] // s.repeats
        result = reverse_ais_log_partition(self.model, self.base,
                                           samples[:chains * s.repeats], betas, s.schedule,
                                           s.sweeps, s.repeats, self.generator)
        spent = _spent_on(size, betas, chains, s.repeats, time.perf_counter() - t0)
        reused = how.get("method") == "sample stage"
        spent["equilibration_sweeps"] = 0 if reused else s.equilibration_sweeps
        return _ais_summary(result) | {"model_samples": how.pop("how"),
                                       "model_samples_detail": how, "spent": spent,
                                       "time_s": time.perf_counter() - t0}

    def _reverse_starts(self, chains: int) -> tuple[Tensor, dict[str, Any]]:
        """Equilibrium samples for reverse AIS: the given ones when there are enough for
        MIN_CHAINS_PER_REPEAT per repeat, else independent tempering runs, one per repeat."""
        s = self.s
        given = self.samples
        if given is not None and given.shape[0] >= s.repeats * MIN_CHAINS_PER_REPEAT:
            n = min(given.shape[0] // s.repeats, chains) * s.repeats
            return given[:n].to(self.model.device).long(), {
                "how": f"{n} samples of the sample stage", "method": "sample stage",
                "count": n}
        num = chains * s.repeats
        picks = torch.multinomial(self.train_weights.double().cpu(), num, replacement=True,
                                  generator=cpu_generator(self.generator))
        return model_samples(self.model, self.checkpoints, num, s.equilibration_sweeps,
                             self.generator, s.exact_max_hiddens,
                             starts=self.train_codes[picks.to(self.train_codes.device)],
                             repeats=s.repeats)

    def along_trajectory(self) -> dict[str, Any]:
        s = self.s
        models = [c.model.to(self.model.device) for c in self.checkpoints]
        full = s.trajectory_betas + s.trajectory_steps
        scale, chains, size = 1.0, s.chains, None
        if s.target_std > 0:
            pilot_scale = min(1.0, 10 * PILOT_BETAS / full)
            pilot = self._trajectory(models, pilot_scale, min(PILOT_CHAINS, s.chains), 1)
            pilot_res = pilot.final.n_betas
            size = size_annealing(_log_w_var(pilot.final), pilot_res, pilot.n_chains, full,
                                  s.chains, s.repeats, s.target_std,
                                  min(full, PILOT_BETAS + len(models)))
            scale, chains = size.resolution / full, size.chains
        self.trajectory = trajectory = self._trajectory(models, scale, chains, s.repeats)
        return _ais_summary(trajectory.final) | {
            "n_checkpoints": len(self.checkpoints), "steps": trajectory.steps,
            "n_betas": trajectory.final.n_betas, "time_s": trajectory.time_s,
            "spent": _spent_on(size, trajectory.final.n_betas, chains, s.repeats,
                               trajectory.time_s)}

    def _trajectory(self, models: list[PottsRBM], scale: float, chains: int,
                    repeats: int) -> TrajectoryResult:
        s = self.s
        steps = max(len(models) - 1, round(scale * s.trajectory_steps))
        return trajectory_ais(models, self.base, chains, steps,
                              max(2, round(scale * s.trajectory_betas)), s.schedule, s.sweeps,
                              repeats, self.train_codes, self.train_weights, self.generator)


def _spent_on(size: AnnealingSize | None, resolution: int, chains: int, repeats: int,
              time_s: float) -> dict[str, Any]:
    """What one estimator spent: its path's resolution, chains, chain-steps (pilot included)
    and seconds, with the pilot that sized it."""
    pilot = 0 if size is None else size.pilot_resolution * size.pilot_chains
    return {"resolution": resolution, "chains_per_repeat": chains, "repeats": repeats,
            "chain_steps": resolution * chains * repeats + pilot, "time_s": time_s,
            "sized_from_pilot": None if size is None else asdict(size)}


def _spent(estimates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The annealing work of every estimator: chain-steps (one Gibbs sweep of one chain at
    one point of a path) and seconds, and their totals."""
    spent = {m: e["spent"] for m, e in estimates.items() if "spent" in e}
    return {"per_method": spent,
            "chain_steps": sum(v["chain_steps"] for v in spent.values()),
            "time_s": sum(e.get("time_s") or 0.0 for e in estimates.values())}


def estimate(checkpoints: Sequence[Checkpoint], data: EncodedAlignment,
             settings: LoglikSettings, device: torch.device | str = "cpu",
             trajectory_table: bool = False,
             model_samples_given: Tensor | None = None) -> LoglikResult:
    """Estimate log Z of the last of `checkpoints` (earlier ones: the training trajectory)
    and the mean log-likelihoods of the train and test splits of `data`.

    model_samples_given: equilibrium samples (n, L) of the last checkpoint (the sample
    stage's), the starts of reverse AIS instead of a tempering run of its own.

    With `trajectory_table`, also log Z and the log-likelihoods at every checkpoint, from
    exact enumeration when it is used, else from trajectory AIS (run if not requested).
    """
    started = time.perf_counter()
    device = torch.device(device)
    if not checkpoints:
        raise RbmflowError("no checkpoint to evaluate")
    final = checkpoints[-1]
    model = final.model.to(device)
    if model.num_visibles != data.length or model.num_states != data.num_states:
        raise InputError(f"the model has L={model.num_visibles}, q={model.num_states} but the "
                         f"alignment has L={data.length}, q={data.num_states}")
    train_codes, train_weights = _split(data, TRAIN, device)
    test_codes, test_weights = _split(data, TEST, device)
    if train_codes.shape[0] == 0 or not float(train_weights.sum()) > 0:
        raise InputError("the alignment has no weighted training sequence")
    s = settings
    methods = s.resolved_methods(model.num_hiddens, len(checkpoints))
    if trajectory_table and "exact" not in methods and "trajectory" not in methods:
        methods.append("trajectory")
    generator = torch.Generator(device=device).manual_seed(s.seed)
    base = IndependentSites.from_codes(train_codes, data.num_states, train_weights,
                                       s.pseudocount)
    log.info("log Z of update %d (Nh=%d) by %s", final.update, model.num_hiddens,
             ", ".join(methods))

    run = _Annealing(model, list(checkpoints), base, s, generator, train_codes, train_weights,
                     model_samples_given)
    estimates: dict[str, dict[str, Any]] = {}
    for method in methods:
        t0 = time.perf_counter()
        estimates[method] = run.estimate(method)
        log.info("%s: log Z = %.4f +- %.4f (%.1f s)", method, estimates[method]["log_z"],
                 estimates[method]["log_z_std"], time.perf_counter() - t0)
    trajectory = run.trajectory

    primary, log_z_reason = choose_log_z(estimates, methods, len(checkpoints), s.tolerance,
                                         s.min_ess)
    warnings = check_estimates(estimates, s.tolerance, s.min_ess)
    for message in warnings:
        log.warning(message)
    summary = _summary(estimates, primary, log_z_reason, final.update, model, warnings,
                       (train_codes, train_weights), (test_codes, test_weights))
    rows: list[dict[str, Any]] = []
    if trajectory_table:
        rows = _trajectory_rows(checkpoints, trajectory, "exact" in estimates, train_codes,
                                train_weights, test_codes, test_weights, device)
    summary["time_s"] = time.perf_counter() - started
    return LoglikResult(summary, rows)


def _summary(estimates: dict[str, dict[str, Any]], primary: str, log_z_reason: str,
             update: int, model: PottsRBM, warnings: list[str],
             train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor]) -> dict[str, Any]:
    """loglik.json's fields (without provenance) for the estimate `primary`."""
    chosen = estimates[primary]
    log_z = chosen["log_z"]
    (train_codes, train_weights), (test_codes, test_weights) = train, test
    return {
        "log_z": log_z,
        "log_z_std": chosen["log_z_std"],
        "method": primary,
        "log_z_reason": log_z_reason,
        "checkpoint": update,
        "n_betas": chosen.get("n_betas"),
        "n_chains": chosen.get("n_chains"),
        "repeats": chosen.get("repeats"),
        "ess": chosen.get("ess"),
        "ess_fraction": chosen.get("ess_fraction"),
        "loglik_train": _nan_to_none(
            mean_log_likelihood(model, train_codes, log_z, train_weights)),
        "loglik_test": _nan_to_none(mean_log_likelihood(model, test_codes, log_z, test_weights)),
        "log_z_exact": estimates.get("exact", {}).get("log_z"),
        "log_z_forward": estimates.get("ais", {}).get("log_z"),
        "log_z_reverse": estimates.get("reverse", {}).get("log_z"),
        "log_z_trajectory": estimates.get("trajectory", {}).get("log_z"),
        "estimates": estimates,
        "warning": " | ".join(warnings) if warnings else None,
        "warnings": warnings,
        "num_hiddens": model.num_hiddens,
        "n_train": int(train_codes.shape[0]),
        "n_test": int(test_codes.shape[0]),
        "meff_train": float(train_weights.sum()),
        "meff_test": float(test_weights.sum()),
        "units": "nats per sequence (loglik), nats (log_z)",
        "spent": _spent(estimates),
    }


def _trajectory_rows(checkpoints: Sequence[Checkpoint], trajectory: TrajectoryResult | None,
                     exact: bool, train_codes: Tensor, train_weights: Tensor,
                     test_codes: Tensor, test_weights: Tensor,
                     device: torch.device) -> list[dict[str, Any]]:
    rows = []
    for k, checkpoint in enumerate(checkpoints):
        m = checkpoint.model.to(device)
        if exact:
            log_z, std, ess, method = log_partition_exact(m), 0.0, None, "exact"
        else:
            assert trajectory is not None
            log_z, std = trajectory.log_z[k], trajectory.log_z_std[k]
            ess, method = trajectory.ess[k] / trajectory.final.log_weights.shape[0], "trajectory"
        rows.append({
            "update": checkpoint.update, "log_z": log_z, "log_z_std": std,
            "loglik_train": mean_log_likelihood(m, train_codes, log_z, train_weights),
            "loglik_test": mean_log_likelihood(m, test_codes, log_z, test_weights),
            "ess_fraction": ess, "method": method,
        })
    return rows


def write_trajectory_csv(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    """One row per checkpoint: TRAJECTORY_COLUMNS; numbers with 6 decimals, NaN as empty."""
    def fmt(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return "" if not math.isfinite(value) else f"{value:.6f}"
        return str(value)

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(TRAJECTORY_COLUMNS)
        for row in rows:
            writer.writerow([fmt(row[c]) for c in TRAJECTORY_COLUMNS])


def load_checkpoints(model_path: str | os.PathLike[str], up_to: int | None,
                     with_trajectory: bool, device: torch.device) -> list[Checkpoint]:
    """The checkpoints of the archive up to update `up_to` (None: the last); only that one
    unless `with_trajectory`."""
    updates = archive.list_updates(model_path)
    if not updates:
        raise InputError(f"{model_path}: no complete checkpoint")
    if up_to is None:
        up_to = updates[-1]
    if up_to not in updates:
        raise InputError(f"{model_path}: no checkpoint update_{up_to} (have {updates})")
    chosen = [u for u in updates if u <= up_to] if with_trajectory else [up_to]
    return [Checkpoint(u, archive.load_rbm(model_path, u, device=device, dtype=torch.float32))
            for u in chosen]


def stage_samples(samples_path: str | os.PathLike[str] | None,
                  info_path: str | os.PathLike[str] | None, data: EncodedAlignment,
                  update: int) -> tuple[Tensor | None, str]:
    """The sample stage's sequences as codes (n, L) when its sampling.json says they are
    equilibrium samples of checkpoint `update` at beta = 1, else None; and why."""
    if samples_path is None or info_path is None:
        return None, "no samples given"
    try:
        info = json.loads(Path(info_path).read_text())
        raw = read_alignment(samples_path)
    except (OSError, ValueError) as err:
        raise InputError(f"{samples_path}: {err}") from err
    checks = {"equilibrated": info.get("equilibrated") is True,
              "mode equilibrium": info.get("mode") == "equilibrium",
              "beta 1": info.get("beta") == 1.0,
              f"update {update}": info.get("model_update") == update}
    missing = [name for name, ok in checks.items() if not ok]
    if missing:
        return None, f"{samples_path} not used: not {', '.join(missing)} ({info_path})"
    lookup = {a: k for k, a in enumerate(data.alphabet)}
    try:
        codes = torch.tensor([[lookup[a] for a in seq] for seq in raw.rows])
    except KeyError as err:
        raise InputError(f"{samples_path}: symbol {err} not in the alphabet "
                         f"{data.alphabet!r}") from err
    if codes.dim() != 2 or codes.shape[1] != data.length:
        raise InputError(f"{samples_path}: sequences of length {codes.shape[-1]}, the "
                         f"alignment has L={data.length}")
    return codes, f"{codes.shape[0]} samples from {samples_path}"


def reused_samples(summary: dict[str, Any], samples: str | os.PathLike[str] | None,
                   samples_info: str | os.PathLike[str] | None, note: str,
                   settings: LoglikSettings) -> dict[str, Any]:
    """loglik.json's `reused`: whether the sample stage's samples were the starts of reverse
    AIS, how many, and the tempering they replaced (`equilibration_sweeps` per repeat); else
    why not (`reason`)."""
    reverse = summary.get("estimates", {}).get("reverse")
    detail = reverse.get("model_samples_detail", {}) if reverse else {}
    used = detail.get("method") == "sample stage"
    record: dict[str, Any] = {
        "samples": None if samples is None else str(samples),
        "samples_info": None if samples_info is None else str(samples_info),
        "used_for": "reverse AIS starts" if used else None,
        "count": int(detail["count"]) if used else 0,
        "equilibration_sweeps_saved": settings.equilibration_sweeps if used else 0,
    }
    if not used:
        if samples is None or " not used: " in note:
            record["reason"] = note
        elif reverse is None:
            record["reason"] = "no reverse AIS in this run's methods"
        elif reverse.get("model_samples") == "exact":
            record["reason"] = "exact samples drawn instead (hidden layer enumerable)"
        else:
            record["reason"] = (f"fewer than {settings.repeats} x {MIN_CHAINS_PER_REPEAT} "
                                "samples")
    return record


def run_stage(model_path: str | os.PathLike[str], data_path: str | os.PathLike[str],
              out: str | os.PathLike[str], settings: LoglikSettings,
              device: torch.device | str = "cpu",
              trajectory_csv: str | os.PathLike[str] | None = None,
              samples: str | os.PathLike[str] | None = None,
              samples_info: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Load model.h5 and alignment.npz, estimate, write loglik.json (and the trajectory CSV).

    samples, samples_info: the sample stage's samples.fasta and sampling.json; used as the
    starts of reverse AIS when they are equilibrium samples of the evaluated checkpoint.
    Returns the JSON document written.
    """
    device = torch.device(device)
    try:
        data = load_encoded(data_path)
    except ValueError as err:
        raise InputError(str(err)) from err
    meta = archive.read_metadata(model_path)
    if "num_hiddens" not in meta:  # the shape of the last checkpoint's weight matrix
        raise InputError(f"{model_path}: no complete checkpoint")
    methods = settings.resolved_methods(int(meta["num_hiddens"]), len(meta["updates"]))
    need_all = trajectory_csv is not None or "trajectory" in methods or "reverse" in methods
    checkpoints = load_checkpoints(model_path, settings.checkpoint, need_all, device)
    given, samples_note = stage_samples(samples, samples_info, data, checkpoints[-1].update)
    log.info("reverse AIS starts: %s", samples_note)
    result = estimate(checkpoints, data, settings, device,
                      trajectory_table=trajectory_csv is not None, model_samples_given=given)
    result.summary["stage_samples"] = samples_note
    result.summary["reused"] = reused_samples(result.summary, samples, samples_info,
                                              samples_note, settings)
    settings_record = asdict(settings) | {"methods": list(settings.methods),
                                          "device": str(device)}
    inputs = {"model": model_path, "alignment": data_path}
    if samples is not None and samples_info is not None:
        inputs |= {"samples": samples, "samples_info": samples_info}
    document = {"format_version": FORMAT_VERSION} | result.summary | {
        "model": str(model_path), "data": str(data_path),
        "provenance": provenance("loglik", inputs, settings_record, settings.seed),
    }
    with atomic_paths(out, *([trajectory_csv] if trajectory_csv is not None else [])) as tmps:
        write_json(tmps[0], json_safe(document))
        if trajectory_csv is not None:
            write_trajectory_csv(tmps[1], result.trajectory)
    return document




def settings_from_mapping(values: dict[str, Any]) -> LoglikSettings:
    """LoglikSettings from a mapping with the field names (e.g. parsed CLI options)."""
    known = {f for f in LoglikSettings.__dataclass_fields__}
    return LoglikSettings(**{k: v for k, v in values.items() if k in known})

