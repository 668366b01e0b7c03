"""Step rules: plain and unit-norm sgd, and Adam against its definition computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from rbmflow.training.steps import AdamStep, Direction, StepRule, step_rule
from rbmflow.training.train import TrainSettings


def _steps(rule: StepRule, grads, lr: float, centres=None):
    """The steps `rule` adds to parameters that start at zero."""
    parameters = tuple(torch.zeros_like(g) for g in grads)
    rule.apply(parameters, Direction(grads, centres), lr)
    return parameters


def _gradients(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(5, 3, 7, generator=g, dtype=torch.float64),
            torch.randn(5, 3, generator=g, dtype=torch.float64),
            torch.randn(7, generator=g, dtype=torch.float64))


def test_unit_norm_sgd_steps_have_the_learning_rate_as_length():
    grads = _gradients(0)
    steps = _steps(StepRule(normalize=True), grads, 0.3)
    assert math.sqrt(sum(float((x * x).sum()) for x in steps)) == pytest.approx(0.3)
    plain = _steps(StepRule(normalize=False), grads, 0.3)
    for x, g in zip(plain, grads, strict=True):
        assert torch.allclose(x, 0.3 * g)


def test_adam_matches_its_definition_over_several_steps():
    rule, lr = AdamStep(), 0.013
    m = [torch.zeros_like(x) for x in _gradients(0)]
    v = [torch.zeros_like(x) for x in _gradients(0)]
    for t in range(1, 12):
        grads = _gradients(t)
        steps = _steps(rule, grads, lr)
        for k, g in enumerate(grads):
            m[k] = 0.9 * m[k] + 0.1 * g
            v[k] = 0.999 * v[k] + 0.001 * g * g
            expected = lr * (m[k] / (1 - 0.9**t)) / ((v[k] / (1 - 0.999**t)).sqrt() + 1e-8)
            assert torch.allclose(steps[k], expected, rtol=1e-10, atol=1e-14)
    # a gradient that keeps its sign moves each parameter by about the learning rate
    constant = AdamStep()
    for _ in range(7):
        steps = _steps(constant, tuple(torch.full((11,), -2.5) for _ in range(3)), lr)
    assert torch.allclose(steps[0], torch.full((11,), -lr), rtol=1e-5)


def test_adam_steps_in_centred_coordinates_then_maps_the_step():
    """With centres, Adam's moments see the centred components and the step taken in those
    coordinates reaches (W, vbias, hbias) through the centring map; sgd moves along the
    mapped direction itself."""
    g = torch.Generator().manual_seed(11)
    v_bar = torch.rand(5, 3, generator=g, dtype=torch.float64)
    h_bar = torch.rand(7, generator=g, dtype=torch.float64)
    rule, plain, lr = AdamStep(), AdamStep(), 0.017
    for _ in range(4):
        grads = _gradients(int(torch.randint(100, (1,), generator=g)))
        steps = _steps(rule, grads, lr, (v_bar, h_bar))
        s_w, s_v, s_h = _steps(plain, grads, lr)
    torch.testing.assert_close(steps[0], s_w)
    torch.testing.assert_close(steps[1], s_v - s_w @ h_bar)
    torch.testing.assert_close(steps[2], s_h - torch.einsum("ia,iam->m", v_bar, s_w))
    direction = Direction(grads, (v_bar, h_bar))
    sgd = _steps(StepRule(normalize=False), grads, 0.3, (v_bar, h_bar))
    for x, d in zip(sgd, direction.in_parameters(), strict=True):
        torch.testing.assert_close(x, 0.3 * d)
    norm = math.sqrt(sum(float((d * d).sum()) for d in direction.in_parameters()))
    assert direction.norm_sq == pytest.approx(norm**2)


def test_the_optimizer_key_picks_the_rule_and_its_learning_rate():
    assert isinstance(step_rule("adam", True), AdamStep)
    assert type(step_rule("sgd", False)) is StepRule and not step_rule("sgd", False).normalize
    assert TrainSettings(optimizer="adam").resolved(False).learning_rate == 0.01
    assert TrainSettings().resolved(False).learning_rate == 0.4
    small = TrainSettings(hidden=13).resolved(False)
    assert (small.equilibrium_chains, small.optimizer, small.learning_rate) == ("exact", "adam",
                                                                                 0.01)
    assert TrainSettings(hidden=17).resolved(False).optimizer == "sgd"
    assert TrainSettings(optimizer="adam", learning_rate=0.003).resolved(False).learning_rate \
        == 0.003
    sgd = TrainSettings(refresh_every=0, lr_decay=1.0, optimizer="sgd").resolved(False)
    assert sgd.resume_key() == TrainSettings(refresh_every=0, lr_decay=1.0,
                                             learning_rate=0.4).resolved(False).resume_key()
    assert sgd.resume_key() != TrainSettings(refresh_every=0, lr_decay=1.0, optimizer="adam",
                                             learning_rate=0.4).resolved(False).resume_key()
    with pytest.raises(Exception, match="optimizer"):
        TrainSettings(optimizer="rmsprop")


def test_exact_model_term_takes_every_sequence_and_a_late_decay():
    exact = TrainSettings(hidden=13).resolved(False)
    assert exact.batch_size == "all" and exact.batch_for(4099) == 4099
    assert (exact.lr_decay, exact.lr_decay_from) == (0.1, 0.5)
    assert exact.learning_rate_at(300) == 0.01 and exact.learning_rate_at(600) == \
        pytest.approx(0.001)
    chains = TrainSettings(hidden=17).resolved(False)
    assert chains.batch_size == 2000 and chains.batch_for(1999) == 1999
    assert (chains.lr_decay, chains.lr_decay_from) == (1.0, 0.0)
    refreshed = TrainSettings(hidden=17).resolved(True)
    assert (refreshed.lr_decay, refreshed.lr_decay_from) == (0.05, 0.0)
    assert chains.resume_key() == TrainSettings(hidden=17, batch_size=2000).resolved(
        False).resume_key()  # runs made before "auto" keep their key
    assert exact.resume_key() != TrainSettings(hidden=13, batch_size=2000).resolved(
        False).resume_key()
    assert TrainSettings(hidden=13, batch_size=31).resolved(False).batch_for(4099) == 31
    with pytest.raises(Exception, match="batch_size"):
        TrainSettings(batch_size="most")
    with pytest.raises(Exception, match="batch_size"):
        TrainSettings(batch_size=0)
    with pytest.raises(Exception, match="still 'auto'"):
        TrainSettings().batch_for(5)
