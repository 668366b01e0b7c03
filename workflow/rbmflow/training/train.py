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

import contextlib
import hashlib
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from rbmflow.data.dataset import TEST, TRAIN, EncodedAlignment, load_encoded
from rbmflow.data.subfamilies import Separation, separation
from rbmflow.errors import InputError, RbmflowError
from rbmflow.model import archive
from rbmflow.model.rbm import PottsRBM
from rbmflow.provenance import FORMAT_VERSION, provenance
from rbmflow.sampling.equilibrium import EquilibriumMonitor, TrajectoryTempering
from rbmflow.training import checkpoints
from rbmflow.training.chains import ChainSource, TemperedChains, chain_source, initial_chains
from rbmflow.training.checkpoints import archive_copy, partial_path  # noqa: F401 (public here too)
from rbmflow.training.decision import (
    CHOICES,
    EXACT_MAX_HIDDENS,
    ChainsDecision,
    switch,
    switch_due,
)
from rbmflow.training.moments import Moments, moments, site_moments  # noqa: F401
from rbmflow.training.observers import (  # noqa: F401 (LOG_COLUMNS: public here too)
    LOG_COLUMNS,
    Checkpointer,
    Clock,
    TrainLog,
    checkpoint_schedule,
    log_text,
)
from rbmflow.training.steps import (
    DEFAULT_LEARNING_RATE,
    OPTIMIZERS,
    Direction,
    StepRule,
    step_rule,
)

log = logging.getLogger(__name__)

METHODS = ("pcd", "cd", "rdm")
AUTO = "auto"
AUTO_REFRESH_EVERY = 5
"""refresh_every chosen by "auto" on separated subfamilies ..."""
AUTO_LR_DECAY = 0.05
"""... and the lr_decay that goes with it (a constant step outruns the refreshes)."""
EXACT_LR_DECAY, EXACT_LR_DECAY_FROM = 0.1, 0.5
"""lr_decay and lr_decay_from chosen by "auto" with the exact model term: Adam's constant
step first, then a decay to 0.1 x over the second half, which stops the weights of broad
modes from swinging (PF13354, 12 hidden units: quadrant weights 0.17-0.26 at the last
checkpoints without it, settled at 0.23 with it)."""
ALL = "all"
DEFAULT_BATCH_SIZE = 2000
"""batch_size chosen by "auto" when the model term comes from chains."""
UNBIASED_TERMS = ("exact", "jarzynski")
"""Model terms meant to carry the model's own mode weights: with them "auto" takes no
refreshed chains and Adam."""
REFRESH_HINT = ("; train with equilibrium_chains: monitor (the model term then comes from "
                "tempered chains once this happens; docs/training.md)")

