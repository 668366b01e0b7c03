"""Progress output: periodic log lines off a terminal, a final line always."""

from __future__ import annotations

import logging

import pytest
from rbmflow.progress import progress


def test_log_lines_off_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rbmflow.progress")
    with progress(37, "AIS forward", "betas", every_s=0.0, terminal=False) as bar:
        for _ in range(37):
            bar.update()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 38  # one per update (every_s = 0) and the final one
    assert lines[-1].startswith("AIS forward: 37/37 betas (100 %")


def test_quiet_between_periods(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rbmflow.progress")
    with progress(11, "weights", "blocks", every_s=3600.0, terminal=False) as bar:
        for _ in range(5):
            bar.update()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [lines[-1]] and lines[-1].startswith("weights: 5/11 blocks (45 %")
