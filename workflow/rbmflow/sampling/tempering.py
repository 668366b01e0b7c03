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

All levels advance together (`StackedLevels`): level k is the model with parameters
beta_k theta_k at beta 1, the K parameter sets are stacked, and a round costs one batched
product, one embedding-bag per evaluation of hidden inputs and one categorical draw for every
level at once, with no loop over levels.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.nn import functional as F

from rbmflow.model.kernels import LOG2_E, sample_categorical_base2
from rbmflow.model.rbm import (
    CPU_BLOCK_LOGITS,
    PottsRBM,
    _bernoulli,
    balanced_starts,
    block_pool,
    random_codes,
)

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
    swaps_accepted: list[float] = field(default_factory=list)

    @property
    def min_swap_rate(self) -> float | None:
        return min(self.swap_rates) if self.swap_rates else None


class StackedLevels:
    """The levels of a ladder as one batch of parameters, swept together.

    Level k, exp(-model_k.free_energy(v, beta_k)), is the model with parameters
    beta_k theta_k at beta = 1; the K levels are stacked as weight (K, L*q, Nh), vbias (K, L*q)
    and hbias (K, Nh). A half-sweep of every level is one embedding-bag (hidden inputs of all
    K x C chains) or one batched product (visible logits), and one draw.
    """

    def __init__(self, levels: Sequence[Level]) -> None:
        first = levels[0].model
        L, q, nh = first.weight_matrix.shape
        dtype, device = first.dtype, first.device
        for level in levels:
            if level.model.weight_matrix.shape != (L, q, nh):
                raise ValueError("tempering levels must share L, q and Nh")
        self.num_levels, self.num_visibles, self.num_states = len(levels), L, q
        betas = torch.tensor([lv.beta for lv in levels], dtype=dtype, device=device)
        self.weight = torch.stack([lv.model.weight_matrix.to(device, dtype).reshape(L * q, nh)
                                   for lv in levels]).mul_(betas[:, None, None])
        self.vbias = torch.stack([lv.model.vbias.to(device, dtype).reshape(L * q)
                                  for lv in levels]).mul_(betas[:, None])
        self.hbias = torch.stack([lv.model.hbias.to(device, dtype)
                                  for lv in levels]).mul_(betas[:, None])
        # Per-site constants out of the logits (see rbm._VisibleSampler): exact, for range only.
        # The draw's logits are in bits (log2(e) folded in): exp2 is cheaper than exp.
        centre = (self.vbias + 0.5 * self.weight.sum(-1)).view(-1, L, q)
        self.weight_t = self.weight.transpose(1, 2).mul(LOG2_E).contiguous()  # (K, Nh, L*q)
        self.draw_bias = (self.vbias.view(-1, L, q)
                          - centre.amax(-1, keepdim=True)).reshape(-1, 1, L * q).mul_(LOG2_E)
        self.offsets = torch.arange(0, L * q, q, device=device, dtype=torch.long)
        self.all = torch.arange(self.num_levels, device=device)

    def inputs(self, codes: Tensor, which: Tensor) -> Tensor:
        """Hidden inputs (G, C, Nh) of codes (G, C, L) under the levels `which` (G,)."""
        G, C, L = codes.shape
        nh = self.weight.shape[-1]
        flat = codes + self.offsets + (which * (L * self.num_states))[:, None, None]
        out = F.embedding_bag(flat.view(G * C, L), self.weight.view(-1, nh), mode="sum")
        return out.view(G, C, nh).add_(self.hbias[which][:, None, :])

    def free_energy(self, codes: Tensor, which: Tensor, inputs: Tensor) -> Tensor:
        """F of codes (G, C, L) under the levels `which` (G,), given their inputs; float64."""
        L = self.num_visibles
        flat = codes + self.offsets + (which * (L * self.num_states))[:, None, None]
        fields = self.vbias.view(-1)[flat].sum(-1)
        return (-fields - F.softplus(inputs).sum(-1)).double()

    def draw_visibles(self, hiddens: Tensor, generator: torch.Generator | None) -> Tensor:
        """v ~ p_k(v | h) for hiddens (K, C, Nh) at every level; codes (K, C, L)."""
        logits = torch.baddbmm(self.draw_bias, hiddens, self.weight_t)
        K, C = hiddens.shape[:2]
        return sample_categorical_base2(
            logits.view(K, C, self.num_visibles, self.num_states), generator)


