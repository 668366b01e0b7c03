"""Checkpoints of a training run: where to resume, one piece per checkpoint, the final archive.

While `rbmflow train` writes `model.h5`, it holds an exclusive lock on `.model.h5.lock` beside
it (`output_lock`) and writes each checkpoint as one small archive in the hidden directory
`.model.h5.partial/` (`save`). `resume` finds the newest piece made from the same settings and
the same data (`resume_key`: settings and a hash of the training sequences and weights).
`finish` assembles `model.h5` and the training log from the pieces, both renamed into place
together, and only then removes the pieces (the directory is first renamed away, so a kill
during the clean-up never leaves pieces that a later run could mistake for an interrupted run).

A checkpoint written because of SIGTERM/SIGINT (not on the schedule) is marked `on_signal`: it
serves to resume, and is left out of `model.h5`, so an interrupted and resumed run writes the
same archive as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from rbmflow.data.dataset import EncodedAlignment
from rbmflow.errors import RbmflowError
from rbmflow.model import archive
from rbmflow.model.rbm import PottsRBM
from rbmflow.provenance import atomic_path, atomic_paths

log = logging.getLogger(__name__)

ON_SIGNAL_KEY = "on_signal"


def partial_path(out: Path) -> Path:
    """The directory of checkpoint pieces while training runs: hidden, beside `model.h5`.

    `.{out.name}.partial/update_{n:06d}.h5` holds checkpoint n (`archive.piece_path`), each
    a one-checkpoint archive with that checkpoint's chains, RNG states, time and log.
    """
    return out.with_name(f".{out.name}.partial")


def lock_path(out: Path) -> Path:
    """The lock file held while `out` is being written: `.{out.name}.lock` beside it."""
    return out.with_name(f".{out.name}.lock")


def _trash_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial.done")


def data_hash(*parts: EncodedAlignment | None) -> str:
    """sha256 of the sequences, weights and alphabet of `parts` (None parts count as empty)."""
    digest = hashlib.sha256()
    for part in parts:
        if part is None:
            digest.update(b"none")
            continue
        codes = np.ascontiguousarray(part.codes, dtype=np.uint8)
        weights = np.ascontiguousarray(part.weights, dtype=np.float32)
        digest.update(json.dumps([list(codes.shape), part.alphabet]).encode())
        digest.update(codes.tobytes())
        digest.update(weights.tobytes())
    return digest.hexdigest()


def resume_key(settings_key: str, data: EncodedAlignment, test: EncodedAlignment | None) -> str:
    """What a checkpoint must match to be resumed: the settings' key and the data's hash."""
    combined = f"{settings_key}:{data_hash(data, test)}"
    return hashlib.sha256(combined.encode()).hexdigest()[:16]


@contextmanager
def output_lock(out: Path) -> Iterator[Path]:
    """Hold an exclusive lock on writing `out`; refuse (RbmflowError) if another process holds it.

    The lock is `flock` on `lock_path(out)`, which holds the owner's PID; it is released, and
    the file removed, on exit (and by the kernel if the process dies). An empty directory of
    pieces is removed on exit too.
    """
    path = lock_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            try:
                holder = path.read_text().strip()
            except OSError:
                holder = ""
            who = f" by PID {holder}" if holder.isdigit() else ""
            raise RbmflowError(
                f"{out} is being written by another process (lock {path} held{who}); "
                "wait for it to finish or stop it, then rerun") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file between our open and our lock
    with contextlib.suppress(OSError):  # the PID is for the message only (a full disk)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):  # an empty directory of pieces is no checkpoint
            partial_path(out).rmdir()
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)


@dataclass
class ResumePoint:
    """The state of an interrupted (or shorter, finished) run at its newest checkpoint."""

    update: int
    model: PottsRBM
    chains: Tensor
    rng_state: Tensor | None
    time_s: float
    log_text: str | None
    metadata: dict[str, Any]


def resume(out: Path, log_path: Path, key: str, updates: int, restart: bool,
           device: torch.device, dtype: torch.dtype) -> ResumePoint | None:
    """Where training `out` resumes, or None (start from scratch; stale pieces removed).

    The newest readable piece in `partial_path(out)` if there is one, else a finished `out`;
    either must carry `key` and not go past `updates`. A finished `out` that is complete
    (its last update at least that of the newest piece) wins over leftover pieces, which are
    removed. A finished `out` that stops short of `updates` is first copied into the pieces
    as the piece of its last update, so that the assembled archive keeps its checkpoints.
    """
    partial = partial_path(out)
    _remove_temporaries(out, partial)
    for stale in log_path.parent.glob(f".{log_path.name}.*.tmp{log_path.suffix}"):
        stale.unlink(missing_ok=True)
    if restart:
        shutil.rmtree(partial, ignore_errors=True)
        return None
    pieces = _pieces_unless_complete(out, partial, key)
    candidates = [path for _, path in reversed(pieces)]
    if not candidates and out.exists():
        candidates = [out]
    for source in candidates:
        try:
            meta = archive.read_metadata(source)
            done = meta["updates"]
        except RbmflowError as err:
            log.warning("ignoring unreadable archive %s (%s)", source, err)
            if source != out:
                source.unlink()
            continue
        if meta.get("resume_key") != key or not done:
            log.warning("%s was written with other settings or other data; training from "
                        "scratch", source)
            break
        if done[-1] > updates:
            log.warning("%s already goes past update %d; training from scratch", source,
                        updates)
            break
        start = done[-1]
        if source == out and start < updates:
            source = archive.piece_path(partial, start)
            archive_copy(out, source)
        state = archive.load_checkpoint_state(source, start)
        log.info("resuming %s from update %d", source, start)
        return ResumePoint(
            update=start,
            model=archive.load_rbm(source, start, device=device, dtype=dtype),
            chains=archive.load_chains(source, device=device),
            rng_state=state["rng_state"], time_s=state["time_s"],
            log_text=state["train_log"], metadata=meta)
    shutil.rmtree(partial, ignore_errors=True)
    return None


def _pieces_unless_complete(out: Path, partial: Path, key: str) -> list[tuple[int, Path]]:
    """The pieces in `partial`, or none (removed) when a finished `out` of the same `key`
    reaches at least the newest of them."""
    pieces = archive.list_pieces(partial)
    if pieces and out.exists():
        try:
            finished = archive.read_metadata(out)
        except RbmflowError:
            finished = None
        if (finished is not None and finished.get("resume_key") == key
                and finished["updates"] and finished["updates"][-1] >= pieces[-1][0]):
            log.warning("removing checkpoint pieces left beside the complete %s", out)
            shutil.rmtree(partial, ignore_errors=True)
            pieces = []
    return pieces


def parse_log(text: str | None, up_to: int) -> list[dict[str, Any]]:
    """The rows of a training log (CSV text) up to update `up_to`."""
    if not text:
        return []
    return [row for row in csv.DictReader(io.StringIO(text)) if int(row["update"]) <= up_to]


def save(out: Path, update: int, model: PottsRBM, chains: Tensor, elapsed: float,
         rng_state: Tensor | None, hyperparameters: dict[str, Any], metadata: dict[str, Any],
         log_text: str, scheduled: bool = True) -> Path:
    """Write checkpoint `update` as one piece in `partial_path(out)`, atomically; its path.

    `scheduled=False` (a checkpoint written on a signal) marks the piece `on_signal`: it is
    used to resume but left out of the final archive.
    """
    piece = archive.piece_path(partial_path(out), update)
    piece_metadata = metadata if scheduled else {**metadata, ON_SIGNAL_KEY: True}
    archive.save_checkpoint(piece, model, chains, update, elapsed, rng_state, hyperparameters,
                            piece_metadata, train_log=log_text)
    return piece


def saved_models(out: Path, key: str, update: int, device: torch.device, dtype: torch.dtype
                 ) -> list[PottsRBM]:
    """The models of the checkpoints saved up to `update`, in order: from the pieces, and
    from a finished `out` of the same `key` that a run extends (the equilibrium monitor's
    tempering levels)."""
    sources: dict[int, Path] = {}
    with contextlib.suppress(RbmflowError, OSError):
        if out.exists() and archive.read_metadata(out).get("resume_key") == key:
            sources.update((u, out) for u in archive.list_updates(out) if u <= update)
    sources.update((u, path) for u, path in archive.list_pieces(partial_path(out))
                   if u <= update)
    return [archive.load_rbm(path, u, device=device, dtype=dtype)
            for u, path in sorted(sources.items())]


def ladder_path(out: Path) -> Path:
    """The tempering ladder of refreshed chains (`refresh_every`) at the newest checkpoint:
    `ladder.h5` among the pieces (not a piece: never assembled into `out`)."""
    return partial_path(out) / "ladder.h5"


def save_ladder(out: Path, update: int, levels: list[tuple[PottsRBM, Tensor]]) -> None:
    """Write the ladder's levels (model snapshot, chains) as of checkpoint `update`,
    atomically, replacing the previous one: a resumed run continues with the same ladder."""
    with atomic_path(ladder_path(out)) as tmp:
        archive.write_ladder(tmp, update, levels)


def load_ladder(out: Path, update: int, device: torch.device, dtype: torch.dtype
                ) -> list[tuple[PottsRBM, Tensor]] | None:
    """The ladder saved with checkpoint `update`, or None (none, unreadable, or of another
    update: the ladder then restarts from the resumed model)."""
    path = ladder_path(out)
    if not path.exists():
        return None
    try:
        saved_update, levels = archive.read_ladder(path, device, dtype)
    except (OSError, KeyError, ValueError) as err:
        log.warning("ignoring unreadable tempering ladder %s (%s)", path, err)
        return None
    return levels if saved_update == update else None


def finish(out: Path, log_path: Path, log_text: str) -> None:
    """Assemble `out` from the pieces and write the log, both at once; then remove the pieces.

    Pieces marked `on_signal` are left out (unless it is the last one). Nothing is removed
    before `out` and `log_path` are renamed into place: a kill at any moment leaves either
    the pieces or the complete archive (with at most a renamed-away directory of pieces,
    which `resume` removes).
    """
    partial = partial_path(out)
    pieces = archive.list_pieces(partial)
    kept = [path for i, (_, path) in enumerate(pieces)
            if i == len(pieces) - 1 or not _on_signal(path)]
    if not kept:
        if not out.exists():
            raise RbmflowError(f"{partial}: no checkpoint to assemble {out} from")
        with atomic_path(log_path) as log_tmp:
            log_tmp.write_text(log_text)
        return
    with atomic_paths(out, log_path) as (out_tmp, log_tmp):
        log_tmp.write_text(log_text)
        archive.assemble_into(kept, out_tmp)
    if partial.exists():
        trash = _trash_path(out)
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(partial, trash)
        shutil.rmtree(trash)


def _on_signal(piece: Path) -> bool:
    with h5py.File(piece, "r") as f:
        group = f.get(archive.METADATA_GROUP)
        if group is None or "metadata_json" not in group.attrs:
            return False
        raw = group.attrs["metadata_json"]
    meta = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    return bool(meta.get(ON_SIGNAL_KEY, False))


def _remove_temporaries(out: Path, partial: Path) -> None:
    """Delete what writes cut short by a kill leave: temporary pieces, temporary `out`/log
    files, and a renamed-away directory of pieces."""
    for stale in [*partial.glob(".*.tmp.h5"), *out.parent.glob(f".{out.name}.*.tmp{out.suffix}")]:
        stale.unlink(missing_ok=True)
    shutil.rmtree(_trash_path(out), ignore_errors=True)


def archive_copy(source: Path, target: Path) -> None:
    """Copy the file `source` to `target`, atomically."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
