# rbmflow: protein family -> alignment -> Potts RBM -> log-likelihood -> samples -> report.
# Run:  snakemake --cores N [--profile profiles/default]      Docs: README.md

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/loglik.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/contacts.smk"


# Run on the submitting host under a cluster profile: fetch needs the network that compute
# nodes often lack, and summary is a few milliseconds of table-making.
localrules:
    fetch,
    summary,


rule all:
    input:
        all_targets(),
    default_target: True
