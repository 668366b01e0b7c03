rule train:
    input:
        "results/{family}/data/alignment.npz",
    output:
        model="results/{family}/{run}/model.h5",
        log="results/{family}/{run}/train_log.csv",
    log:
        "logs/train/{family}/{run}.log",
    benchmark:
        "benchmarks/out/train/{family}/{run}.tsv"
    conda:
        "../../envs/rbmflow.yaml"
    threads: 8
    resources:
        gpu=1,
        runtime=720,
        mem_mb=8000,
    params:
        flags=lambda wildcards: cli_flags(config["runs"][wildcards.run]),
        device=config["device"],
    shell:
        "python -m rbmflow train {input:q} --out {output.model:q} --log {output.log:q} "
        "--family {wildcards.family:q} --run-name {wildcards.run:q} {params.flags} "
        "--device {params.device:q} --threads {threads:q} 2> {log:q}"
