"""Where the gradient's model term comes from: one chain source per training method.

Every source holds its chains (C, L) and answers three calls of the training loop:

- `model_chains(model, batch, generator)`: the chains (and their weights, None when equal)
  whose averages are the model term of this update's gradient;
- `after_step(model, update, generator)`: after the parameters moved (update is 1-based);
- `checkpoint_chains(generator)`: equally weighted chains to store with a checkpoint.

`ExactChains` computes the model term exactly over the hidden configurations (Nh <= 16,
`equilibrium_chains: exact`, chosen by `auto`). `ReweightedChains` (`jarzynski`) keeps
persistent chains with importance weights that follow the parameters' moves.
`TemperedChains` keeps chains at the model's equilibrium across modes; training switches to
it when the equilibrium monitor finds that the persistent chains and the model disagree
(`equilibrium_chains: monitor`), or uses it from the start (`always`).

A source also saves and restores whatever it keeps beside its chains (`save_state`,
`restore_state`), so that a resumed run continues bit for bit. `chain_source` builds the
source that the settings ask for.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from rbmflow.model import archive
from rbmflow.model.partition import effective_sample_size, exact_moments, sample_exact
from rbmflow.model.rbm import PottsRBM, random_codes, sample_categorical
from rbmflow.provenance import atomic_path
from rbmflow.sampling.equilibrium import TrajectoryTempering, independent_site_level
from rbmflow.training import checkpoints
from rbmflow.training.moments import Moments, moments, moments_side_by_side

if TYPE_CHECKING:
    from rbmflow.training.train import TrainSettings

log = logging.getLogger(__name__)


class ChainSource:
    """Base: chains advanced by `gibbs_steps` block-Gibbs sweeps from `start_codes`."""

    name = "base"

    def __init__(self, chains: Tensor, gibbs_steps: int) -> None:
        self.chains = chains
        self.gibbs_steps = gibbs_steps

    def start_codes(self, batch: Tensor, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def model_chains(self, model: PottsRBM, batch: Tensor, generator: torch.Generator
                     ) -> tuple[Tensor, Tensor | None]:
        """The chains of this update's model term (C, L) and their weights (None: equal)."""
        self.chains = model.gibbs(self.start_codes(batch, generator), self.gibbs_steps,
                                  generator=generator)
        return self.chains, self.weights()

    def gradient_moments(self, model: PottsRBM, batch: tuple[Tensor, Tensor],
                         generator: torch.Generator) -> tuple[Moments, Moments]:
        """The averages of this update's model term (those of `model_chains`) and of its data
        term (the batch's codes and weights), computed side by side."""
        chains, weights = self.model_chains(model, batch[0], generator)
        model_term, data_term = moments_side_by_side(model, [(chains, weights), batch])
        return model_term, data_term

    def weights(self) -> Tensor | None:
        """Normalised weights of the chains (C,), None when they are equal."""
        return None

    def after_step(self, model: PottsRBM, update: int, generator: torch.Generator) -> None:
        """Called after the parameters moved by update number `update` (1-based)."""

    def checkpoint_chains(self, generator: torch.Generator) -> Tensor:
        """Equally weighted chains to store with a checkpoint."""
        return self.chains

    def save_state(self, out: Path, update: int) -> None:
        """Store what the source keeps beside its chains, with checkpoint `update`."""

    def restore_state(self, out: Path, update: int, device: torch.device,
                      dtype: torch.dtype) -> None:
        """Take back what `save_state` stored with checkpoint `update`."""


class PersistentChains(ChainSource):
    """PCD: the chains carry over from one update to the next."""

    name = "pcd"

    def start_codes(self, batch: Tensor, generator: torch.Generator) -> Tensor:
        return self.chains


class DataStartChains(ChainSource):
    """CD-k: the chains start at the data batch of each update."""

    name = "cd"

    def start_codes(self, batch: Tensor, generator: torch.Generator) -> Tensor:
        return batch


