def loglik_reverse_ais(wildcards):
    """Whether this run's loglik job runs reverse AIS from sampled starts (not exact draws)."""
    settings = config["loglik"]
    methods = [m.strip() for m in str(settings["method"]).split(",") if m.strip()]
    hidden = config["runs"][wildcards.run]["hidden"]
    return "reverse" in methods or (
        "auto" in methods and hidden > settings["exact_max_hiddens"]
    )


def loglik_stage_samples(wildcards):
    """The sample stage's samples.fasta and sampling.json, the starts of reverse AIS (the
    loglik job then skips its own tempering run), when this run's log-likelihood uses reverse
    AIS from sampled starts, the samples are drawn at beta 1 and the workflow has a sample
    rule; else nothing. The sample stage does not depend on the loglik stage."""
    try:
        rules.sample
    except Exception:  # no sample rule in this workflow
        return {}
    if config["sample"]["beta"] != 1 or not loglik_reverse_ais(wildcards):
        return {}
    run = f"results/{wildcards.family}/{wildcards.run}"
    return {"samples": f"{run}/samples.fasta", "samples_info": f"{run}/sampling.json"}


def loglik_samples_flags(wildcards, input):
    """`--samples/--samples-info` when the loglik job has the sample stage's outputs."""
    if "samples" not in input.keys():
        return ""
    return f"--samples {shlex.quote(input.samples)} --samples-info {shlex.quote(input.samples_info)}"


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
