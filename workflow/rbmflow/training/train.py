"""Maximum-likelihood training of a Potts-Bernoulli RBM: PCD, CD-k and Rdm.

The log-likelihood gradient of a parameter theta is <-dE/dtheta>_data - <-dE/dtheta>_model:

    dW[i, a, mu]  = <1[v_i = a] m_mu(v)>_data - <1[v_i = a] m_mu(v)>_model
    dvbias[i, a]  = <1[v_i = a]>_data       - <1[v_i = a]>_model
    dhbias[mu]    = <m_mu(v)>_data           - <m_mu(v)>_model

with m(v) = sigmoid(hbias + sum_i W[i, v_i, :]) the conditional magnetisations of the hidden
units (no hidden states are sampled for the gradient). Data averages use the normalised
sequence weights; model averages are plain means over the Markov chains, which are updated by
k block-Gibbs sweeps per gradient update:

- pcd: persistent chains, carried from one update to the next (default);
- cd:  chains started at the data batch (CD-k);
- rdm: chains restarted from uniformly random sequences at every update.

The centred gradient (default) subtracts the data centres vbar = <v>_data, hbar = <m>_data:
dW_c = dW - vbar (x) dhbias - dvbias (x) hbar, dvbias_c = dvbias - dW_c . hbar,
dhbias_c = dhbias - vbar . dW_c; it is the gradient of the centred parametrisation mapped back
to (W, vbias, hbias) and has the same fixed points as the plain gradient. The L1/L2 penalties
(l1 sum|W| + (l2 / 2) sum W^2, weights only) enter the plain dW before centring.
After each update the zero-sum gauge is applied to all Potts parameters.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from rbmflow.data.dataset import TEST, TRAIN, EncodedAlignment, load_encoded
from rbmflow.data.subfamilies import Separation, separation
from rbmflow.errors import InputError, RbmflowError
from rbmflow.evaluation.stats import (
    MAX_PAIR_ENTRIES,
    connected_correlations,
    pair_statistics_fit,
    pearson,
)
from rbmflow.model import archive
from rbmflow.model.rbm import PottsRBM, one_hot, random_codes, sample_categorical
from rbmflow.provenance import FORMAT_VERSION, provenance
from rbmflow.sampling.equilibrium import (
    CheckpointDensity,
    EquilibriumMonitor,
    ReweightedChains,
    TrajectoryTempering,
)
from rbmflow.training import checkpoints
from rbmflow.training.checkpoints import archive_copy, partial_path  # noqa: F401 (public here too)

log = logging.getLogger(__name__)

METHODS = ("pcd", "cd", "rdm")
AUTO = "auto"
AUTO_REFRESH_EVERY = 5
"""refresh_every chosen by "auto" on separated subfamilies ..."""
AUTO_LR_DECAY = 0.05
"""... and the lr_decay that goes with it (a constant step outruns the refreshes)."""
REFRESH_HINT = (f"; if this persists, train with refresh_every: {AUTO_REFRESH_EVERY} and "
                f"lr_decay: {AUTO_LR_DECAY} (chains refreshed by trajectory tempering, a "
                "decaying step; README: Equilibrium across modes)")
LOG_COLUMNS = ("update", "time_s", "learning_rate", "pearson_cij_train", "pearson_cij_test",
               "free_energy_data", "free_energy_chains", "chains_ess",
               "monitor_reference", "monitor_ks", "monitor_occupancy_tv", "monitor_ks_critical")


@dataclass(frozen=True)
class TrainSettings:
    """Hyperparameters of one run (the `runs:` entries of the config, documented in the README).

    normalize_gradient: divide the gradient by its Euclidean norm over all parameters before
    the step, as the `rbms` package does, so that `learning_rate` is the length of a step in
    parameter space. lr_decay: ratio of the final to the initial learning rate, reached by
    exponential decay (1.0: constant) that starts after the fraction `lr_decay_from` of the
    updates (0: at once). Without a decay unit-norm steps never settle: the mode weights of
    a multimodal model keep jumping.
    checkpoints: number of log-spaced checkpoints, the last update always included.
    log_every: updates between two rows of train_log.csv.
    pseudocount: mixing weight of the uniform distribution in the site frequencies that
    initialise vbias. init_std: standard deviation of the initial weights.
    reweight (pcd only): Jarzynski-reweighted persistent chains (`equilibrium`), resampled
    when their effective sample size falls under `min_ess` x chains; the chains are also
    resampled at each checkpoint, so the saved chains are equally weighted samples.
    swap_threshold: an extra checkpoint is saved when the estimated swap acceptance between
    the last saved model and the current one falls under it (0: log-spaced ones only).
    monitor (pcd only): compare the chains with equilibrium samples at each log row
    (`equilibrium.EquilibriumMonitor`).
    refresh_every (pcd only): every that many updates, replace the persistent chains by
    `refresh_sweeps` rounds of parallel trajectory tempering over snapshots of the model
    taken during training (`equilibrium.TrajectoryTempering`; 0: never). The snapshots must
    cover the whole run: a ladder started halfway does not carry chains between modes.
    "auto" (refresh_every, lr_decay): decided from the training sequences by `resolved`:
    refreshes every `AUTO_REFRESH_EVERY` updates with a step decaying to `AUTO_LR_DECAY` x
    when they fall into separated subfamilies (`subfamilies.separation`), plain PCD with a
    constant step otherwise. `refreshed`, `refresh_due`, `learning_rate_at` and `resume_key`
    need resolved settings.
    """

    hidden: int = 100
    updates: int = 600
    chains: int = 2000
    batch_size: int = 2000
    gibbs_steps: int = 10
    learning_rate: float = 0.2
    lr_decay: float | str = AUTO
    lr_decay_from: float = 0.0
    method: str = "pcd"
    l1: float = 0.0
    l2: float = 0.0
    centered: bool = True
    normalize_gradient: bool = True
    checkpoints: int = 50
    log_every: int = 50
    seed: int = 0
    pseudocount: float = 1e-3
    init_std: float = 0.01
    reweight: bool = False
    min_ess: float = 0.5
    swap_threshold: float = 0.3
    monitor: bool = True
    refresh_every: int | str = AUTO
    refresh_sweeps: int = 20

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise RbmflowError(f"method must be one of {METHODS}, got {self.method!r}")
        for key in ("hidden", "updates", "chains", "batch_size", "gibbs_steps", "checkpoints",
                    "log_every"):
            if getattr(self, key) < 1:
                raise RbmflowError(f"{key} must be at least 1, got {getattr(self, key)}")
        if any(isinstance(v, str) and v != AUTO for v in (self.refresh_every, self.lr_decay)):
            raise RbmflowError(f"refresh_every and lr_decay take a number or {AUTO!r}, got "
                               f"{self.refresh_every!r} and {self.lr_decay!r}")
        lr_decay = 1.0 if self.lr_decay == AUTO else self.lr_decay
        if not self.learning_rate > 0 or not lr_decay > 0:
            raise RbmflowError("learning_rate and lr_decay must be positive")
        if not (self.l1 >= 0 and self.l2 >= 0 and math.isfinite(self.l1 + self.l2)):
            raise RbmflowError(f"l1 and l2 must be finite and >= 0, got {self.l1}, {self.l2}")
        if not (math.isfinite(self.learning_rate) and math.isfinite(lr_decay)):
            raise RbmflowError("learning_rate and lr_decay must be finite")
        if not 0 <= self.pseudocount < 1:
            raise RbmflowError("pseudocount must be in [0, 1)")
        if not 0 <= self.seed < 2**63:
            raise RbmflowError(f"seed must be in [0, 2^63), got {self.seed}")
        if self.refresh_every != AUTO and self.refresh_every < 0 or self.refresh_sweeps < 1:
            raise RbmflowError("refresh_every must be >= 0 and refresh_sweeps >= 1")
        if not 0 <= self.lr_decay_from < 1:
            raise RbmflowError(f"lr_decay_from must be in [0, 1), got {self.lr_decay_from}")
        if not 0 <= self.min_ess <= 1 or not 0 <= self.swap_threshold < 1:
            raise RbmflowError("min_ess must be in [0, 1] and swap_threshold in [0, 1)")

    @property
    def reweighted(self) -> bool:
        """Jarzynski-reweighted persistent chains (`equilibrium.ReweightedChains`)."""
        return self.method == "pcd" and self.reweight

    @property
    def automatic(self) -> bool:
        """Whether some setting is still "auto" (see `resolved`)."""
        return AUTO in (self.refresh_every, self.lr_decay)

    def resolved(self, separated_subfamilies: bool) -> TrainSettings:
        """These settings with "auto" replaced: refreshed chains and a decaying step for pcd
        on `separated_subfamilies`, plain PCD with a constant step otherwise."""
        s = self
        if s.refresh_every == AUTO:
            chosen = AUTO_REFRESH_EVERY if separated_subfamilies and s.method == "pcd" else 0
            s = replace(s, refresh_every=chosen)
        if s.lr_decay == AUTO:
            s = replace(s, lr_decay=AUTO_LR_DECAY if s.refreshed else 1.0)
        return s

    def _check_resolved(self, *keys: str) -> None:
        for key in keys or ("refresh_every", "lr_decay"):
            if getattr(self, key) == AUTO:
                raise RbmflowError(f"{key} is still {AUTO!r}: use resolved()")

    @property
    def refreshed(self) -> bool:
        """Persistent chains refreshed by trajectory tempering (`refresh_every`)."""
        self._check_resolved("refresh_every")
        return self.method == "pcd" and self.refresh_every > 0

    def refresh_due(self, update: int) -> bool:
        """Whether the chains are refreshed after update number `update` (1-based)."""
        return self.refreshed and update % self.refresh_every == 0

    def learning_rate_at(self, update: int) -> float:
        """Learning rate of gradient update number `update` (0-based)."""
        self._check_resolved("lr_decay")
        start = self.lr_decay_from * self.updates
        if update <= start:
            return self.learning_rate
        return self.learning_rate * self.lr_decay ** ((update - start) / (self.updates - start))

    def resume_key(self) -> str:
        """Hash of the settings that shape the trajectory (not its length or its logging)."""
        self._check_resolved()
        shaping = {k: v for k, v in asdict(self).items()
                   if k not in ("updates", "checkpoints", "log_every", "lr_decay",
                                "lr_decay_from", "monitor", "swap_threshold")}
        if not self.refreshed:  # keeps the keys of runs made before the refresh existed
            shaping.pop("refresh_every")
            shaping.pop("refresh_sweeps")
        if self.lr_decay != 1.0:
            shaping["lr_decay"], shaping["updates"] = self.lr_decay, self.updates
            shaping["lr_decay_from"] = self.lr_decay_from
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


# -- initialisation, statistics and the gradient ----------------------------------------------


def init_model(codes: Tensor, weights: Tensor, num_states: int, num_hiddens: int,
               generator: torch.Generator, pseudocount: float = 1e-3,
               init_std: float = 0.01) -> PottsRBM:
    """vbias = log of the weighted site frequencies mixed with `pseudocount` of uniform,
    W ~ N(0, init_std^2), hbias = 0; then the zero-sum gauge. codes (M, L), weights (M,)."""
    device, dtype = weights.device, weights.dtype
    L = codes.shape[1]
    v_mean = site_moments(codes, weights / weights.sum(), num_states)
    freq = (1 - pseudocount) * v_mean + pseudocount / num_states
    vbias = torch.log(freq.clamp_min(1e-30))
    weight_matrix = init_std * torch.randn((L, num_states, num_hiddens), generator=generator,
                                           device=device, dtype=dtype)
    model = PottsRBM(weight_matrix, vbias, torch.zeros(num_hiddens, device=device, dtype=dtype))
    model.apply_zero_sum_gauge_()
    return model


def site_moments(codes: Tensor, norm_weights: Tensor, num_states: int) -> Tensor:
    """sum_m w_m 1[v_mi = a] for normalised weights (M,); returns (L, q)."""
    L = codes.shape[1]
    flat = codes.long() + torch.arange(L, device=codes.device) * num_states
    out = torch.zeros(L * num_states, device=norm_weights.device, dtype=norm_weights.dtype)
    out.index_add_(0, flat.reshape(-1), norm_weights.repeat_interleave(L))
    return out.view(L, num_states)


@dataclass
class Moments:
    """Averages entering the gradient: v (L, q), m (Nh), v (x) m (L, q, Nh)."""

    v: Tensor
    h: Tensor
    vh: Tensor


def moments(model: PottsRBM, codes: Tensor, weights: Tensor | None = None,
            chunk: int = 8192) -> Moments:
    """Weighted averages of 1[v_i = a], m(v) and 1[v_i = a] m(v) over codes (C, L).

    weights (C,) are normalised here; None means a plain mean. One-hot blocks of at most
    `chunk` rows are built, so memory stays bounded on large families.
    """
    C = codes.shape[0]
    L, q, nh = model.weight_matrix.shape
    if weights is None:
        w = torch.full((C,), 1.0 / C, device=model.device, dtype=model.dtype)
    else:
        w = weights.to(device=model.device, dtype=model.dtype)
        w = w / w.sum()
    vh = torch.zeros(L * q, nh, device=model.device, dtype=model.dtype)
    h = torch.zeros(nh, device=model.device, dtype=model.dtype)
    for start in range(0, C, chunk):
        part = codes[start:start + chunk]
        weighted_mag = torch.sigmoid(model.hidden_inputs(part)) * w[start:start + chunk, None]
        vh.addmm_(one_hot(part, q, model.dtype).view(-1, L * q).T, weighted_mag)
        h += weighted_mag.sum(0)
    return Moments(v=site_moments(codes, w, q), h=h, vh=vh.view(L, q, nh))


def gradient(data: Moments, chains: Moments, centered: bool = True,
             weight_matrix: Tensor | None = None, l1: float = 0.0, l2: float = 0.0
             ) -> tuple[Tensor, Tensor, Tensor]:
    """Ascent direction (dW, dvbias, dhbias) of the penalised log-likelihood
    LL - l1 sum|W| - (l2 / 2) sum W^2 from data and model moments.

    The penalty's gradient is added to the plain dW before the centring map, so the fixed
    point is the regularised maximum-likelihood solution in either parametrisation.
    `weight_matrix` (L, q, Nh) is needed only when l1 or l2 is non-zero.
    """
    d_w = data.vh - chains.vh
    if l1 or l2:
        if weight_matrix is None:
            raise ValueError("l1 or l2 penalty needs the weight matrix")
        if l2:
            d_w = d_w - l2 * weight_matrix
        if l1:
            d_w = d_w - l1 * torch.sign(weight_matrix)
    d_v = data.v - chains.v
    d_h = data.h - chains.h
    if centered:
        v_bar, h_bar = data.v, data.h
        d_w = d_w - v_bar[:, :, None] * d_h - d_v[:, :, None] * h_bar
        d_v = d_v - d_w @ h_bar
        d_h = d_h - torch.einsum("ia,iam->m", v_bar, d_w)
    return d_w, d_v, d_h


# -- checkpoint schedule and the log --------------------------------------------------------


def checkpoint_schedule(updates: int, count: int) -> list[int]:
    """About `count` log-spaced update numbers in [1, updates], always including `updates`."""
    points = np.unique(np.rint(np.geomspace(1, updates, max(count, 1))).astype(np.int64))
    return sorted({int(p) for p in points} | {updates})


def _log_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return buffer.getvalue()


# -- the training loop ----------------------------------------------------------------------


@contextmanager
def _termination_flag() -> Iterator[dict[str, int | None]]:
    """Catch SIGTERM and SIGINT into a flag the loop polls (main thread only)."""
    flag: dict[str, int | None] = {"signal": None}

    def handler(signum: int, _frame: Any) -> None:
        flag["signal"] = signum

    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _finite(*tensors: Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def run_stage(alignment: str | os.PathLike[str], out: str | os.PathLike[str],
              log_path: str | os.PathLike[str], settings: TrainSettings,
              device: torch.device | str = "cpu", family: str | None = None,
              run_name: str | None = None, restart: bool = False,
              progress: bool | None = None) -> None:
    """The train stage: load alignment.npz, train on its train split (the test split feeds
    the log's test Pearson), write model.h5 and train_log.csv with their provenance."""
    try:
        data = load_encoded(alignment)
    except (OSError, ValueError) as err:
        raise InputError(f"{alignment}: {err}") from err
    train_part, test_part = data.subset(TRAIN), data.subset(TEST)
    if train_part.num_sequences == 0:
        raise InputError(f"{alignment}: no sequence in the train split")
    metadata = {
        "family": family, "run": run_name,
        "provenance": provenance("train", inputs={"alignment": alignment},
                                 settings=vars(settings), seed=settings.seed),
        "num_train": train_part.num_sequences, "num_test": test_part.num_sequences,
    }
    log.info("training on %d sequences (L=%d, q=%d) on %s", train_part.num_sequences,
             data.length, data.num_states, device)
    train(train_part, out, log_path, settings, device=device, metadata=metadata,
          test=test_part, restart=restart, progress=progress)
    log.info("wrote %s and %s", out, log_path)


def resolve_automatic(settings: TrainSettings, data: EncodedAlignment
                      ) -> tuple[TrainSettings, Separation | None]:
    """`settings` with "auto" decided on the training sequences `data` (see
    `TrainSettings.resolved`), and the separation that decided it (None when none was
    needed)."""
    if not settings.automatic:
        return settings, None
    if settings.method != "pcd":
        return settings.resolved(False), None
    found = separation(data.codes_tensor(), data.weights_tensor(), seed=settings.seed)
    resolved = settings.resolved(found.separated)
    log.info("training sequences: %s; refresh_every %s, lr_decay %s", found.describe(),
             resolved.refresh_every, resolved.lr_decay)
    return resolved, found


def train(
    data: EncodedAlignment,
    out: str | os.PathLike[str],
    log_path: str | os.PathLike[str],
    settings: TrainSettings,
    device: torch.device | str = "cpu",
    metadata: dict[str, Any] | None = None,
    test: EncodedAlignment | None = None,
    restart: bool = False,
    progress: bool | None = None,
) -> PottsRBM:
    """Train on `data` (the train split), writing `out` (model.h5) and `log_path` (CSV).

    Each checkpoint is written, atomically, as one piece in the directory `partial_path(out)`;
    `out` is assembled from the pieces, atomically, only when training ends, and the directory
    removed (`rbmflow.training.checkpoints`). Rerunning the same call on the same data resumes
    from the
    newest piece (chains, RNG state, update count, log), or extends a finished, shorter `out`.
    `restart` discards the pieces. A second writer of the same `out` is refused. `test`,
    when given, adds the Pearson of connected correlations of the chains vs the test data to
    the log.
    SIGTERM/SIGINT write a checkpoint (used to resume, left out of `out`) and raise
    RbmflowError; during the final assembly they wait for its end. A non-finite gradient or
    parameter raises RbmflowError naming the update. Returns the final model.
    """
    out, log_path = Path(out), Path(log_path)
    device = torch.device(device)
    if data.num_sequences == 0:
        raise RbmflowError("the training split is empty")
    s, found = resolve_automatic(settings, data)
    if found is not None:
        metadata = dict(metadata or {}, subfamilies=found.as_dict())
    if data.length * data.num_states * s.hidden > archive.MAX_PARAMETERS:
        raise RbmflowError(f"hidden {s.hidden}: the weight matrix would hold L x q x hidden = "
                           f"{data.length * data.num_states * s.hidden} values, more than the "
                           f"limit of {archive.MAX_PARAMETERS}")
    with checkpoints.output_lock(out):
        return _train_locked(data, out, log_path, s, device, metadata, test, restart, progress)


def _train_locked(data: EncodedAlignment, out: Path, log_path: Path, s: TrainSettings,
                  device: torch.device, metadata: dict[str, Any] | None,
                  test: EncodedAlignment | None, restart: bool, progress: bool | None
                  ) -> PottsRBM:
    """`train`, while holding the lock on `out`."""
    dtype = torch.float32
    q, L = data.num_states, data.length
    key = checkpoints.resume_key(s.resume_key(), data, test)
    partial = partial_path(out)
    metadata = dict(metadata or {})
    metadata.update({
        "format_version": FORMAT_VERSION, "alphabet": data.alphabet, "method": s.method,
        "gibbs_steps": s.gibbs_steps, "centered": s.centered, "settings": asdict(s),
        "resume_key": key, "seed": s.seed, "device": str(device), "dtype": "float32",
    })
    hyperparameters = {
        "batch_size": s.batch_size, "gibbs_steps": s.gibbs_steps,
        "learning_rate": s.learning_rate, "seed": s.seed,
        # rbms' convention: penalty L1 sum|theta| + L2 sum theta^2 (ours: l2/2, weights only)
        "L1": s.l1, "L2": s.l2 / 2, "weight_l1": s.l1, "weight_l2": s.l2,
        "num_hiddens": s.hidden, "num_visibles": L,
        "num_chains": s.chains if s.method != "cd" else min(s.batch_size, data.num_sequences),
        "num_states": q, "updates": s.updates, "method": s.method,
    }

    codes_all = data.codes_tensor(device)
    weights_all = data.weights_tensor(device, dtype)
    if not float(weights_all.sum()) > 0:
        raise RbmflowError("the training sequences have zero total weight")
    generator = torch.Generator(device=device)
    generator.manual_seed(s.seed)

    resumed = checkpoints.resume(out, log_path, key, s.updates, restart, device, dtype)
    if resumed is None:
        model = init_model(codes_all, weights_all, q, s.hidden, generator, s.pseudocount,
                           s.init_std)
        chains = _initial_chains(model, s, codes_all, generator)
        reweighted = (ReweightedChains.start(model, chains, s.min_ess) if s.reweighted
                      else None)
        update = start = 0
        time_offset, rows = 0.0, []
    else:
        model, chains = resumed.model, resumed.chains
        if resumed.rng_state is not None:
            generator.set_state(resumed.rng_state)
        update = start = resumed.update
        time_offset = resumed.time_s
        rows = checkpoints.parse_log(resumed.log_text, start)
        reweighted = (ReweightedChains.uniform(chains.shape[0], device, s.min_ess)
                      if s.reweighted else None)  # saved chains are resampled: equal weights

    cij_train = cij_test = None
    if not pair_statistics_fit(data.length, q):
        log.warning("L x q = %d: the training log leaves out the Pearson of the pair "
                    "statistics ((L q)^2 = %d values, over the limit of %d)",
                    data.length * q, (data.length * q) ** 2, MAX_PAIR_ENTRIES)
    else:
        cij_train = connected_correlations(codes_all, q, weights_all)
    if cij_train is not None and test is not None and test.num_sequences > 0:
        cij_test = connected_correlations(test.codes_tensor(device), q,
                                          test.weights_tensor(device, dtype))
    schedule = set(checkpoint_schedule(s.updates, s.checkpoints))
    last_saved: int | None = start if resumed is not None else None
    density = CheckpointDensity(s.swap_threshold)
    density.reset(model, chains)
    # cd and rdm chains are not meant to be at equilibrium: nothing to monitor
    monitor = EquilibriumMonitor(seed=s.seed) if s.monitor and s.method == "pcd" else None
    tempering = (TrajectoryTempering(model, chains, s.refresh_sweeps) if s.refreshed
                 else None)
    if tempering is not None and resumed is not None:
        levels = checkpoints.load_ladder(out, start, device, dtype)
        if levels is None:
            log.info("the tempering ladder restarts from the model of update %d", start)
        else:
            tempering.levels = levels

    def chain_weights() -> Tensor | None:
        return None if reweighted is None else reweighted.weights().to(dtype)

    def save(at: int, elapsed: float, scheduled: bool = True) -> None:
        nonlocal last_saved, chains
        if not _finite(*model.tensors()):
            bar.close()
            raise _divergence(at, "parameters", partial, last_saved)
        if reweighted is not None and not reweighted.is_uniform():
            chains = reweighted.resample(chains, generator)  # stored chains: equal weights
        _checkpoint_ladder(at, model, chains, metadata, density, monitor)
        if tempering is not None:
            checkpoints.save_ladder(out, at, tempering.levels)
        checkpoints.save(out, at, model, chains, elapsed, generator.get_state(),
                         hyperparameters, metadata, _log_text(rows), scheduled=scheduled)
        last_saved = at

    def health(at: int, elapsed: float) -> None:
        lr = s.learning_rate_at(max(at - 1, 0))
        f_data = float((model.free_energy(codes_all) * weights_all).sum() / weights_all.sum())
        cw = chain_weights()
        cij_chains = None if cij_train is None else connected_correlations(chains, q, cw)
        f_chains = (model.free_energy(chains).mean() if cw is None
                    else (model.free_energy(chains) * cw).sum())
        row = {
            "update": at, "time_s": round(elapsed, 3), "learning_rate": f"{lr:.6g}",
            "pearson_cij_train": ("" if cij_chains is None else
                                  f"{pearson(cij_chains, cij_train):.5f}"),
            "pearson_cij_test": ("" if cij_chains is None or cij_test is None else
                                 f"{pearson(cij_chains, cij_test):.5f}"),
            "free_energy_data": f"{f_data:.5f}",
            "free_energy_chains": f"{float(f_chains):.5f}",
            "chains_ess": "" if reweighted is None else f"{reweighted.ess_fraction():.4f}",
            **_monitor_columns(at, model, chains, cw, monitor, s.refreshed),
        }
        rows.append(row)

    num = data.num_sequences
    full_batch = s.batch_size >= num
    if progress is None:
        progress = sys.stderr.isatty()
    bar = tqdm(total=s.updates, initial=update, disable=not progress, unit="upd",
               dynamic_ncols=True)
    t0 = time.perf_counter() - time_offset
    with _termination_flag() as flag, torch.no_grad():
        if update == 0 and not rows:
            health(0, 0.0)
        while update < s.updates:
            lr = s.learning_rate_at(update)
            if full_batch:
                batch_codes, batch_weights = codes_all, weights_all
            else:
                index = torch.randperm(num, generator=generator, device=device)[:s.batch_size]
                batch_codes, batch_weights = codes_all[index], weights_all[index]
                if not float(batch_weights.sum()) > 0:
                    batch_weights = torch.ones_like(batch_weights)
            if s.method == "pcd":
                start_codes = chains
            elif s.method == "cd":
                start_codes = batch_codes
            else:
                start_codes = random_codes(chains.shape[0], L, q, device, generator)
            chains = model.gibbs(start_codes, s.gibbs_steps, generator=generator)
            data_moments = moments(model, batch_codes, batch_weights)
            d_w, d_v, d_h = gradient(data_moments, moments(model, chains, chain_weights()),
                                     s.centered, model.weight_matrix, s.l1, s.l2)
            grad_sq = sum((g * g).sum() for g in (d_w, d_v, d_h))
            grad_sq_value = float(grad_sq)  # the one host sync of an update
            if not math.isfinite(grad_sq_value):
                bar.close()
                raise _divergence(update + 1, "gradient", partial, last_saved)
            if s.normalize_gradient and grad_sq_value > 0:
                scale = lr / math.sqrt(grad_sq_value)
            else:
                scale = lr
            own = (None if reweighted is None else reweighted.own_terms(
                model, chains, scale, data_moments.v, data_moments.h, s.centered))
            model.weight_matrix.add_(d_w, alpha=scale)
            model.vbias.add_(d_v, alpha=scale)
            model.hbias.add_(d_h, alpha=scale)
            model.apply_zero_sum_gauge_()
            if reweighted is not None and own is not None:
                reweighted.add_work_without_own(model, chains, own)
                chains = reweighted.maybe_resample(chains, generator)
            update += 1
            if tempering is not None and s.refresh_due(update):
                chains = tempering.refresh(model, chains, generator)
                if reweighted is not None:
                    reweighted.log_weights = torch.zeros_like(reweighted.log_weights)
            bar.update(1)
            elapsed = time.perf_counter() - t0
            if update % s.log_every == 0 or update == s.updates:
                health(update, elapsed)
                bar.set_postfix(pearson=rows[-1]["pearson_cij_train"], refresh=False)
            if update in schedule or density.due(model, chains, chain_weights()):
                save(update, elapsed)
            t0 += time.perf_counter() - t0 - elapsed  # time_s counts training, not logging/saving
            if flag["signal"] is not None:
                if last_saved != update:
                    save(update, elapsed, scheduled=False)
                bar.close()
                raise RbmflowError(
                    f"interrupted by signal {flag['signal']} at update {update}; checkpoint "
                    f"written to {partial}; rerun the same command to resume")
        bar.close()
        if last_saved != s.updates:
            save(s.updates, time.perf_counter() - t0)
        checkpoints.finish(out, log_path, _log_text(rows))  # a signal now waits for the end
    if rows:
        log.info("update %s: %s s, Pearson C_ij chains vs train %s, vs test %s",
                 rows[-1]["update"], rows[-1]["time_s"], rows[-1]["pearson_cij_train"],
                 rows[-1]["pearson_cij_test"] or "-")
    return model


def _checkpoint_ladder(at: int, model: PottsRBM, chains: Tensor, metadata: dict[str, Any],
                       density: CheckpointDensity, monitor: EquilibriumMonitor | None) -> None:
    """Record in the metadata (`checkpoint_swap_rates`, by update) the estimated swap
    acceptance between checkpoint `at` and the previous one, on equally weighted chains;
    the monitor keeps the model as a tempering level."""
    rate = density.rate(model, chains)
    if math.isfinite(rate):
        metadata.setdefault("checkpoint_swap_rates", {})[str(at)] = round(rate, 4)
    density.reset(model, chains)
    if monitor is not None:
        monitor.remember(model, chains)


def _monitor_columns(at: int, model: PottsRBM, chains: Tensor, weights: Tensor | None,
                     monitor: EquilibriumMonitor | None, refreshed: bool) -> dict[str, str]:
    """The monitor's columns of the log row at update `at` (empty without a reference); a
    loud warning when the chains and the model's equilibrium disagree, which names the
    remedy when the chains are not refreshed."""
    result = None if monitor is None or at == 0 else monitor.compare(model, chains, weights, at)
    if result is None:
        return {}
    if result.disagree:
        log.warning("update %d: the persistent chains are NOT at the model's equilibrium: "
                    "KS distance %.3f > %.3f along W's top directions vs %s samples, orthant "
                    "occupancies differ by %.3f; the gradient's model term is biased "
                    "(multimodal data: the model's mode weights may be wrong)%s", at,
                    max(result.ks), result.critical, result.reference, result.occupancy_tv,
                    "" if refreshed else REFRESH_HINT)
    return result.columns()


def _divergence(update: int, what: str, partial: Path, last_saved: int | None) -> RbmflowError:
    where = (f"the last good checkpoint is update_{last_saved} in "
             f"{archive.piece_path(partial, last_saved)}"
             if last_saved is not None else "no checkpoint was written yet")
    return RbmflowError(f"training diverged at update {update}: non-finite {what} (NaN or inf); "
                        f"{where}; lower the learning rate or add l2")


def _initial_chains(model: PottsRBM, s: TrainSettings, codes: Tensor,
                    generator: torch.Generator) -> Tensor:
    """PCD/Rdm: draws from the independent-site model of vbias; CD: the first data rows."""
    if s.method == "cd":
        return codes[:min(s.batch_size, codes.shape[0])].clone()
    logits = model.vbias.expand(s.chains, -1, -1)
    return sample_categorical(logits, generator)
