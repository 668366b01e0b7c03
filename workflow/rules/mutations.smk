def wildtype_of(wildcards):
    """The family's `wildtype:` mapping (the rule only matches families that have one)."""
    return config["families"][wildcards.family]["wildtype"]


def report_mutations_inputs(wildcards):
    """The report's optional inputs: the mutation heat map and summary when the family has a
    wild type, else nothing."""
    if wildcards.family not in WILDTYPE_FAMILIES:
        return {}
    run_dir = f"results/{wildcards.family}/{wildcards.run}"
    return {"mutations_heatmap": f"{run_dir}/mutations.png",
            "mutations_summary": f"{run_dir}/mutations.json"}


def report_mutations_flags(wildcards, input):
    """`--mutations-heatmap/--mutations-summary` for the report rule, when given."""
    return " ".join(f"--{role.replace('_', '-')} {input[role]}"
                    for role in ("mutations_heatmap", "mutations_summary") if role in input.keys())


rule mutations:
    input:
        model="results/{family}/{run}/model.h5",
        data="results/{family}/data/alignment.npz",
    output:
        csv="results/{family}/{run}/mutations.csv",
        heatmap=report("results/{family}/{run}/mutations.png", caption="../report/mutations.rst",
                       category="{family}", subcategory="{run}",
                       labels={"family": "{family}", "run": "{run}", "figure": "mutations"}),
        summary="results/{family}/{run}/mutations.json",
    wildcard_constraints:
        family="|".join(map(re.escape, WILDTYPE_FAMILIES)) or "(?!)",
    log:
        "logs/mutations/{family}/{run}.log",
    benchmark:
        "benchmarks/out/mutations/{family}/{run}.tsv"
    params:
        wildtype=lambda wildcards: shlex.quote(wildtype_of(wildcards)["sequence"]),
        first=lambda wildcards: int(wildtype_of(wildcards).get("first", 1)),
        device=config["device"],
    threads: 1
    conda:
        "../../envs/rbmflow.yaml"
    shell:
        "rbmflow mutations {input.model} {input.data} --wildtype {params.wildtype} "
        "--first {params.first} --out {output.csv} --heatmap {output.heatmap} "
        "--summary {output.summary} --device {params.device} --threads {threads} 2> {log}"
