rule fetch:
    input:
        fetch_local_input,
    output:
        "resources/msa/{family}/source.json",
    log:
        "logs/fetch/{family}.log",
    benchmark:
        "benchmarks/out/fetch/{family}.tsv"
    conda:
        "../../envs/rbmflow.yaml"
    params:
        source=lambda w: config["families"][w.family]["source"],
        pfam=fetch_pfam_flags,
    shell:
        "python -m rbmflow fetch --family {wildcards.family:q} --source {params.source:q} {params.pfam} "
        "--outdir resources/msa/{wildcards.family:q} 2> {log:q}"