class RandomStartChains(ChainSource):
    """Rdm: the chains restart from uniformly random sequences at each update."""

    name = "rdm"

    def __init__(self, chains: Tensor, gibbs_steps: int, num_states: int) -> None:
        super().__init__(chains, gibbs_steps)
        self.num_states = num_states

    def start_codes(self, batch: Tensor, generator: torch.Generator) -> Tensor:
        num, length = self.chains.shape
        return random_codes(num, length, self.num_states, self.chains.device, generator)


class ExactChains(ChainSource):
    """The model term computed exactly by enumerating the hidden configurations (Nh at most
    `EXACT_MAX_HIDDENS`): no chain, no sampling noise, every mode at its weight. The chains
    kept for the log and the checkpoints are fresh exact draws of the current model."""

    name = "exact"

    def gradient_moments(self, model: PottsRBM, batch: tuple[Tensor, Tensor],
                         generator: torch.Generator) -> tuple[Moments, Moments]:
        return Moments(*exact_moments(model)), moments(model, *batch)

    def model_chains(self, model: PottsRBM, batch: Tensor, generator: torch.Generator
                     ) -> tuple[Tensor, Tensor | None]:
        self.chains = sample_exact(model, self.chains.shape[0], generator)
        return self.chains, None

    def after_step(self, model: PottsRBM, update: int, generator: torch.Generator) -> None:
        self.chains = sample_exact(model, self.chains.shape[0], generator)


MIN_ESS = 0.5
"""`ReweightedChains` resamples when the effective sample size falls under this fraction."""


class ReweightedChains(PersistentChains):
    """PCD with Jarzynski importance weights (Carbone, Decelle, Rosset, Seoane, 2023).

    Each step moves the parameters from theta to theta'; chain c's log-weight then grows by
    F_theta(v_c) - F_theta'(v_c), the change of its unnormalised log-probability, while the
    Gibbs sweeps at the current model leave the weights as they are (sequential importance
    sampling along the training trajectory, as in annealed importance sampling). The weighted
    chains therefore follow the model's mode weights even when no chain crosses between its
    modes, which is where plain PCD's model term is biased. When the effective sample size
    (sum w)^2 / sum w^2 falls under `MIN_ESS` x C, the chains are drawn again from their
    weights (systematic resampling) and the weights reset; `resamples` counts those draws.
    The model term of an update uses the chains as they are; the update's sweeps follow, and
    the change of free energy is taken at the swept states: taken at the states that chose
    the step, it underestimates the growth of their mode (docs/training.md).
    """

    name = "jarzynski"

    def __init__(self, chains: Tensor, gibbs_steps: int) -> None:
        super().__init__(chains, gibbs_steps)
        self.log_weights = torch.zeros(chains.shape[0], device=chains.device,
                                       dtype=torch.float64)
        self.free_before: Tensor | None = None
        self.resamples = 0
        self.update = 0

    def model_chains(self, model: PottsRBM, batch: Tensor, generator: torch.Generator
                     ) -> tuple[Tensor, Tensor | None]:
        """The chains as they are (a weighted sample of `model`) for this update's model
        term; then their sweeps at `model`, so that the states at which the step's change of
        free energy is taken are not those that chose the step."""
        chains, weights = self.chains, self.weights()
        self.chains = model.gibbs(chains, self.gibbs_steps, generator=generator)
        self.free_before = model.free_energy(self.chains).double()
        return chains, weights

    def weights(self) -> Tensor | None:
        if not bool(self.log_weights.any()):
            return None
        return torch.softmax(self.log_weights, 0)

    def ess_fraction(self) -> float:
        """Effective sample size of the weights over the number of chains, in (0, 1]."""
        return effective_sample_size(self.log_weights) / self.log_weights.shape[0]

    def after_step(self, model: PottsRBM, update: int, generator: torch.Generator) -> None:
        self.update = update
        if self.free_before is not None:
            self.log_weights += self.free_before - model.free_energy(self.chains).double()
            self.log_weights -= self.log_weights.max()
            self.free_before = None
        if self.ess_fraction() < MIN_ESS:
            picks = systematic_resample(torch.softmax(self.log_weights, 0), generator)
            self.chains = self.chains[picks]
            self.log_weights.zero_()
            self.resamples += 1

    def checkpoint_chains(self, generator: torch.Generator) -> Tensor:
        """The chains drawn from their weights by a generator of their own (seeded by the
        update), so that saving a checkpoint leaves the training's random stream alone."""
        weights = self.weights()
        if weights is None:
            return self.chains
        own = torch.Generator(device=self.chains.device).manual_seed(1_000_003 + self.update)
        return self.chains[systematic_resample(weights, own)]

    def save_state(self, out: Path, update: int) -> None:
        with atomic_path(reweighted_path(out)) as tmp:
            archive.write_state(tmp, {"update": update, "resamples": self.resamples},
                                {"chains": self.chains, "log_weights": self.log_weights})

    def restore_state(self, out: Path, update: int, device: torch.device,
                      dtype: torch.dtype) -> None:
        path = reweighted_path(out)
        try:
            attributes, arrays = archive.read_state(path, update, device)
            chains, log_weights = arrays["chains"], arrays["log_weights"]
            resamples = attributes["resamples"]
        except (OSError, KeyError, ValueError) as err:
            log.warning("the Jarzynski weights restart equal at update %d (%s: %s)", update,
                        path, err)
            return
        self.chains, self.log_weights, self.resamples = chains, log_weights, resamples
        self.update = update


