"""Synthetic genomes with a known population structure, through the default pipeline.

`write` makes a phased VCF of diploid individuals from three founder populations (mixture
shares 0.5 / 0.3 / 0.2, haplotypes as mosaics of each population's founders with
recombination; `rbmflow.data.synthetic.founder_genomes`), its populations table and a config
with one family and every setting at its default. Run the pipeline on it, then `check`
compares the report's metrics with the truth:

    python benchmarks/genomes_founders.py write /tmp/founders
    cd /tmp/founders && snakemake -s /path/to/Snakefile --cores 2 --configfile config.yaml
    python benchmarks/genomes_founders.py check /tmp/founders

Targets: generated population shares within 0.05 of the truth (the mixture shares and the
training rows' own shares), AATS within 0.1 of 0.5, privacy loss <= 0.05. The default of
1,000 individuals holds out 400 test haplotypes: with 500 (200 test haplotypes) the natural
train-vs-test privacy loss, pure sampling noise, is already about 0.05.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rbmflow.data.synthetic import founder_genomes

SHARES = (0.5, 0.3, 0.2)


def write(folder: Path, individuals: int, snps: int, seed: int) -> None:
    genomes = founder_genomes(num_individuals=individuals, num_snps=snps, shares=SHARES,
                              seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "founders.vcf").write_text(genomes.vcf())
    (folder / "populations.tsv").write_text(genomes.populations_tsv())
    (folder / "config.yaml").write_text(
        "families:\n  founders:\n"
        f"    source: {folder.resolve() / 'founders.vcf'}\n"
        f"    populations: {folder.resolve() / 'populations.tsv'}\n")
    print(f"{folder}: {individuals} individuals, {snps} SNPs, shares {SHARES}")


def check(folder: Path, run: str = "default") -> bool:
    metrics = json.loads((folder / f"results/founders/{run}/report/metrics.json").read_text())
    shares = metrics["population_shares"]
    truth = dict(zip(("POP1", "POP2", "POP3"), SHARES, strict=True))
    generated = shares["generated"]
    gap_truth = max(abs(generated[k] - truth[k]) for k in truth)
    gap_train = max(abs(generated[k] - shares["train_labels"][k]) for k in truth)
    loss = metrics["privacy_loss"]["value"]
    rows = [
        ("generated shares", generated, ""),
        ("largest gap to the mixture shares", gap_truth, gap_truth <= 0.05),
        ("largest gap to the training labels", gap_train, gap_train <= 0.05),
        ("vote accuracy on test rows", shares["test_vote_accuracy"], ""),
        ("AATS (train vs test)", f"{metrics['aats']:.3f} ({metrics['aats_train_vs_test']:.3f})",
         abs(metrics["aats"] - 0.5) <= 0.1),
        ("privacy loss (natural)", f"{loss:.3f} ({metrics['privacy_loss']['train_vs_test']:.3f})",
         loss <= 0.05),
        ("Pearson allele frequencies (natural)",
         f"{metrics['pearson_allele_freq']:.3f} "
         f"({metrics['pearson_allele_freq_train_vs_test']:.3f})", ""),
        ("Pearson LD r^2 (natural)",
         f"{metrics['pearson_ld_r2']:.3f} ({metrics['pearson_ld_r2_train_vs_test']:.3f})", ""),
    ]
    for label, value, ok in rows:
        shown = (json.dumps({k: round(v, 3) for k, v in value.items()})
                 if isinstance(value, dict) else value)
        print(f"{label:40s} {shown}  {'' if ok == '' else ('PASS' if ok else 'FAIL')}")
    return all(ok for _, _, ok in rows if ok != "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("write", "check"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--individuals", type=int, default=1000)
    parser.add_argument("--snps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", default="default", help="check: which run's report")
    args = parser.parse_args()
    if args.action == "write":
        write(args.folder, args.individuals, args.snps, args.seed)
    else:
        raise SystemExit(0 if check(args.folder, args.run) else 1)


if __name__ == "__main__":
    main()
