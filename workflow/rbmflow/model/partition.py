"""Partition function of a Potts RBM: exact enumeration and annealed importance sampling.

log Z = log sum_v sum_h exp(-E(v, h)), in nats.

Exact values come from enumerating either layer: the hidden one (2^Nh terms, each a product
over sites) or, for tiny L and q, the visible one (q^L terms, each a product over hiddens).

Annealed importance sampling (AIS) moves chains along a path of distributions
p_0, ..., p_K from one whose log Z is known to the RBM, and accumulates importance weights
log w += F_k(v) - F_{k+1}(v) on the way (F the free energy, hiddens summed out). The
temperature path interpolates energies between an independent-site base model (fields b on
the visibles, fitted to the data) and the RBM:

    E_beta(v, h) = beta E_rbm(v, h) + (1 - beta) E_base(v),   E_base(v) = - sum_i b[i, v_i]
    F_beta(v)    = - beta sum_i vbias[i, v_i] - (1 - beta) sum_i b[i, v_i]
                   - sum_mu softplus(beta (hbias[mu] + sum_i W[i, v_i, mu]))

At beta = 0 the hiddens are free, so Z_0 = Z_base 2^Nh. Forward AIS (chains drawn from the
base) estimates Z and is, in expectation, a lower bound on log Z; reverse AIS (chains drawn
from the model, annealed back to the base) estimates 1 / Z and is, in expectation, an upper
bound. Trajectory AIS follows the training checkpoints instead of a temperature.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor
from torch.nn import functional as F

from rbmflow.model.rbm import PottsRBM, sample_categorical

SCHEDULES = ("linear", "sigmoid", "power")


# -- exact enumeration ----------------------------------------------------------------------

def hidden_configurations(num_hiddens: int, device: torch.device | str = "cpu",
                          dtype: torch.dtype = torch.float64) -> Tensor:
    """All 2^Nh binary hidden configurations, (2^Nh, Nh), in binary counting order."""
    index = torch.arange(2**num_hiddens, device=device)
    bits = torch.arange(num_hiddens - 1, -1, -1, device=device)
    return ((index[:, None] >> bits) & 1).to(dtype)


def visible_configurations(num_visibles: int, num_states: int, start: int = 0,
                           stop: int | None = None,
                           device: torch.device | str = "cpu") -> Tensor:
    """Visible configurations number start..stop-1 of all q^L, as codes (n, L), int64.

    Configuration k has v_i = the i-th base-q digit of k, most significant first.
    """
    total = num_states**num_visibles
    stop = total if stop is None else min(stop, total)
    index = torch.arange(start, stop, device=device, dtype=torch.long)
    powers = num_states ** torch.arange(num_visibles - 1, -1, -1, device=device,
                                        dtype=torch.long)
    return (index[:, None] // powers) % num_states


def hidden_log_marginals(model: PottsRBM, hiddens: Tensor) -> Tensor:
    """log sum_v exp(-E(v, h)) for hiddens (n, Nh), in the model's dtype; returns (n,)."""
    return hiddens @ model.hbias + torch.logsumexp(model.visible_logits(hiddens), dim=-1).sum(-1)


def log_partition_exact(model: PottsRBM, batch_size: int = 4096) -> float:
    """log Z by enumerating the hidden layer (2^Nh terms); practical for Nh <= 20 or so.

    sum_v exp(-E(v, h)) factorises over sites: log Z = logsumexp_h [hbias . h +
    sum_i logsumexp_a (vbias[i, a] + sum_mu W[i, a, mu] h_mu)]. Computed in float64.
    """
    if model.num_hiddens > 24:
        raise ValueError(f"2^{model.num_hiddens} hidden configurations is too many to enumerate")
    m = model.to(dtype=torch.float64)
    hiddens = hidden_configurations(m.num_hiddens, m.device)
    terms = [hidden_log_marginals(m, hiddens[start:start + batch_size])
             for start in range(0, hiddens.shape[0], batch_size)]
    return float(torch.logsumexp(torch.cat(terms), dim=0))


