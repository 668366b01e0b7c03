rule contacts:
    input:
        model="results/{family}/{run}/model.h5",
        data="results/{family}/data/alignment.npz",
    output:
        csv="results/{family}/{run}/contacts.csv",
    log:
        "logs/contacts/{family}/{run}.log",
    benchmark:
        "benchmarks/out/contacts/{family}/{run}.tsv"
    conda:
        "../../envs/rbmflow.yaml"
    threads: 4
    resources:
        gpu=1,
        runtime=120,
        mem_mb=8000,
    params:
        flags=cli_flags(config["contacts"]),
        device=config["device"],
    shell:
        "python -m rbmflow contacts {input.model:q} --alignment {input.data:q} --out {output.csv:q} "
        "{params.flags} --device {params.device:q} --threads {threads:q} 2> {log:q}"