@dataclass
class _BlockState:
    """A block of chains at every level during a run: codes (K, C, L), their hidden inputs at
    their own levels, the replica each slot carries and swap and passage counts."""

    codes: Tensor
    inputs: Tensor
    replica: Tensor
    last_end: Tensor
    accepted: Tensor
    passages: Tensor
    trace: list[Tensor] = field(default_factory=list)


def _swap(stack: StackedLevels, state: _BlockState, parity: int,
          generator: torch.Generator | None) -> None:
    """Metropolis swaps between the pairs (k, k+1), k = parity, parity + 2, ...; in place."""
    K = stack.num_levels
    lower = torch.arange(parity, K - 1, 2, device=state.codes.device)
    if lower.numel() == 0:
        return
    upper = lower + 1
    codes, inputs = state.codes, state.inputs
    f_low = stack.free_energy(codes[lower], lower, inputs[lower])
    f_up = stack.free_energy(codes[upper], upper, inputs[upper])
    in_low_of_up = stack.inputs(codes[upper], lower)
    in_up_of_low = stack.inputs(codes[lower], upper)
    log_ratio = (f_low + f_up - stack.free_energy(codes[upper], lower, in_low_of_up)
                 - stack.free_energy(codes[lower], upper, in_up_of_low))
    u = torch.rand(log_ratio.shape, generator=generator, device=log_ratio.device,
                   dtype=torch.float64)
    swap = u.log_() < log_ratio
    state.accepted[lower] += swap.sum(1)
    s3 = swap[..., None]
    codes_low, codes_up = codes[lower], codes[upper]
    codes[lower] = torch.where(s3, codes_up, codes_low)
    codes[upper] = torch.where(s3, codes_low, codes_up)
    inputs[lower] = torch.where(s3, in_low_of_up, inputs[lower])
    inputs[upper] = torch.where(s3, in_up_of_low, inputs[upper])
    rep_low, rep_up = state.replica[lower], state.replica[upper]
    state.replica[lower] = torch.where(swap, rep_up, rep_low)
    state.replica[upper] = torch.where(swap, rep_low, rep_up)


def _run_block(stack: StackedLevels, codes: Tensor, sweeps: int,
               generator: torch.Generator | None,
               observable: Callable[[Tensor], Tensor] | None, record_every: int) -> _BlockState:
    """`sweeps` rounds of (one sweep at every level, swaps) on chains codes (K, C, L)."""
    K, C, _ = codes.shape
    device = codes.device
    state = _BlockState(
        codes=codes, inputs=stack.inputs(codes, stack.all),
        replica=torch.arange(K * C, device=device).view(K, C),
        last_end=torch.zeros(K * C, dtype=torch.int8, device=device),
        accepted=torch.zeros(max(K - 1, 1), dtype=torch.float64, device=device),
        passages=torch.zeros((), dtype=torch.long, device=device))
    state.last_end[:C] = -1  # the replicas that start at the first level
    for sweep in range(1, sweeps + 1):
        hiddens = _bernoulli(state.inputs.sigmoid_(), generator)
        state.codes = stack.draw_visibles(hiddens, generator)
        state.inputs = stack.inputs(state.codes, stack.all)
        if K > 1:
            _swap(stack, state, sweep % 2, generator)
            state.passages += (state.last_end[state.replica[-1]] == -1).sum()
            state.last_end[state.replica[-1]] = 1
            state.last_end[state.replica[0]] = -1
        if observable is not None and (sweep % record_every == 0 or sweep == sweeps):
            state.trace.append(observable(state.codes[-1]).float())
    return state