def log_partition_exact_visible(model: PottsRBM, batch_size: int = 65536) -> float:
    """log Z by enumerating the visible layer (q^L terms): logsumexp_v -F(v), in float64.

    Only for tiny models (q^L up to about 10^8); it is the independent check on
    `log_partition_exact`, which enumerates the hiddens.
    """
    total = model.num_states**model.num_visibles
    if total > 10**8:
        raise ValueError(f"{model.num_states}^{model.num_visibles} visible configurations is "
                         "too many to enumerate")
    m = model.to(dtype=torch.float64)
    terms = []
    for start in range(0, total, batch_size):
        codes = visible_configurations(m.num_visibles, m.num_states, start, start + batch_size,
                                       m.device)
        terms.append(-m.free_energy(codes))
    return float(torch.logsumexp(torch.cat(terms), dim=0))


def hidden_distribution(model: PottsRBM, batch_size: int = 4096) -> tuple[Tensor, Tensor]:
    """All 2^Nh hidden configurations (2^Nh, Nh) and their exact marginal probabilities
    p(h) (2^Nh,), in the model's dtype."""
    hiddens = hidden_configurations(model.num_hiddens, model.device, model.dtype)
    log_p = torch.cat([hidden_log_marginals(model, hiddens[s:s + batch_size])
                       for s in range(0, hiddens.shape[0], batch_size)])
    return hiddens, torch.softmax(log_p, dim=0)


def sample_exact(model: PottsRBM, num_samples: int,
                 generator: torch.Generator | None = None) -> Tensor:
    """Independent exact draws v ~ p(v) by enumerating the hiddens (Nh <= 20 or so).

    h is drawn from its exact marginal p(h) (2^Nh terms), then v ~ p(v | h). Returns codes
    (num_samples, L), int64, on the model's device.
    """
    if model.num_hiddens > 22:
        raise ValueError(f"2^{model.num_hiddens} hidden configurations is too many to enumerate")
    m = model.to(dtype=torch.float64)
    hiddens, probs = hidden_distribution(m)
    picks = torch.multinomial(probs.cpu(), num_samples, replacement=True,
                              generator=cpu_generator(generator)).to(m.device)
    return sample_categorical(m.visible_logits(hiddens[picks]), generator)


def exact_moments(model: PottsRBM, batch_size: int = 4096) -> tuple[Tensor, Tensor, Tensor]:
    """The model's exact averages <1[v_i = a]>, <h_mu>, <1[v_i = a] h_mu> by enumerating the
    2^Nh hidden configurations: sum_h p(h) p(v_i = a | h) (times h_mu). Since
    E[h | v] = m(v), these are also the averages of m(v) and 1[v_i = a] m(v) that the
    gradient's model term asks for. Returns (L, q), (Nh,), (L, q, Nh) in the model's dtype,
    computed in float64."""
    if model.num_hiddens > 22:
        raise ValueError(f"2^{model.num_hiddens} hidden configurations is too many to enumerate")
    m = model.to(dtype=torch.float64)
    hiddens, probs = hidden_distribution(m, batch_size)
    L, q, nh = m.weight_matrix.shape
    v = torch.zeros(L * q, dtype=torch.float64, device=m.device)
    vh = torch.zeros(L * q, nh, dtype=torch.float64, device=m.device)
    for s in range(0, hiddens.shape[0], batch_size):
        h, p = hiddens[s:s + batch_size], probs[s:s + batch_size]
        conditional = torch.softmax(m.visible_logits(h), dim=-1).reshape(h.shape[0], L * q)
        weighted = conditional * p[:, None]
        v += weighted.sum(0)
        vh += weighted.T @ h
    out = (v.view(L, q), probs @ hiddens, vh.view(L, q, nh))
    return tuple(t.to(model.dtype) for t in out)  # type: ignore[return-value]


def cpu_generator(generator: torch.Generator | None) -> torch.Generator | None:
    """A CPU generator seeded from `generator` (torch.multinomial wants one on the CPU)."""
    if generator is None or generator.device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator().manual_seed(seed)


# -- free energies and log-likelihood ------------------------------------------------------

def free_energies(model: PottsRBM, codes: Tensor, batch_size: int = 8192) -> Tensor:
    """F(v) for codes (M, L) in batches; returns (M,) in float64 on the model's device."""
    out = [model.free_energy(codes[s:s + batch_size].to(model.device)).double()
           for s in range(0, codes.shape[0], batch_size)]
    if not out:
        return torch.zeros(0, dtype=torch.float64, device=model.device)
    return torch.cat(out)


