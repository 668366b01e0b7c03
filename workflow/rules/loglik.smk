rule loglik:
    input:
        unpack(loglik_stage_samples),
        model="results/{family}/{run}/model.h5",
        data="results/{family}/data/alignment.npz",
    output:
        loglik="results/{family}/{run}/loglik.json",
        trajectory="results/{family}/{run}/loglik_trajectory.csv",
    log:
        "logs/loglik/{family}/{run}.log",
    benchmark:
        "benchmarks/out/loglik/{family}/{run}.tsv"
    conda:
        "../../envs/rbmflow.yaml"
    threads: 2
    resources:
        gpu=1,
        runtime=240,
        mem_mb=4000,
    params:
        flags=cli_flags(config["loglik"]),
        samples=loglik_samples_flags,
        device=config["device"],
    shell:
        "python -m rbmflow loglik {input.model:q} {input.data:q} --out {output.loglik:q} "
        "--trajectory-csv {output.trajectory:q} {params.flags} {params.samples} "
        "--device {params.device:q} --threads {threads:q} 2> {log:q}"
