"""The fetch stage against a loopback fake of InterPro, plus the example and local sources."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from interpro_server import INTERPRO_VERSION, PFAM_VERSION, FakeInterPro, Reply
from rbmflow.cli import main as cli_main
from rbmflow.data.fetch import (
    RetryPolicy,
    check_accession,
    format_from_name,
    interpro_alignment_url,
    run_stage,
)
from rbmflow.errors import FetchError, InputError
from rbmflow.provenance import FORMAT_VERSION

# A toy Pfam-style Stockholm alignment: 5 sequences x 11 columns, one insert column.
STOCKHOLM = b"""# STOCKHOLM 1.0
#=GF ID   Toy
#=GF AC   PF00397.30
#=GS seqA/3-12 AC P00001.1
seqA/3-12   ACDEF.GHIKL-
seqB/1-11   ACDEFqGHIKLM
seqC/7-16   -CDEF.GHIKLM
seqD/2-12   ACD-F.GHIRLM
seqE/4-14   AC-EF.GHIKLW
#=GC RF     xxxxx.xxxxxx
//
"""
ACCESSION = "PF00397"
FULL_PATH = f"/entry/pfam/{ACCESSION}/?annotation=alignment:full"
REPO = Path(__file__).resolve().parents[1]
FAST = RetryPolicy(attempts=3, backoff_s=0.01, timeout_s=2.0)


@pytest.fixture
def server() -> Iterator[FakeInterPro]:
    with FakeInterPro() as fake:
        yield fake


def leftovers(outdir: Path) -> list[str]:
    """Every file (hidden temporaries included) under `outdir`."""
    return sorted(p.name for p in outdir.rglob("*")) if outdir.exists() else []


def fetch_pfam(server: FakeInterPro, outdir: Path, **kwargs: object) -> dict:
    return run_stage("WW", "pfam", outdir, accession=ACCESSION, alignment="full",
                        base_url=server.base_url, policy=kwargs.pop("policy", FAST), **kwargs)


# ------------------------------------------------------------------------------ success


@pytest.mark.parametrize(("mode", "saved_as"), [
    ("plain", "alignment.sto"),
    ("gzip-body", "alignment.sto.gz"),
    ("content-encoding", "alignment.sto.gz"),
    ("content-encoding-over-gzip-body", "alignment.sto.gz"),
])
def test_pfam_download_in_every_encoding(server: FakeInterPro, tmp_path: Path, mode: str,
                                         saved_as: str) -> None:
    body, headers = {
        "plain": (STOCKHOLM, {}),
        "gzip-body": (gzip.compress(STOCKHOLM), {"Content-Type": "application/gzip"}),
        "content-encoding": (gzip.compress(STOCKHOLM), {"Content-Encoding": "gzip"}),
        "content-encoding-over-gzip-body": (gzip.compress(gzip.compress(STOCKHOLM)),
                                            {"Content-Encoding": "gzip"}),
    }[mode]
    server.script(FULL_PATH, Reply(body=body, headers=headers))
    outdir = tmp_path / "resources" / "msa" / "WW"

    record = fetch_pfam(server, outdir)

    saved = outdir / saved_as
    assert leftovers(outdir) == sorted([saved_as, "source.json"])
    text = gzip.decompress(saved.read_bytes()) if saved_as.endswith(".gz") else saved.read_bytes()
    assert text == STOCKHOLM
    on_disk = json.loads((outdir / "source.json").read_text())
    assert on_disk == record
    assert record["alignment_path"] == str(saved)
    assert record["format"] == "stockholm"
    assert record["source"] == "pfam"
    assert record["url"] == server.base_url + FULL_PATH
    assert record["sha256"] == hashlib.sha256(saved.read_bytes()).hexdigest()
    assert record["bytes"] == saved.stat().st_size
    assert record["http"]["bytes_received"] == len(body)
    assert record["pfam_release"] == PFAM_VERSION
    assert record["interpro_release"] == INTERPRO_VERSION
    assert record["time"].endswith("+00:00")
    assert record["provenance"]["format_version"] == FORMAT_VERSION
    assert record["provenance"]["stage"] == "fetch"
    assert record["provenance"]["settings"]["accession"] == ACCESSION


def test_retry_after_server_error_then_success(server: FakeInterPro, tmp_path: Path) -> None:
    server.script(FULL_PATH, Reply(status=500, body=b"oops"),
                  Reply(body=gzip.compress(STOCKHOLM)))
    record = fetch_pfam(server, tmp_path / "WW")
    assert server.count(FULL_PATH) == 2
    assert record["http"]["attempts"] == 2
    assert gzip.decompress((tmp_path / "WW" / "alignment.sto.gz").read_bytes()) == STOCKHOLM


def test_retry_after_timeout_then_success(server: FakeInterPro, tmp_path: Path) -> None:
    server.script(FULL_PATH, Reply(body=STOCKHOLM, delay_s=0.6), Reply(body=STOCKHOLM))
    policy = RetryPolicy(attempts=2, backoff_s=0.01, timeout_s=0.2)
    record = fetch_pfam(server, tmp_path / "WW", policy=policy)
    assert record["http"]["attempts"] == 2
    assert (tmp_path / "WW" / "alignment.sto").read_bytes() == STOCKHOLM


def test_pfam_release_unknown_when_api_root_does_not_say(server: FakeInterPro,
                                                        tmp_path: Path) -> None:
    server.root_reply = Reply(status=404, body=b"{}")
    server.script(FULL_PATH, Reply(body=STOCKHOLM))
    assert fetch_pfam(server, tmp_path / "WW")["pfam_release"] is None


def test_accession_defaults_to_family_name(server: FakeInterPro, tmp_path: Path) -> None:
    server.script("/entry/pfam/PF00014/?annotation=alignment:seed", Reply(body=STOCKHOLM))
    record = run_stage("PF00014", "pfam", tmp_path / "k", alignment="seed",
                          base_url=server.base_url + "/", policy=FAST)
    assert record["url"] == server.base_url + "/entry/pfam/PF00014/?annotation=alignment:seed"
    assert record["accession"] == "PF00014"


def test_refetch_replaces_the_other_encoding(server: FakeInterPro, tmp_path: Path) -> None:
    outdir = tmp_path / "WW"
    server.script(FULL_PATH, Reply(body=STOCKHOLM))
    fetch_pfam(server, outdir)
    server.script(FULL_PATH, Reply(body=gzip.compress(STOCKHOLM)))
    fetch_pfam(server, outdir)
    assert leftovers(outdir) == ["alignment.sto.gz", "source.json"]
    server.script(FULL_PATH, Reply(status=500))
    with pytest.raises(FetchError):
        fetch_pfam(server, outdir)
    assert leftovers(outdir) == ["alignment.sto.gz", "source.json"], "a failed refetch keeps " \
        "the earlier complete fetch"


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("status", [404, 204])
def test_not_found_names_accession_and_suggests_seed(server: FakeInterPro, tmp_path: Path,
                                                     status: int) -> None:
    if status != 404:
        server.script(FULL_PATH, Reply(status=status))
    outdir = tmp_path / "WW"
    with pytest.raises(FetchError) as err:
        fetch_pfam(server, outdir)
    message = str(err.value)
    assert ACCESSION in message and "'full'" in message and "alignment: seed" in message
    assert f"HTTP {status}" in message
    assert server.count(FULL_PATH) == 1, "a 404 is final, not retried"
    assert leftovers(outdir) == []


def test_server_errors_on_every_attempt(server: FakeInterPro, tmp_path: Path) -> None:
    server.script(FULL_PATH, Reply(status=503, body=b"busy", headers={"Retry-After": "0.05"}))
    outdir = tmp_path / "WW"
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"HTTP 503 .* on all 3 attempts") as err:
        fetch_pfam(server, outdir)
    assert time.monotonic() - start >= 2 * 0.05, "Retry-After is honoured between attempts"
    assert server.base_url + FULL_PATH in str(err.value)
    assert server.count(FULL_PATH) == 3
    assert leftovers(outdir) == []


def test_truncated_body_is_refused(server: FakeInterPro, tmp_path: Path) -> None:
    body = gzip.compress(STOCKHOLM)
    server.script(FULL_PATH, Reply(body=body[:40], announce_length=len(body),
                                   headers={"Content-Type": "application/gzip"}))
    outdir = tmp_path / "WW"
    with pytest.raises(FetchError, match="truncated") as err:
        fetch_pfam(server, outdir)
    assert f"received 40 of {len(body)} bytes" in str(err.value)
    assert server.count(FULL_PATH) == FAST.attempts
    assert leftovers(outdir) == []


def test_broken_gzip_stream_is_refused(server: FakeInterPro, tmp_path: Path) -> None:
    cut = gzip.compress(STOCKHOLM)[:-12]  # Content-Length matches: the stream itself is cut
    server.script(FULL_PATH, Reply(body=cut, headers={"Content-Type": "application/gzip"}))
    outdir = tmp_path / "WW"
    with pytest.raises(FetchError, match="gzip stream .* is broken or truncated"):
        fetch_pfam(server, outdir)
    assert leftovers(outdir) == []


def test_plain_body_without_terminator_is_refused(server: FakeInterPro, tmp_path: Path) -> None:
    server.script(FULL_PATH, Reply(body=STOCKHOLM[: STOCKHOLM.index(b"seqD")]))
    outdir = tmp_path / "WW"
    with pytest.raises(FetchError, match="without the Stockholm terminator"):
        fetch_pfam(server, outdir)
    assert leftovers(outdir) == []


@pytest.mark.parametrize(("body", "headers", "what"), [
    (b"<!DOCTYPE html><html><body>Service unavailable</body></html>",
     {"Content-Type": "text/html"}, "an HTML page"),
    (b'{"metadata": {"accession": "PF00397"}}', {"Content-Type": "application/json"}, "JSON"),
    (b"\x00\x01binary\xff", {}, "not a Stockholm alignment"),
    (b"", {}, "empty body"),
])
@pytest.mark.parametrize("gzipped", [False, True])
def test_non_alignment_answer_is_refused(server: FakeInterPro, tmp_path: Path, body: bytes,
                                         headers: dict[str, str], what: str,
                                         gzipped: bool) -> None:
    if gzipped and body:
        body, headers = gzip.compress(body), {**headers, "Content-Encoding": "gzip"}
    server.script(FULL_PATH, Reply(body=body, headers=headers))
    outdir = tmp_path / "WW"
    with pytest.raises(FetchError) as err:
        fetch_pfam(server, outdir)
    assert what in str(err.value)
    assert server.base_url + FULL_PATH in str(err.value)
    assert leftovers(outdir) == []


def test_no_network_suggests_local_source_or_mirror(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outdir = tmp_path / "resources" / "msa" / "WW"
    with pytest.raises(FetchError) as err:
        run_stage("WW", "pfam", outdir, accession=ACCESSION,
                     base_url=f"http://127.0.0.1:{port}/interpro/api",
                     policy=RetryPolicy(attempts=2, backoff_s=0.01, timeout_s=2.0))
    message = str(err.value)
    assert "connection refused" in message and "no network" in message
    assert "`source:`" in message and "pfam_base_url" in message
    assert leftovers(outdir) == []
    assert not (tmp_path / "resources").exists(), "directories the stage made are removed"


def test_failed_fetch_keeps_existing_outdir(server: FakeInterPro, tmp_path: Path) -> None:
    outdir = tmp_path / "WW"
    outdir.mkdir()
    with pytest.raises(FetchError):
        fetch_pfam(server, outdir)
    assert outdir.is_dir() and leftovers(outdir) == []


def test_bad_accession_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"family 'kunitz' has source: pfam .* accession"):
        run_stage("kunitz", "pfam", tmp_path / "k")
    assert check_accession("pf00014.25", "x") == "PF00014"
    assert not (tmp_path / "k").exists()


# -------------------------------------------------------------------- example and local


def test_example_ww_is_read_in_place(tmp_path: Path) -> None:
    import logomaker

    outdir = tmp_path / "WW"
    record = run_stage("WW", "example:ww", outdir)
    path = Path(record["alignment_path"])
    assert path.is_absolute() and path.name == "ww_sequences.fa"
    assert path.parent == Path(logomaker.__file__).resolve().parent / "examples" / "datafiles"
    assert record["format"] == "fasta"
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["bytes"] == path.stat().st_size
    assert record["provenance"]["inputs"]["alignment"]["sha256"] == record["sha256"]
    assert leftovers(outdir) == ["source.json"], "the example is not copied"
    assert path.read_text().count(">") == 4025


def test_unknown_example(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown example source 'example:xyz'.*example:ww"):
        run_stage("x", "example:xyz", tmp_path / "x")
    assert leftovers(tmp_path / "x") == []


def test_local_file_is_read_in_place_with_its_sha256(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("data").mkdir()
    Path("data/mine.sto.gz").write_bytes(gzip.compress(STOCKHOLM))
    record = run_stage("mine", "data/mine.sto.gz", Path("resources/msa/mine"))
    assert record["alignment_path"] == "data/mine.sto.gz"
    assert record["resolved_path"] == str(tmp_path.resolve() / "data" / "mine.sto.gz")
    assert record["sha256"] == hashlib.sha256(Path("data/mine.sto.gz").read_bytes()).hexdigest()
    assert record["format"] == "stockholm"
    assert record["source"] == "data/mine.sto.gz" and record["url"] is None
    assert leftovers(Path("resources/msa/mine")) == ["source.json"]


def test_missing_local_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "family.a2m"
    outdir = tmp_path / "out"
    with pytest.raises(InputError, match=f"alignment file {missing} does not exist"):
        run_stage("mine", str(missing), outdir)
    assert leftovers(outdir) == []


@pytest.mark.parametrize(("name", "fmt"), [
    ("x.sto", "stockholm"), ("x.sth.gz", "stockholm"), ("X.FASTA", "fasta"),
    ("x.fa.gz", "fasta"), ("x.a2m", "a2m"), ("x.aln", None), ("x.gz", None),
])
def test_format_from_name(name: str, fmt: str | None) -> None:
    assert format_from_name(name) == fmt


def test_url_layout() -> None:
    assert interpro_alignment_url("https://h/api/", "PF00014", "uniprot") == \
        "https://h/api/entry/pfam/PF00014/?annotation=alignment:uniprot"


# ---------------------------------------------------------------------------------- CLI


def test_cli_fetch_and_one_line_error(server: FakeInterPro, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    server.script(FULL_PATH, Reply(body=gzip.compress(STOCKHOLM),
                                   headers={"Content-Encoding": "gzip"}))
    outdir = tmp_path / "msa" / "WW"
    common = ["fetch", "--family", "WW", "--source", "pfam", "--accession", ACCESSION,
              "--base-url", server.base_url, "--attempts", "2", "--backoff", "0.01"]
    assert cli_main([*common, "--outdir", str(outdir)]) == 0
    assert json.loads((outdir / "source.json").read_text())["accession"] == ACCESSION

    bad = tmp_path / "msa" / "bad"
    assert cli_main([*common, "--alignment", "seed", "--outdir", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("rbmflow fetch: error: Pfam PF00397: no 'seed' alignment found")
    assert leftovers(bad) == []


# ---------------------------------------------------------------------------- Snakemake


@pytest.mark.slow
def test_snakemake_fetch_rule_runs_once(server: FakeInterPro, tmp_path: Path) -> None:
    """The rule fetches a pfam and a local family; a second run downloads nothing."""
    server.script(FULL_PATH, Reply(body=gzip.compress(STOCKHOLM)))
    (tmp_path / "mine.sto").write_bytes(STOCKHOLM)
    (tmp_path / "config.yaml").write_text(
        f"families:\n"
        f"  WW: {{source: pfam, accession: {ACCESSION}}}\n"
        f"  mine: {{source: mine.sto}}\n"
        f"pfam_base_url: {server.base_url}\n"
        f"runs: {{default: {{}}}}\n")
    targets = ["resources/msa/WW/source.json", "resources/msa/mine/source.json"]
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "1",
               "--directory", str(tmp_path), *targets]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    record = json.loads((tmp_path / targets[0]).read_text())
    assert record["alignment_path"] == "resources/msa/WW/alignment.sto.gz"
    assert (tmp_path / record["alignment_path"]).is_file()
    assert json.loads((tmp_path / targets[1]).read_text())["alignment_path"] == "mine.sto"
    assert (tmp_path / "logs" / "fetch" / "WW.log").is_file()
    assert (tmp_path / "benchmarks" / "out" / "fetch" / "WW.tsv").is_file()

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Nothing to be done" in second.stderr
    assert server.count(FULL_PATH) == 1