def systematic_resample(weights: Tensor, generator: torch.Generator) -> Tensor:
    """Indices (C,) of C draws from normalised `weights` (C,) by systematic resampling: one
    uniform offset, then evenly spaced points on the cumulative weights (each index appears
    floor(C w) or ceil(C w) times)."""
    count = weights.shape[0]
    offset = torch.rand((), generator=generator, device=weights.device, dtype=weights.dtype)
    points = (offset + torch.arange(count, device=weights.device, dtype=weights.dtype)) / count
    cumulative = torch.cumsum(weights, 0)
    return torch.searchsorted(cumulative, points).clamp_(max=count - 1)


def reweighted_path(out: Path) -> Path:
    """The reweighted chains and their log-weights at the newest checkpoint:
    `jarzynski.h5` among the pieces (not a piece: never assembled into `out`)."""
    return checkpoints.partial_path(out) / "jarzynski.h5"


class RefreshedChains(PersistentChains):
    """PCD whose chains are replaced, every `every` updates, by `sweeps` rounds of
    trajectory tempering over snapshots of the model (`equilibrium.TrajectoryTempering`)."""

    name = "pcd-refreshed"

    def __init__(self, model: PottsRBM, chains: Tensor, gibbs_steps: int, every: int,
                 sweeps: int) -> None:
        super().__init__(chains, gibbs_steps)
        self.every = every
        self.tempering = TrajectoryTempering(model, chains, sweeps)

    def after_step(self, model: PottsRBM, update: int, generator: torch.Generator) -> None:
        if update % self.every == 0:
            self.chains = self.tempering.refresh(model, self.chains, generator)

    def save_state(self, out: Path, update: int) -> None:
        checkpoints.save_ladder(out, update, self.tempering.levels)

    def restore_state(self, out: Path, update: int, device: torch.device,
                      dtype: torch.dtype) -> None:
        levels = checkpoints.load_ladder(out, update, device, dtype)
        if levels is None:
            log.info("the tempering ladder restarts from the model of update %d", update)
        else:
            self.tempering.levels = levels