def mean_log_likelihood(model: PottsRBM, codes: Tensor, log_z: float,
                        weights: Tensor | None = None, batch_size: int = 8192) -> float:
    """Weighted mean over sequences of log p(v) = -F(v) - log Z, in nats per sequence.

    Returns NaN for an empty set of sequences.
    """
    if codes.shape[0] == 0:
        return math.nan
    neg_f = -free_energies(model, codes, batch_size)
    if weights is None:
        return float(neg_f.mean()) - log_z
    w = weights.to(device=neg_f.device, dtype=torch.float64)
    return float((w * neg_f).sum() / w.sum()) - log_z


# -- the independent-site base model -------------------------------------------------------

@dataclass
class IndependentSites:
    """p(v) = prod_i exp(fields[i, v_i]) / z_i: the base of the AIS paths; fields (L, q)."""

    fields: Tensor

    @classmethod
    def from_codes(cls, codes: Tensor, num_states: int, weights: Tensor | None = None,
                   pseudocount: float = 0.01) -> IndependentSites:
        """Fit to the weighted site frequencies f_i(a) of codes (M, L), fields =
        log((1 - pseudocount) f_i(a) + pseudocount / q), so no state is impossible."""
        if weights is None:
            weights = torch.ones(codes.shape[0], dtype=torch.float64, device=codes.device)
        w = weights.to(device=codes.device, dtype=torch.float64)
        L = codes.shape[1]
        flat = codes.long() + torch.arange(L, device=codes.device) * num_states
        counts = torch.zeros(L * num_states, dtype=torch.float64, device=codes.device)
        counts.index_add_(0, flat.reshape(-1), w.repeat_interleave(L))
        freqs = counts.view(L, num_states) / w.sum()
        return cls(torch.log((1 - pseudocount) * freqs + pseudocount / num_states))

    @classmethod
    def uniform(cls, num_visibles: int, num_states: int,
                device: torch.device | str = "cpu") -> IndependentSites:
        return cls(torch.zeros(num_visibles, num_states, dtype=torch.float64, device=device))

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> IndependentSites:
        return IndependentSites(self.fields.to(device=device, dtype=dtype))

    def log_partition(self) -> float:
        return float(torch.logsumexp(self.fields.double(), dim=-1).sum())

    def site_fields(self, codes: Tensor) -> Tensor:
        """sum_i fields[i, v_i] for codes (C, L); returns (C,)."""
        L, q = self.fields.shape
        offsets = torch.arange(L, device=codes.device) * q
        return self.fields.reshape(-1)[codes.long() + offsets].sum(-1)

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        logits = self.fields.expand(num_samples, -1, -1)
        return sample_categorical(logits, generator)


# -- annealing schedules -------------------------------------------------------------------

def beta_schedule(num_betas: int, kind: str = "sigmoid", sharpness: float = 4.0) -> Tensor:
    """Inverse temperatures 0 = beta_0 < ... < beta_{K-1} = 1 (float64, K = num_betas).

    linear: evenly spaced. sigmoid: sigmoid(linspace(-s, s)) rescaled to [0, 1], denser near
    both ends (s = sharpness). power: linspace(0, 1)^s, denser near beta = 0, where the base
    fields are traded for the RBM's.
    """
    if num_betas < 2:
        raise ValueError("an annealing schedule needs at least 2 inverse temperatures")
    x = torch.linspace(0, 1, num_betas, dtype=torch.float64)
    if kind == "linear":
        betas = x
    elif kind == "sigmoid":
        s = torch.sigmoid(sharpness * (2 * x - 1))
        betas = (s - s[0]) / (s[-1] - s[0])
    elif kind == "power":
        betas = x**sharpness
    else:
        raise ValueError(f"unknown schedule {kind!r}; choose from {', '.join(SCHEDULES)}")
    betas[0], betas[-1] = 0.0, 1.0
    return betas


# -- the annealed Gibbs kernel -------------------------------------------------------------

@dataclass(frozen=True)
class PathPoint:
    """One distribution of an annealing path: beta E_model + (1 - beta) E_base."""

    model: PottsRBM
    beta: float


@dataclass(frozen=True)
class _Features:
    """What the free energies of a path point need from codes: hidden inputs (C, Nh) of the
    point's model, its visible fields (C,) and the base fields (C,)."""

    inputs: Tensor
    model_fields: Tensor
    base_fields: Tensor


def _features(model: PottsRBM, base: IndependentSites, codes: Tensor) -> _Features:
    return _Features(model.hidden_inputs(codes), model.visible_fields(codes).double(),
                     base.site_fields(codes).double())


