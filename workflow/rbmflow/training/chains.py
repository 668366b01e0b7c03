"""Where the gradient's model term comes from: one chain source per training method.

Every source holds its chains (C, L) and answers three calls of the training loop:

- `model_chains(model, batch, generator)`: the chains (and their weights, None when equal)
  whose averages are the model term of this update's gradient;
- `after_step(model, update, generator)`: after the parameters moved (update is 1-based);
- `checkpoint_chains(generator)`: equally weighted chains to store with a checkpoint.

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

from rbmflow.model.rbm import PottsRBM, random_codes, sample_categorical
from rbmflow.sampling.equilibrium import ReweightedChains, TrajectoryTempering
from rbmflow.training import checkpoints

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

    def weights(self) -> Tensor | None:
        """Normalised weights of the chains (C,), None when they are equal."""
        return None

    def before_step(self, model: PottsRBM, scale: float, v_bar: Tensor, h_bar: Tensor,
                    centered: bool) -> None:
        """Called with the step's scale before the parameters move."""

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


class ReweightedPersistentChains(PersistentChains):
    """PCD with Jarzynski weights (`equilibrium.ReweightedChains`), optionally refreshed by
    `refreshed` (whose refresh resets the weights to equal)."""

    name = "pcd-reweighted"

    def __init__(self, chains: Tensor, gibbs_steps: int, state: ReweightedChains,
                 refreshed: RefreshedChains | None = None) -> None:
        super().__init__(chains, gibbs_steps)
        self.state = state
        self.refreshed = refreshed
        self._own: tuple[Tensor, Tensor, Tensor] | None = None

    def weights(self) -> Tensor | None:
        return self.state.weights().to(torch.float32)

    def before_step(self, model: PottsRBM, scale: float, v_bar: Tensor, h_bar: Tensor,
                    centered: bool) -> None:
        self._own = self.state.own_terms(model, self.chains, scale, v_bar, h_bar, centered)

    def after_step(self, model: PottsRBM, update: int, generator: torch.Generator) -> None:
        if self._own is not None:
            self.state.add_work_without_own(model, self.chains, self._own)
            self.chains = self.state.maybe_resample(self.chains, generator)
            self._own = None
        if self.refreshed is not None and update % self.refreshed.every == 0:
            self.refreshed.chains = self.chains
            self.refreshed.after_step(model, update, generator)
            self.chains = self.refreshed.chains
            self.state.log_weights = torch.zeros_like(self.state.log_weights)

    def checkpoint_chains(self, generator: torch.Generator) -> Tensor:
        if not self.state.is_uniform():
            self.chains = self.state.resample(self.chains, generator)
        return self.chains

    def restore_state(self, out: Path, update: int, device: torch.device,
                      dtype: torch.dtype) -> None:
        self.state = ReweightedChains.uniform(self.chains.shape[0], device, self.state.min_ess)
        if self.refreshed is not None:
            self.refreshed.restore_state(out, update, device, dtype)

    def save_state(self, out: Path, update: int) -> None:
        if self.refreshed is not None:
            self.refreshed.save_state(out, update)


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


def initial_chains(model: PottsRBM, s: TrainSettings, codes: Tensor,
                   generator: torch.Generator) -> Tensor:
    """PCD/Rdm: draws from the independent-site model of vbias; CD: the first data rows."""
    if s.method == "cd":
        return codes[:min(s.batch_size, codes.shape[0])].clone()
    logits = model.vbias.expand(s.chains, -1, -1)
    return sample_categorical(logits, generator)


def chain_source(s: TrainSettings, model: PottsRBM, chains: Tensor, fresh: bool) -> ChainSource:
    """The source of the model term that the (resolved) settings `s` ask for, holding `chains`;
    `fresh`: chains just drawn at the start of training (not resumed)."""
    if s.method == "cd":
        return DataStartChains(chains, s.gibbs_steps)
    if s.method == "rdm":
        return RandomStartChains(chains, s.gibbs_steps, model.vbias.shape[1])
    refreshed = (RefreshedChains(model, chains, s.gibbs_steps, s.refresh_every,
                                 s.refresh_sweeps) if s.refreshed else None)
    if s.reweighted:
        state = (ReweightedChains.start(model, chains, s.min_ess) if fresh
                 else ReweightedChains.uniform(chains.shape[0], chains.device, s.min_ess))
        return ReweightedPersistentChains(chains, s.gibbs_steps, state, refreshed)
    return refreshed or PersistentChains(chains, s.gibbs_steps)
