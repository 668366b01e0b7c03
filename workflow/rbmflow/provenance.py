"""Atomic writes and provenance records shared by every stage.

Every artifact is written to a temporary file in its final directory and renamed into place
only once complete, so an interrupted job never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from rbmflow.errors import InputError

FORMAT_VERSION = 1

_TRACKED_PACKAGES = ("rbmflow", "torch", "numpy", "h5py", "biopython", "pyhmmer", "snakemake")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary name keeps the suffix of `path` (some writers, like numpy, care) and starts
    with '.' so that no glob of the final names picks it up. On any exception the temporary
    file is removed and `path` is left untouched.
    """
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{final.suffix}",
                                   dir=final.parent)
    except OSError as err:
        raise OSError(err.errno, f"cannot write {final}: {err.strerror}") from err
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())
        yield tmp_path
        os.replace(tmp_path, final)
    except OSError as err:
        tmp_path.unlink(missing_ok=True)
        if err.filename is None or str(err.filename) == str(tmp_path):
            cause = err.strerror or " ".join(str(err).split())
            raise OSError(err.errno, f"cannot write {final}: {cause}") from err
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike[str]) -> Iterator[list[Path]]:
    """Temporary paths for several outputs of one job: all renamed into place if the block
    succeeds, none otherwise (so a job never leaves one of its outputs without the others)."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_path(path)) for path in paths]


@contextlib.contextmanager
def nothing_new_on_failure(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Run a block that writes several files into `folder`; if it fails, remove the files it
    created there (and `folder` and its parents if the block created them and they are empty).
    """
    folder = Path(folder)
    created = []  # deepest first
    for directory in (folder, *folder.parents):
        if directory.exists():
            break
        created.append(directory)
    before = set(folder.rglob("*")) if folder.exists() else set()
    try:
        yield folder
    except BaseException:
        if folder.exists():
            for path in sorted(set(folder.rglob("*")) - before, reverse=True):
                with contextlib.suppress(OSError):
                    path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
        for directory in created:
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


@contextlib.contextmanager
def nothing_written_on_failure() -> Iterator[Callable[[str | os.PathLike[str]], Path]]:
    """A block writing several outputs one after the other: wrap each output path in the
    yielded function; if the block fails, the outputs already written are removed."""
    written: list[Path] = []

    def track(path: str | os.PathLike[str]) -> Path:
        written.append(Path(path))
        return Path(path)

    try:
        yield track
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def folder_built_aside(folder: str | os.PathLike[str],
                       last: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield an empty hidden folder beside `folder` to write into; if the block succeeds, its
    files become `folder` (renamed as a whole, or file by file into an existing `folder`,
    the names in `last` last); otherwise, and after a kill, `folder` is left as it was.

    Folders that a killed run left (`.{name}.{pid}.*.tmp` of a dead process) are removed.
    """
    folder = Path(folder)
    created = [d for d in (folder.parent, *folder.parent.parents) if not d.exists()]
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{folder.name}.*.tmp"):
        pid = stale.name[len(folder.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.{os.getpid()}.", suffix=".tmp",
                                dir=folder.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        try:
            os.rename(tmp, folder)  # absent or empty: the whole folder at once
        except OSError:
            names = sorted(os.listdir(tmp),
                           key=lambda name: (last.index(name) + 1 if name in last else 0, name))
            for name in names:
                os.replace(tmp / name, folder / name)
    except BaseException:
        for directory in created:
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _identity(path: Path) -> tuple[Path, tuple[int, int] | None]:
    """The resolved path (symlinks followed) and, if the file exists, its (device, inode)."""
    resolved = path.resolve()
    try:
        stat = path.stat()
    except OSError:
        return resolved, None
    return resolved, (stat.st_dev, stat.st_ino)


def refuse_output_onto_input(
    inputs: dict[str, str | os.PathLike[str] | None],
    outputs: dict[str, str | os.PathLike[str] | None],
) -> None:
    """Refuse (InputError naming both) an output that is an input, or another output.

    `inputs` and `outputs` map an option ("--out", "MODEL") to a path (None: not given). Two
    paths are the same file when they resolve to the same path (a symlink to the other, a
    relative and an absolute spelling) or, when both exist, share a device and inode (a hard
    link). Inputs that do not exist are skipped (their own check names them).
    """
    seen: list[tuple[str, str, Path, tuple[int, int] | None]] = []
    for role, path in inputs.items():
        if path is not None and Path(path).exists():
            seen.append(("input", role, *_identity(Path(path))))
    for role, path in outputs.items():
        if path is None:
            continue
        resolved, inode = _identity(Path(path))
        for kind, other, other_resolved, other_inode in seen:
            if resolved == other_resolved or (inode is not None and inode == other_inode):
                what = ("is the input" if kind == "input" else "is the same file as the "
                        "output")
                raise InputError(f"{role} {path} {what} {other} ({other_resolved}); "
                                 "refusing to overwrite it: choose another output path")
        seen.append(("output", role, resolved, inode))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def json_default(obj: Any) -> Any:
    """`default=` for json.dumps: numpy/torch scalars and arrays, paths and torch devices."""
    if type(obj).__name__ == "device":  # torch.device, without importing torch here
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def package_versions() -> dict[str, str]:
    """Installed versions of the packages whose behaviour shapes the results."""
    versions = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    """Commit of the pipeline's own checkout (None outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def provenance(
    stage: str,
    inputs: dict[str, str | os.PathLike[str]] | None = None,
    settings: dict[str, Any] | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """The provenance block every artifact carries.

    `inputs` maps a role ("alignment", "model") to a file path; each is recorded with its
    sha256. `settings` are the stage's own options, recorded as given.
    """
    return {
        "format_version": FORMAT_VERSION,
        "stage": stage,
        "created": now_utc(),
        "inputs": {
            role: {"path": str(path), "sha256": sha256_file(path)}
            for role, path in (inputs or {}).items()
        },
        "settings": settings or {},
        "seed": seed,
        "versions": package_versions(),
        "git_commit": git_commit(),
    }


def json_safe(obj: Any) -> Any:
    """NaN and infinities as null (JSON has neither)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
