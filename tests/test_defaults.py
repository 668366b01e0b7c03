"""Every default exists once in meaning: the schema, config.yaml, the settings dataclasses and
the CLI must agree on it, stage by stage."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from rbmflow.cli import build_parser
from rbmflow.data.prepare import PrepareSettings
from rbmflow.evaluation.loglik import LoglikSettings
from rbmflow.evaluation.metrics import EvaluationSettings
from rbmflow.sampling.sample import SamplingSettings
from rbmflow.training.train import TrainSettings

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())


def _section(name: str) -> dict[str, Any]:
    properties = SCHEMA["properties"][name]
    if name == "runs":
        properties = properties["additionalProperties"]
    return {key: spec["default"] for key, spec in properties["properties"].items()
            if "default" in spec}


def _settings(name: str) -> dict[str, Any]:
    """The settings dataclass of a stage, flattened to the schema's key names."""
    if name == "prepare":
        return asdict(PrepareSettings())
    if name == "runs":
        return asdict(TrainSettings())
    if name == "loglik":
        values = asdict(LoglikSettings())
        values["method"] = ",".join(values.pop("methods"))
        return values
    if name == "sample":
        values = asdict(SamplingSettings())
        return values | values.pop("criteria")
    return asdict(EvaluationSettings())


STAGE_ARGS = {
    "prepare": ["prepare", "src", "--out", "a.npz", "--summary", "s.json"],
    "runs": ["train", "a.npz", "--out", "m.h5", "--log", "l.csv"],
    "loglik": ["loglik", "m.h5", "a.npz", "--out", "l.json"],
    "sample": ["sample", "m.h5", "a.npz", "--out", "s.fasta", "--info", "i.json"],
    "report": ["report"],
}


def _cli(name: str) -> dict[str, Any]:
    args = vars(build_parser().parse_args(STAGE_ARGS[name]))
    if name == "loglik":
        args["method"] = ",".join(args.pop("methods"))
    return args


@pytest.mark.parametrize("name", list(STAGE_ARGS))
def test_schema_dataclass_and_cli_defaults_agree(name: str) -> None:
    schema = _section(name)
    assert schema, name
    settings, cli = _settings(name), _cli(name)
    for key, default in schema.items():
        assert settings.get(key) == default, (name, key, settings.get(key), default)
        assert cli.get(key) == default, (name, key, cli.get(key), default)


@pytest.mark.parametrize("name", ["prepare", "loglik", "sample", "report"])
def test_config_yaml_repeats_the_schema_defaults(name: str) -> None:
    schema = _section(name)
    for key, value in CONFIG.get(name, {}).items():
        assert schema[key] == value, (name, key, value, schema[key])
    for key, value in CONFIG["runs"]["default"].items():
        assert _section("runs")[key] == value, ("runs", key, value)
