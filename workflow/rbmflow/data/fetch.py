"""The fetch stage: locate or download a family's alignment and record where it came from.

A family's `source` is one of three kinds:

- `example:ww`: the WW domain alignment (Pfam PF00397, RP15) that the logomaker package
  ships; it is read in place inside the installed package and works offline.
- `pfam`: the Pfam alignment served by InterPro at
  `{base_url}/entry/pfam/{accession}/?annotation=alignment:{seed|full|uniprot}`, saved in
  the output directory as `alignment.sto.gz` (or `alignment.sto` when the server sends it
  uncompressed).
- anything else: a path to a FASTA, A2M or Stockholm file (gzip allowed), or, for a genotype
  family, a VCF/VCF.gz/BCF or `.hapt` file, read in place.

Every kind ends with `source.json` in the output directory, written last and atomically: it
is the stage's only declared output, so its presence means the alignment is complete.
"""

from __future__ import annotations

import errno
import gzip
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rbmflow import __version__
from rbmflow.errors import FetchError, InputError
from rbmflow.provenance import atomic_path, now_utc, provenance, sha256_file, write_json

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://www.ebi.ac.uk/interpro/api"
ALIGNMENT_TYPES = ("seed", "full", "uniprot")
PFAM_SOURCE = "pfam"
EXAMPLE_PREFIX = "example:"
EXAMPLES = {"ww": ("ww_sequences.fa", "fasta")}
"""Embedded examples: name -> (logomaker example data file, format)."""

SOURCE_JSON = "source.json"
PFAM_FILES = ("alignment.sto.gz", "alignment.sto")
"""Names a downloaded Pfam alignment is saved under (gzip-compressed, plain)."""

