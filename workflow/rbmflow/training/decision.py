"""Which chains feed the gradient's model term, decided by the model itself.

`equilibrium_chains: exact` computes the model term exactly over the 2^Nh hidden
configurations (`chains.ExactChains`): every mode at its weight, no sampling noise; `auto`,
the default, chooses it whenever Nh <= `EXACT_MAX_HIDDENS`, and `never` (plain or refreshed
persistent chains) otherwise. With `monitor` training starts with the persistent chains
that the settings ask for; when the equilibrium monitor finds, at a row of the log, that
those chains disagree with equilibrium samples of the current model, the rest of the run
takes its model term from `chains.TemperedChains`: a trajectory-tempering ladder of the
checkpoints saved so far, kept alive across updates. When `lr_decay` was left to "auto",
the step then decays to `AUTO_LR_DECAY` x over the remaining updates. `always` uses the
tempered chains from the first update. The switch is not the default for large Nh: its
cost was measured to be large on WW (see docs/training.md).

The decision (which chains, from which update, why, and what the tempered updates cost) is
kept in model.h5's metadata under `training_chains`, logged, and shown by the report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from rbmflow.model.rbm import PottsRBM
from rbmflow.sampling.equilibrium import MonitorResult
from rbmflow.training.chains import ChainSource, ReweightedChains, TemperedChains

if TYPE_CHECKING:
    from rbmflow.training.train import TrainSettings

log = logging.getLogger(__name__)

CHOICES = ("auto", "exact", "jarzynski", "monitor", "always", "never")
EXACT_MAX_HIDDENS = 16
"""`auto` computes the model term exactly up to this many hidden units (2^16 configurations)."""


@dataclass
class ChainsDecision:
    """The record of which chains fed the gradient (`as_dict` is the metadata entry)."""

    source: str
    why: str
    switched_at: int | None = None
    switch_time_s: float | None = None
    ladder_levels: int | None = None
    swap_rates: list[float] = field(default_factory=list)
    resamples: int | None = None

    @classmethod
    def start(cls, s: TrainSettings, source: ChainSource) -> ChainsDecision:
        why = {"always": "equilibrium_chains: always",
               "never": "equilibrium_chains: never",
               "jarzynski": "equilibrium_chains: jarzynski (persistent chains with "
                            "importance weights that follow the parameters' moves)",
               "exact": f"equilibrium_chains: exact ({s.hidden} hidden units: the model term "
                        f"is computed over the 2^{s.hidden} hidden configurations)",
               "monitor": "equilibrium_chains: monitor; the monitor never found the chains "
                          "away from the model's equilibrium"}[s.equilibrium_chains]
        if s.equilibrium_chains == "monitor" and not (s.monitor and s.method == "pcd"):
            why = "equilibrium_chains: monitor, but no monitor (monitor off or not pcd)"
        return cls(source.name, why)

    @classmethod
    def from_metadata(cls, entry: dict[str, Any] | None) -> ChainsDecision | None:
        if not entry:
            return None
        keys = ("source", "why", "switched_at", "switch_time_s", "ladder_levels",
                "swap_rates", "resamples")
        return cls(**{k: entry[k] for k in keys if k in entry})

    def as_dict(self, update: int, elapsed: float) -> dict[str, Any]:
        """The metadata entry at `update` (training time `elapsed`, s)."""
        entry: dict[str, Any] = {
            "source": self.source, "why": self.why, "switched_at": self.switched_at,
            "switch_time_s": self.switch_time_s, "ladder_levels": self.ladder_levels,
            "swap_rates": [round(r, 4) for r in self.swap_rates]}
        if self.resamples is not None:
            entry["resamples"] = self.resamples
        if self.switched_at is not None and self.switch_time_s is not None:
            before = self.switch_time_s / max(self.switched_at, 1)
            after = (elapsed - self.switch_time_s) / max(update - self.switched_at, 1)
            entry["seconds_per_update"] = {"before": round(before, 5),
                                           "after": round(after, 5)}
        return entry

    def observe(self, source: ChainSource) -> None:
        """Note the tempered ladder's state: its levels, and the swap rates between them (none
    when the ladder was just rebuilt); or how often reweighted chains were resampled."""
        if isinstance(source, ReweightedChains):
            self.resamples = source.resamples
        if isinstance(source, TemperedChains):
            self.ladder_levels = len(source.ladder.levels) + 1
            rates = list(source.ladder.swap_rates)  # of the last update, before a rebuild
            self.swap_rates = rates if len(rates) == self.ladder_levels - 1 else []


def switch_due(s: TrainSettings, source: ChainSource, verdicts: list[MonitorResult],
               update: int) -> bool:
    """Whether `auto` moves to tempered chains at `update`, where the monitor's last verdict
    (`verdicts`, most recent last, made at `update`) disagrees. Waiting for a second
    disagreeing check was measured to come too late: on a three-subfamily family the switch
    at the second check (update 100) left the mode weights 0.62 off, at the first (update 50)
    0.11."""
    return (s.equilibrium_chains == "monitor" and s.method == "pcd"
            and not isinstance(source, TemperedChains) and len(verdicts) >= 1
            and verdicts[-1].disagree and update < s.updates)


def switch(s: TrainSettings, decay_on_switch: bool, source: ChainSource,
           snapshots: list[PottsRBM], model: PottsRBM, verdict: MonitorResult, update: int,
           elapsed: float, decision: ChainsDecision, generator: torch.Generator
           ) -> tuple[TrainSettings, ChainSource]:
    """Move to tempered chains over `snapshots` (the saved checkpoints) at `update`; the
    settings (with the step decaying from here when `decay_on_switch`) and the new source."""
    from rbmflow.training.train import AUTO_LR_DECAY

    tempered = TemperedChains.from_snapshots(snapshots, model, source.chains, s.gibbs_steps,
                                             generator)
    decision.source, decision.switched_at, decision.switch_time_s = (
        tempered.name, update, round(elapsed, 3))
    decision.why = (f"equilibrium_chains: monitor; at update {update} the {source.name} chains "
                    f"disagreed with {verdict.reference} samples of the model (KS "
                    f"{max(verdict.ks):.3f} > {verdict.critical:.3f})")
    decision.observe(tempered)
    if decay_on_switch:
        s = replace(s, lr_decay=AUTO_LR_DECAY, lr_decay_from=update / s.updates)
    log.warning("update %d: the gradient's model term now comes from a tempering ladder of "
                "%d levels over the checkpoints%s", update, decision.ladder_levels,
                f"; the step decays to {AUTO_LR_DECAY} x" if decay_on_switch else "")
    return s, tempered
