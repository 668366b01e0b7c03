"""The config schema and the rules: names are matched whole, numbers are bounded and finite,
and every value that reaches a shell is quoted."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from test_workflow import Workflow, explain, tiny_config

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())


def _errors(config: dict) -> list[str]:
    validator = jsonschema.validators.validator_for(SCHEMA)(SCHEMA)
    return [error.message for error in validator.iter_errors(config)]


@pytest.mark.parametrize("where", ["family", "run", "device", "accession", "method"])
def test_values_ending_in_a_newline_are_refused(where):
    config = tiny_config()
    if where == "family":
        config["families"] = {"tiny\n": {"source": "tiny.sto"}}
    elif where == "run":
        config["runs"] = {"quick\n": {"hidden": 3}}
    elif where == "device":
        config["device"] = "cpu\n"
    elif where == "accession":
        config["families"]["tiny"] = {"source": "pfam", "accession": "PF00397\n"}
    else:
        config["loglik"] = {"method": "exact\n"}
    assert _errors(config), where
    assert not _errors(tiny_config())


def test_seeds_and_sizes_are_bounded():
    for section, key, value in [("runs", "seed", 2**63), ("runs", "hidden", 10**9),
                                ("runs", "chains", 10**9), ("runs", "checkpoints", 10**9),
                                ("prepare", "seed", 2**63), ("sample", "seed", 2**63)]:
        config = tiny_config()
        target = config["runs"]["quick"] if section == "runs" else config.setdefault(section, {})
        target[key] = value
        assert any("maximum" in e or "greater than" in e for e in _errors(config)), key


SHELL_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)(:q)?\}")
COMPOSED = {"params.flags", "params.pfam", "params.trajectory",  # built with shlex.quote
            "params.wildtype", "params.mutations", "params.structure", "params.genotypes",
            "params.samples"}


def test_every_value_reaching_a_shell_is_quoted():
    unquoted = []
    for rules in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        in_shell = False
        for number, line in enumerate(rules.read_text().splitlines(), start=1):
            stripped = line.strip()
            if stripped.startswith("shell:"):
                in_shell = True
                continue
            if not (in_shell and stripped.startswith('"')):
                in_shell = False
                continue
            for name, quoted in SHELL_PLACEHOLDER.findall(stripped):
                if not quoted and name not in COMPOSED:
                    unquoted.append(f"{rules.name}:{number} {{{name}}}")
    assert not unquoted, unquoted


@pytest.mark.parametrize(("key", "value", "message"), [
    ("hidden", 4.0, "runs.quick.hidden: 4.0 must be an integer"),
    ("l1", float("nan"), "runs.quick.l1: nan is not a finite number"),
    ("l2", float("inf"), "runs.quick.l2: inf"),
    ("refresh_sweeps", 10**12, "runs.quick.refresh_sweeps: 1000000000000 is greater than"),
    ("family", "F" * 300, "config families: 'FFFF"),
])
def test_config_numbers_the_schema_lets_through_are_refused(tmp_path, key, value, message):
    """One line naming the key, and no Snakemake stack frames after it."""
    (tmp_path / "tiny.sto").write_text("# STOCKHOLM 1.0\ns1 ACD\ns2 ACE\n//\n")
    workflow = Workflow(tmp_path)
    config = tiny_config()
    if key == "family":
        config["families"] = {value: config["families"]["tiny"]}
    else:
        config["runs"]["quick"][key] = value
    workflow.write_config(config)
    result = workflow.run("-n")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert message in output, explain(result)
    assert 'File "' not in output and "Traceback" not in output, explain(result)
    assert len([line for line in output.splitlines() if "config" in line
                and "profile" not in line]) == 1, explain(result)
    assert workflow.created() == set()


def test_every_number_in_the_schema_has_an_upper_bound_matching_the_cli():
    """Integers and floats are bounded above, never beyond the CLI's bound of the same
    option."""
    from rbmflow.cli import FLOAT_LIMITS, INT_LIMITS

    def walk(node, where):
        if isinstance(node, dict):
            if node.get("type") in ("integer", "number"):
                yield where, node
            for key, value in node.items():
                yield from walk(value, key if key not in ("properties", "anyOf") else where)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item, where)

    found = list(walk(SCHEMA, ""))
    assert len(found) > 60
    for key, node in found:
        assert "maximum" in node or "exclusiveMaximum" in node, key
        if node["type"] == "integer" and key in INT_LIMITS and key not in ("chains", "seed"):
            assert node["maximum"] <= INT_LIMITS[key][1], key
        if node["type"] == "number" and key in FLOAT_LIMITS and "maximum" in node:
            assert node["maximum"] <= FLOAT_LIMITS[key][1], key


def test_the_fetch_rule_passes_the_deadline_and_the_minimum_rate(tmp_path):
    workflow = Workflow(tmp_path)
    config = tiny_config()
    config["families"] = {"PF00397": {"source": "pfam"}}
    config["fetch"] = {"deadline": 900, "min_rate": 2048}
    workflow.write_config(config)
    result = workflow.run("-n", "-p", "resources/msa/PF00397/source.json")
    assert result.returncode == 0, explain(result)
    output = result.stdout + result.stderr
    assert "--deadline 900" in output and "--min-rate 2048" in output, explain(result)
    assert "--min-rate-window 60" in output and "--attempts 5" in output, explain(result)
