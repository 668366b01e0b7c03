"""What watches the training loop: the log rows (with the equilibrium monitor), the checkpoint
schedule, and the clock. The loop calls them at fixed points after each update."""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rbmflow.errors import RbmflowError
from rbmflow.evaluation.stats import (
    MAX_PAIR_ENTRIES,
    connected_correlations,
    pair_statistics_fit,
    pearson,
)
from rbmflow.model import archive
from rbmflow.model.rbm import PottsRBM
from rbmflow.sampling.equilibrium import CheckpointDensity, EquilibriumMonitor, MonitorResult
from rbmflow.training import checkpoints
from rbmflow.training.chains import ChainSource

log = logging.getLogger(__name__)

LOG_COLUMNS = ("update", "time_s", "learning_rate", "pearson_cij_train", "pearson_cij_test",
               "free_energy_data", "free_energy_chains",
               "monitor_reference", "monitor_ks", "monitor_occupancy_tv", "monitor_ks_critical",
               "monitor_passages", "monitor_swap_min")


def checkpoint_schedule(updates: int, count: int) -> list[int]:
    """About `count` log-spaced update numbers in [1, updates], always including `updates`."""
    points = np.unique(np.rint(np.geomspace(1, updates, max(count, 1))).astype(np.int64))
    return sorted({int(p) for p in points} | {updates})


