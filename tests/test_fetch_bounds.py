"""fetch under a hostile or slow server: a total deadline, bounded bodies and decompressed
sizes, nothing left behind on SIGTERM, and no alignment of zero sequences cached."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from interpro_server import FakeInterPro, Reply
from rbmflow.data.fetch import RetryPolicy, run_stage
from rbmflow.errors import FetchError
from test_fetch import ACCESSION, FULL_PATH, REPO, STOCKHOLM, leftovers


@pytest.fixture
def server():
    with FakeInterPro() as fake:
        yield fake


def _policy(**kwargs) -> RetryPolicy:
    return RetryPolicy(**{"attempts": 1, "backoff_s": 0.0, "timeout_s": 2.0, **kwargs})


def _fetch(server, outdir: Path, policy: RetryPolicy) -> dict:
    return run_stage("WW", "pfam", outdir, accession=ACCESSION, alignment="full",
                        base_url=server.base_url, policy=policy)


def test_a_trickling_server_meets_the_total_deadline(server, tmp_path):
    server.script(FULL_PATH, Reply(body=STOCKHOLM * 10, trickle_s=0.05))  # 1 byte / 50 ms
    outdir = tmp_path / "WW"
    start = time.monotonic()
    with pytest.raises(FetchError, match="deadline"):
        _fetch(server, outdir, _policy(deadline_s=1.5))
    assert time.monotonic() - start < 6
    assert leftovers(outdir) == []


def test_a_slow_api_root_does_not_hang_after_the_download(server, tmp_path):
    server.script(FULL_PATH, Reply(body=STOCKHOLM))
    server.root_reply = Reply(body=b'{"databases": {"pfam": {"version": "37"}}}' * 50,
                              trickle_s=0.05)
    start = time.monotonic()
    record = _fetch(server, tmp_path / "WW", _policy(deadline_s=1.5))
    assert time.monotonic() - start < 8
    assert record["pfam_release"] is None
    assert (tmp_path / "WW" / "source.json").is_file()


def test_an_endless_body_is_cut_at_the_byte_bound(server, tmp_path):
    server.script(FULL_PATH, Reply(body=b"x" * 65536, endless=True))
    outdir = tmp_path / "WW"
    with pytest.raises(FetchError, match="more than 3000000 bytes"):
        _fetch(server, outdir, _policy(max_bytes=3_000_000))
    assert leftovers(outdir) == []


def _bomb(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    chunk = b"# STOCKHOLM 1.0\n" + b"A" * (1 << 20)
    parts = [compressor.compress(chunk)]
    zeros = b"A" * (1 << 20)
    for _ in range(size >> 20):
        parts.append(compressor.compress(zeros))
    parts.append(compressor.compress(b"\n//\n"))
    parts.append(compressor.flush())
    return b"".join(parts)


@pytest.mark.parametrize("encoding", ["body", "content-encoding"])
def test_a_gzip_bomb_is_refused_in_bounded_memory_and_time(server, tmp_path, encoding):
    bomb = _bomb(200 << 20)  # 200 MB of one line, about 200 kB compressed
    headers = {"Content-Encoding": "gzip"} if encoding == "content-encoding" else {}
    server.script(FULL_PATH, Reply(body=bomb, headers=headers))
    outdir = tmp_path / "WW"
    start = time.monotonic()
    with pytest.raises(FetchError, match="bytes once decompressed|longer than"):
        _fetch(server, outdir, _policy(max_decompressed_bytes=50_000_000))
    assert time.monotonic() - start < 20
    assert leftovers(outdir) == []


def test_a_stockholm_file_of_zero_sequences_is_not_cached(server, tmp_path):
    server.script(FULL_PATH, Reply(body=gzip.compress(b"# STOCKHOLM 1.0\n#=GF ID x\n//\n")))
    outdir = tmp_path / "WW"
    with pytest.raises(FetchError, match="no sequence"):
        _fetch(server, outdir, _policy())
    assert leftovers(outdir) == []


def test_sigterm_during_a_download_leaves_nothing(server, tmp_path):
    server.script(FULL_PATH, Reply(body=STOCKHOLM * 100, trickle_s=0.01))
    outdir = tmp_path / "WW"
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rbmflow", "fetch", "--family", "WW", "--source", "pfam",
         "--accession", ACCESSION, "--outdir", str(outdir), "--base-url", server.base_url,
         "--attempts", "1"], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
            p.name.endswith(".tmp") and p.stat().st_size > 0 for p in outdir.glob(".*")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "Traceback" not in err
    assert leftovers(outdir) == []
