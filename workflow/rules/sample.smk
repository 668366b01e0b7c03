rule sample:
    input:
        model="results/{family}/{run}/model.h5",
        data="results/{family}/data/alignment.npz",
    output:
        samples="results/{family}/{run}/samples.fasta",
        info="results/{family}/{run}/sampling.json",
    log:
        "logs/sample/{family}/{run}.log",
    benchmark:
        "benchmarks/out/sample/{family}/{run}.tsv"
    conda:
        "../../envs/rbmflow.yaml"
    threads: 2
    resources:
        gpu=1,
        runtime=240,
        mem_mb=4000,
    params:
        flags=cli_flags(config["sample"]),
        device=config["device"],
    shell:
        "python -m rbmflow sample {input.model:q} {input.data:q} --out {output.samples:q} "
        "--info {output.info:q} {params.flags} --device {params.device:q} "
        "--threads {threads:q} 2> {log:q}"


# Genotype families: the same job also writes samples.vcf beside the FASTA.
use rule sample as sample_genotypes with:
    output:
        samples="results/{family}/{run}/samples.fasta",
        info="results/{family}/{run}/sampling.json",
        vcf="results/{family}/{run}/samples.vcf",
    wildcard_constraints:
        family="|".join(map(re.escape, GENOTYPE_FAMILIES)) or "(?!)",


ruleorder: sample_genotypes > sample