def _chain_blocks(num_levels: int, num_chains: int, site_states: int,
                  device: torch.device) -> list[int]:
    """Start of each block of chains a run processes at once (all levels of a block together:
    chain c of every level only ever swaps with chain c of a neighbour, so blocks are
    independent). On the CPU a block's logits, K x block x L*q, stay within a few times
    CPU_BLOCK_LOGITS, in equal blocks of an even count (balanced_starts); elsewhere one block
    holds every chain."""
    if device.type != "cpu":
        return [0]
    return balanced_starts(num_chains, max(16, 4 * CPU_BLOCK_LOGITS // (num_levels * site_states)))



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


def _initial_codes(levels: Sequence[Level], num_chains: int,
                   generator: torch.Generator | None,
                   init: Tensor | Sequence[Tensor] | None) -> Tensor:
    """Starting codes (K, C, L) of a run: `init` for every level, one set per level, or
    uniformly random sequences."""
    first = levels[0].model
    device, L, q, K = first.device, first.num_visibles, first.num_states, len(levels)
    if init is None:
        return torch.stack([random_codes(num_chains, L, q, device, generator)
                            for _ in range(K)])
    if isinstance(init, Tensor):
        sets = [init] * K
    else:
        if len(init) != K:
            raise ValueError(f"{len(init)} initial sets for {K} levels")
        sets = list(init)
    for c in sets:
        if c.dim() != 2 or c.shape != (sets[0].shape[0], L):
            raise ValueError(f"initial codes of shape {tuple(c.shape)}, expected (C, {L})")
    return torch.stack([c.to(device).long() for c in sets])


def temper(levels: Sequence[Level], num_chains: int, sweeps: int,
           generator: torch.Generator | None = None,
           init: Tensor | Sequence[Tensor] | None = None,
           observable: Callable[[Tensor], Tensor] | None = None,
           record_every: int = 1, log_every: int = 0) -> TemperingResult:
    """Run `sweeps` rounds of (one Gibbs sweep at every level, then swaps) on `levels`.

    All levels advance together as one batched computation (`StackedLevels`). On the CPU the
    chains are cut into blocks (all levels of chains c0..c1 at once) run on
    torch.get_num_threads() worker threads, each block with its own generator seeded from
    `generator`, so a seed gives the same result whatever the number of threads.
    log_every: kept for compatibility (progress is logged once, at the end).

    init: starting codes (C, L) for every level, or one (C, L) tensor per level; default
    uniformly random sequences. observable: maps the target chains (C, L) to (C, d) values,
    recorded every `record_every` sweeps (and at the last) into the result's trace.
    """
    if not levels:
        raise ValueError("tempering needs at least one level")
    started = time.perf_counter()
    codes = _initial_codes(levels, num_chains, generator, init)
    K, C, L = codes.shape
    stack = StackedLevels(levels)
    starts = _chain_blocks(K, C, L * stack.num_states, codes.device)
    stops = starts[1:] + [C]
    seeds = (torch.randint(0, 2**62, (len(starts),), generator=generator).tolist()
             if codes.device.type == "cpu" else [])

    def run(k: int) -> _BlockState:
        with torch.no_grad():
            g = generator if codes.device.type != "cpu" else torch.Generator().manual_seed(
                seeds[k])
            return _run_block(stack, codes[:, starts[k]:stops[k]].clone(), sweeps, g,
                              observable, record_every)

    states = _run_blocks(run, len(starts))
    accepted = torch.stack([s.accepted for s in states]).sum(0).tolist()[:max(K - 1, 0)]
    attempts = [C * ((sweeps + (k % 2 == 1)) // 2) for k in range(K - 1)]
    rates = [a / n if n else math.nan for a, n in zip(accepted, attempts, strict=True)]
    final = torch.cat([s.codes for s in states], dim=1)
    trace = None
    if observable is not None and sweeps > 0:
        trace = torch.stack([torch.cat(parts, dim=0) for parts in
                             zip(*(s.trace for s in states), strict=True)])
    elapsed = time.perf_counter() - started
    if log_every and sweeps >= log_every:
        log.info("tempering: %d sweeps of %d levels x %d chains in %.1f s; swap rates %s",
                 sweeps, K, C, elapsed, ", ".join(f"{r:.2f}" for r in rates))
    return TemperingResult(
        codes=final[-1], level_codes=list(final.unbind(0)), swap_rates=rates,
        swap_attempts=attempts, sweeps=sweeps, labels=[lv.label for lv in levels],
        elapsed_s=elapsed, passages=int(sum(int(s.passages) for s in states)),
        trace=trace,
        trace_sweeps=[t for t in range(1, sweeps + 1) if t % record_every == 0 or t == sweeps]
        if observable is not None else [],
        swaps_accepted=accepted)


def _run_blocks(run: Callable[[int], _BlockState], num_blocks: int) -> list[_BlockState]:
    """run(k) for every block, on torch.get_num_threads() single-threaded workers."""
    threads = torch.get_num_threads()
    if threads == 1 or num_blocks == 1:
        return [run(k) for k in range(num_blocks)]

    def single_threaded(k: int) -> _BlockState:
        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)
        return run(k)

    try:
        pool = block_pool(threads)
        return [done.result() for done in [pool.submit(single_threaded, k)
                                           for k in range(num_blocks)]]
    finally:
        torch.set_num_threads(threads)


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
