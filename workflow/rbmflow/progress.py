"""Progress of long loops: a tqdm bar on a terminal, periodic log lines everywhere else.

Snakemake jobs and cluster nodes write to log files, where a bar is noise; there a stage logs
one INFO line every `every_s` seconds (and at the end) so a log shows that a long stage lives.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm

log = logging.getLogger("rbmflow.progress")


class Progress:
    """Counts `done` out of `total` units; shows a bar or logs a line now and then.

    On a terminal (stderr is a TTY) this is a tqdm bar; otherwise `update` logs
    "{desc}: {done}/{total} {unit} ({percent} %, {elapsed} s)" at most every `every_s` seconds,
    and `close` logs the final count once.
    """

    def __init__(self, total: int, desc: str, unit: str = "it", every_s: float = 30.0,
                 terminal: bool | None = None, initial: int = 0) -> None:
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.done = initial
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self._bar = (tqdm(total=total, initial=initial, desc=desc, unit=unit,
                          dynamic_ncols=True) if self.terminal else None)
        self._start = self._last = time.monotonic()
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._log(now)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        else:
            self._log(time.monotonic())

    def _log(self, now: float) -> None:
        percent = 100.0 * self.done / self.total if self.total else 100.0
        log.info("%s: %d/%d %s (%.0f %%, %.0f s)", self.desc, self.done, self.total, self.unit,
                 percent, now - self._start)


@contextmanager
def progress(total: int, desc: str, unit: str = "it", every_s: float = 30.0,
             terminal: bool | None = None, initial: int = 0) -> Iterator[Progress]:
    """`with progress(n, "AIS forward", "betas") as bar: ... bar.update()`; closed on exit."""
    bar = Progress(total, desc, unit, every_s, terminal, initial)
    try:
        yield bar
    finally:
        bar.close()
