# rbmflow: protein family -> alignment -> Potts RBM -> log-likelihood -> samples -> report.
# Run:  snakemake --cores N [--profile profiles/default]      Docs: README.md

import os
import shlex
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")


# config.yaml is the default study (the embedded WW family). A study of your own,
# `--configfile my.yaml`, replaces it instead of being merged into it, so a run schedules
# exactly the families and runs it names; `--config key=value` alone still edits the default.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


try:
    validate(config, "workflow/schemas/config.schema.yaml")
except WorkflowError as _err:  # one line naming the key, not the schema and a stack
    _cause = _err.__context__  # the schema's ValidationError
    if not hasattr(_cause, "absolute_path"):
        raise
    _where = ".".join(str(part) for part in _cause.absolute_path) or "(top level)"
    _rule = "/".join(str(part) for part in _cause.schema_path)
    sys.exit(
        f"rbmflow: config {_where}: {' '.join(_cause.message.split())[:300]} "
        f"(schema {_rule})"
    )

# The rules run `python -m rbmflow` from this checkout's workflow/ folder, in a venv or in the
# conda env of envs/rbmflow.yaml alike (that env installs the dependencies, not the package).
_package_dir = shlex.quote(os.path.join(workflow.basedir, "workflow"))
shell.prefix(
    "set -euo pipefail; export PYTHONPATH="
    + _package_dir.replace("{", "{{").replace("}", "}}")
    + "${{PYTHONPATH:+:$PYTHONPATH}}; "
)


include: "workflow/rules/common.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/loglik.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/mutations.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/contacts.smk"


# Run on the submitting host under a cluster profile: fetch needs the network that compute
# nodes often lack, and summary is a few milliseconds of table-making.
localrules:
    fetch,
    summary,


rule all:
    default_target: True
    input:
        all_targets(),