_FORMAT_BY_SUFFIX = {
    ".sto": "stockholm", ".sth": "stockholm", ".stk": "stockholm", ".stockholm": "stockholm",
    ".fa": "fasta", ".fasta": "fasta", ".fas": "fasta", ".faa": "fasta", ".afa": "fasta",
    ".a2m": "a2m", ".vcf": "vcf", ".bcf": "vcf", ".hapt": "hapt",
}
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_GZIP_LAYERS = 3
_CHUNK = 1 << 20
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_MAX_LINE = 1 << 22  # bytes of one line of a downloaded Stockholm file (a record is one line)
_ROOT_DEADLINE_S = 15.0  # the best-effort request for the Pfam release


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try a download.

    `attempts` tries in all; after failed try k (1-based) wait `backoff_s * 2**(k-1)`
    seconds, capped at `max_backoff_s`. `timeout_s` bounds each blocking socket operation
    (connect, or one read); `deadline_s` bounds the whole download, every attempt and the
    waits between them included (a server sending a byte now and then, headers included).
    A transfer slower than `min_rate_bps` bytes per second over `min_rate_window_s` seconds
    is abandoned (and retried), as curl's speed limit (0: no minimum rate). `max_bytes`
    bounds the body as received, `max_decompressed_bytes` the alignment once decompressed (a
    gzip bomb); both are refused, not retried.
    """

    attempts: int = 5
    backoff_s: float = 2.0
    max_backoff_s: float = 60.0
    timeout_s: float = 60.0
    deadline_s: float = 3600.0
    min_rate_bps: float = 1024.0
    min_rate_window_s: float = 60.0
    max_bytes: int = 4 << 30
    max_decompressed_bytes: int = 32 << 30

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if self.timeout_s <= 0 or self.backoff_s < 0 or self.deadline_s <= 0:
            raise ValueError("timeout_s and deadline_s must be > 0 and backoff_s >= 0")
        if self.min_rate_bps < 0 or self.min_rate_window_s <= 0:
            raise ValueError("min_rate_bps must be >= 0 and min_rate_window_s > 0")
        if self.max_bytes < 1 or self.max_decompressed_bytes < 1:
            raise ValueError("max_bytes and max_decompressed_bytes must be positive")

    def delay(self, failed_attempt: int) -> float:
        return min(self.backoff_s * 2.0 ** (failed_attempt - 1), self.max_backoff_s)


class _TransientError(Exception):
    """A failure worth retrying; `kind` is 'offline', 'timeout', 'status' or 'truncated'."""

    def __init__(self, kind: str, detail: str, retry_after_s: float = 0.0) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.retry_after_s = retry_after_s


@dataclass
class _Response:
    status: int
    headers: dict[str, str]
    bytes_received: int


# --------------------------------------------------------------------------- entry point


def run_stage(
    family: str,
    source: str,
    outdir: str | os.PathLike[str],
    *,
    accession: str | None = None,
    alignment: str = "full",
    base_url: str = DEFAULT_BASE_URL,
    policy: RetryPolicy | None = None,
) -> dict[str, Any]:
    """Resolve `source` for `family`, write `outdir/source.json` last, and return its record.

    `accession` and `alignment` apply to `source == "pfam"` only; the accession defaults to
    the family name. Raises InputError for a bad source or local path, FetchError when a
    download fails; in both cases nothing new is left in `outdir`.
    """
    policy = policy or RetryPolicy()
    outdir = Path(outdir)
    settings: dict[str, Any] = {"family": family, "source": source}
    if source == PFAM_SOURCE:
        accession = check_accession(accession or family, family)
        if alignment not in ALIGNMENT_TYPES:
            raise InputError(f"family {family!r}: alignment must be one of "
                             f"{', '.join(ALIGNMENT_TYPES)}, got {alignment!r}")
        settings |= {"accession": accession, "alignment": alignment, "base_url": base_url,
                     "attempts": policy.attempts, "timeout_s": policy.timeout_s}
        created = _missing_directories(outdir)
        try:
            record = download_pfam(accession, alignment, outdir, base_url=base_url,
                                   policy=policy)
            record["provenance"] = provenance("fetch", settings=settings)
            _write_record(outdir, family, source, record)
        except BaseException:
            for directory in created:
                _remove_if_empty(directory)
            raise
        for stale in PFAM_FILES:
            if stale != Path(record["alignment_path"]).name:
                (outdir / stale).unlink(missing_ok=True)
        return _read_record(outdir)

    if source.startswith(EXAMPLE_PREFIX):
        path, fmt = locate_example(source)
        kind = "example"
    else:
        path, fmt = check_local_file(source, family)
        kind = "local"
    prov = provenance("fetch", inputs={"alignment": path}, settings=settings)
    record = {
        "kind": kind,
        "alignment_path": str(path),
        "resolved_path": str(Path(path).resolve()),
        "format": fmt,
        "url": None,
        "sha256": prov["inputs"]["alignment"]["sha256"],
        "bytes": Path(path).stat().st_size,
        "time": now_utc(),
        "pfam_release": None,
        "provenance": prov,
    }
    _write_record(outdir, family, source, record)
    return _read_record(outdir)


def _write_record(outdir: Path, family: str, source: str, record: dict[str, Any]) -> None:
    write_json(outdir / SOURCE_JSON, {"family": family, "source": source, **record})


def _read_record(outdir: Path) -> dict[str, Any]:
    return json.loads((outdir / SOURCE_JSON).read_text())


def _missing_directories(directory: Path) -> list[Path]:
    """`directory` and those of its ancestors that do not exist yet, deepest first."""
    missing = []
    for candidate in (directory, *directory.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    return missing


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass


# ------------------------------------------------------------------- example and local


def locate_example(source: str) -> tuple[Path, str]:
    """Absolute path and format of an embedded example (`example:ww`) inside its package."""
    name = source.removeprefix(EXAMPLE_PREFIX)
    if name not in EXAMPLES:
        known = ", ".join(EXAMPLE_PREFIX + key for key in EXAMPLES)
        raise InputError(f"unknown example source {source!r}; known examples: {known}")
    data_file, fmt = EXAMPLES[name]
    import logomaker

    with logomaker.open_example_datafile(data_file, print_description=False) as handle:
        path = Path(handle.name).resolve()
    return path, fmt


def check_local_file(source: str, family: str) -> tuple[Path, str | None]:
    """The user's alignment path as given, and its format guessed from the file name.

    The format is None when the name does not tell (prepare then sniffs the content).
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(f"family {family!r}: alignment file {source} does not exist "
                         f"(looked in {path.resolve().parent}); `source:` takes 'pfam', "
                         f"'example:ww' or a path to a FASTA, A2M or Stockholm file, "
                         f"or a VCF or .hapt file for genotypes")
    if not path.is_file():
        raise InputError(f"family {family!r}: alignment source {source} is not a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"family {family!r}: alignment file {source} is not readable")
    return path, format_from_name(path)


def format_from_name(path: str | os.PathLike[str]) -> str | None:
    """'stockholm', 'fasta', 'a2m', 'vcf' or 'hapt' from the file's suffix (a trailing .gz
    ignored)."""
    name = Path(path).name.lower().removesuffix(".gz")
    return _FORMAT_BY_SUFFIX.get(Path(name).suffix)


# --------------------------------------------------------------------------------- pfam


def check_accession(accession: str, family: str) -> str:
    """A Pfam accession PFnnnnn (a version suffix like .25 is dropped)."""
    bare = accession.strip().upper().split(".")[0]
    if len(bare) != 7 or not bare.startswith("PF") or not bare[2:].isdigit():
        raise InputError(f"family {family!r} has source: pfam but {accession!r} is not a Pfam "
                         f"accession (PF followed by 5 digits); set `accession: PFnnnnn`")
    return bare


def interpro_alignment_url(base_url: str, accession: str, alignment: str) -> str:
    """InterPro's URL of a Pfam family's alignment ('seed', 'full' or 'uniprot')."""
    return f"{base_url.rstrip('/')}/entry/pfam/{accession}/?annotation=alignment:{alignment}"


def download_pfam(
    accession: str,
    alignment: str,
    outdir: Path,
    *,
    base_url: str = DEFAULT_BASE_URL,
    policy: RetryPolicy | None = None,
) -> dict[str, Any]:
    """Download a Pfam alignment from InterPro into `outdir`, validated, atomically.

    The body is saved as `alignment.sto.gz` when it arrives gzip-compressed (as a
    Content-Encoding or as a gzip file) and as `alignment.sto` otherwise; it must decompress
    completely and be a Stockholm alignment (`# STOCKHOLM` header, `//` terminator) before
    it is renamed into place. Returns the fields of source.json that describe the download.
    """
    policy = policy or RetryPolicy()
    url = interpro_alignment_url(base_url, accession, alignment)
    outdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as cleanup:
        cleanup.enter_context(_termination_raises())
        raw = _temporary(outdir, ".download", cleanup)
        response, attempts = _download_with_retries(url, raw, policy, accession, alignment)
        layers = _gzip_layers(raw, url)
        _check_stockholm(raw, layers, url, response.headers.get("content-type", ""),
                         policy.max_decompressed_bytes)
        name = PFAM_FILES[0] if layers else PFAM_FILES[1]
        final = outdir / name
        # A record of an earlier fetch must not describe the file about to be replaced.
        (outdir / SOURCE_JSON).unlink(missing_ok=True)
        with atomic_path(final) as tmp:
            if layers <= 1:
                shutil.move(raw, tmp)
            else:
                with _open_layers(raw, layers - 1) as body, open(tmp, "wb") as out:
                    shutil.copyfileobj(body, out, _CHUNK)
    log.info("saved %s (%d bytes) from %s", final, final.stat().st_size, url)
    return {
        "kind": "pfam",
        "alignment_path": str(final),
        "format": "stockholm",
        "url": url,
        "accession": accession,
        "alignment": alignment,
        "sha256": sha256_file(final),
        "bytes": final.stat().st_size,
        "time": now_utc(),
        "pfam_release": _pfam_release(base_url, response.headers, policy),
        "interpro_release": response.headers.get("interpro-version"),
        "http": {
            "status": response.status,
            "attempts": attempts,
            "bytes_received": response.bytes_received,
            **{key.replace("-", "_"): response.headers[key]
               for key in ("content-type", "content-encoding", "last-modified", "etag")
               if key in response.headers},
        },
    }


@contextmanager
def _termination_raises() -> Iterator[None]:
    """SIGTERM raises FetchError (as Ctrl-C raises KeyboardInterrupt), so that the clean-up
    of temporary files runs (main thread only; elsewhere a no-op)."""
    def handler(signum: int, _frame: Any) -> None:
        raise FetchError(f"interrupted by signal {signum}; nothing saved")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _temporary(directory: Path, suffix: str, cleanup: ExitStack) -> Path:
    path = directory / f".{os.getpid()}-{time.monotonic_ns()}{suffix}.tmp"
    cleanup.callback(lambda: path.unlink(missing_ok=True))
    return path


def _download_with_retries(
    url: str, dest: Path, policy: RetryPolicy, accession: str, alignment: str
) -> tuple[_Response, int]:
    last: _TransientError | None = None
    deadline = time.monotonic() + policy.deadline_s
    for attempt in range(1, policy.attempts + 1):
        try:
            with _alarm_at(deadline):
                return _download_once(url, dest, policy, accession, alignment,
                                      deadline), attempt
        except _TransientError as err:
            last = err
            wait = min(max(policy.delay(attempt), err.retry_after_s), policy.max_backoff_s)
            if attempt < policy.attempts and time.monotonic() + wait < deadline:
                log.warning("attempt %d/%d for %s failed (%s); retrying in %.1f s",
                            attempt, policy.attempts, url, err.detail, wait)
                time.sleep(wait)
            elif attempt < policy.attempts:
                break  # no time left for another attempt
    assert last is not None
    raise FetchError(_give_up_message(url, last, policy))


@contextmanager
def _alarm_at(deadline: float) -> Iterator[None]:
    """Raise TimeoutError in the main thread at the monotonic time `deadline`, wherever the
    download blocks (reading headers too); elsewhere than the main thread, a no-op."""
    def handler(_signum: int, _frame: Any) -> None:
        raise TimeoutError("deadline")

    try:
        previous = signal.signal(signal.SIGALRM, handler)
    except (ValueError, AttributeError):  # not the main thread, or no SIGALRM
        yield
        return
    try:
        signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 0.001))
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _give_up_message(url: str, err: _TransientError, policy: RetryPolicy) -> str:
    tries = f"{policy.attempts} attempt{'s' if policy.attempts > 1 else ''}"
    host = urllib.parse.urlsplit(url).netloc
    if err.kind == "offline":
        return (f"cannot reach {host} ({err.detail}) after {tries}: no network? Point the "
                f"family's `source:` at a local alignment file (FASTA, A2M or Stockholm, .gz "
                f"allowed), or set `pfam_base_url` to a reachable mirror of the InterPro API")
    if err.kind == "timeout":
        return (f"{url} timed out ({err.detail}) on all {tries}; raise --timeout or "
                f"--deadline, try again later, or set `pfam_base_url` to a mirror")
    if err.kind == "truncated":
        return f"the download of {url} was truncated ({err.detail}) on all {tries}; nothing saved"
    return (f"{url} answered {err.detail} on all {tries}; the server may be overloaded, try "
            f"again later, or use `alignment: seed`, a mirror (`pfam_base_url`) or a local "
            f"`source:` file")


