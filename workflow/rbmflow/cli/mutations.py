"""`rbmflow mutations MODEL ALIGNMENT.npz --wildtype SEQ_OR_FASTA --out mutations.csv`:
log p(mutant) - log p(wild type) of every single substitution at the covered positions.

    rbmflow mutations model.h5 alignment.npz --wildtype SEQ_OR_FASTA [--first N]
        --out mutations.csv [--heatmap mutations.png] [--summary mutations.json]
        [--input auto|aligned|unaligned] [--max-evalue E] [--min-coverage C] [--device D]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rbmflow.cli import existing
from rbmflow.cli.score import add_family_arguments
from rbmflow.data.dataset import load_training
from rbmflow.evaluation.mutations import run_stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="model.h5")
    parser.add_argument("data", type=Path,
                        help="alignment.npz: the training alignment the profile HMM is built "
                             "from")
    parser.add_argument("--wildtype", required=True,
                        help="the wild-type sequence, or a FASTA file holding it (one record); "
                             "aligned to the model's columns or not")
    parser.add_argument("--first", type=int, default=1,
                        help="number of the wild type's first residue (default 1)")
    parser.add_argument("--out", type=Path, required=True, help="mutations.csv to write")
    parser.add_argument("--heatmap", type=Path,
                        help="heat map PNG, positions x 20 amino acids (default: --out with .png)")
    parser.add_argument("--summary", type=Path,
                        help="JSON: coverage, the wild type's columns, provenance "
                             "(default: --out with .json)")
    add_family_arguments(parser)


def files(args: argparse.Namespace) -> tuple[dict, dict]:
    """(inputs, outputs) by option, the default --heatmap and --summary included."""
    return ({"MODEL": args.model, "DATA": args.data, "--wildtype": existing(args.wildtype)},
            {"--out": args.out, "--heatmap": args.heatmap or args.out.with_suffix(".png"),
             "--summary": args.summary or args.out.with_suffix(".json")})


def run(args: argparse.Namespace) -> None:
    if args.data.is_file():
        load_training(args.data)  # the profile HMM is built from the training part
    scan = run_stage(args.model, args.data, args.wildtype, args.out, args.heatmap,
                           args.summary, args.first, args.mode, args.max_evalue,
                           args.min_coverage, args.device)
    print(f"{len(scan.positions)} positions x 19 substitutions -> {args.out}")
