rule prepare:
    input:
        "resources/msa/{family}/source.json",
    output:
        data="results/{family}/data/alignment.npz",
        summary="results/{family}/data/summary.json",
    log:
        "logs/prepare/{family}.log",
    benchmark:
        "benchmarks/out/prepare/{family}.tsv"
    params:
        flags=cli_flags(config["prepare"]),
    conda:
        "../../envs/rbmflow.yaml"
    shell:
        "rbmflow prepare {input} --out {output.data} --summary {output.summary} "
        "{params.flags} --device {config[device]} 2> {log}"