def _free_energy(beta: float, feats: _Features) -> Tensor:
    out = -F.softplus(beta * feats.inputs.double()).sum(-1)
    return out - beta * feats.model_fields - (1.0 - beta) * feats.base_fields


def annealed_free_energy(point: PathPoint, base: IndependentSites, codes: Tensor) -> Tensor:
    """F_beta(v) of the interpolated distribution for codes (C, L), in float64; (C,)."""
    return _free_energy(point.beta, _features(point.model, base, codes))


def annealed_gibbs_sweep(point: PathPoint, base: IndependentSites, codes: Tensor,
                         inputs: Tensor | None = None,
                         generator: torch.Generator | None = None) -> Tensor:
    """One block-Gibbs sweep v -> h -> v of the interpolated distribution; returns codes.

    h_mu ~ Bernoulli(sigmoid(beta I_mu(v))), v_i ~ softmax(beta (vbias + W h)_i + (1 - beta) b_i).
    """
    m, beta = point.model, point.beta
    if inputs is None:
        inputs = m.hidden_inputs(codes)
    mag = torch.sigmoid(beta * inputs)
    h = (torch.rand(mag.shape, generator=generator, device=mag.device, dtype=mag.dtype)
         < mag).to(m.dtype)
    logits = m.visible_logits(h, beta)
    if beta != 1.0:
        logits = logits + (1.0 - beta) * base.fields
    return sample_categorical(logits, generator)


def _anneal(points: Iterable[PathPoint], base: IndependentSites, codes: Tensor,
            sweeps: int, generator: torch.Generator | None,
            record: dict[int, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Run AIS from chains `codes` (drawn from the first point) along `points`.

    At each step k: log w += F_k(v) - F_{k+1}(v), then `sweeps` Gibbs sweeps at p_{k+1}.
    `points` may be a lazy iterator. Hidden inputs are shared between consecutive points of
    the same model. With `record` (a dict whose keys are point indices), the log-weights
    reached at those points are stored in it. Returns (log_w (C,) float64, final codes).
    """
    log_w = torch.zeros(codes.shape[0], dtype=torch.float64, device=codes.device)
    points = iter(points)
    here = next(points)
    if record is not None and 0 in record:
        record[0] = log_w.clone()
    feats = _features(here.model, base, codes)
    for k, there in enumerate(points, start=1):
        feats_there = feats if there.model is here.model else _features(there.model, base, codes)
        log_w += _free_energy(here.beta, feats) - _free_energy(there.beta, feats_there)
        if record is not None and k in record:
            record[k] = log_w.clone()
        for sweep in range(sweeps):
            codes = annealed_gibbs_sweep(there, base, codes,
                                         feats_there.inputs if sweep == 0 else None, generator)
        feats = _features(there.model, base, codes)
        here = there
    return log_w, codes


# -- estimates and their error bars --------------------------------------------------------

def log_mean_exp(log_w: Tensor) -> float:
    return float(torch.logsumexp(log_w.double(), dim=0)) - math.log(log_w.shape[0])


def effective_sample_size(log_w: Tensor) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2 of importance weights given as logs."""
    lw = log_w.double()
    return float(torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)))


def bootstrap_std(log_w: Tensor, num_resamples: int = 200,
                  generator: torch.Generator | None = None) -> float:
    """Bootstrap standard deviation of log mean w over the chains."""
    n = log_w.shape[0]
    gen = cpu_generator(generator)
    picks = torch.randint(0, n, (num_resamples, n), generator=gen).to(log_w.device)
    estimates = torch.logsumexp(log_w.double()[picks], dim=1)
    return float(estimates.std())


@dataclass
class AISResult:
    """An AIS estimate of log Z (nats).

    log_z pools all chains; log_z_std is the larger of the bootstrap error of the pooled
    estimate and the spread of the independent repeats divided by sqrt(repeats). ess is the
    Kish effective sample size of the pooled weights; ess_fraction = ess / chains.
    direction: 'forward' (base -> model) or 'reverse' (model -> base).
    """

    log_z: float
    log_z_std: float
    ess: float
    n_chains: int
    n_betas: int
    repeats: int
    direction: str
    repeat_log_z: list[float]
    log_z_base: float
    time_s: float
    log_weights: Tensor = field(repr=False)
    final_codes: Tensor | None = field(default=None, repr=False)

    @property
    def ess_fraction(self) -> float:
        return self.ess / max(self.log_weights.shape[0], 1)

    def summary(self) -> dict:
        """JSON-ready fields."""
        return {
            "log_z": self.log_z, "log_z_std": self.log_z_std, "ess": self.ess,
            "ess_fraction": self.ess_fraction, "n_chains": self.n_chains,
            "n_betas": self.n_betas, "repeats": self.repeats, "direction": self.direction,
            "repeat_log_z": self.repeat_log_z, "log_z_base": self.log_z_base,
            "time_s": self.time_s,
        }


