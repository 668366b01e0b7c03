rule fetch:
    output:
        "resources/msa/{family}/source.json",
    log:
        "logs/fetch/{family}.log",
    benchmark:
        "benchmarks/out/fetch/{family}.tsv"
    params:
        source=lambda w: config["families"][w.family]["source"],
    shell:
        "rbmflow fetch --family {wildcards.family} --source {params.source:q} "
        "--outdir resources/msa/{wildcards.family} 2> {log}"