def _download_once(
    url: str, dest: Path, policy: RetryPolicy, accession: str, alignment: str,
    deadline: float,
) -> _Response:
    """One GET of `url` into `dest`, raw bytes as received (no decoding), before the
    monotonic time `deadline`, within the policy's byte bound and minimum rate."""
    timeout_s = min(policy.timeout_s, max(deadline - time.monotonic(), 0.001))
    request = urllib.request.Request(url, headers={
        "Accept-Encoding": "gzip",
        "Accept": "text/plain, application/octet-stream, */*;q=0.1",
        "User-Agent": f"rbmflow/{__version__} (+Python urllib)",
    })
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            headers = {key.lower(): value for key, value in response.headers.items()}
            received = _stream_to(response, dest, deadline, policy, url)
            status = response.status
    except urllib.error.HTTPError as err:
        err.close()
        if err.code in (404, 410):
            raise FetchError(_not_found_message(accession, alignment, url, err.code)) from None
        if err.code in _RETRY_STATUS or err.code >= 500:
            raise _TransientError("status", f"HTTP {err.code} {err.reason}",
                                  _retry_after(err.headers.get("Retry-After"))) from None
        raise FetchError(f"{url} answered HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise _classify_network_error(err.reason, url) from None
    except TimeoutError as err:
        if time.monotonic() >= deadline - 0.01:
            raise _TransientError("timeout", f"the transfer passed its deadline of "
                                  f"{policy.deadline_s:g} s") from err
        raise _TransientError("timeout", f"no answer within {timeout_s:g} s") from err
    except http.client.IncompleteRead as err:
        raise _TransientError("truncated", f"connection closed after {len(err.partial)} "
                              f"bytes of a chunk") from None
    except (ConnectionError, http.client.HTTPException, OSError) as err:
        raise _classify_network_error(err, url) from None

    if status == 204:
        raise FetchError(_not_found_message(accession, alignment, url, status))
    expected = headers.get("content-length")
    if expected is not None and expected.isdigit() and int(expected) != received:
        raise _TransientError("truncated", f"received {received} of {expected} bytes "
                              f"announced by Content-Length")
    return _Response(status=status, headers=headers, bytes_received=received)


def _retry_after(value: str | None) -> float:
    """Seconds a Retry-After header asks for (0 when absent or given as a date)."""
    try:
        return max(float(value), 0.0) if value else 0.0
    except ValueError:
        return 0.0


def _stream_to(response: Any, dest: Path | None, deadline: float, policy: RetryPolicy,
               url: str) -> int:
    """Copy the body to `dest` (None: discard), refusing more than `policy.max_bytes` and
    giving up (a timeout, retried) at the monotonic time `deadline`; the bytes received."""
    received = 0
    window_start, window_bytes = time.monotonic(), 0
    with open(dest, "wb") if dest is not None else ExitStack() as out:
        while True:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                raise _TransientError("timeout", f"the transfer passed its deadline of "
                                      f"{policy.deadline_s:g} s ({received} bytes received)")
            if now - window_start >= policy.min_rate_window_s:
                rate = (received - window_bytes) / (now - window_start)
                if rate < policy.min_rate_bps:
                    raise _TransientError(
                        "timeout", f"the transfer ran at {rate:.0f} bytes/s over "
                        f"{now - window_start:.0f} s, under the minimum rate of "
                        f"{policy.min_rate_bps:g} bytes/s ({received} bytes received)")
                window_start, window_bytes = now, received
            _limit_socket_wait(response, min(policy.timeout_s, remaining))
            block = response.read1(_CHUNK)
            if not block:
                break
            received += len(block)
            if received > policy.max_bytes:
                raise FetchError(f"{url} sent more than {policy.max_bytes} bytes, the limit "
                                 "of a download; nothing saved")
            if dest is not None:
                out.write(block)
    return received


def _limit_socket_wait(response: Any, seconds: float) -> None:
    """Let no single read of `response` block longer than `seconds` (best effort)."""
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))


