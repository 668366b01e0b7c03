"""How a gradient becomes a parameter step: the `optimizer` run key.

- `sgd` (default): the step is learning_rate x the ascent direction, divided by its
  Euclidean norm over all parameters when `normalize_gradient` (as the `rbms` package
  does), so that the learning rate is then the step's length in parameter space.
- `adam`: Adam (Kingma & Ba 2015) on the same ascent direction, elementwise: first and
  second moments with decay rates 0.9 and 0.999, bias-corrected, step
  learning_rate x m_hat / (sqrt(v_hat) + 1e-8). Each parameter moves by about the learning
  rate when its gradient keeps its sign and by much less when it only fluctuates, so a
  constant step settles where unit-norm steps of constant length keep jumping between modes.

A rule's state (Adam's moments and step count) is saved beside the checkpoint pieces
(`optimizer.h5`, replaced atomically) so that a resumed run continues bit for bit.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import h5py
import torch
from torch import Tensor

from rbmflow.model import archive
from rbmflow.provenance import atomic_path
from rbmflow.training import checkpoints

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam")
DEFAULT_LEARNING_RATE = {"sgd": 0.2, "adam": 0.01}
"""learning_rate chosen by "auto": a unit-norm step of 0.2, or Adam's elementwise 0.01."""

Gradient = tuple[Tensor, Tensor, Tensor]


class StepRule:
    """sgd: steps = learning_rate x gradient (/ its norm when `normalize`)."""

    def __init__(self, normalize: bool = True) -> None:
        self.normalize = normalize

    def apply(self, parameters: Gradient, gradient: Gradient, grad_sq: float,
              learning_rate: float) -> None:
        """Move `parameters` (W, vbias, hbias), in place, along the ascent direction
        `gradient` (the same shapes), whose squared norm over all parameters is `grad_sq`."""
        scale = learning_rate
        if self.normalize and grad_sq > 0:
            scale = learning_rate / math.sqrt(grad_sq)
        for p, g in zip(parameters, gradient, strict=True):
            p.add_(g, alpha=scale)

    def save_state(self, out: Path, update: int) -> None:
        """Store the rule's state with checkpoint `update` (nothing for sgd)."""

    def restore_state(self, out: Path, update: int, device: torch.device) -> None:
        """Take back what `save_state` stored with checkpoint `update`."""


class AdamStep(StepRule):
    """Adam on the ascent direction (see the module docstring)."""

    beta1, beta2, eps = 0.9, 0.999, 1e-8

    def __init__(self) -> None:
        super().__init__(normalize=False)
        self.count = 0
        self.first: list[Tensor] = []
        self.second: list[Tensor] = []

    def apply(self, parameters: Gradient, gradient: Gradient, grad_sq: float,
              learning_rate: float) -> None:
        if not self.first:
            self.first = [torch.zeros_like(g) for g in gradient]
            self.second = [torch.zeros_like(g) for g in gradient]
        self.count += 1
        correction1 = 1 - self.beta1 ** self.count
        correction2 = 1 - self.beta2 ** self.count
        for p, g, m, v in zip(parameters, gradient, self.first, self.second, strict=True):
            m.mul_(self.beta1).add_(g, alpha=1 - self.beta1)
            v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
            denominator = (v / correction2).sqrt_().add_(self.eps)
            p.addcdiv_(m, denominator, value=learning_rate / correction1)

    def save_state(self, out: Path, update: int) -> None:
        arrays = {f"{kind}_{k}": t for kind, moments in (("first", self.first),
                                                           ("second", self.second))
                  for k, t in enumerate(moments)}
        with atomic_path(state_path(out)) as tmp:
            archive.write_state(tmp, {"update": update, "count": self.count}, arrays)

    def restore_state(self, out: Path, update: int, device: torch.device) -> None:
        path = state_path(out)
        try:
            with h5py.File(path, "r") as f:
                if int(f.attrs["update"]) != update:
                    raise ValueError(f"saved at update {int(f.attrs['update'])}, not {update}")
                count = int(f.attrs["count"])
                first = [torch.as_tensor(f[f"first_{k}"][()], device=device) for k in range(3)]
                second = [torch.as_tensor(f[f"second_{k}"][()], device=device)
                          for k in range(3)]
        except (OSError, KeyError, ValueError) as err:
            log.warning("Adam's moments restart from zero at update %d (%s: %s)", update,
                        path, err)
            return
        self.count, self.first, self.second = count, first, second


def state_path(out: Path) -> Path:
    """The step rule's state at the newest checkpoint: `optimizer.h5` among the pieces (not
    a piece: never assembled into `out`)."""
    return checkpoints.partial_path(out) / "optimizer.h5"


def step_rule(optimizer: str, normalize_gradient: bool) -> StepRule:
    """The step rule of the `optimizer` run key."""
    if optimizer == "adam":
        return AdamStep()
    return StepRule(normalize_gradient)