def _summarise(log_w: Tensor, repeats: int, sign: float, log_z0: float, n_betas: int,
               direction: str, started: float,
               generator: torch.Generator | None) -> AISResult:
    """log Z = log Z0 + sign * log mean w (sign -1 for reverse AIS, which estimates 1/Z)."""
    groups = log_w.view(repeats, -1)
    repeat_log_z = [log_z0 + sign * log_mean_exp(g) for g in groups]
    std = bootstrap_std(log_w, generator=generator)
    if repeats > 1:
        std = max(std, float(torch.tensor(repeat_log_z).std()) / math.sqrt(repeats))
    return AISResult(
        log_z=log_z0 + sign * log_mean_exp(log_w), log_z_std=std,
        ess=effective_sample_size(log_w), n_chains=groups.shape[1], n_betas=n_betas,
        repeats=repeats, direction=direction, repeat_log_z=repeat_log_z, log_z_base=log_z0,
        time_s=time.perf_counter() - started, log_weights=log_w.cpu(),
    )


def _temperature_path(model: PottsRBM, betas: Tensor) -> list[PathPoint]:
    return [PathPoint(model, float(b)) for b in betas]


def ais_log_partition(model: PottsRBM, base: IndependentSites, n_chains: int = 1000,
                      n_betas: int = 3000, schedule: str = "sigmoid", sweeps: int = 1,
                      repeats: int = 1,
                      generator: torch.Generator | None = None) -> AISResult:
    """Forward AIS: chains drawn exactly from the base, annealed to the RBM by temperature.

    Runs repeats x n_chains chains together (the repeats are independent groups of chains).
    E[exp(estimate)] = Z; the log is biased low, so it is a stochastic lower bound.
    """
    started = time.perf_counter()
    base = base.to(model.device, model.dtype)
    betas = beta_schedule(n_betas, schedule)
    codes = base.sample(repeats * n_chains, generator)
    with torch.no_grad():
        log_w, last = _anneal(_temperature_path(model, betas), base, codes, sweeps, generator)
    log_z0 = base.log_partition() + model.num_hiddens * math.log(2.0)
    result = _summarise(log_w, repeats, 1.0, log_z0, n_betas, "forward", started, generator)
    return replace(result, final_codes=last.cpu())


def reverse_ais_log_partition(model: PottsRBM, base: IndependentSites, model_samples: Tensor,
                              n_betas: int = 3000, schedule: str = "sigmoid", sweeps: int = 1,
                              repeats: int = 1,
                              generator: torch.Generator | None = None) -> AISResult:
    """Reverse AIS: chains started at samples of the RBM, annealed back to the base.

    model_samples (C, L) must be (close to) equilibrium draws of the model; C must be a
    multiple of `repeats`. The weights estimate Z_0 / Z, so log Z = log Z_0 - log mean w is
    in expectation an upper bound: with forward AIS it brackets log Z, and a wide gap between
    the two says that at least one of them is not to be trusted.
    """
    if model_samples.shape[0] % repeats:
        raise ValueError(f"{model_samples.shape[0]} chains do not split into {repeats} repeats")
    started = time.perf_counter()
    base = base.to(model.device, model.dtype)
    betas = beta_schedule(n_betas, schedule).flip(0)
    with torch.no_grad():
        log_w, _ = _anneal(_temperature_path(model, betas), base,
                           model_samples.to(model.device).long(), sweeps, generator)
    log_z0 = base.log_partition() + model.num_hiddens * math.log(2.0)
    return _summarise(log_w, repeats, -1.0, log_z0, n_betas, "reverse", started, generator)


def interpolate(first: PottsRBM, second: PottsRBM, t: float) -> PottsRBM:
    """The RBM with parameters (1 - t) first + t second."""
    return PottsRBM(*((1 - t) * a + t * b for a, b in zip(first.tensors(), second.tensors(),
                                                          strict=True)))


