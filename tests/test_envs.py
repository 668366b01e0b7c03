"""The conda environment of the rules (envs/rbmflow.yaml) matches pyproject.toml, and every rule
names it, so `--software-deployment-method conda` runs what the tests ran."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ENV_FILE = REPO / "envs" / "rbmflow.yaml"


def _pyproject() -> dict:
    with open(REPO / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)


def _env() -> dict:
    return yaml.safe_load(ENV_FILE.read_text())


def _pip_lines(env: dict) -> list[str]:
    pip_sections = [dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict)]
    assert len(pip_sections) == 1, "expected one pip: section"
    return [str(line) for line in pip_sections[0]]


def test_env_pins_are_the_pyproject_pins() -> None:
    pins = {line for line in _pip_lines(_env()) if not line.startswith("-")}
    assert pins == set(_pyproject()["project"]["dependencies"])


def test_env_python_matches_requires_python() -> None:
    requires = _pyproject()["project"]["requires-python"]
    conda_deps = [dep for dep in _env()["dependencies"] if isinstance(dep, str)]
    python = [dep for dep in conda_deps if re.match(r"python[=<>]", dep)]
    assert python, "the env does not pin python"
    version = python[0].split("=", 1)[1]
    assert f">={version}" in requires, (python, requires)


def test_env_installs_this_checkout() -> None:
    """The package line points (relative to envs/) at the folder holding pyproject.toml."""
    editable = [line for line in _pip_lines(_env()) if line.startswith(("-e ", "--editable "))]
    assert len(editable) == 1
    target = (ENV_FILE.parent / editable[0].split(maxsplit=1)[1]).resolve()
    assert target == REPO
    assert _pyproject()["project"]["name"] == "rbmflow"


def test_every_rule_names_a_software_environment() -> None:
    """`snakemake --lint` reports no rule without a conda environment."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    lint = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "--workflow-profile", "none"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = lint.stdout + lint.stderr
    assert "Lints for" in output or lint.returncode == 0, output
    assert "Specify a conda environment" not in output, output
    # every rule file that runs a command names envs/rbmflow.yaml
    for rule_file in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = rule_file.read_text()
        n_commands = len(re.findall(r"^\s+(shell|script):", text, flags=re.M))
        n_envs = len(re.findall(r'^\s+conda:\s*\n?\s*"\.\./\.\./envs/rbmflow\.yaml"', text, re.M))
        assert n_envs == n_commands, f"{rule_file.name}: {n_commands} rules, {n_envs} conda:"
