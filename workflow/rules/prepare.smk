rule prepare:
    input:
        source="resources/msa/{family}/source.json",
        genotypes=genotype_inputs,
    output:
        data="results/{family}/data/alignment.npz",
        summary="results/{family}/data/summary.json",
    log:
        "logs/prepare/{family}.log",
    benchmark:
        "benchmarks/out/prepare/{family}.tsv"
    conda:
        "../../envs/rbmflow.yaml"
    threads: 4
    params:
        flags=cli_flags(config["prepare"]),
        genotypes=genotype_flags,
        device=config["device"],
    shell:
        "python -m rbmflow prepare {input.source:q} --out {output.data:q} --summary {output.summary:q} "
        "{params.flags} {params.genotypes} --device {params.device:q} --threads {threads:q} 2> {log:q}"
