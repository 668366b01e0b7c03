import shlex

FAMILIES = list(config["families"])
RUNS = list(config["runs"])


wildcard_constraints:
    family="|".join(FAMILIES),
    run="|".join(RUNS),


def cli_flags(settings):
    """Turn a config mapping into CLI flags: {'gibbs_steps': 10} -> '--gibbs-steps 10'."""
    return " ".join(
        f"--{key.replace('_', '-')} {shlex.quote(str(value))}"
        for key, value in settings.items()
    )


def all_targets():
    """Final outputs of `rule all`; each stage adds the outputs it ends with."""
    targets = expand("results/{family}/data/alignment.npz", family=FAMILIES)
    return targets
