"""Samplers that cross between modes: parallel trajectory tempering and parallel tempering.

Both run one set of chains at each level of a ladder of distributions p_0, ..., p_K (the
last is the target), alternate a block-Gibbs sweep at every level with Metropolis swaps
between neighbouring levels, and return the chains of the target level.

- Parallel trajectory tempering (PTT; Béreux, Decelle, Furtlehner, Rosset, Seoane, "Fast
  training and sampling of Restricted Boltzmann Machines", ICLR 2025): the levels are the
  checkpoints of a training run, in training order. Early models are nearly independent-site
  and mix at once; each later one grows from it continuously, so a mode that appears during
  training is reached by the chains that followed it there.
- Parallel tempering (PT): one model at inverse temperatures 0 <= beta_0 < ... < beta_K = 1,
  for archives without a trajectory.

A level is a model and an inverse temperature, p_k(v) proportional to exp(-F_k(v)) with
F_k = `model.free_energy(v, beta)`. Chains x_k at level k and x_{k+1} at level k+1 swap with
probability

    min(1, exp(F_k(x_k) + F_{k+1}(x_{k+1}) - F_k(x_{k+1}) - F_{k+1}(x_k))),

which leaves the product of the levels' distributions invariant. Chain c of level k swaps with
chain c of level k+1; even pairs (0-1, 2-3, ...) and odd pairs (1-2, 3-4, ...) alternate from
sweep to sweep. Energies are in nats; everything runs on the models' device.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rbmflow.model.rbm import PottsRBM, random_codes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Level:
    """One distribution of a tempering ladder: exp(-model.free_energy(v, beta)) / Z.

    label: a name for reports, e.g. "update_120", "update_120-180@0.5" or "beta=0.25".
    """

    model: PottsRBM
    beta: float = 1.0
    label: str = ""

    def free_energy(self, codes: Tensor) -> Tensor:
        """F(v) of this level for codes (C, L), float64 (C,)."""
        return self.model.free_energy(codes, self.beta).double()

    def sweep(self, codes: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.model.gibbs(codes, 1, self.beta, generator)


def interpolate_levels(first: Level, second: Level, t: float) -> Level:
    """The level a fraction t of the way from `first` to `second`.

    Same model: the inverse temperature is interpolated. Different models: the parameters
    (1 - t) theta_first + t theta_second, and beta likewise.
    """
    beta = (1 - t) * first.beta + t * second.beta
    label = f"{first.label}-{second.label}@{t:.3g}"
    if first.model is second.model:
        return Level(first.model, beta, f"beta={beta:.4g}")
    model = PottsRBM(*((1 - t) * a + t * b for a, b in zip(first.model.tensors(),
                                                           second.model.tensors(), strict=True)))
    return Level(model, beta, label)


@dataclass
class TemperingResult:
    """Chains after a tempering run and how the swaps went.

    codes: (C, L) int64, the chains of the target (last) level, the samples.
    level_codes: (C, L) chains of every level, first to last.
    swap_rates: acceptance rate of the swaps between levels k and k+1 (K values).
    swap_attempts: proposed swaps per pair. trace: (T, C, d) values of `observable` on the
    target chains at the recorded sweeps (None without an observable); trace_sweeps: those
    sweeps. passages: times a replica reached the last level coming from the first.
    """

    codes: Tensor
    level_codes: list[Tensor]
    swap_rates: list[float]
    swap_attempts: list[int]
    sweeps: int
    labels: list[str]
    elapsed_s: float
    passages: int = 0
    trace: Tensor | None = None
    trace_sweeps: list[int] = field(default_factory=list)

    @property
    def min_swap_rate(self) -> float | None:
        return min(self.swap_rates) if self.swap_rates else None


def swap_log_ratio(lower: Level, upper: Level, codes_lower: Tensor,
                   codes_upper: Tensor) -> Tensor:
    """log of the Metropolis ratio of exchanging codes_lower (at `lower`) and codes_upper
    (at `upper`), chain by chain: F_l(x_l) + F_u(x_u) - F_l(x_u) - F_u(x_l); float64 (C,)."""
    return (lower.free_energy(codes_lower) + upper.free_energy(codes_upper)
            - lower.free_energy(codes_upper) - upper.free_energy(codes_lower))


def expected_swap_rate(lower: Level, upper: Level, codes_lower: Tensor,
                       codes_upper: Tensor) -> float:
    """Mean over paired chains of min(1, exp(log ratio)): the acceptance rate expected
    between two levels when codes_lower and codes_upper are samples of them."""
    return float(swap_log_ratio(lower, upper, codes_lower, codes_upper).clamp(max=0).exp().mean())


def temper(levels: Sequence[Level], num_chains: int, sweeps: int,
           generator: torch.Generator | None = None,
           init: Tensor | Sequence[Tensor] | None = None,
           observable: Callable[[Tensor], Tensor] | None = None,
           record_every: int = 1, log_every: int = 0) -> TemperingResult:
    """Run `sweeps` rounds of (one Gibbs sweep at every level, then swaps) on `levels`.

    log_every: log the progress and the swap rates so far every that many sweeps (0: never).

    init: starting codes (C, L) for every level, or one (C, L) tensor per level; default
    uniformly random sequences. observable: maps the target chains (C, L) to (C, d) values,
    recorded every `record_every` sweeps (and at the last) into the result's trace.
    """
    if not levels:
        raise ValueError("tempering needs at least one level")
    first = levels[0].model
    device, L, q = first.device, first.num_visibles, first.num_states
    K = len(levels)
    if init is None:
        chains = [random_codes(num_chains, L, q, device, generator) for _ in range(K)]
    elif isinstance(init, Tensor):
        chains = [init.to(device).long().clone() for _ in range(K)]
    else:
        if len(init) != K:
            raise ValueError(f"{len(init)} initial sets for {K} levels")
        chains = [c.to(device).long().clone() for c in init]
    for c in chains:
        if c.shape != (chains[0].shape[0], L):
            raise ValueError(f"initial codes of shape {tuple(c.shape)}, expected (C, {L})")
    num_chains = chains[0].shape[0]
    accepted = torch.zeros(max(K - 1, 0), dtype=torch.float64, device=device)
    attempts = [0] * max(K - 1, 0)
    # Passages: the replica carried by each slot, and the end (-1 first, 1 last) it saw last.
    replica = [torch.arange(num_chains, device=device) + k * num_chains for k in range(K)]
    last_end = torch.zeros(K * num_chains, dtype=torch.int8, device=device)
    passages = torch.zeros((), dtype=torch.long, device=device)
    last_end[:num_chains] = -1  # those started at the first level
    trace, trace_sweeps = [], []
    started = time.perf_counter()
    with torch.no_grad():
        for sweep in range(1, sweeps + 1):
            chains = [level.sweep(c, generator) for level, c in zip(levels, chains, strict=True)]
            for k in range(sweep % 2, K - 1, 2):
                lower, upper = levels[k], levels[k + 1]
                log_ratio = swap_log_ratio(lower, upper, chains[k], chains[k + 1])
                u = torch.rand(num_chains, generator=generator, device=device,
                               dtype=torch.float64)
                swap = u.log() < log_ratio
                accepted[k] += swap.sum()
                attempts[k] += num_chains
                mask = swap[:, None]
                chains[k], chains[k + 1] = (torch.where(mask, chains[k + 1], chains[k]),
                                            torch.where(mask, chains[k], chains[k + 1]))
                replica[k], replica[k + 1] = (torch.where(swap, replica[k + 1], replica[k]),
                                              torch.where(swap, replica[k], replica[k + 1]))
            if K > 1:
                top = last_end[replica[-1]]
                passages += (top == -1).sum()
                last_end[replica[-1]] = 1
                last_end[replica[0]] = -1
            if log_every and sweep % log_every == 0:
                so_far = [float(a) / n if n else math.nan
                          for a, n in zip(accepted.tolist(), attempts, strict=True)]
                log.info("tempering sweep %d/%d (%.0f s): swap rates %s", sweep, sweeps,
                         time.perf_counter() - started, ", ".join(f"{r:.2f}" for r in so_far))
            if observable is not None and (sweep % record_every == 0 or sweep == sweeps):
                trace.append(observable(chains[-1]).float())
                trace_sweeps.append(sweep)
    rates = [float(a) / n if n else math.nan for a, n in zip(accepted.tolist(), attempts,
                                                              strict=True)]
    return TemperingResult(
        codes=chains[-1], level_codes=chains, swap_rates=rates, swap_attempts=attempts,
        sweeps=sweeps, labels=[level.label for level in levels],
        elapsed_s=time.perf_counter() - started, passages=int(passages),
        trace=torch.stack(trace) if trace else None, trace_sweeps=trace_sweeps)


def ptt_sample(models: Sequence[PottsRBM], num_chains: int, sweeps: int,
               generator: torch.Generator | None = None,
               init: Tensor | Sequence[Tensor] | None = None,
               labels: Sequence[str] | None = None,
               observable: Callable[[Tensor], Tensor] | None = None,
               record_every: int = 1) -> TemperingResult:
    """Parallel trajectory tempering over `models` (checkpoints in training order, the last
    is sampled), each at beta = 1. See `temper` for the other arguments."""
    labels = labels or [f"model_{k}" for k in range(len(models))]
    levels = [Level(m, 1.0, str(name)) for m, name in zip(models, labels, strict=True)]
    return temper(levels, num_chains, sweeps, generator, init, observable, record_every)


def pt_sample(model: PottsRBM, betas: Sequence[float], num_chains: int, sweeps: int,
              generator: torch.Generator | None = None,
              init: Tensor | Sequence[Tensor] | None = None,
              observable: Callable[[Tensor], Tensor] | None = None,
              record_every: int = 1) -> TemperingResult:
    """Parallel tempering of one model at inverse temperatures `betas` (increasing, the last
    is sampled; usually 1). See `temper` for the other arguments."""
    betas = [float(b) for b in betas]
    if any(b2 <= b1 for b1, b2 in zip(betas, betas[1:], strict=False)):
        raise ValueError("betas must increase")
    levels = [Level(model, b, f"beta={b:.4g}") for b in betas]
    return temper(levels, num_chains, sweeps, generator, init, observable, record_every)


def beta_levels(model: PottsRBM, num: int, beta_min: float = 0.0) -> list[Level]:
    """`num` levels of one model at inverse temperatures evenly spaced from beta_min to 1."""
    if num < 2:
        return [Level(model, 1.0, "beta=1")]
    betas = torch.linspace(beta_min, 1.0, num, dtype=torch.float64).tolist()
    return [Level(model, b, f"beta={b:.4g}") for b in betas]


@dataclass
class Ladder:
    """Levels chosen for tempering and the swap rates measured along them (short run).

    codes: the short run's chains at every level (a warm start for the real run).
    """

    levels: list[Level]
    swap_rates: list[float]
    codes: list[Tensor]
    rounds: int

    @property
    def labels(self) -> list[str]:
        return [level.label for level in self.levels]


def select_ladder(candidates: Sequence[Level], num_chains: int = 256, sweeps: int = 64,
                  floor: float = 0.25, max_levels: int = 64, rounds: int = 4,
                  generator: torch.Generator | None = None,
                  init: Tensor | None = None) -> Ladder:
    """Choose levels from `candidates` (ordered; the last is the target) so that neighbouring
    swap rates stay at or above `floor`, with as few levels as that allows.

    Each round runs `sweeps` of tempering on the current ladder with `num_chains` chains,
    then, from the chains reached at every level, estimates the swap rate between any two
    levels (`expected_swap_rate`). The next ladder keeps the first level and walks to the
    target, stepping each time to the furthest level still reachable at the floor (dropping
    redundant checkpoints); where even the next level is below it, interpolated levels are
    inserted (parameters, or beta for one model), about sqrt(log rate / log floor) of them,
    since -log(rate) shrinks roughly as the square of the step. It stops when every measured
    neighbouring rate passes, after `rounds` rounds, or at `max_levels`.
    """
    levels = list(candidates)
    if len(levels) < 2:
        return Ladder(levels, [], [], 0)
    codes: list[Tensor] | Tensor | None = init
    for round_index in range(1, rounds + 1):
        result = temper(levels, num_chains, sweeps, generator, codes)
        new_levels, new_codes = _rebuild(levels, result.level_codes, floor, max_levels)
        if [id(lv) for lv in new_levels] == [id(lv) for lv in levels]:
            return Ladder(levels, result.swap_rates, result.level_codes, round_index)
        levels, codes = new_levels, new_codes
    result = temper(levels, num_chains, sweeps, generator, codes)
    return Ladder(levels, result.swap_rates, result.level_codes, rounds + 1)


def rebuild_ladder(levels: list[Level], codes: list[Tensor], floor: float,
                   max_levels: int) -> tuple[list[Level], list[Tensor]]:
    """One round of `select_ladder` on levels whose chains `codes` (one (C, L) set per level)
    come from a tempering run: the levels and their chains after dropping the levels that
    their neighbours bridge at `floor` and inserting interpolated ones where they do not
    (new levels start from the chains of the nearer end)."""
    return _rebuild(list(levels), list(codes), floor, max_levels)


def _rebuild(levels: list[Level], codes: list[Tensor], floor: float,
             max_levels: int) -> tuple[list[Level], list[Tensor]]:
    """One pass of select_ladder: drop levels that neighbours bridge, bisect weak links."""
    out_levels, out_codes = [levels[0]], [codes[0]]
    i = 0
    K = len(levels)
    while i < K - 1:
        j = i + 1
        while j + 1 < K and expected_swap_rate(levels[i], levels[j + 1], codes[i],
                                               codes[j + 1]) >= floor:
            j += 1
        rate = expected_swap_rate(levels[i], levels[j], codes[i], codes[j])
        if rate < floor:
            wanted = math.ceil(math.sqrt(math.log(max(rate, 1e-12)) / math.log(floor))) - 1
            inserts = min(max(wanted, 1), max_levels - len(out_levels) - (K - j))
            for n in range(1, inserts + 1):
                t = n / (inserts + 1)
                out_levels.append(interpolate_levels(levels[i], levels[j], t))
                # Chains of the nearer end start the new level.
                out_codes.append(codes[i] if t < 0.5 else codes[j])
        out_levels.append(levels[j])
        out_codes.append(codes[j])
        i = j
    return out_levels, out_codes