def _classify_network_error(reason: object, url: str) -> Exception:
    if isinstance(reason, TimeoutError):
        return _TransientError("timeout", "no answer in time")
    if isinstance(reason, ssl.SSLError):
        return FetchError(f"TLS error talking to {url}: {reason}")
    if isinstance(reason, socket.gaierror):
        return _TransientError("offline", f"host name lookup failed: {reason.strerror}")
    if isinstance(reason, ConnectionRefusedError):
        return _TransientError("offline", "connection refused")
    if isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH,
                                                        errno.ENETDOWN):
        return _TransientError("offline", reason.strerror or str(reason))
    if isinstance(reason, (ConnectionError, http.client.HTTPException, OSError)):
        return _TransientError("truncated", f"connection lost: {reason!r}")
    return _TransientError("offline", str(reason))


def _not_found_message(accession: str, alignment: str, url: str, status: int) -> str:
    hint = ("; InterPro serves no 'full' alignment for some families: try `alignment: seed`"
            if alignment != "seed" else "; check the accession")
    return (f"Pfam {accession}: no '{alignment}' alignment found (HTTP {status} from {url})"
            f"{hint}")


# ------------------------------------------------------------------------ validation


@contextmanager
def _open_layers(path: Path, layers: int) -> Iterator[IO[bytes]]:
    """`path` opened for reading with `layers` gzip layers peeled off."""
    with ExitStack() as stack:
        stream: IO[bytes] = stack.enter_context(open(path, "rb"))
        for _ in range(layers):
            stream = stack.enter_context(gzip.GzipFile(fileobj=stream, mode="rb"))
        yield stream


