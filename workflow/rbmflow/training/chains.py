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
from rbmflow.sampling.equilibrium import TrajectoryTempering
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
    if s.refreshed:
        return RefreshedChains(model, chains, s.gibbs_steps, s.refresh_every, s.refresh_sweeps)
    return PersistentChains(chains, s.gibbs_steps)
