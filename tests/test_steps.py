"""Step rules: plain and unit-norm sgd, and Adam against its definition computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from rbmflow.training.steps import AdamStep, StepRule, step_rule
from rbmflow.training.train import TrainSettings


def _steps(rule: StepRule, grads, grad_sq: float, lr: float):
    """The steps `rule` adds to parameters that start at zero."""
    parameters = tuple(torch.zeros_like(g) for g in grads)
    rule.apply(parameters, grads, grad_sq, lr)
    return parameters


def _gradients(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(5, 3, 7, generator=g, dtype=torch.float64),
            torch.randn(5, 3, generator=g, dtype=torch.float64),
            torch.randn(7, generator=g, dtype=torch.float64))


def test_unit_norm_sgd_steps_have_the_learning_rate_as_length():
    grads = _gradients(0)
    grad_sq = float(sum((x * x).sum() for x in grads))
    steps = _steps(StepRule(normalize=True), grads, grad_sq, 0.3)
    assert math.sqrt(sum(float((x * x).sum()) for x in steps)) == pytest.approx(0.3)
    plain = _steps(StepRule(normalize=False), grads, grad_sq, 0.3)
    for x, g in zip(plain, grads, strict=True):
        assert torch.allclose(x, 0.3 * g)


def test_adam_matches_its_definition_over_several_steps():
    rule, lr = AdamStep(), 0.013
    m = [torch.zeros_like(x) for x in _gradients(0)]
    v = [torch.zeros_like(x) for x in _gradients(0)]
    for t in range(1, 12):
        grads = _gradients(t)
        steps = _steps(rule, grads, 0.0, lr)
        for k, g in enumerate(grads):
            m[k] = 0.9 * m[k] + 0.1 * g
            v[k] = 0.999 * v[k] + 0.001 * g * g
            expected = lr * (m[k] / (1 - 0.9**t)) / ((v[k] / (1 - 0.999**t)).sqrt() + 1e-8)
            assert torch.allclose(steps[k], expected, rtol=1e-10, atol=1e-14)
    # a gradient that keeps its sign moves each parameter by about the learning rate
    constant = AdamStep()
    for _ in range(7):
        steps = _steps(constant, tuple(torch.full((11,), -2.5) for _ in range(3)), 0.0, lr)
    assert torch.allclose(steps[0], torch.full((11,), -lr), rtol=1e-5)


def test_the_optimizer_key_picks_the_rule_and_its_learning_rate():
    assert isinstance(step_rule("adam", True), AdamStep)
    assert type(step_rule("sgd", False)) is StepRule and not step_rule("sgd", False).normalize
    assert TrainSettings(optimizer="adam").resolved(False).learning_rate == 0.01
    assert TrainSettings().resolved(False).learning_rate == 0.2
    small = TrainSettings(hidden=13).resolved(False)
    assert (small.equilibrium_chains, small.optimizer, small.learning_rate) == ("exact", "adam",
                                                                                 0.01)
    assert TrainSettings(hidden=17).resolved(False).optimizer == "sgd"
    assert TrainSettings(optimizer="adam", learning_rate=0.003).resolved(False).learning_rate \
        == 0.003
    sgd = TrainSettings(refresh_every=0, lr_decay=1.0, optimizer="sgd").resolved(False)
    assert sgd.resume_key() == TrainSettings(refresh_every=0, lr_decay=1.0,
                                             learning_rate=0.2).resolved(False).resume_key()
    assert sgd.resume_key() != TrainSettings(refresh_every=0, lr_decay=1.0, optimizer="adam",
                                             learning_rate=0.2).resolved(False).resume_key()
    with pytest.raises(Exception, match="optimizer"):
        TrainSettings(optimizer="rmsprop")