def _gzip_layers(path: Path, url: str) -> int:
    """How many nested gzip streams wrap the body (0: plain text)."""
    layers = 0
    while layers < _MAX_GZIP_LAYERS:
        try:
            with _open_layers(path, layers) as stream:
                head = stream.read(2)
        except (OSError, EOFError, zlib.error) as err:
            raise FetchError(f"the gzip stream from {url} is broken ({err}); nothing saved") \
                from None
        if layers == 0 and not head:
            raise FetchError(f"{url} answered an empty body; nothing saved")
        if head != _GZIP_MAGIC:
            break
        layers += 1
    return layers


def _check_stockholm(path: Path, layers: int, url: str, content_type: str,
                     max_decompressed_bytes: int = 32 << 30) -> None:
    """Raise FetchError unless the (decompressed) body is one complete Stockholm alignment
    of at least one sequence, of at most `max_decompressed_bytes`, lines of at most
    _MAX_LINE bytes (read in bounded memory)."""
    first: bytes | None = None
    last = b""
    total = 0
    sequences = 0
    try:
        with _open_layers(path, layers) as stream:
            while line := stream.readline(_MAX_LINE + 1):
                total += len(line)
                if total > max_decompressed_bytes:
                    raise FetchError(f"the alignment from {url} holds more than "
                                     f"{max_decompressed_bytes} bytes once decompressed (a gzip "
                                     "bomb?); nothing saved")
                if len(line) > _MAX_LINE:
                    raise FetchError(f"the alignment from {url} has a line longer than "
                                     f"{_MAX_LINE} bytes; nothing saved")
                stripped = line.strip()
                if not stripped:
                    continue
                if first is None:
                    first = stripped
                    _check_header(first, url, content_type)
                elif not stripped.startswith((b"#", b"//")):
                    sequences += 1
                last = stripped
    except (OSError, EOFError, zlib.error) as err:
        raise FetchError(f"the gzip stream from {url} is broken or truncated ({err}); "
                         f"nothing saved") from None
    if first is None:
        raise FetchError(f"{url} answered an empty alignment; nothing saved")
    if last != b"//":
        raise FetchError(f"the alignment from {url} ends without the Stockholm terminator "
                         f"'//' (truncated?); nothing saved")
    if sequences == 0:
        raise FetchError(f"the alignment from {url} holds no sequence; nothing saved")


