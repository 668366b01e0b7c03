rule mutations:
    input:
        model="results/{family}/{run}/model.h5",
        data="results/{family}/data/alignment.npz",
    output:
        csv="results/{family}/{run}/mutations.csv",
        heatmap=report(
            "results/{family}/{run}/mutations.png",
            caption="../rbmflow/report/captions/mutations.rst",
            category="{family}",
            subcategory="{run}",
            labels={"family": "{family}", "run": "{run}", "figure": "mutations"},
        ),
        summary="results/{family}/{run}/mutations.json",
    log:
        "logs/mutations/{family}/{run}.log",
    benchmark:
        "benchmarks/out/mutations/{family}/{run}.tsv"
    wildcard_constraints:
        family="|".join(map(re.escape, WILDTYPE_FAMILIES)) or "(?!)",
    conda:
        "../../envs/rbmflow.yaml"
    threads: 1
    params:
        wildtype=lambda wildcards: shlex.quote(wildtype_of(wildcards)["sequence"]),
        first=lambda wildcards: int(wildtype_of(wildcards).get("first", 1)),
        device=config["device"],
    shell:
        "python -m rbmflow mutations {input.model:q} {input.data:q} --wildtype {params.wildtype} "
        "--first {params.first:q} --out {output.csv:q} --heatmap {output.heatmap:q} "
        "--summary {output.summary:q} --device {params.device:q} --threads {threads:q} 2> {log:q}"
