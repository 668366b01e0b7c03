"""`rbmflow prepare SOURCE --out alignment.npz --summary summary.json [options]`.

SOURCE is the `source.json` written by `rbmflow fetch` or an alignment file (Stockholm,
FASTA or A2M, gzip allowed).
"""

from __future__ import annotations

import argparse

from rbmflow.data.alignment import AMBIGUOUS_RULES, FORMATS
from rbmflow.data.genotypes import ENCODINGS, MISSING_POLICIES, GenotypeSettings
from rbmflow.data.prepare import SPLITS, PrepareSettings, resolve_source, run_stage
from rbmflow.errors import RbmflowError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = PrepareSettings()
    parser.add_argument("source", help="source.json from `rbmflow fetch`, or an alignment file")
    parser.add_argument("--out", required=True, help="alignment.npz to write")
    parser.add_argument("--summary", required=True, help="summary.json to write")
    parser.add_argument("--identity", type=float, default=defaults.identity,
                        help="sequence identity threshold of the weights, gaps counted "
                             "(default %(default)s)")
    parser.add_argument("--max-gap-fraction", type=float, default=defaults.max_gap_fraction,
                        help="drop sequences with a larger fraction of gaps "
                             "(default %(default)s)")
    parser.add_argument("--test-fraction", type=float, default=defaults.test_fraction,
                        help="fraction of sequences held out as the test part; 0 keeps all "
                             "in train (default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of the train/test split (default %(default)s)")
    parser.add_argument("--ambiguous", choices=AMBIGUOUS_RULES, default=defaults.ambiguous,
                        help="B, Z, J, X, U, O: encode as gap, or drop the sequence "
                             "(default %(default)s)")
    parser.add_argument("--split", choices=SPLITS, default=defaults.split,
                        help="random, or cluster: whole components of the identity >= "
                             "--identity graph on one side (default %(default)s)")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="input format (default: from source.json, else sniffed)")
    genotypes = GenotypeSettings()
    group = parser.add_argument_group("genotype families (a VCF or .hapt source)")
    group.add_argument("--encoding", choices=ENCODINGS, default=genotypes.encoding,
                       help="haplotypes (q = 2, phased calls), counts (ALT alleles, q = 3) "
                            "or auto: haplotypes when every call is phased (default %(default)s)")
    group.add_argument("--missing", choices=MISSING_POLICIES, default=genotypes.missing,
                       help="remaining missing calls: impute the major allele, or drop the "
                            "individual (default %(default)s)")
    group.add_argument("--max-missing", type=float, default=genotypes.max_missing,
                       help="drop SNPs with a larger fraction of missing allele calls "
                            "(default %(default)s)")
    group.add_argument("--populations", default=None,
                       help="TSV sample<TAB>population with a header, labels individuals")


def files(args: argparse.Namespace) -> tuple[dict, dict]:
    """(inputs, outputs) by option: no output may be an input, nor the alignment a
    source.json points to."""
    inputs: dict = {"SOURCE": args.source}
    try:
        inputs["the alignment of SOURCE"] = resolve_source(args.source).alignment
    except RbmflowError:
        pass  # the stage names the problem
    return inputs, {"--out": args.out, "--summary": args.summary}


def run(args: argparse.Namespace) -> None:
    settings = PrepareSettings(identity=args.identity, max_gap_fraction=args.max_gap_fraction,
                               test_fraction=args.test_fraction, seed=args.seed,
                               ambiguous=args.ambiguous, split=args.split, format=args.format)
    genotypes = GenotypeSettings(encoding=args.encoding, missing=args.missing,
                                 max_missing=args.max_missing, populations=args.populations)
    summary = run_stage(args.source, args.out, args.summary, settings,
                      device=args.device, genotypes=genotypes)
    print(f"{args.out}: M = {summary['M']} (train {summary['M_train']}, test "
          f"{summary['M_test']}), L = {summary['L']}, M_eff = {summary['M_eff']:.1f} "
          f"(train {summary['M_eff_train']:.1f}, test {summary['M_eff_test']:.1f})")