class TemperedChains(PersistentChains):
    """The model term from the target level of a trajectory-tempering ladder of snapshots of
    the model, kept alive across updates: at each update `gibbs_steps` rounds of a sweep at
    every level then swaps (`TrajectoryTempering.advance`); the current model joins the
    ladder when it swaps with the top level at less than `join_below`, and levels are kept
    or dropped by their swap rates, at most `max_levels`."""

    name = "tempered"

    def __init__(self, ladder: TrajectoryTempering, chains: Tensor, gibbs_steps: int,
                 join_below: float = 0.5) -> None:
        super().__init__(chains, gibbs_steps)
        self.ladder = ladder
        self.join_below = join_below

    @classmethod
    def from_snapshots(cls, snapshots: list[PottsRBM], model: PottsRBM, chains: Tensor,
                       gibbs_steps: int, generator: torch.Generator, warmup: int = 50,
                       max_levels: int = 16) -> TemperedChains:
        """A ladder of the independent-site model of the first snapshot, the `snapshots`
        (at most `max_levels`, evenly thinned) and `model`, whose level starts from `chains`
        (the others from fresh independent-site draws); `warmup` rounds, after which the
        ladder is rebuilt by swap rate (redundant levels dropped), before use."""
        first = snapshots[0] if snapshots else model
        if len(snapshots) > max_levels - 2:
            picks = torch.linspace(0, len(snapshots) - 1, max_levels - 2).round().long()
            snapshots = [snapshots[int(i)] for i in picks.unique()]
        bottom = independent_site_level(first).model
        fresh = first.vbias.expand(chains.shape[0], -1, -1)
        ladder = TrajectoryTempering(bottom, sample_categorical(fresh, generator),
                                     max_levels=max_levels)
        ladder.levels += [(m.clone(), sample_categorical(fresh, generator)) for m in snapshots]
        source = cls(ladder, chains, gibbs_steps)
        source.chains = ladder.advance(model, chains, warmup, 2.0, generator)  # and rebuild
        return source

    def model_chains(self, model: PottsRBM, batch: Tensor, generator: torch.Generator
                     ) -> tuple[Tensor, Tensor | None]:
        self.chains = self.ladder.advance(model, self.chains, self.gibbs_steps,
                                          self.join_below, generator)
        return self.chains, None

    def save_state(self, out: Path, update: int) -> None:
        checkpoints.save_ladder(out, update, self.ladder.levels)

    def restore_state(self, out: Path, update: int, device: torch.device,
                      dtype: torch.dtype) -> None:
        levels = checkpoints.load_ladder(out, update, device, dtype)
        if levels is None:
            log.warning("the tempering ladder of update %d is missing: it restarts from the "
                        "resumed model", update)
        else:
            self.ladder.levels = levels


def initial_chains(model: PottsRBM, s: TrainSettings, codes: Tensor,
                   generator: torch.Generator) -> Tensor:
    """PCD/Rdm: draws from the independent-site model of vbias; CD: the first data rows."""
    if s.method == "cd":
        return codes[:s.batch_for(codes.shape[0])].clone()
    logits = model.vbias.expand(s.chains, -1, -1)
    return sample_categorical(logits, generator)


def chain_source(s: TrainSettings, model: PottsRBM, chains: Tensor, fresh: bool) -> ChainSource:
    """The source of the model term that the (resolved) settings `s` ask for, holding `chains`;
    `fresh`: chains just drawn at the start of training (not resumed)."""
    if s.method == "cd":
        return DataStartChains(chains, s.gibbs_steps)
    if s.method == "rdm":
        return RandomStartChains(chains, s.gibbs_steps, model.vbias.shape[1])
    if s.equilibrium_chains == "exact":
        return ExactChains(chains, s.gibbs_steps)
    if s.equilibrium_chains == "jarzynski":
        return ReweightedChains(chains, s.gibbs_steps)
    if s.equilibrium_chains == "always":
        return TemperedChains(TrajectoryTempering(model, chains), chains, s.gibbs_steps)
    if s.refreshed:
        return RefreshedChains(model, chains, s.gibbs_steps, s.refresh_every, s.refresh_sweeps)
    return PersistentChains(chains, s.gibbs_steps)
