"""Genotype families: VCF and .hapt parsing with known answers, prepare, samples.vcf, and the
genome scores (LD, AATS, privacy loss, population votes) on hand-made haplotypes."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rbmflow.data.dataset import TEST, load_encoded
from rbmflow.data.genotypes import (
    GenotypeSettings,
    load_genotype_info,
    read_genotypes,
    read_populations,
    write_samples_vcf,
)
from rbmflow.data.prepare import PrepareSettings, run_stage
from rbmflow.data.synthetic import founder_genomes
from rbmflow.errors import InputError
from rbmflow.evaluation.genomes import (
    aats,
    ld_r2,
    nearest_labels,
    same_chromosome_pairs,
)
from rbmflow.model.partition import log_partition_exact
from rbmflow.model.rbm import PottsRBM

REPO = Path(__file__).resolve().parents[1]
HEADER = ("##fileformat=VCFv4.2\n##contig=<ID=1>\n##contig=<ID=2>\n"
          '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
          "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\tS2\tS3\n")


def _vcf(tmp_path: Path, rows: list[str], name: str = "in.vcf") -> Path:
    path = tmp_path / name
    text = HEADER + "".join(row + "\n" for row in rows)
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def _row(chrom: str, pos: int, ref: str, alt: str, *calls: str) -> str:
    return "\t".join([chrom, str(pos), f"r{pos}", ref, alt, ".", "PASS", ".", "GT", *calls])


PHASED = [
    _row("1", 100, "A", "G", "0|1", "1|1", "0|0"),
    _row("1", 250, "C", "T,G", "0|1", "1|2", "0|0"),  # multi-allelic: dropped
    _row("1", 300, "CA", "C", "0|1", "1|1", "0|0"),  # indel: dropped
    _row("2", 50, "T", "C", "1|0", "0|1", "1|1"),
    _row("2", 80, "G", "A", "0|0", "1|0", "0|1"),
]


def test_phased_vcf_gives_two_haplotypes_per_individual(tmp_path: Path) -> None:
    data = read_genotypes(_vcf(tmp_path, PHASED, "in.vcf.gz"), GenotypeSettings())
    assert data.alphabet == "01" and data.encoding == "haplotypes"
    assert data.names.tolist() == ["S1_A", "S1_B", "S2_A", "S2_B", "S3_A", "S3_B"]
    assert data.individuals.tolist() == ["S1", "S1", "S2", "S2", "S3", "S3"]
    np.testing.assert_array_equal(data.codes.T, [[0, 1, 1, 1, 0, 0],
                                                 [1, 0, 0, 1, 1, 1],
                                                 [0, 0, 1, 0, 0, 1]])
    assert data.columns.tolist() == [0, 3, 4]
    assert data.sites.chrom.tolist() == ["1", "2", "2"]
    assert data.sites.pos.tolist() == [100, 50, 80]
    assert data.sites.ref.tolist() == ["A", "T", "G"] and data.sites.alt.tolist() == ["G", "C",
                                                                                       "A"]
    assert data.counts["dropped_records"] == {"multiallelic": 1, "indel": 1, "other": 0}


def test_unphased_vcf_gives_alt_allele_counts(tmp_path: Path) -> None:
    rows = [r.replace("|", "/") for r in PHASED]
    data = read_genotypes(_vcf(tmp_path, rows), GenotypeSettings())
    assert data.alphabet == "012" and not data.phased_input
    np.testing.assert_array_equal(data.codes.T, [[1, 2, 0], [1, 1, 2], [0, 1, 1]])
    with pytest.raises(InputError, match="S1 at 1:100 is unphased"):
        read_genotypes(_vcf(tmp_path, rows), GenotypeSettings(encoding="haplotypes"))
    counts = read_genotypes(_vcf(tmp_path, PHASED), GenotypeSettings(encoding="counts"))
    np.testing.assert_array_equal(counts.codes, data.codes)


MISSING = [
    _row("1", 10, "A", "G", "0|1", "1|1", ".|."),  # 2 of 6 alleles missing -> 1/3
    _row("1", 20, "A", "G", "1|1", ".|1", "0|1"),  # 1 of 6 missing; major allele ALT
    _row("1", 30, "A", "G", "0|0", "0|.", "0|0"),  # major allele REF
]


def test_missing_calls_follow_the_policy(tmp_path: Path) -> None:
    path = _vcf(tmp_path, MISSING)
    imputed = read_genotypes(path, GenotypeSettings(max_missing=0.2))
    assert imputed.columns.tolist() == [1, 2]
    assert imputed.counts["dropped_snps_missing"] == 1
    np.testing.assert_array_equal(imputed.codes.T, [[1, 1, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0]])
    kept = read_genotypes(path, GenotypeSettings(max_missing=0.5))
    np.testing.assert_array_equal(kept.codes[:, 0], [0, 1, 1, 1, 1, 1])  # ALT: 3 of 4
    dropped = read_genotypes(path, GenotypeSettings(max_missing=0.5, missing="drop"))
    assert dropped.individuals.tolist() == ["S1", "S1"]
    assert dropped.counts["dropped_individuals_missing"] == 2
    unphased = read_genotypes(_vcf(tmp_path, [r.replace("|", "/") for r in MISSING]),
                              GenotypeSettings(max_missing=0.2))
    np.testing.assert_array_equal(unphased.codes[:, 0], [2, 2, 1])  # ./1 -> major homozygote
    with pytest.raises(InputError, match="every SNP has more than max_missing"):
        read_genotypes(path, GenotypeSettings(max_missing=0.1))


def test_haploid_calls_are_refused_naming_the_record(tmp_path: Path) -> None:
    rows = [PHASED[0], _row("2", 7, "A", "C", "0|1", "1", "0|0")]
    with pytest.raises(InputError, match="record 2:7 has no diploid GT call"):
        read_genotypes(_vcf(tmp_path, rows), GenotypeSettings())


def test_hapt_and_vcf_of_the_same_genomes_agree(tmp_path: Path) -> None:
    genomes = founder_genomes(num_individuals=23, num_snps=31, seed=3)
    (tmp_path / "g.vcf").write_text(genomes.vcf())
    (tmp_path / "g.hapt").write_text(genomes.hapt())
    from_vcf = read_genotypes(tmp_path / "g.vcf", GenotypeSettings())
    from_hapt = read_genotypes(tmp_path / "g.hapt", GenotypeSettings())
    np.testing.assert_array_equal(from_vcf.codes, genomes.haplotypes)
    np.testing.assert_array_equal(from_hapt.codes, genomes.haplotypes)
    assert from_hapt.individuals.tolist() == from_vcf.individuals.tolist()
    (tmp_path / "bad.hapt").write_text("POP1 I1_A 0 1 2\n")
    with pytest.raises(InputError, match="bad.hapt: line 1"):
        read_genotypes(tmp_path / "bad.hapt", GenotypeSettings())


def test_prepare_splits_by_individual_and_keeps_the_sites(tmp_path: Path) -> None:
    genomes = founder_genomes(num_individuals=41, num_snps=29, seed=5)
    (tmp_path / "g.vcf").write_text(genomes.vcf())
    (tmp_path / "pops.tsv").write_text(genomes.populations_tsv())
    summary = run_stage(tmp_path / "g.vcf", tmp_path / "a.npz", tmp_path / "s.json",
                        PrepareSettings(test_fraction=0.2, seed=7),
                        genotypes=GenotypeSettings(populations=str(tmp_path / "pops.tsv")))
    data = load_encoded(tmp_path / "a.npz")
    info = load_genotype_info(tmp_path / "a.npz")
    assert data.alphabet == "01" and data.codes.shape == (82, 29)
    assert (data.weights == 1).all()
    assert (data.split[0::2] == data.split[1::2]).all()  # both haplotypes on one side
    assert (data.split == TEST).sum() == 2 * 8  # round(0.2 * 41) individuals
    assert info.populations.tolist() == list(np.repeat(genomes.population_names(), 2))
    assert info.sites.pos.tolist() == genomes.pos.tolist()
    assert summary["populations"]["unlabelled_rows"] == 0
    assert json.loads((tmp_path / "s.json").read_text())["provenance"]["inputs"][
        "populations"]["sha256"]


def test_populations_table_errors_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "p.tsv").write_text("sample\tpopulation\nA\tX\nB\n")
    with pytest.raises(InputError, match="p.tsv: line 3"):
        read_populations(tmp_path / "p.tsv")


@pytest.mark.parametrize("phased", [True, False])
def test_samples_vcf_reads_back_with_cyvcf2(tmp_path: Path, phased: bool) -> None:
    cyvcf2 = pytest.importorskip("cyvcf2")
    genomes = founder_genomes(num_individuals=13, num_snps=17, seed=2)
    (tmp_path / "g.vcf").write_text(genomes.vcf(unphased=not phased))
    run_stage(tmp_path / "g.vcf", tmp_path / "a.npz", tmp_path / "s.json", PrepareSettings())
    data = load_encoded(tmp_path / "a.npz")
    generated = data.codes[:11][::-1].copy()  # 11 rows: haplotypes pair into 5 individuals
    record = {"model_update": 600, "method": "ptt", "provenance": {
        "inputs": {"model": {"path": "m.h5", "sha256": "abc"}}, "git_commit": "deadbeef"}}
    out = write_samples_vcf(tmp_path / "samples.fasta", torch.from_numpy(generated),
                            tmp_path / "a.npz", record)
    assert out == tmp_path / "samples.vcf"
    reader = cyvcf2.VCF(str(out))
    expected = 5 if phased else 11
    assert reader.samples == [f"AG{k}" for k in range(1, expected + 1)]
    assert "rbmflow_model=m.h5 update=600 sha256=abc" in reader.raw_header
    sites = list(reader)
    assert [(v.CHROM, v.POS, v.REF, v.ALT[0]) for v in sites] == [
        (c, int(p), "A", "G") for c, p in zip(genomes.chrom, genomes.pos, strict=True)]
    calls = np.stack([v.genotype.array() for v in sites])  # (L, individuals, 3)
    if phased:
        np.testing.assert_array_equal(calls[:, :, 0].T, generated[0:10:2])
        np.testing.assert_array_equal(calls[:, :, 1].T, generated[1:10:2])
        assert calls[:, :, 2].all()
    else:
        np.testing.assert_array_equal(calls[:, :, :2].sum(-1).T, generated)
        assert not calls[:, :, 2].any()
    if shutil.which("bcftools"):
        query = subprocess.run(["bcftools", "query", "-f", "%POS[\t%GT]\n", str(out)],
                               capture_output=True, text=True, check=True).stdout
        first = query.splitlines()[0].split("\t")
        assert int(first[0]) == genomes.pos[0] and len(first) == expected + 1
        sep = "|" if phased else "/"
        assert all(sep in call for call in first[1:])


def test_ld_r2_known_answers() -> None:
    haplotypes = np.array([[0, 0, 1, 0, 1],
                           [0, 1, 1, 1, 1],
                           [1, 1, 0, 0, 1],
                           [1, 1, 0, 1, 1]])
    first, second = np.array([0, 0, 0, 0, 1]), np.array([1, 2, 3, 4, 3])
    r2 = ld_r2(haplotypes, first, second)
    # SNP0 vs SNP1: means 1/2, 3/4; cov 1/2 - 3/8 = 1/8; r^2 = (1/8)^2 / (1/4 * 3/16) = 1/3
    np.testing.assert_allclose(r2[:4], [1 / 3, 1.0, 0.0, np.nan])
    np.testing.assert_allclose(r2[4], 1 / 3)
    first, second, dist = same_chromosome_pairs(np.array(["1", "1", "2", "1"]),
                                                np.array([10, 40, 5, 100]))
    assert list(zip(first.tolist(), second.tolist(), dist.tolist(), strict=True)) == [
        (0, 1, 30), (0, 3, 90), (1, 3, 60)]


def test_ld_r2_of_independent_snps_averages_one_over_rows_minus_one() -> None:
    # the noise floor drawn in the LD-decay figure: E[r^2] = 1/(n - 1) for independent SNPs
    rows = np.random.default_rng(7).integers(0, 2, size=(211, 61))
    first, second = np.triu_indices(61, k=1)
    assert np.nanmean(ld_r2(rows, first, second)) == pytest.approx(1 / 210, rel=0.15)


def test_aats_known_answers() -> None:
    truth = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 1, 1]])
    assert aats(truth, truth.copy())["AATS"] == 0.0  # copies: every d_TS = 0 < d_TT
    # T = {0000, 1111}, S = {0001, 1110}: d_TS = 1 < d_TT = 4 and d_ST = 1 < d_SS = 4
    t, s = np.array([[0, 0, 0, 0], [1, 1, 1, 1]]), np.array([[0, 0, 0, 1], [1, 1, 1, 0]])
    assert aats(t, s) == {"AA_TS": 0.0, "AA_ST": 0.0, "AATS": 0.0}
    # T = {0000, 0001}, S = {1111, 1110}: d_TS = 3 > d_TT = 1 and d_ST = 3 > d_SS = 1
    t, s = np.array([[0, 0, 0, 0], [0, 0, 0, 1]]), np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
    assert aats(t, s)["AATS"] == 1.0
    # T = {00, 01}, S = {10, 11}: d_TS = 1 = d_TT and d_ST = 1 = d_SS, ties count one half
    assert aats(np.array([[0, 0], [0, 1]]), np.array([[1, 0], [1, 1]]))["AATS"] == 0.5
    # unphased counts: T = {0, 2}, S = {1, 1}: d_TS = 1 < d_TT = 2; d_ST = 1 > d_SS = 0
    assert aats(np.array([[0], [2]]), np.array([[1], [1]])) == {"AA_TS": 0.0, "AA_ST": 1.0,
                                                               "AATS": 0.5}


def test_aats_near_half_for_fresh_draws_and_privacy_loss_of_copies() -> None:
    genomes = founder_genomes(num_individuals=400, num_snps=43, seed=11)
    rows = genomes.haplotypes
    train, test, fresh = rows[:300], rows[300:500], rows[500:700]
    assert abs(aats(test, fresh)["AATS"] - 0.5) < 0.08
    copies = train[np.random.default_rng(0).choice(300, 200, replace=False)]
    loss = aats(test, copies)["AATS"] - aats(train[:200], copies)["AATS"]
    fresh_loss = aats(test, fresh)["AATS"] - aats(train[:200], fresh)["AATS"]
    assert loss > 0.2 and abs(fresh_loss) < 0.08


def test_privacy_metrics_average_over_draws_of_the_subsets() -> None:
    """Sets of exactly n rows: every draw is the same, so the mean is the single AATS and
    the spread 0. A larger generated set: draws differ, the mean lies among them."""
    from rbmflow.evaluation.genomes import GenomeSets, privacy_metrics

    genomes = founder_genomes(num_individuals=450, num_snps=37, seed=5)
    rows = genomes.haplotypes

    def sets(generated: np.ndarray) -> GenomeSets:
        return GenomeSets(train=rows[:101], test=rows[101:202], generated=generated,
                          encoding="haplotypes", chrom=genomes.chrom, pos=genomes.pos,
                          train_individuals=np.arange(101))

    exact = privacy_metrics(sets(rows[202:303]), size=101, seed=3, repeats=7)
    loss = (aats(rows[101:202], rows[202:303])["AATS"]
            - aats(rows[:101], rows[202:303])["AATS"])
    assert exact["privacy_loss"]["value"] == pytest.approx(loss, abs=1e-12)
    assert exact["privacy_loss"]["spread"] == 0.0 and exact["aats_spread"] == 0.0
    assert exact["aats_detail"]["repeats"] == 7 and exact["aats_detail"]["n"] == 101
    averaged = privacy_metrics(sets(rows[202:900]), size=101, seed=3, repeats=7)
    single = [privacy_metrics(sets(rows[202:900]), size=101, seed=k, repeats=1)["aats"]
              for k in range(7)]
    assert averaged["aats_spread"] > 0
    assert min(single) < averaged["aats"] < max(single)


def test_nearest_labels_vote_and_leave_own_individual_out() -> None:
    reference = np.array([[0, 0, 0], [0, 0, 1], [1, 1, 1], [1, 1, 0], [1, 1, 1]])
    labels = np.array(["A", "A", "B", "B", "C"])
    queries = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 1]])
    # [1,1,1] ties B (row 2) and C (row 4): B and C one vote each -> alphabetical B;
    # [1,0,1] is 1 from rows 1, 2 and 4: A, B, C -> A
    assert nearest_labels(queries, reference, labels).tolist() == ["A", "B", "A"]
    groups = np.array(["i1", "i1", "i2", "i3", "i4"])
    loo = nearest_labels(reference, reference, labels, groups, groups)
    assert loo.tolist() == ["B", "B", "C", "B", "B"]


def test_binary_potts_log_z_by_enumeration_equals_brute_force() -> None:
    """q = 2: log Z by enumerating the hiddens equals the double sum over v and h of
    exp(-E), written in the Bernoulli parametrisation (w = W[:, 1] - W[:, 0], ...)."""
    g = torch.Generator().manual_seed(5)
    num_visibles, num_hiddens = 7, 5
    model = PottsRBM(torch.randn(num_visibles, 2, num_hiddens, generator=g, dtype=torch.float64),
                     torch.randn(num_visibles, 2, generator=g, dtype=torch.float64),
                     torch.randn(num_hiddens, generator=g, dtype=torch.float64))
    w = model.weight_matrix[:, 1] - model.weight_matrix[:, 0]
    a = model.vbias[:, 1] - model.vbias[:, 0]
    b = model.hbias + model.weight_matrix[:, 0].sum(0)
    offset = float(model.vbias[:, 0].sum())
    terms = []
    for v in itertools.product((0.0, 1.0), repeat=num_visibles):
        for h in itertools.product((0.0, 1.0), repeat=num_hiddens):
            vv, hh = torch.tensor(v, dtype=torch.float64), torch.tensor(h, dtype=torch.float64)
            terms.append(float(vv @ a + hh @ b + vv @ w @ hh) + offset)
    brute = float(torch.logsumexp(torch.tensor(terms, dtype=torch.float64), 0))
    assert log_partition_exact(model) == pytest.approx(brute, abs=1e-10)


def test_shared_1000_genomes_vcf(shared_data: Path) -> None:
    data = read_genotypes(shared_data / "genomes" / "1000G_162snps_unphased.vcf.gz",
                          GenotypeSettings())
    assert data.codes.shape == (2504, 162) and data.alphabet == "012"
    table = read_populations(shared_data / "genomes" / "1000G_superpopulations.tsv")
    assert {table[s] for s in data.individuals} == {"AFR", "AMR", "EAS", "EUR", "SAS"}


def _bernoulli_log_p(w: torch.Tensor, vb: torch.Tensor, hb: torch.Tensor) -> torch.Tensor:
    """log p(v) of a Bernoulli-Bernoulli RBM over every v in {0,1}^L (binary order)."""
    v = torch.tensor(list(itertools.product((0.0, 1.0), repeat=w.shape[0])),
                     dtype=torch.float64)
    minus_f = v @ vb + torch.nn.functional.softplus(hb + v @ w).sum(1)
    return minus_f - torch.logsumexp(minus_f, 0)


def test_bernoulli_archive_both_ways(tmp_path: Path) -> None:
    """q = 2: our archive exported as `rbms`' BBRBM, and a BBRBM written by `rbms`, give the
    same p(v) over every configuration as the Potts model."""
    rbms_io = pytest.importorskip("rbms.io")
    from rbmflow.model import archive
    from rbmflow.model.partition import visible_configurations
    from rbms.bernoulli_bernoulli.classes import BBRBM

    g = torch.Generator().manual_seed(3)
    num_visibles, num_hiddens = 6, 5
    model = PottsRBM(torch.randn(num_visibles, 2, num_hiddens, generator=g, dtype=torch.float64),
                     torch.randn(num_visibles, 2, generator=g, dtype=torch.float64),
                     torch.randn(num_hiddens, generator=g, dtype=torch.float64))
    codes = visible_configurations(num_visibles, 2, 0, 2**num_visibles)
    minus_f = -model.free_energy(codes)
    potts_log_p = minus_f - torch.logsumexp(minus_f, 0)
    hyper = {"batch_size": 8, "gibbs_steps": 3, "learning_rate": 0.1, "L1": 0.0, "L2": 0.0,
             "seed": 1, "num_hiddens": num_hiddens, "num_chains": 4}
    archive.save_checkpoint(tmp_path / "m.h5", model, codes[:4], 7, 1.0, None, hyper,
                            {"alphabet": "01"})
    archive.export_bernoulli(tmp_path / "m.h5", tmp_path / "bb.h5")
    theirs = rbms_io.load_params(str(tmp_path / "bb.h5"), 7, torch.device("cpu"), torch.float64)
    assert isinstance(theirs, BBRBM)
    np.testing.assert_allclose(_bernoulli_log_p(theirs.weight_matrix, theirs.vbias,
                                                theirs.hbias), potts_log_p, atol=1e-5)
    bb = BBRBM(weight_matrix=torch.randn(num_visibles, num_hiddens, generator=g,
                                         dtype=torch.float64),
               vbias=torch.randn(num_visibles, generator=g, dtype=torch.float64),
               hbias=torch.randn(num_hiddens, generator=g, dtype=torch.float64))
    rbms_io.save_model(str(tmp_path / "theirs.h5"), bb, {"visible": codes[:4].double()}, 5, 1.0)
    ours = archive.load_rbm(tmp_path / "theirs.h5", dtype=torch.float64)
    minus_f = -ours.free_energy(codes)
    np.testing.assert_allclose(minus_f - torch.logsumexp(minus_f, 0),
                               _bernoulli_log_p(bb.weight_matrix, bb.vbias, bb.hbias),
                               atol=1e-10)


def _genotype_study(folder: Path) -> Path:
    """A tiny study with a phased genotype family (and its populations) beside the tiny
    protein family; returns its config file."""
    import yaml

    genomes = founder_genomes(num_individuals=19, num_snps=13, seed=4)
    (folder / "g.vcf").write_text(genomes.vcf())
    (folder / "pops.tsv").write_text(genomes.populations_tsv())
    (folder / "tiny.sto").write_text((REPO / ".test" / "tiny.sto").read_text())
    config = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    config["families"] = {"tiny": {"source": "tiny.sto"},
                          "geno": {"source": "g.vcf", "populations": "pops.tsv",
                                   "missing": "drop"}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _snakemake(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run([sys.executable, "-m", "snakemake", *args, "--snakefile",
                           str(REPO / "Snakefile"), "--directory", str(folder), "--cores", "2",
                           f"--configfile={folder / 'config.yaml'}"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def test_rules_write_samples_vcf_for_genotype_families_only(tmp_path: Path) -> None:
    _genotype_study(tmp_path)
    result = _snakemake(tmp_path, "-n", "-p")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "results/geno/quick/samples.vcf" in output
    assert "results/tiny/quick/samples.vcf" not in output
    assert "rule sample_genotypes:" in output and "rule sample:" in output
    assert "--missing drop --populations pops.tsv" in output


@pytest.mark.slow
def test_whole_pipeline_on_a_genotype_family(tmp_path: Path) -> None:
    cyvcf2 = pytest.importorskip("cyvcf2")
    _genotype_study(tmp_path)
    result = _snakemake(tmp_path, "results/geno/quick/report/report.html",
                        "results/geno/quick/samples.vcf")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    run = tmp_path / "results/geno/quick"
    assert cyvcf2.VCF(str(run / "samples.vcf")).samples == [f"AG{k}" for k in range(1, 12)]
    metrics = json.loads((run / "report/metrics.json").read_text())
    for key in ("pearson_allele_freq", "pearson_ld_r2", "aats", "privacy_loss",
                "population_shares"):
        assert metrics[key] is not None, key
    assert set(metrics["population_shares"]["generated"]) <= {"POP1", "POP2", "POP3"}
    assert "<h2>Genomes</h2>" in (run / "report/report.html").read_text()


def test_genome_scores_of_fresh_draws_and_of_copies() -> None:
    """Generated rows drawn afresh from the same founder populations score like natural test
    rows; copies of the training rows show as a privacy loss."""
    from rbmflow.evaluation.genomes import GenomeSets, evaluate_genomes

    genomes = founder_genomes(num_individuals=700, num_snps=53, seed=13)
    rows = genomes.haplotypes
    pops = np.repeat(genomes.population_names(), 2)
    individuals = np.repeat(genomes.samples, 2)

    def sets(generated: np.ndarray, num_train: int = 800) -> GenomeSets:
        return GenomeSets(train=rows[:num_train], test=rows[800:1000], generated=generated,
                          encoding="haplotypes", chrom=genomes.chrom, pos=genomes.pos,
                          train_individuals=individuals[:num_train],
                          train_populations=pops[:num_train], test_populations=pops[800:1000])

    fresh = evaluate_genomes(sets(rows[1000:1400]), size=400)
    assert fresh["pearson_allele_freq"] > 0.95
    assert abs(fresh["aats"] - 0.5) < 0.1 and abs(fresh["privacy_loss"]["value"]) < 0.07
    shares = fresh["population_shares"]
    assert shares["test_vote_accuracy"] > 0.95
    truth = {f"POP{k + 1}": float((genomes.populations[500:700] == k).mean())
             for k in range(3)}
    assert max(abs(shares["generated"][k] - truth[k]) for k in truth) < 0.02
    # half the copied training rows enter the equal-size train subsample: AATS vs train ~ 1/4
    copies = evaluate_genomes(sets(rows[:400].copy(), num_train=400), size=200)
    assert copies["privacy_loss"]["value"] > 0.15


def test_genome_report_section_draws_every_figure(tmp_path: Path) -> None:
    from rbmflow.report.genomes import add_genome_report, genomes_html

    genomes = founder_genomes(num_individuals=61, num_snps=19, seed=8)
    (tmp_path / "g.vcf").write_text(genomes.vcf())
    (tmp_path / "pops.tsv").write_text(genomes.populations_tsv())
    run_stage(tmp_path / "g.vcf", tmp_path / "a.npz", tmp_path / "s.json", PrepareSettings(),
              genotypes=GenotypeSettings(populations=str(tmp_path / "pops.tsv")))
    data = load_encoded(tmp_path / "a.npz")
    drawn: dict[str, object] = {}

    def draw(name, maker, missing=None):
        drawn[name] = missing if missing is not None else maker()

    metrics: dict = {}
    test_rows = data.codes[data.split == TEST][::-1].copy()
    add_genome_report(draw, metrics, tmp_path / "a.npz", data, test_rows, 50, 0)
    assert set(drawn) == {"genome_allele_freq", "genome_ld", "genome_distances", "genome_pca",
                          "genome_populations"}
    assert all(hasattr(fig, "savefig") for fig in drawn.values())
    for fig in drawn.values():
        fig.clf()
    assert metrics["pearson_allele_freq"] == pytest.approx(1.0)  # the test rows, reordered
    assert metrics["pearson_ld_r2"] == pytest.approx(1.0)
    assert metrics["population_shares"]["gap"] == pytest.approx(0.0)
    page = genomes_html(metrics)
    assert "<h2>Genomes</h2>" in page and "POP1" in page and "AATS" in page
    assert "<td style='padding-left:2em'>AA_TS (real rows)</td>" in page
    assert genomes_html({"pearson_fi": 0.9}) == ""


def test_report_pages_of_genotype_families_speak_of_haplotypes_and_genotypes() -> None:
    from rbmflow.report.html import _metrics_table, _split_note, row_noun

    assert row_noun({}) == "sequence"
    assert row_noun({"genome_encoding": "haplotypes"}) == "haplotype"
    assert row_noun({"genome_encoding": "counts"}) == "genotype"
    protein = _metrics_table({"pearson_cij_aa": 0.5})
    assert "amino acids only" in protein and "training sequences" in protein
    phased = _metrics_table({"genome_encoding": "haplotypes", "pearson_cij_aa": 0.5})
    assert "amino acids" not in phased and "sequence" not in phased
    assert "Fraction of exact copies of training haplotypes" in phased
    split = {"method": "random", "test_max_identity_to_train": {"n": 3, "quantiles": {}}}
    assert "Test genotypes' maximum identity" in _split_note(split, "genotype")