def log_text(rows: list[dict[str, Any]]) -> str:
    """The training log (CSV text, `LOG_COLUMNS`) of `rows`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return buffer.getvalue()


class Clock:
    """Training time in seconds: wall-clock time less the time spent in the observers."""

    def __init__(self, offset: float = 0.0) -> None:
        self.t0 = time.perf_counter() - offset

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def exclude_since(self, elapsed: float) -> None:
        """Do not count the time since `elapsed` was read."""
        self.t0 += time.perf_counter() - self.t0 - elapsed


class TrainLog:
    """The rows of train_log.csv: every `every` updates, the Pearson of the chains' connected
    correlations vs the train (and test) data, the free energies, and the monitor's verdict.
    `last`: the run's last update (always logged); `hint` ends the monitor's warning."""

    def __init__(self, every: int, codes: Tensor, weights: Tensor, num_states: int,
                 test: tuple[Tensor, Tensor] | None, monitor: EquilibriumMonitor | None,
                 rows: list[dict[str, Any]], last: int, hint: str = "") -> None:
        self.every, self.codes, self.weights, self.q = every, codes, weights, num_states
        self.monitor, self.rows, self.hint = monitor, rows, hint
        self.last = last
        self.results: list[tuple[int, MonitorResult]] = []
        self.cij_train = self.cij_test = None
        if not pair_statistics_fit(codes.shape[1], num_states):
            log.warning("L x q = %d: the training log leaves out the Pearson of the pair "
                        "statistics ((L q)^2 = %d values, over the limit of %d)",
                        codes.shape[1] * num_states, (codes.shape[1] * num_states) ** 2,
                        MAX_PAIR_ENTRIES)
            return
        self.cij_train = connected_correlations(codes, num_states, weights)
        self.cij_test = (None if test is None
                         else connected_correlations(test[0], num_states, test[1]))

    def due(self, update: int) -> bool:
        return update % self.every == 0 or update == self.last

    def record(self, update: int, elapsed: float, learning_rate: float, model: PottsRBM,
               source: ChainSource) -> dict[str, Any]:
        """Append and return the row of `update`."""
        chains, cw = source.chains, source.weights()
        f_data = float((model.free_energy(self.codes) * self.weights).sum() / self.weights.sum())
        cij_chains = (None if self.cij_train is None
                      else connected_correlations(chains, self.q, cw))
        f_chains = (model.free_energy(chains).mean() if cw is None
                    else (model.free_energy(chains) * cw).sum())
        row = {
            "update": update, "time_s": round(elapsed, 3), "learning_rate": f"{learning_rate:.6g}",
            "pearson_cij_train": ("" if cij_chains is None else
                                  f"{pearson(cij_chains, self.cij_train):.5f}"),
            "pearson_cij_test": ("" if cij_chains is None or self.cij_test is None else
                                 f"{pearson(cij_chains, self.cij_test):.5f}"),
            "free_energy_data": f"{f_data:.5f}",
            "free_energy_chains": f"{float(f_chains):.5f}",
            **self._monitor_columns(update, model, chains, cw),
        }
        self.rows.append(row)
        return row

    def verdicts(self, update: int) -> list[MonitorResult]:
        """The monitor's results so far, oldest first, when it made one at `update`; else
        []."""
        if self.results and self.results[-1][0] == update:
            return [result for _, result in self.results]
        return []

    def monitor_due(self, model: PottsRBM, at: int, last: int) -> bool:
        """Exact references at every row but the first; tempered ones (dearer) at the rows
        `every` x 2^k and the last."""
        if self.monitor is None or at == 0:
            return False
        if model.num_hiddens <= self.monitor.exact_max_hiddens or at == last:
            return True
        rows = at // self.every
        return at % self.every == 0 and rows & (rows - 1) == 0

    def _monitor_columns(self, at: int, model: PottsRBM, chains: Tensor,
                         weights: Tensor | None) -> dict[str, str]:
        """The monitor's columns (empty when not due); a loud warning when the chains and
        the model's equilibrium disagree, another when the tempered reference did not
        settle."""
        if self.monitor is None or not self.monitor_due(model, at, self.last):
            return {}
        result = self.monitor.compare(model, chains, weights, at)
        self.results.append((at, result))
        if not result.settled:
            log.warning("update %d: the monitor's tempering reference made %s passages for "
                        "%d replicas (swap rates down to %.3f): its verdict is uncertain",
                        at, result.passages, self.monitor.samples, min(result.swap_rates,
                                                                        default=0.0))
        if result.disagree:
            log.warning("update %d: the persistent chains are NOT at the model's equilibrium: "
                        "KS distance %.3f > %.3f along W's top directions vs %s samples, "
                        "orthant occupancies differ by %.3f; the gradient's model term is "
                        "biased (multimodal data: the model's mode weights may be wrong)%s",
                        at, max(result.ks), result.critical, result.reference,
                        result.occupancy_tv, self.hint)
        return result.columns()


class Checkpointer:
    """Saves checkpoints: on the log-spaced schedule, and when the estimated swap acceptance
    with the last saved model falls under `swap_threshold` (`CheckpointDensity`)."""

    def __init__(self, out: Path, schedule: list[int], swap_threshold: float,
                 metadata: dict[str, Any], hyperparameters: dict[str, Any],
                 monitor: EquilibriumMonitor | None, last_saved: int | None) -> None:
        self.out, self.schedule = out, set(schedule)
        self.metadata, self.hyperparameters = metadata, hyperparameters
        self.monitor, self.last_saved = monitor, last_saved
        self.density = CheckpointDensity(swap_threshold)

    def start(self, model: PottsRBM, source: ChainSource) -> None:
        self.density.reset(model, source.chains)

    def due(self, update: int, model: PottsRBM, source: ChainSource) -> bool:
        return update in self.schedule or self.density.due(model, source.chains,
                                                           source.weights())

    def save(self, at: int, elapsed: float, model: PottsRBM, source: ChainSource,
             generator: torch.Generator, rows: list[dict[str, Any]],
             scheduled: bool = True) -> None:
        """Write checkpoint `at` (RbmflowError when the parameters are not finite)."""
        if not all(bool(torch.isfinite(t).all()) for t in model.tensors()):
            raise self.divergence(at, "parameters")
        chains = source.checkpoint_chains(generator)
        self._record_swap_rate(at, model, chains)
        source.save_state(self.out, at)
        checkpoints.save(self.out, at, model, chains, elapsed, generator.get_state(),
                         self.hyperparameters, self.metadata, log_text(rows),
                         scheduled=scheduled)
        self.last_saved = at

    def _record_swap_rate(self, at: int, model: PottsRBM, chains: Tensor) -> None:
        """Record in the metadata (`checkpoint_swap_rates`, by update) the estimated swap
        acceptance between checkpoint `at` and the previous one; the monitor keeps the model
        as a tempering level."""
        rate = self.density.rate(model, chains)
        if math.isfinite(rate):
            self.metadata.setdefault("checkpoint_swap_rates", {})[str(at)] = round(rate, 4)
        self.density.reset(model, chains)
        if self.monitor is not None:
            self.monitor.remember(model)

    def divergence(self, update: int, what: str) -> RbmflowError:
        """The error of a non-finite `what` at `update`, naming the last good checkpoint."""
        partial = checkpoints.partial_path(self.out)
        where = (f"the last good checkpoint is update_{self.last_saved} in "
                 f"{archive.piece_path(partial, self.last_saved)}"
                 if self.last_saved is not None else "no checkpoint was written yet")
        return RbmflowError(f"training diverged at update {update}: non-finite {what} (NaN or "
                            f"inf); {where}; lower the learning rate or add l2")
