import math
import sys
import re
import shlex
from pathlib import Path

import yaml


def check_config_numbers(value, schema, where, defs):
    """What the schema's validator lets through: 4.0 where an integer is due (JSON Schema
    counts it as one, the CLI does not), and NaN or infinities (they pass minimum/maximum).
    """
    schema = defs.get(schema.get("$ref", "").rpartition("/")[2], schema)
    if isinstance(value, float) and schema.get("type") in ("integer", "number"):
        if not math.isfinite(value):
            raise ValueError(f"config {where}: {value} is not a finite number")
        if schema["type"] == "integer":
            raise ValueError(
                f"config {where}: {value} must be an integer (write "
                f"{int(value)}, not {value})"
            )
    if isinstance(value, dict):
        for key, item in value.items():
            sub = schema.get("properties", {}).get(
                key, schema.get("additionalProperties")
            )
            if isinstance(sub, dict):
                check_config_numbers(
                    item, sub, f"{where}.{key}" if where else key, defs
                )


_SCHEMA = yaml.safe_load(
    (
        Path(workflow.current_basedir).parent / "schemas" / "config.schema.yaml"
    ).read_text()
)
try:
    check_config_numbers(config, _SCHEMA, "", _SCHEMA.get("$defs", {}))
except ValueError as _err:
    sys.exit(f"rbmflow: {_err}")

FAMILIES = list(config["families"])
for _name, _family in config["families"].items():
    if _family["source"] == "pfam" and not re.fullmatch(
        r"PF\d{5}", _family.get("accession", _name)
    ):
        sys.exit(
            f"rbmflow: config families.{_name}: 'source: pfam' needs 'accession: PFnnnnn' "
            f"(the family name {_name!r} is not a Pfam accession)"
        )
RUNS = list(config["runs"])
WILDTYPE_FAMILIES = [
    name for name, family in config["families"].items() if family.get("wildtype")
]
GENOTYPE_KEYS = ("encoding", "missing", "max_missing", "populations")
GENOTYPE_FAMILIES = [
    name
    for name, family in config["families"].items()
    if re.search(r"\.(vcf|bcf|hapt)(\.gz)?\Z", family["source"], re.IGNORECASE)
]


wildcard_constraints:
    family="|".join(map(re.escape, FAMILIES)),
    run="|".join(map(re.escape, RUNS)),


def cli_flags(settings):
    """Turn a config mapping into CLI flags: {'gibbs_steps': 10} -> '--gibbs-steps 10'."""
    return " ".join(
        f"--{key.replace('_', '-')} {shlex.quote(str(value))}"
        for key, value in settings.items()
    )


def fetch_local_input(wildcards):
    """A family's local alignment file, as the fetch rule's input (editing it re-runs fetch)."""
    source = config["families"][wildcards.family]["source"]
    return [] if source == "pfam" or source.startswith("example:") else [source]


def fetch_pfam_flags(wildcards):
    """`--accession/--alignment/--base-url` for a `source: pfam` family, else nothing."""
    family = config["families"][wildcards.family]
    if family["source"] != "pfam":
        return ""
    settings = {
        "accession": family.get("accession", wildcards.family),
        "alignment": family.get("alignment", "full"),
        "base_url": config["pfam_base_url"],
        **config["fetch"],
    }
    return cli_flags(settings)


def genotype_inputs(wildcards):
    """A genotype family's populations table, as the prepare rule's input, or nothing."""
    populations = config["families"][wildcards.family].get("populations")
    return [populations] if populations else []


def genotype_flags(wildcards):
    """`--encoding/--missing/--max-missing/--populations` of a genotype family, else nothing."""
    family = config["families"][wildcards.family]
    return cli_flags({key: family[key] for key in GENOTYPE_KEYS if key in family})


def loglik_declares_trajectory():
    """Whether the loglik rule writes a log-likelihood trajectory CSV."""
    try:
        return "trajectory" in rules.loglik.output.keys()
    except Exception:  # no loglik rule in this workflow
        return False


def report_trajectory(wildcards):
    """The log-likelihood trajectory CSV when the loglik rule declares one, else nothing."""
    if not loglik_declares_trajectory():
        return []
    return f"results/{wildcards.family}/{wildcards.run}/loglik_trajectory.csv"