def _check_header(first: bytes, url: str, content_type: str) -> None:
    if first.upper().startswith(b"# STOCKHOLM"):
        return
    shown = first[:60].decode("utf-8", "replace")
    lowered = first[:200].lower()
    if lowered.startswith((b"<!doctype", b"<html", b"<?xml", b"<")):
        what = "an HTML page"
    elif lowered.startswith((b"{", b"[")):
        what = "JSON"
    else:
        what = "something that is not a Stockholm alignment"
    typed = f", Content-Type {content_type}" if content_type else ""
    raise FetchError(f"{url} answered {what} instead of a Stockholm alignment (starts with "
                     f"{shown!r}{typed}); nothing saved")


def _pfam_release(base_url: str, headers: dict[str, str], policy: RetryPolicy) -> str | None:
    """The Pfam release, from a response header if there is one, else from the API root.

    InterPro's API root (`{base_url}/`) lists its member databases with their versions
    (`databases.pfam.version`). One short best-effort request: any failure gives None.
    """
    for key, value in headers.items():
        if "pfam" in key and ("version" in key or "release" in key):
            return value
    request = urllib.request.Request(f"{base_url.rstrip('/')}/", headers={
        "Accept": "application/json", "User-Agent": f"rbmflow/{__version__}"})
    deadline = time.monotonic() + min(policy.deadline_s, _ROOT_DEADLINE_S)
    try:
        with urllib.request.urlopen(request, timeout=min(policy.timeout_s, _ROOT_DEADLINE_S)
                                    ) as response:
            body = bytearray()
            while len(body) <= _CHUNK:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no complete answer within {_ROOT_DEADLINE_S:g} s")
                _limit_socket_wait(response, max(deadline - time.monotonic(), 0.001))
                block = response.read1(_CHUNK)
                if not block:
                    break
                body += block
            payload = json.loads(bytes(body))
        version = payload["databases"]["pfam"]["version"]
    except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException) as err:
        log.info("Pfam release not known (%s/ did not say: %s)", base_url.rstrip("/"), err)
        return None
    return str(version) if version is not None else None