@dataclass(frozen=True)
class TrainSettings:
    """Hyperparameters of one run (the `runs:` entries of the config, documented in the README).

    normalize_gradient (sgd): divide the gradient by its Euclidean norm over all parameters
    before the step, as the `rbms` package does, so that `learning_rate` is the length of a
    step in parameter space. batch_size: training sequences in the data term of each update,
    a random batch drawn anew each time, or "all" of them; "auto" is "all" when the model
    term is exact (the gradient is then exact, with no noise left to stop a step rule from
    converging), else `DEFAULT_BATCH_SIZE`. optimizer: "sgd" or "adam" (`steps`); "auto" is
    Adam when the model term is exact or jarzynski (equilibrium_chains), else sgd;
    learning_rate "auto" is `steps.DEFAULT_LEARNING_RATE` of the optimizer. lr_decay: ratio
    of the final to the initial learning rate, reached by exponential decay (1.0: constant)
    that starts after the fraction `lr_decay_from` of the updates (0: at once); "auto":
    `AUTO_LR_DECAY` from the start with refreshed or jarzynski chains, `EXACT_LR_DECAY` from
    `EXACT_LR_DECAY_FROM` with the exact model term, else constant. Without a decay
    unit-norm steps never settle: the mode weights of a multimodal model keep jumping.
    checkpoints: number of log-spaced checkpoints, the last update always included.
    log_every: updates between two rows of train_log.csv.
    pseudocount: mixing weight of the uniform distribution in the site frequencies that
    initialise vbias. init_std: standard deviation of the initial weights.
    swap_threshold: an extra checkpoint is saved when the estimated swap acceptance between
    the last saved model and the current one falls under it (0: log-spaced ones only).
    monitor (pcd only): compare the chains with equilibrium samples at log rows
    (`equilibrium.EquilibriumMonitor`).
    equilibrium_chains (pcd only): "exact" computes the model term exactly over the 2^Nh
    hidden configurations (`chains.ExactChains`, Nh <= `EXACT_MAX_HIDDENS`); "jarzynski"
    takes it from persistent chains with importance weights that follow the parameters'
    moves (`chains.ReweightedChains`; no refreshes; 20 `gibbs_steps` were measured to be
    needed where 5 were not enough); "monitor" moves
    it to tempered chains (`chains.TemperedChains`) when the monitor finds the persistent
    chains away from the model's equilibrium (`decision`), "always" uses them from the
    start, "never" keeps the persistent chains; "auto" is "exact" when Nh allows, else
    "never".
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
    batch_size: int | str = AUTO
    gibbs_steps: int = 5
    learning_rate: float | str = AUTO
    lr_decay: float | str = AUTO
    lr_decay_from: float | str = AUTO
    method: str = "pcd"
    optimizer: str = AUTO
    l1: float = 0.0
    l2: float = 0.0
    centered: bool = True
    normalize_gradient: bool = True
    checkpoints: int = 50
    log_every: int = 50
    seed: int = 0
    pseudocount: float = 1e-3
    init_std: float = 0.01
    swap_threshold: float = 0.3
    monitor: bool = True
    refresh_every: int | str = AUTO
    refresh_sweeps: int = 20
    equilibrium_chains: str = AUTO

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise RbmflowError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.batch_size not in (AUTO, ALL) and (isinstance(self.batch_size, str)
                                                   or self.batch_size < 1):
            raise RbmflowError(f"batch_size must be at least 1, {ALL!r} or {AUTO!r}, got "
                               f"{self.batch_size!r}")
        for key in ("hidden", "updates", "chains", "gibbs_steps", "checkpoints", "log_every"):
            if getattr(self, key) < 1:
                raise RbmflowError(f"{key} must be at least 1, got {getattr(self, key)}")
        autos = (self.refresh_every, self.lr_decay, self.learning_rate)
        if any(isinstance(v, str) and v != AUTO for v in autos):
            raise RbmflowError(f"refresh_every, lr_decay and learning_rate take a number or "
                               f"{AUTO!r}, got {autos}")
        if self.optimizer not in (*OPTIMIZERS, AUTO):
            raise RbmflowError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        lr_decay = 1.0 if self.lr_decay == AUTO else self.lr_decay
        rate = 1.0 if self.learning_rate == AUTO else self.learning_rate
        if not rate > 0 or not lr_decay > 0:
            raise RbmflowError("learning_rate and lr_decay must be positive")
        if not (self.l1 >= 0 and self.l2 >= 0 and math.isfinite(self.l1 + self.l2)):
            raise RbmflowError(f"l1 and l2 must be finite and >= 0, got {self.l1}, {self.l2}")
        if not (math.isfinite(rate) and math.isfinite(lr_decay)):
            raise RbmflowError("learning_rate and lr_decay must be finite")
        if not 0 <= self.pseudocount < 1:
            raise RbmflowError("pseudocount must be in [0, 1)")
        if not 0 <= self.seed < 2**63:
            raise RbmflowError(f"seed must be in [0, 2^63), got {self.seed}")
        if self.refresh_every != AUTO and self.refresh_every < 0 or self.refresh_sweeps < 1:
            raise RbmflowError("refresh_every must be >= 0 and refresh_sweeps >= 1")
        if self.lr_decay_from != AUTO and not (isinstance(self.lr_decay_from, float | int)
                                               and 0 <= self.lr_decay_from < 1):
            raise RbmflowError(f"lr_decay_from must be in [0, 1), got {self.lr_decay_from}")
        if self.equilibrium_chains not in CHOICES:
            raise RbmflowError(f"equilibrium_chains must be one of {CHOICES}, got "
                               f"{self.equilibrium_chains!r}")
        if self.equilibrium_chains == "exact" and (self.method != "pcd"
                                                   or self.hidden > EXACT_MAX_HIDDENS):
            raise RbmflowError(f"equilibrium_chains: exact needs method pcd and at most "
                               f"{EXACT_MAX_HIDDENS} hidden units, got {self.method} and "
                               f"{self.hidden}")
        if (self.equilibrium_chains == "jarzynski" and self.refresh_every != AUTO
                and self.refresh_every > 0):
            raise RbmflowError("equilibrium_chains: jarzynski keeps its chains: it does not "
                               "combine with refresh_every > 0")
        if not 0 <= self.swap_threshold < 1:
            raise RbmflowError("swap_threshold must be in [0, 1)")

    @property
    def automatic(self) -> bool:
        """Whether some setting is still "auto" (see `resolved`)."""
        return AUTO in (self.refresh_every, self.lr_decay, self.lr_decay_from,
                        self.learning_rate, self.equilibrium_chains, self.optimizer,
                        self.batch_size)

    @property
    def needs_separation(self) -> bool:
        """Whether resolving "auto" needs the training sequences' subfamilies."""
        return (self.method == "pcd" and AUTO in (self.refresh_every, self.lr_decay)
                and self.exact_chains not in UNBIASED_TERMS)

    @property
    def exact_chains(self) -> str:
        """equilibrium_chains with "auto" decided: "exact" for pcd with at most
        `EXACT_MAX_HIDDENS` hidden units, else "never"."""
        if self.equilibrium_chains != AUTO:
            return self.equilibrium_chains
        small = self.method == "pcd" and self.hidden <= EXACT_MAX_HIDDENS
        return "exact" if small else "never"

    def resolved(self, separated_subfamilies: bool) -> TrainSettings:
        """These settings with "auto" replaced: refreshed chains and a decaying step for pcd
        on `separated_subfamilies`, plain PCD with a constant step otherwise; the exact model
        term, every sequence in each batch, and Adam with a decay over the second half when
        Nh is small enough; the learning rate of the optimizer
        (`steps.DEFAULT_LEARNING_RATE`)."""
        s = self.with_model_term()
        exact = s.equilibrium_chains == "exact"
        if s.refresh_every == AUTO:
            chosen = (AUTO_REFRESH_EVERY if separated_subfamilies and s.method == "pcd"
                      and s.equilibrium_chains not in UNBIASED_TERMS else 0)
            s = replace(s, refresh_every=chosen)
        if s.lr_decay == AUTO:
            settle = s.refreshed or s.equilibrium_chains == "jarzynski"
            s = replace(s, lr_decay=AUTO_LR_DECAY if settle else
                        EXACT_LR_DECAY if exact else 1.0)
        if s.lr_decay_from == AUTO:
            s = replace(s, lr_decay_from=EXACT_LR_DECAY_FROM if exact else 0.0)
        return s

    def with_model_term(self) -> TrainSettings:
        """These settings with the "auto" that does not depend on the data decided: the
        model term (`exact_chains`), the data batch (all sequences for an exact model term),
        the optimizer (Adam for an exact model term, else sgd) and its learning rate."""
        s = replace(self, equilibrium_chains=self.exact_chains)
        exact = s.equilibrium_chains == "exact"
        if s.batch_size == AUTO:
            s = replace(s, batch_size=ALL if exact else DEFAULT_BATCH_SIZE)
        if s.optimizer == AUTO:
            s = replace(s, optimizer="adam" if s.equilibrium_chains in UNBIASED_TERMS
                        else "sgd")
        if s.learning_rate == AUTO:
            s = replace(s, learning_rate=DEFAULT_LEARNING_RATE[s.optimizer])
        return s

    def _check_resolved(self, *keys: str) -> None:
        for key in keys or ("refresh_every", "lr_decay", "lr_decay_from", "learning_rate",
                            "equilibrium_chains", "optimizer", "batch_size"):
            if getattr(self, key) == AUTO:
                raise RbmflowError(f"{key} is still {AUTO!r}: use resolved()")

    @property
    def refreshed(self) -> bool:
        """Persistent chains refreshed by trajectory tempering (`refresh_every`)."""
        self._check_resolved("refresh_every")
        return self.method == "pcd" and self.refresh_every > 0

    def batch_for(self, num_sequences: int) -> int:
        """Sequences in each update's data term, out of `num_sequences`."""
        self._check_resolved("batch_size")
        if self.batch_size == ALL:
            return num_sequences
        return min(int(self.batch_size), num_sequences)

    def refresh_due(self, update: int) -> bool:
        """Whether the chains are refreshed after update number `update` (1-based)."""
        return self.refreshed and update % self.refresh_every == 0

    def learning_rate_at(self, update: int) -> float:
        """Learning rate of gradient update number `update` (0-based)."""
        self._check_resolved("lr_decay", "lr_decay_from")
        start = float(self.lr_decay_from) * self.updates
        if update <= start:
            return self.learning_rate
        return self.learning_rate * self.lr_decay ** ((update - start) / (self.updates - start))

    def resume_key(self) -> str:
        """Hash of the settings that shape the trajectory (not its length or its logging)."""
        self._check_resolved("refresh_every", "lr_decay", "lr_decay_from")
        if self.automatic:
            return self.with_model_term().resume_key()
        shaping = {k: v for k, v in asdict(self).items()
                   if k not in ("updates", "checkpoints", "log_every", "lr_decay",
                                "lr_decay_from", "monitor", "swap_threshold")}
        shaping.update(reweight=False, min_ess=0.5)  # the keys of runs made with these keys
        if self.optimizer == "sgd":  # keeps the keys of runs made before Adam existed
            shaping.pop("optimizer")
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


