"""The pipeline on a real single-node SLURM cluster, through profiles/slurm.

tests/slurm/cluster.sh stands the cluster up (installing slurm-wlm and munge with apt-get when
missing; needs root), a tiny study runs through `--workflow-profile profiles/slurm` alone (the
cluster's default partition, no account), and the daemons are stopped by their PIDs afterwards.
Skipped, with the reason, where SLURM cannot be started.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from rbmflow import ALPHABET

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO / "tests" / "slurm" / "cluster.sh"
GPU_RULES = ("train", "loglik", "sample", "contacts")
LOCAL_RULES = {"fetch", "summary"}  # the Snakefile's localrules
DAEMONS = ("munged", "slurmctld", "slurmd")


@dataclass
class Cluster:
    directory: Path
    env: dict[str, str]
    pids: dict[str, int]


@dataclass
class PipelineRun:
    workdir: Path
    config: Path
    log: str
    env: dict[str, str]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_script(action: str, directory: Path, timeout_s: float,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), action, str(directory)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not sys.platform.startswith("linux"):
        pytest.skip("a local SLURM cluster needs Linux")
    if os.geteuid() != 0:
        pytest.skip("a local SLURM cluster needs root (slurmd, munged as the munge user)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and apt-get is not available to install it")
    # not under pytest's 0700 base folder: munged runs as the munge user and must reach it
    directory = Path(tempfile.mkdtemp(prefix="rbmflow-slurm-"))
    directory.chmod(0o755)
    # free ports, so that a cluster already running here (a user's) is left alone
    ports = {"SLURM_TEST_CTLD_PORT": str(_free_port()), "SLURM_TEST_SLURMD_PORT": str(_free_port())}
    try:
        started = _run_script("start", directory, timeout_s=240, env={**os.environ, **ports})
    except subprocess.TimeoutExpired:
        _run_script("stop", directory, timeout_s=60)
        pytest.skip(f"SLURM did not start within 240 s (logs in {directory})")
    pids = {
        name: int((directory / "pid" / f"{name}.pid").read_text())
        for name in DAEMONS
        if (directory / "pid" / f"{name}.pid").is_file()
    }
    if started.returncode != 0:
        _run_script("stop", directory, timeout_s=60)
        pytest.skip(f"SLURM could not be started ({directory}): {started.stderr.strip()[-800:]}")
    env = dict(os.environ)
    env["SLURM_CONF"] = str(directory / "slurm.conf")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    yield Cluster(directory=directory, env=env, pids=pids)
    stopped = _run_script("stop", directory, timeout_s=60)
    assert stopped.returncode == 0, stopped.stderr
    still_running = {name: pid for name, pid in pids.items() if _alive(pid)}
    assert not still_running, f"daemons left running: {still_running}"
    shutil.rmtree(directory, ignore_errors=True)


def _write_tiny_alignment(path: Path, n_sequences: int = 61, length: int = 13) -> None:
    """A FASTA of noisy copies of two random parent sequences (seeded), gaps included."""
    rng = np.random.default_rng(7)
    q = len(ALPHABET)
    parents = rng.integers(1, q, size=(2, length))
    rows = parents[rng.integers(0, 2, size=n_sequences)]
    mutate = rng.random(rows.shape) < 0.15
    rows = np.where(mutate, rng.integers(0, q, size=rows.shape), rows)
    with open(path, "w") as handle:
        for index, row in enumerate(rows):
            handle.write(f">seq{index}\n{''.join(ALPHABET[c] for c in row)}\n")


# Small settings for the stages after training; only the keys the schema knows are used.
TINY_STAGE_SETTINGS = {
    "sample": {"chains": 23, "sweeps": 20, "auto_extend": False, "max_sweeps": 20,
               "data_chains": 23},
    "report": {"triplets": 5, "nn_samples": 20, "pca_components": 2},
}


def _snakemake(workdir: Path, config: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(config),
        *args,
    ]


@pytest.fixture(scope="module")
def pipeline(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    """The tiny study run to the end on the cluster; its verbose log."""
    workdir = tmp_path_factory.mktemp("work")
    alignment = workdir / "tiny.fasta"
    _write_tiny_alignment(alignment)
    config = workdir / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "families": {"tiny": {"source": str(alignment)}},
        "runs": {"small": {"hidden": 3, "updates": 6, "chains": 17, "batch_size": 19,
                           "gibbs_steps": 2, "checkpoints": 2, "seed": 3}},
        "device": "auto",
        **TINY_STAGE_SETTINGS,
    }))
    command = _snakemake(
        workdir, config,
        "--workflow-profile", str(REPO / "profiles" / "slurm"),
        "--default-resources", "mem_mb=1000", "runtime=30",
        # first status check 5 s after a submission, then 15 s later, ...: tiny jobs are done
        "--slurm-init-seconds-before-status-checks", "5",
        "--retries", "0",
        "--jobs", "4",
        "--verbose",
    )
    done = subprocess.run(command, cwd=workdir, env=cluster.env, capture_output=True,
                          text=True, timeout=420)
    log = done.stdout + done.stderr
    (workdir / "snakemake_slurm.log").write_text(log)
    assert done.returncode == 0, log[-6000:]
    return PipelineRun(workdir=workdir, config=config, log=log, env=cluster.env)


def _submissions(log: str) -> dict[str, list[str]]:
    """sbatch command lines from the verbose log, by rule (from their --comment rule_<name>)."""
    calls: dict[str, list[str]] = {}
    for line in log.splitlines():
        if "sbatch call:" not in line:
            continue
        rule = re.search(r"--comment '?rule_([A-Za-z0-9_]+?)(?:_wildcards_|'|\s)", line)
        assert rule, line
        calls.setdefault(rule.group(1), []).append(line)
    return calls


def test_every_output_exists(pipeline: PipelineRun) -> None:
    summary = subprocess.run(
        _snakemake(pipeline.workdir, pipeline.config, "--summary"),
        cwd=pipeline.workdir, env=pipeline.env, capture_output=True, text=True, timeout=120,
    )
    assert summary.returncode == 0, summary.stderr
    rows = list(csv.DictReader(io.StringIO(summary.stdout), delimiter="\t"))
    assert rows, summary.stdout
    assert {"fetch", "prepare"} <= {row["rule"] for row in rows}
    for row in rows:
        assert (pipeline.workdir / row["output_file"]).is_file(), row
        assert row["status"] not in ("missing", "incomplete"), row
    assert "results/tiny/data/alignment.npz" in {row["output_file"] for row in rows}
    # each job ran as a SLURM job, but the Snakefile's localrules ran on the submitting host
    submitted = _submissions(pipeline.log)
    ran = {row["rule"] for row in rows}
    assert ran - LOCAL_RULES <= set(submitted), submitted.keys()
    assert not LOCAL_RULES & set(submitted), submitted.keys()


def test_jobs_carry_the_profile_resources(pipeline: PipelineRun) -> None:
    submitted = _submissions(pipeline.log)
    for calls in submitted.values():
        for call in calls:
            # the plugin's defaults: the cluster's default partition, no account without accounting
            partition = re.search(r" -p '?([\w-]+)", call)
            assert partition is None or partition.group(1) == "debug", call
            assert " -A " not in call, call
            assert re.search(r" -t '?\d+", call) and re.search(r" --mem \d+", call), call
    prepare_call = submitted["prepare"][0]
    assert "--cpus-per-task=4" in prepare_call, prepare_call


def test_gpu_stages_ask_for_a_gpu(pipeline: PipelineRun) -> None:
    submitted = _submissions(pipeline.log)
    gpu_rules = [rule for rule in GPU_RULES if rule in submitted]
    if not gpu_rules:
        pytest.skip(f"no GPU stage in the workflow yet (ran: {sorted(submitted)})")
    assert "train" in gpu_rules
    for rule in gpu_rules:
        for call in submitted[rule]:
            assert "--gpus=1" in call or "--gres=gpu:1" in call, call
    for rule in set(submitted) - set(GPU_RULES):
        for call in submitted[rule]:
            assert "--gpus" not in call and "--gres" not in call, call
    # and SLURM recorded the request: the train job's TRES asks for one GPU
    jobs = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i|%k"],
        env=pipeline.env, capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    train_ids = [line.split("|")[0] for line in jobs.splitlines() if "|rule_train" in line]
    assert train_ids, jobs
    shown = subprocess.run(
        ["scontrol", "show", "job", train_ids[0]],
        env=pipeline.env, capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    assert re.search(r"TresPerJob=gres[:/]gpu[:=]1", shown), shown
