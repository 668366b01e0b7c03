"""How a gradient becomes a parameter step: the `optimizer` run key.

- `sgd` (default): the step is learning_rate x the ascent direction, divided by its
  Euclidean norm over all parameters when `normalize_gradient` (as the `rbms` package
  does), so that the learning rate is then the step's length in parameter space.
- `adam`: Adam (Kingma & Ba 2015) on the same ascent direction, elementwise: first and
  second moments with decay rates 0.9 and 0.999, bias-corrected, step
  learning_rate x m_hat / (sqrt(v_hat) + 1e-8). Each parameter moves by about the learning
  rate when its gradient keeps its sign and by much less when it only fluctuates, so a
  constant step settles where unit-norm steps of constant length keep jumping between modes.
  With the centred gradient, the moments and the step live in the centred coordinates and
  the step is then mapped to (W, vbias, hbias) (`Direction`): rescaling the already-mapped
  direction elementwise breaks the compensation between W and the biases that centring
  relies on (measured: C_ij Pearson near 0 and free energies running off linearly on a
  three-subfamily family that the mapped step learns to 0.95).

A rule's state (Adam's moments and step count) is saved beside the checkpoint pieces
(`optimizer.h5`, replaced atomically) so that a resumed run continues bit for bit.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch import Tensor

from rbmflow.model import archive
from rbmflow.provenance import atomic_path
from rbmflow.training import checkpoints

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam")
DEFAULT_LEARNING_RATE = {"sgd": 0.4, "adam": 0.01}
"""learning_rate chosen by "auto": a unit-norm step of 0.4, or Adam's elementwise 0.01."""

Gradient = tuple[Tensor, Tensor, Tensor]


class Direction:
    """An ascent direction in the coordinates a step is taken in, and the linear map from
    there to a change of (W, vbias, hbias).

    components: (dW (L, q, Nh), dvbias (L, q), dhbias (Nh,)) in the centred coordinates when
    `centres` = (vbar (L, q), hbar (Nh,)) is given, else in (W, vbias, hbias) themselves. A
    step (sW, sa, sb) in centred coordinates changes the parameters by
    (sW, sa - sW . hbar, sb - vbar . sW).
    """

    def __init__(self, components: Gradient, centres: tuple[Tensor, Tensor] | None = None
                 ) -> None:
        self.components, self.centres = components, centres
        self._in_parameters: Gradient | None = None
        self._norm_sq: float | None = None

    def to_parameters(self, step: Gradient) -> Gradient:
        """The change of (W, vbias, hbias) made by `step`, given in this direction's
        coordinates."""
        if self.centres is None:
            return step
        v_bar, h_bar = self.centres
        s_w, s_v, s_h = step
        return s_w, s_v - s_w @ h_bar, s_h - torch.einsum("ia,iam->m", v_bar, s_w)

    def in_parameters(self) -> Gradient:
        """The direction itself as a change of (W, vbias, hbias)."""
        if self._in_parameters is None:
            self._in_parameters = self.to_parameters(self.components)
        return self._in_parameters

    @property
    def norm_sq(self) -> float:
        """Squared Euclidean norm of `in_parameters()` over all parameters (one host sync)."""
        if self._norm_sq is None:
            self._norm_sq = float(sum((g * g).sum() for g in self.in_parameters()))
        return self._norm_sq


class StepRule:
    """sgd: steps = learning_rate x gradient (/ its norm when `normalize`)."""

    def __init__(self, normalize: bool = True) -> None:
        self.normalize = normalize

    def apply(self, parameters: Gradient, direction: Direction, learning_rate: float) -> None:
        """Move `parameters` (W, vbias, hbias), in place, along `direction`."""
        scale = learning_rate
        if self.normalize:
            grad_sq = direction.norm_sq
            if grad_sq > 0:
                scale = learning_rate / math.sqrt(grad_sq)
        for p, g in zip(parameters, direction.in_parameters(), strict=True):
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

    def apply(self, parameters: Gradient, direction: Direction, learning_rate: float) -> None:
        gradient = direction.components
        if not self.first:
            self.first = [torch.zeros_like(g) for g in gradient]
            self.second = [torch.zeros_like(g) for g in gradient]
        self.count += 1
        correction1 = 1 - self.beta1 ** self.count
        correction2 = 1 - self.beta2 ** self.count
        steps = []
        for g, m, v in zip(gradient, self.first, self.second, strict=True):
            m.mul_(self.beta1).add_(g, alpha=1 - self.beta1)
            v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
            denominator = (v / correction2).sqrt_().add_(self.eps)
            steps.append((m * (learning_rate / correction1)).div_(denominator))
        for p, step in zip(parameters, direction.to_parameters(tuple(steps)), strict=True):
            p.add_(step)

    def save_state(self, out: Path, update: int) -> None:
        arrays = {f"{kind}_{k}": t for kind, moments in (("first", self.first),
                                                           ("second", self.second))
                  for k, t in enumerate(moments)}
        with atomic_path(state_path(out)) as tmp:
            archive.write_state(tmp, {"update": update, "count": self.count}, arrays)

    def restore_state(self, out: Path, update: int, device: torch.device) -> None:
        path = state_path(out)
        try:
            attributes, arrays = archive.read_state(path, update, device)
            count = attributes["count"]
            first = [arrays[f"first_{k}"] for k in range(3)]
            second = [arrays[f"second_{k}"] for k in range(3)]
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
