"""The Snakemake workflow itself, run through `python -m snakemake` in temporary directories.

`Workflow` runs the repository's Snakefile with its working directory in a tmp folder; a
stage's test asks for its outputs with `workflow.run(targets)` on the tiny config
(`tiny_config`), which later stages extend with their own settings.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from rbmflow.data.dataset import load_encoded
from rbmflow.model import archive
from rbmflow.model.partition import log_partition_exact

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

TEST_DIR = REPO / ".test"
TINY_STOCKHOLM = (TEST_DIR / "tiny.sto").read_text()
"""8 sequences, 13 match columns, 2 insert columns; s6 has 5 gaps (> 0.2 x 13)."""


def tiny_config() -> dict:
    """The tiny study of .test/config.yaml, its alignment read from `tiny.sto` in the run folder."""
    config = yaml.safe_load((TEST_DIR / "config.yaml").read_text())
    config["families"]["tiny"]["source"] = "tiny.sto"
    return config


@dataclass
class Workflow:
    """The repository's Snakefile run in `directory` with the config written to config.yaml."""

    directory: Path

    def write_config(self, config: dict) -> Path:
        path = self.directory / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def run(self, *args: str, configfile: Path | None = None,
            timeout: int = 600) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        command = [sys.executable, "-m", "snakemake", *args,
                   "--snakefile", str(REPO / "Snakefile"), "--directory", str(self.directory),
                   "--cores", "2",
                   f"--configfile={configfile or self.directory / 'config.yaml'}"]
        return subprocess.run(command, cwd=self.directory, env=env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def created(self) -> set[str]:
        """Top-level entries a run made (snakemake's own .snakemake excluded)."""
        return {p.name for p in self.directory.iterdir()} - {".snakemake", "config.yaml",
                                                             "tiny.sto"}


@pytest.fixture
def workflow(tmp_path: Path) -> Workflow:
    (tmp_path / "tiny.sto").write_text(TINY_STOCKHOLM)
    flow = Workflow(tmp_path)
    flow.write_config(tiny_config())
    return flow


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n" \
           f"--- stderr\n{result.stderr[-6000:]}"


@pytest.mark.slow
def test_prepare_outputs(workflow: Workflow) -> None:
    target = "results/tiny/data/alignment.npz"
    result = workflow.run(target)
    assert result.returncode == 0, explain(result)
    data = load_encoded(workflow.directory / target)
    summary = json.loads((workflow.directory / "results/tiny/data/summary.json").read_text())
    assert data.codes.shape == (7, 13) and (summary["M"], summary["L"]) == (7, 13)
    assert summary["removed_sequences"]["total"] == 1 and "s6/1-11" not in data.names
    assert summary["removed_columns"]["insert"] == 2
    assert (summary["M_train"], summary["M_test"]) == (5, 2)
    assert np.all((data.weights > 0) & (data.weights <= 1))
    source = json.loads((workflow.directory / "resources/msa/tiny/source.json").read_text())
    assert summary["input"]["sha256"] == source["sha256"]
    for stage in ("fetch", "prepare"):
        assert (workflow.directory / f"logs/{stage}/tiny.log").is_file()
        assert (workflow.directory / f"benchmarks/out/{stage}/tiny.tsv").is_file()


@pytest.mark.slow
def test_whole_pipeline_ends_with_a_report(workflow: Workflow) -> None:
    result = workflow.run()
    assert result.returncode == 0, explain(result)
    run = workflow.directory / "results/tiny/quick"
    for name in ("model.h5", "train_log.csv", "loglik.json", "loglik_trajectory.csv",
                 "samples.fasta", "sampling.json", "report/metrics.json", "report/report.html"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "report/metrics.json").read_text())
    loglik = json.loads((run / "loglik.json").read_text())
    assert metrics["n_generated"] == 23
    assert metrics["loglik_test"] == loglik["loglik_test"] < 0
    assert -1 <= metrics["pearson_cij"] <= 1
    summary = (workflow.directory / "results/summary.csv").read_text().splitlines()
    assert len(summary) == 2 and "quick" in summary[1]
    # a second run finds everything done
    again = workflow.run("-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_bad_alignment_fails_and_leaves_no_output(workflow: Workflow) -> None:
    (workflow.directory / "tiny.sto").write_text(
        "<!DOCTYPE html>\n<html><body>502 Bad Gateway</body></html>\n")
    result = workflow.run("results/tiny/data/alignment.npz")
    assert result.returncode != 0
    log = (workflow.directory / "logs/prepare/tiny.log").read_text()
    assert "tiny.sto: line 1 starts an HTML" in log
    assert not (workflow.directory / "results/tiny/data").exists() or not any(
        (workflow.directory / "results/tiny/data").iterdir())


def test_dry_run_of_default_config(tmp_path: Path) -> None:
    result = Workflow(tmp_path).run("-n", configfile=REPO / "config.yaml")
    assert result.returncode == 0, explain(result)
    assert "prepare" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def job_counts(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """Rule -> number of jobs, from the "Job stats" table of a dry run."""
    counts: dict[str, int] = {}
    lines = (result.stdout + result.stderr).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats"))
    for line in lines[start + 3:]:
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit() or fields[0] == "total":
            break
        counts[fields[0]] = int(fields[1])
    return counts


def test_a_study_of_ones_own_replaces_the_default(tmp_path: Path) -> None:
    """--configfile names the whole study: config.yaml's family and run are not added."""
    flow = Workflow(tmp_path)
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    (tmp_path / "tiny.sto").write_text(TINY_STOCKHOLM)
    study = tmp_path / "my.yaml"
    study.write_text(yaml.safe_dump({"families": {"mine": {"source": "tiny.sto"}},
                                     "runs": {"r1": {"hidden": 7}}}))
    result = flow.run("-n", configfile=study)
    assert result.returncode == 0, explain(result)
    counts = job_counts(result)
    stages = ("fetch", "prepare", "train", "loglik", "sample", "report", "summary")
    assert {stage: counts.get(stage) for stage in stages} == dict.fromkeys(stages, 1), counts
    output = result.stdout + result.stderr
    assert "results/WW" not in output and "/default/" not in output


def test_the_default_study_without_a_configfile(tmp_path: Path) -> None:
    """Without --configfile, config.yaml of the working directory is the study."""
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(tmp_path), "--cores", "1", "--config", "device=cpu"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, explain(result)
    assert job_counts(result)["train"] == 1
    assert "results/WW/default/model.h5" in result.stdout + result.stderr


@pytest.mark.parametrize(("section", "key", "wrong"), [("prepare", "identity", "identiy"),
                                                      (None, "device", "devices")])
def test_misspelled_key_stops_before_any_job(workflow: Workflow, section: str | None,
                                             key: str, wrong: str) -> None:
    config = tiny_config()
    where = config[section] if section else config
    where[wrong] = where.pop(key)
    workflow.write_config(config)
    result = workflow.run("results/tiny/data/alignment.npz")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"'{wrong}' was unexpected" in output
    assert "rule prepare" not in output and "Job " not in output
    assert workflow.created() == set()


@pytest.mark.parametrize("name", ["../x", "/etc", ".hidden"])
def test_family_names_that_escape_results_are_refused(workflow: Workflow, name: str) -> None:
    config = tiny_config()
    config["families"] = {name: {"source": "tiny.sto"}}
    workflow.write_config(config)
    result = workflow.run("-n")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "config families" in output and repr(name) in output
    assert workflow.created() == set()


def wildtype_config() -> dict:
    """The tiny config with a wild type (two flanking residues, then 13 matching ones) on
    family `tiny`, and a second family `plain` without one."""
    config = tiny_config()
    config["families"]["tiny"]["wildtype"] = {"sequence": "GSMKVLWARGTHDKY", "first": 3}
    config["families"]["plain"] = {"source": "tiny.sto"}
    return config


def test_mutations_only_for_families_with_a_wild_type(workflow: Workflow) -> None:
    workflow.write_config(wildtype_config())
    result = workflow.run("-n")
    assert result.returncode == 0, explain(result)
    output = result.stdout + result.stderr
    assert "results/tiny/quick/mutations.csv" in output
    assert "results/plain/quick/mutations.csv" not in output
    assert "--mutations-heatmap results/tiny/quick/mutations.png" in output
    assert "--mutations-heatmap results/plain" not in output


@pytest.mark.slow
def test_family_with_a_wild_type_gets_mutations_and_the_heat_map(workflow: Workflow) -> None:
    workflow.write_config(wildtype_config())
    run = workflow.directory / "results/tiny/quick"
    result = workflow.run("results/tiny/quick/report/report.html")
    assert result.returncode == 0, explain(result)
    with open(run / "mutations.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 13 * 19  # 13 residues match the 13 columns; G3 and S4 do not
    assert rows[0]["mutant"] == "M5A" and rows[0]["column"] == "1"
    assert rows[-1]["mutant"] == "Y17W" and rows[-1]["column"] == "13"
    summary = json.loads((run / "mutations.json").read_text())
    assert summary["unmatched_positions"] == [3, 4]
    metrics = json.loads((run / "report/metrics.json").read_text())
    assert metrics["figures"]["mutations"] == "mutations.png"
    assert metrics["mutations"]["covered_positions"] == 13
    assert "data-file='mutations.png'" in (run / "report/report.html").read_text()


@pytest.mark.slow
def test_contacts_rule_with_a_distance_table(workflow: Workflow) -> None:
    config = tiny_config()
    pairs = [(i, j) for i in range(1, 14) for j in range(i + 1, 14)]
    (workflow.directory / "tiny_struct.dat").write_text(
        "".join(f"{i} {j} {1.0 / (j - i)} {4.0 if j - i == 5 else 12.0}\n" for i, j in pairs))
    config["families"]["tiny"]["structure"] = "tiny_struct.dat"
    config["contacts"] = {"method": "tubiana"}
    workflow.write_config(config)
    result = workflow.run("results/tiny/quick/report/report.html")
    assert result.returncode == 0, explain(result)
    rows = (workflow.directory / "results/tiny/quick/contacts.csv").read_text().splitlines()
    assert rows[0] == "i,j,score" and len(rows) == 1 + 13 * 12 // 2
    metrics = json.loads(
        (workflow.directory / "results/tiny/quick/report/metrics.json").read_text())
    assert set(metrics["contacts"]["ppv_8A"]) == {"L/5", "L/2", "L", "2L"}
    assert metrics["contacts"]["ppv_table_score_8A"]["L/5"] == 1.0  # 1/(j-i) ranks j-i = 5 first


def test_loglik_waits_for_the_sample_stage_only_when_it_runs_reverse_ais(
        workflow: Workflow) -> None:
    """The tiny run (3 hidden units) gets exact log Z: its loglik job needs no samples. With
    exact enumeration off, reverse AIS starts from the sample stage's samples, so the sample
    job joins the loglik target's DAG; at beta != 1 they are not equilibrium samples."""
    counts = {}
    for case, loglik, sample in (("exact", {}, {}), ("reverse", {"exact_max_hiddens": 0}, {}),
                                 ("beta", {"exact_max_hiddens": 0}, {"beta": 0.5})):
        config = tiny_config()
        config["loglik"] = loglik
        config["sample"] |= sample
        workflow.write_config(config)
        result = workflow.run("-n", "results/tiny/quick/loglik.json")
        assert result.returncode == 0, explain(result)
        counts[case] = job_counts(result)
        assert ("--samples results/tiny/quick/samples.fasta" in result.stdout) is (
            case == "reverse"), case
    assert "sample" not in counts["exact"] and "sample" not in counts["beta"]
    assert counts["reverse"]["sample"] == 1 and counts["reverse"]["loglik"] == 1


@pytest.mark.slow
def test_loglik_reuses_the_sample_stage_samples(workflow: Workflow) -> None:
    """Reverse AIS of the tiny run starts from the 101 equilibrated samples of the sample
    stage; loglik.json says so, records their sha256, and agrees with exact log Z."""
    config = tiny_config()
    config["loglik"] = {"exact_max_hiddens": 0}
    config["sample"] |= {"chains": 101, "data_chains": 101}
    workflow.write_config(config)
    result = workflow.run("results/tiny/quick/loglik.json")
    assert result.returncode == 0, explain(result)
    run = workflow.directory / "results/tiny/quick"
    sampling = json.loads((run / "sampling.json").read_text())
    loglik = json.loads((run / "loglik.json").read_text())
    reused = loglik["reused"]
    assert sampling["equilibrated"] is True
    assert reused["samples"] == "results/tiny/quick/samples.fasta"
    assert reused["used_for"] == "reverse AIS starts" and reused["count"] == 100
    assert loglik["estimates"]["reverse"]["spent"]["equilibration_sweeps"] == 0
    assert set(loglik["provenance"]["inputs"]) == {"model", "alignment", "samples",
                                                   "samples_info"}
    exact = log_partition_exact(archive.load_rbm(run / "model.h5").to(dtype=torch.float64))
    reverse = loglik["estimates"]["reverse"]
    assert abs(reverse["log_z"] - exact) < 4 * reverse["log_z_std"] + 0.05