def gradient(data: Moments, chains: Moments, centered: bool = True,
             weight_matrix: Tensor | None = None, l1: float = 0.0, l2: float = 0.0
             ) -> tuple[Tensor, Tensor, Tensor]:
    """Ascent direction (dW, dvbias, dhbias) of the penalised log-likelihood
    LL - l1 sum|W| - (l2 / 2) sum W^2 from data and model moments, as a change of
    (W, vbias, hbias): `ascent_direction(...).in_parameters()`."""
    return ascent_direction(data, chains, centered, weight_matrix, l1, l2).in_parameters()


def ascent_direction(data: Moments, chains: Moments, centered: bool = True,
                     weight_matrix: Tensor | None = None, l1: float = 0.0, l2: float = 0.0
                     ) -> Direction:
    """The gradient of the penalised log-likelihood in the coordinates the step is taken in:
    the centred parametrisation with centres (<v>_data, <m>_data) when `centered`, else
    (W, vbias, hbias) themselves.

    The penalty's gradient is added to the plain dW before the centring, so the fixed point
    is the regularised maximum-likelihood solution in either parametrisation.
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
    if not centered:
        return Direction((d_w, d_v, d_h))
    v_bar, h_bar = data.v, data.h
    d_w = d_w - v_bar[:, :, None] * d_h - d_v[:, :, None] * h_bar
    return Direction((d_w, d_v, d_h), (v_bar, h_bar))


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
    if not settings.needs_separation:
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
        return _train_locked(data, out, log_path, s, device, metadata, test, restart, progress,
                             settings.lr_decay == AUTO)


class Batches:
    """The data term's sequences: all of them when `batch_size` covers them, else a random
    batch of `batch_size` each update (equal weights when the batch's weights sum to 0)."""

    def __init__(self, codes: Tensor, weights: Tensor, batch_size: int) -> None:
        self.codes, self.weights, self.batch_size = codes, weights, batch_size

    def draw(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        num = self.codes.shape[0]
        if self.batch_size >= num:
            return self.codes, self.weights
        index = torch.randperm(num, generator=generator, device=self.codes.device)
        index = index[:self.batch_size]
        codes, weights = self.codes[index], self.weights[index]
        if not float(weights.sum()) > 0:
            weights = torch.ones_like(weights)
        return codes, weights


def update_step(model: PottsRBM, source: ChainSource, rule: StepRule,
                batch: tuple[Tensor, Tensor], learning_rate: float, s: TrainSettings,
                generator: torch.Generator) -> float | None:
    """One gradient update of `model`, in place: the data term from `batch` (codes,
    weights), the model term from `source`'s chains, the step from `rule`; then the zero-sum
    gauge. Returns the gradient's squared norm, None (nothing changed) when it is not
    finite."""
    model_moments, data_moments = source.gradient_moments(model, batch, generator)
    direction = ascent_direction(data_moments, model_moments, s.centered, model.weight_matrix,
                                 s.l1, s.l2)
    grad_sq = direction.norm_sq  # the one host sync
    if not math.isfinite(grad_sq):
        return None
    rule.apply((model.weight_matrix, model.vbias, model.hbias), direction, learning_rate)
    model.apply_zero_sum_gauge_()
    return grad_sq


@dataclass
class Training:
    """A training run in progress: the model, its chain source and the observers."""

    s: TrainSettings
    model: PottsRBM
    source: ChainSource
    rule: StepRule
    generator: torch.Generator
    batches: Batches
    log: TrainLog
    saver: Checkpointer
    update: int
    time_offset: float
    decision: ChainsDecision
    decay_on_switch: bool

    def run(self, out: Path, log_path: Path, progress: bool) -> None:
        """Train from `self.update` to `s.updates`, then assemble `out` and `log_path`."""
        bar = tqdm(total=self.s.updates, initial=self.update, disable=not progress,
                   unit="upd", dynamic_ncols=True)
        clock = Clock(self.time_offset)
        with _termination_flag() as flag, torch.no_grad(), contextlib.closing(bar):
            if self.update == 0 and not self.log.rows:
                self.log.record(0, 0.0, self.s.learning_rate_at(0), self.model, self.source)
            while self.update < self.s.updates:
                lr = self.s.learning_rate_at(self.update)
                batch = self.batches.draw(self.generator)
                if update_step(self.model, self.source, self.rule, batch, lr, self.s,
                               self.generator) is None:
                    raise self.saver.divergence(self.update + 1, "gradient")
                self.update += 1
                self.source.after_step(self.model, self.update, self.generator)
                bar.update(1)
                elapsed = clock.elapsed()
                self.observe(elapsed, bar)
                clock.exclude_since(elapsed)
                if flag["signal"] is not None:
                    self.interrupted(flag["signal"], elapsed)
            if self.saver.last_saved != self.s.updates:
                self.save(self.s.updates, clock.elapsed())
            checkpoints.finish(out, log_path, log_text(self.log.rows))  # a signal waits

    def observe(self, elapsed: float, bar: tqdm) -> None:
        """The observers after an update: a log row, a checkpoint, when due."""
        if self.log.due(self.update):
            lr = self.s.learning_rate_at(max(self.update - 1, 0))
            row = self.log.record(self.update, elapsed, lr, self.model, self.source)
            bar.set_postfix(pearson=row["pearson_cij_train"], refresh=False)
            verdicts = self.log.verdicts(self.update)
            if switch_due(self.s, self.source, verdicts, self.update):
                self.s, self.source = switch(
                    self.s, self.decay_on_switch, self.source, self.log.monitor.models,
                    self.model, verdicts[-1], self.update, elapsed, self.decision,
                    self.generator)
        if self.saver.due(self.update, self.model, self.source):
            self.save(self.update, elapsed)

    def save(self, at: int, elapsed: float, scheduled: bool = True) -> None:
        self.decision.observe(self.source)
        self.saver.metadata["training_chains"] = self.decision.as_dict(at, elapsed)
        self.rule.save_state(self.saver.out, at)
        self.saver.save(at, elapsed, self.model, self.source, self.generator, self.log.rows,
                        scheduled)

    def interrupted(self, signum: int, elapsed: float) -> None:
        """Write a checkpoint to resume from and raise."""
        if self.saver.last_saved != self.update:
            self.save(self.update, elapsed, scheduled=False)
        raise RbmflowError(
            f"interrupted by signal {signum} at update {self.update}; checkpoint written to "
            f"{partial_path(self.saver.out)}; rerun the same command to resume")


def _train_locked(data: EncodedAlignment, out: Path, log_path: Path, s: TrainSettings,
                  device: torch.device, metadata: dict[str, Any] | None,
                  test: EncodedAlignment | None, restart: bool, progress: bool | None,
                  decay_on_switch: bool) -> PottsRBM:
    """`train`, while holding the lock on `out`; `decay_on_switch`: lr_decay was "auto"."""
    dtype = torch.float32
    key = checkpoints.resume_key(s.resume_key(), data, test)
    metadata = _metadata(metadata, data, s, key, device)
    codes = data.codes_tensor(device)
    weights = data.weights_tensor(device, dtype)
    if not float(weights.sum()) > 0:
        raise RbmflowError("the training sequences have zero total weight")
    generator = torch.Generator(device=device)
    generator.manual_seed(s.seed)
    resumed = checkpoints.resume(out, log_path, key, s.updates, restart, device, dtype)
    model, source, decision = _start(resumed, s, codes, weights, data.num_states, generator,
                                     out)
    decision = decision or ChainsDecision.start(s, source)
    decay_on_switch = decay_on_switch and s.lr_decay == 1.0
    if decision.switched_at is not None and decay_on_switch:
        s = replace(s, lr_decay=AUTO_LR_DECAY, lr_decay_from=decision.switched_at / s.updates)
    rows = [] if resumed is None else checkpoints.parse_log(resumed.log_text, resumed.update)
    test_tensors = None
    if test is not None and test.num_sequences > 0:
        test_tensors = (test.codes_tensor(device), test.weights_tensor(device, dtype))
    # cd and rdm chains are not meant to be at equilibrium: nothing to monitor
    monitor = EquilibriumMonitor(seed=s.seed) if s.monitor and s.method == "pcd" else None
    train_log = TrainLog(s.log_every, codes, weights, data.num_states, test_tensors, monitor,
                         rows, s.updates, REFRESH_HINT if s.equilibrium_chains == "never" else "")
    if monitor is not None and resumed is not None:
        monitor.restore(checkpoints.saved_models(out, key, resumed.update, device,
                                                  dtype))
    saver = Checkpointer(out, checkpoint_schedule(s.updates, s.checkpoints), s.swap_threshold,
                         metadata, _hyperparameters(s, data), monitor,
                         None if resumed is None else resumed.update)
    saver.start(model, source)
    rule = step_rule(s.optimizer, s.normalize_gradient)
    if resumed is not None:
        rule.restore_state(out, resumed.update, device)
    batches = Batches(codes, weights, s.batch_for(codes.shape[0]))
    run = Training(s, model, source, rule, generator, batches, train_log, saver,
                   0 if resumed is None else resumed.update,
                   0.0 if resumed is None else resumed.time_s, decision, decay_on_switch)
    run.run(out, log_path, sys.stderr.isatty() if progress is None else progress)
    if rows:
        log.info("update %s: %s s, Pearson C_ij chains vs train %s, vs test %s",
                 rows[-1]["update"], rows[-1]["time_s"], rows[-1]["pearson_cij_train"],
                 rows[-1]["pearson_cij_test"] or "-")
    return model


def _start(resumed: checkpoints.ResumePoint | None, s: TrainSettings, codes: Tensor,
           weights: Tensor, num_states: int, generator: torch.Generator, out: Path
           ) -> tuple[PottsRBM, ChainSource, ChainsDecision | None]:
    """The model, the chain source and the chains' decision (None: none yet) at the start:
    fresh, or as saved at `resumed`."""
    if resumed is None:
        model = init_model(codes, weights, num_states, s.hidden, generator, s.pseudocount,
                           s.init_std)
        return (model, chain_source(s, model, initial_chains(model, s, codes, generator), True),
                None)
    if resumed.rng_state is not None:
        generator.set_state(resumed.rng_state)
    decision = ChainsDecision.from_metadata(resumed.metadata.get("training_chains"))
    source = chain_source(s, resumed.model, resumed.chains, False)
    if decision is not None and decision.switched_at is not None:
        source = TemperedChains(TrajectoryTempering(resumed.model, resumed.chains),
                                resumed.chains, s.gibbs_steps)
    source.restore_state(out, resumed.update, codes.device, weights.dtype)
    return resumed.model, source, decision


def _metadata(metadata: dict[str, Any] | None, data: EncodedAlignment, s: TrainSettings,
              key: str, device: torch.device) -> dict[str, Any]:
    """model.h5's metadata: the caller's, and the run's settings."""
    metadata = dict(metadata or {})
    metadata.update({
        "format_version": FORMAT_VERSION, "alphabet": data.alphabet, "method": s.method,
        "gibbs_steps": s.gibbs_steps, "centered": s.centered, "settings": asdict(s),
        "resume_key": key, "seed": s.seed, "device": str(device), "dtype": "float32",
    })
    return metadata


def _hyperparameters(s: TrainSettings, data: EncodedAlignment) -> dict[str, Any]:
    """The hyperparameters of the `rbms` archive layout."""
    return {
        "batch_size": s.batch_for(data.num_sequences) if s.batch_size == ALL else s.batch_size,
        "gibbs_steps": s.gibbs_steps,
        "learning_rate": s.learning_rate, "optimizer": s.optimizer, "seed": s.seed,
        # rbms' convention: penalty L1 sum|theta| + L2 sum theta^2 (ours: l2/2, weights only)
        "L1": s.l1, "L2": s.l2 / 2, "weight_l1": s.l1, "weight_l2": s.l2,
        "num_hiddens": s.hidden, "num_visibles": data.length,
        "num_chains": s.chains if s.method != "cd" else s.batch_for(data.num_sequences),
        "num_states": data.num_states, "updates": s.updates, "method": s.method,
    }
