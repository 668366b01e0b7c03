"""The conda environment of the rules (envs/rbmflow.yaml) matches pyproject.toml, and every rule
names it, so `--software-deployment-method conda` runs what the tests ran."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

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


def _lock() -> dict[str, str]:
    """requirements.lock as {normalised name: version}."""
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_env_pins_are_the_locked_versions_of_the_dependencies() -> None:
    lock = _lock()
    expected = set()
    for dependency in _pyproject()["project"]["dependencies"]:
        requirement = Requirement(dependency)
        version = lock[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version), (dependency, version)
        expected.add(f"{requirement.name}=={version}")
    assert set(_pip_lines(_env())) == expected


def test_the_lock_satisfies_every_range() -> None:
    lock = _lock()
    project = _pyproject()["project"]
    for dependency in project["dependencies"] + project["optional-dependencies"]["test"]:
        requirement = Requirement(dependency)
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{requirement.name} is not in requirements.lock"
        assert requirement.specifier.contains(lock[name]), (dependency, lock[name])


def test_env_python_admits_every_supported_python() -> None:
    requires = SpecifierSet(_pyproject()["project"]["requires-python"])
    conda_deps = [dep for dep in _env()["dependencies"] if isinstance(dep, str)]
    python = [dep for dep in conda_deps if re.match(r"python[=<>]", dep)]
    assert python, "the env does not pin python"
    env_range = SpecifierSet(python[0].removeprefix("python"))
    for version in ("3.11.7", "3.12.1", "3.13.0"):
        assert version in requires and version in env_range, (version, requires, env_range)


def test_env_builds_from_the_copy_snakemake_makes(tmp_path: Path) -> None:
    """Snakemake builds the env from a copy in .snakemake/conda/<hash>.yaml: nothing in it may
    be a path relative to envs/; every pip line is a plain requirement of a PyPI package."""
    copy = tmp_path / ".snakemake" / "conda" / "0123abcd.yaml"
    copy.parent.mkdir(parents=True)
    shutil.copy(ENV_FILE, copy)
    for line in _pip_lines(yaml.safe_load(copy.read_text())):
        assert not line.startswith(("-", ".", "/", "file:")), line
        requirement = Requirement(line)
        assert requirement.url is None and str(requirement.specifier).startswith("=="), line


def test_rules_run_the_package_from_the_checkout(tmp_path: Path) -> None:
    """Rules run `python -m rbmflow` with workflow/ on PYTHONPATH (set by the Snakefile), so the
    package needs no installation in the env: that command works from any folder."""
    assert "PYTHONPATH" in (REPO / "Snakefile").read_text()
    for rule_file in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = rule_file.read_text()
        assert not re.search(r'"rbmflow ', text), f"{rule_file.name} calls rbmflow directly"
    env = dict(os.environ, PYTHONPATH=str(REPO / "workflow"))
    done = subprocess.run([sys.executable, "-m", "rbmflow", "--version"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("rbmflow "), done.stderr


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