def report_figure(name):
    """A report figure of one family and run, tagged for `snakemake --report`."""
    return report(
        f"results/{{family}}/{{run}}/report/{name}.png",
        caption=f"../rbmflow/report/captions/{name}.rst",
        category="{family}",
        subcategory="{run}",
        labels={"family": "{family}", "run": "{run}", "figure": name},
    )


def all_targets():
    """Final outputs of `rule all`; each stage adds the outputs it ends with."""
    targets = expand("results/{family}/data/alignment.npz", family=FAMILIES)
    targets += expand("results/{family}/{run}/model.h5", family=FAMILIES, run=RUNS)
    targets += expand("results/{family}/{run}/loglik.json", family=FAMILIES, run=RUNS)
    targets += expand("results/{family}/{run}/samples.fasta", family=FAMILIES, run=RUNS)
    targets += expand(
        "results/{family}/{run}/samples.vcf", family=GENOTYPE_FAMILIES, run=RUNS
    )
    targets += expand("results/{family}/{run}/contacts.csv", family=FAMILIES, run=RUNS)
    targets += expand(
        "results/{family}/{run}/report/report.html", family=FAMILIES, run=RUNS
    )
    targets += [
        f"results/{family}/{run}/mutations.csv"
        for family in WILDTYPE_FAMILIES
        for run in RUNS
    ]
    targets += ["results/summary.csv", "results/summary.html"]
    return targets


def wildtype_of(wildcards):
    """The family's `wildtype:` mapping (the rule only matches families that have one)."""
    return config["families"][wildcards.family]["wildtype"]


def report_mutations_inputs(wildcards):
    """The report's optional inputs: the mutation heat map and summary when the family has a
    wild type, else nothing."""
    if wildcards.family not in WILDTYPE_FAMILIES:
        return {}
    run_dir = f"results/{wildcards.family}/{wildcards.run}"
    return {
        "mutations_heatmap": f"{run_dir}/mutations.png",
        "mutations_summary": f"{run_dir}/mutations.json",
    }


def report_mutations_flags(wildcards, input):
    """`--mutations-heatmap/--mutations-summary` for the report rule, when given."""
    return " ".join(
        f"--{role.replace('_', '-')} {shlex.quote(str(input[role]))}"
        for role in ("mutations_heatmap", "mutations_summary")
        if role in input.keys()
    )


def structure_input(wildcards):
    """The family's structure file (families.{name}.structure), or nothing."""
    structure = config["families"][wildcards.family].get("structure")
    if structure is None:
        return []
    return [structure if isinstance(structure, str) else structure["path"]]


def structure_flags(wildcards):
    """`--structure FILE [--chain X]` for a family with a structure, else nothing."""
    structure = config["families"][wildcards.family].get("structure")
    if structure is None:
        return ""
    if isinstance(structure, str):
        return f"--structure {shlex.quote(structure)}"
    flags = f"--structure {shlex.quote(structure['path'])}"
    if structure.get("chain"):
        flags += f" --chain {shlex.quote(structure['chain'])}"
    return flags


def loglik_reverse_ais(wildcards):
    """Whether this run's loglik job runs reverse AIS from sampled starts (not exact draws)."""
    settings = config["loglik"]
    methods = [m.strip() for m in str(settings["method"]).split(",") if m.strip()]
    hidden = config["runs"][wildcards.run]["hidden"]
    return "reverse" in methods or (
        "auto" in methods and hidden > settings["exact_max_hiddens"]
    )


def loglik_stage_samples(wildcards):
    """The sample stage's samples.fasta and sampling.json, the starts of reverse AIS (the
    loglik job then skips its own tempering run), when this run's log-likelihood uses reverse
    AIS from sampled starts, the samples are drawn at beta 1 and the workflow has a sample
    rule; else nothing. The sample stage does not depend on the loglik stage."""
    try:
        rules.sample
    except Exception:  # no sample rule in this workflow
        return {}
    if config["sample"]["beta"] != 1 or not loglik_reverse_ais(wildcards):
        return {}
    run = f"results/{wildcards.family}/{wildcards.run}"
    return {"samples": f"{run}/samples.fasta", "samples_info": f"{run}/sampling.json"}


def loglik_samples_flags(wildcards, input):
    """`--samples/--samples-info` when the loglik job has the sample stage's outputs."""
    if "samples" not in input.keys():
        return ""
    return f"--samples {shlex.quote(input.samples)} --samples-info {shlex.quote(input.samples_info)}"