@dataclass
class TrajectoryResult:
    """Trajectory AIS: log Z at every checkpoint (nats), with error bars and ESS."""

    log_z: list[float]
    log_z_std: list[float]
    ess: list[float]
    steps: list[int]
    n_chains: int
    n_betas_first: int
    repeats: int
    time_s: float
    final: AISResult


def allocate_steps(models: Sequence[PottsRBM], total_steps: int,
                   reference_codes: Tensor | None = None,
                   reference_weights: Tensor | None = None) -> list[int]:
    """Split `total_steps` annealing steps among the intervals between consecutive models.

    With reference sequences (the training data, a proxy for samples of every checkpoint),
    interval k gets steps in proportion to the spread (weighted std) of F_k(v) - F_{k+1}(v)
    over them, which minimises the summed variance of the AIS log-weights; otherwise the
    steps are shared evenly. Every interval gets at least one step.
    """
    intervals = len(models) - 1
    if intervals <= 0:
        return []
    if reference_codes is None:
        spreads = torch.ones(intervals, dtype=torch.float64)
    else:
        w = (torch.ones(reference_codes.shape[0], dtype=torch.float64)
             if reference_weights is None else reference_weights.double().cpu())
        w = w / w.sum()
        energies = [free_energies(m, reference_codes).cpu() for m in models]
        spreads = torch.empty(intervals, dtype=torch.float64)
        for k in range(intervals):
            diff = energies[k] - energies[k + 1]
            mean = (w * diff).sum()
            spreads[k] = ((w * (diff - mean) ** 2).sum()).sqrt()
        spreads = spreads.clamp_min(1e-3 * float(spreads.max().clamp_min(1e-12)))
    share = spreads / spreads.sum() * max(total_steps - intervals, 0)
    return [1 + int(round(float(s))) for s in share]


def _trajectory_path(models: Sequence[PottsRBM], steps: Sequence[int], n_betas_first: int,
                     schedule: str) -> Iterator[PathPoint]:
    """Temperature path base -> models[0], then `steps[k]` interpolation steps from model k to
    model k + 1 (built one at a time, so long paths take no memory)."""
    yield from _temperature_path(models[0], beta_schedule(n_betas_first, schedule))
    for k, n_sub in enumerate(steps):
        for j in range(1, n_sub):
            yield PathPoint(interpolate(models[k], models[k + 1], j / n_sub), 1.0)
        yield PathPoint(models[k + 1], 1.0)


def trajectory_ais(models: Sequence[PottsRBM], base: IndependentSites, n_chains: int = 1000,
                   n_steps: int = 5000, n_betas_first: int = 1000, schedule: str = "sigmoid",
                   sweeps: int = 1, repeats: int = 1,
                   reference_codes: Tensor | None = None,
                   reference_weights: Tensor | None = None,
                   generator: torch.Generator | None = None) -> TrajectoryResult:
    """AIS along a training trajectory: log Z of every model in `models` (checkpoints, in
    training order, same shapes).

    The chains are drawn from the base, annealed by temperature to models[0] (n_betas_first
    inverse temperatures), then along the linear interpolations between consecutive
    checkpoints (n_steps in all, allocated by `allocate_steps`). The log-weights reached at a
    checkpoint give the forward AIS estimate of its log Z, so one run yields all of them.
    """
    if not models:
        raise ValueError("trajectory AIS needs at least one model")
    started = time.perf_counter()
    first = models[0]
    base = base.to(first.device, first.dtype)
    steps = allocate_steps(models, n_steps, reference_codes, reference_weights)
    marks = list(itertools.accumulate(steps, initial=n_betas_first - 1))
    record: dict[int, Tensor] = dict.fromkeys(marks)  # type: ignore[arg-type]
    codes = base.sample(repeats * n_chains, generator)
    with torch.no_grad():
        _anneal(_trajectory_path(models, steps, n_betas_first, schedule), base, codes, sweeps,
                generator, record)
    log_z0 = base.log_partition() + first.num_hiddens * math.log(2.0)
    results = [_summarise(record[m], repeats, 1.0, log_z0, m + 1, "forward", started, generator)
               for m in marks]
    return TrajectoryResult(
        log_z=[r.log_z for r in results], log_z_std=[r.log_z_std for r in results],
        ess=[r.ess for r in results], steps=steps, n_chains=n_chains,
        n_betas_first=n_betas_first, repeats=repeats, time_s=time.perf_counter() - started,
        final=results[-1],
    )


# -- models with a known difficulty, to validate the estimators ----------------------------
