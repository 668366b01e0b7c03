report: "../rbmflow/report/captions/workflow.rst"


REPORT_FIGURES = [
    "site_frequencies",
    "correlations",
    "pca",
    "hamming",
    "energy",
    "logos",
    "training",
    "sampling",
    "hidden_units",
    "hidden_inputs",
]


rule report:
    input:
        unpack(report_mutations_inputs),
        data="results/{family}/data/alignment.npz",
        samples="results/{family}/{run}/samples.fasta",
        sampling="results/{family}/{run}/sampling.json",
        model="results/{family}/{run}/model.h5",
        train_log="results/{family}/{run}/train_log.csv",
        loglik="results/{family}/{run}/loglik.json",
        trajectory=report_trajectory,
        contacts="results/{family}/{run}/contacts.csv",
        structure=structure_input,
    output:
        metrics="results/{family}/{run}/report/metrics.json",
        html=report(
            "results/{family}/{run}/report/report.html",
            caption="../rbmflow/report/captions/report.rst",
            category="{family}",
            subcategory="{run}",
            labels={"family": "{family}", "run": "{run}", "figure": "report.html"},
        ),
        figures=[report_figure(name) for name in REPORT_FIGURES],
        trajectory_figure=(
            [report_figure("loglik_trajectory")]
            if loglik_declares_trajectory()
            else []
        ),
    log:
        "logs/report/{family}/{run}.log",
    benchmark:
        "benchmarks/out/report/{family}/{run}.tsv"
    conda:
        "../../envs/rbmflow.yaml"
    params:
        outdir=subpath(output.metrics, parent=True),
        trajectory=lambda wildcards, input: (
            f"--trajectory {shlex.quote(str(input.trajectory))}"
            if input.trajectory
            else ""
        ),
        mutations=report_mutations_flags,
        flags=cli_flags(config["report"]),
        structure=structure_flags,
        device=config["device"],
    shell:
        "python -m rbmflow report --data {input.data:q} --samples {input.samples:q} --sampling {input.sampling:q} "
        "--model {input.model:q} --train-log {input.train_log:q} --loglik {input.loglik:q} "
        "{params.trajectory} {params.mutations} --contacts {input.contacts:q} {params.structure} --outdir {params.outdir:q} --family {wildcards.family:q} "
        "--run {wildcards.run:q} {params.flags} --device {params.device:q} 2> {log:q}"


rule summary:
    input:
        expand("results/{family}/{run}/report/metrics.json", family=FAMILIES, run=RUNS),
    output:
        csv=report(
            "results/summary.csv",
            caption="../rbmflow/report/captions/summary.rst",
            category="Summary",
        ),
        html=report(
            "results/summary.html",
            caption="../rbmflow/report/captions/summary.rst",
            category="Summary",
        ),
    log:
        "logs/report/summary.log",
    conda:
        "../../envs/rbmflow.yaml"
    shell:
        "python -m rbmflow report --summary {input:q} --out {output.csv:q} 2> {log:q}"
