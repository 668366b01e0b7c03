"""`rbmflow score MODEL SEQUENCES --out scores.csv`: free energy, log-likelihood and distance to
the training set of each sequence, aligned to the model's columns or not.

    rbmflow score model.h5 sequences.fasta --out scores.csv [--data alignment.npz]
        [--loglik loglik.json] [--summary scores.json] [--input auto|aligned|unaligned]
        [--max-evalue E] [--min-coverage C] [--device auto|cpu|cuda:N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rbmflow.data.dataset import load_training
from rbmflow.evaluation.profile_hmm import DEFAULT_MAX_EVALUE, DEFAULT_MIN_COVERAGE, INPUT_MODES
from rbmflow.evaluation.score import run_stage


def add_family_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the alignment to the model's columns (shared with `rbmflow mutations`)."""
    parser.add_argument("--input", dest="mode", choices=INPUT_MODES, default="auto",
                        help="auto (default): a record that shows it is aligned to the model "
                             "(A2M with L match states, or L characters with a gap) is taken "
                             "as it is, any other (L letters with no gap included) is aligned "
                             "with a profile HMM of the training alignment; aligned | "
                             "unaligned: force one")
    parser.add_argument("--max-evalue", type=float, default=DEFAULT_MAX_EVALUE,
                        help="a sequence whose best domain has a larger E-value (database of "
                             f"one sequence) is not of the family (default {DEFAULT_MAX_EVALUE})")
    parser.add_argument("--min-coverage", type=float, default=DEFAULT_MIN_COVERAGE,
                        help="... nor one matching fewer than this fraction of the model's "
                             f"columns (default {DEFAULT_MIN_COVERAGE})")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="model.h5")
    parser.add_argument("sequences", type=Path,
                        help="FASTA (.gz allowed), aligned to the model's columns or not")
    parser.add_argument("--out", type=Path, required=True, help="scores.csv to write")
    parser.add_argument("--data", type=Path,
                        help="alignment.npz: needed for unaligned input and for the distance "
                             "to the nearest training sequence")
    parser.add_argument("--loglik", type=Path,
                        help="loglik.json of this model: its log_z gives the log-likelihood")
    parser.add_argument("--summary", type=Path,
                        help="JSON summary with provenance (default: --out with .json)")
    add_family_arguments(parser)


def files(args: argparse.Namespace) -> tuple[dict, dict]:
    """(inputs, outputs) by option, the default --summary included."""
    return ({"MODEL": args.model, "SEQUENCES": args.sequences, "--data": args.data,
             "--loglik": args.loglik},
            {"--out": args.out, "--summary": args.summary or args.out.with_suffix(".json")})


def run(args: argparse.Namespace) -> None:
    if args.data is not None and args.data.is_file():
        load_training(args.data)  # the training part is the reference of the distances
    mappings = run_stage(args.model, args.sequences, args.out, args.data, args.loglik,
                           args.summary, args.mode, args.max_evalue, args.min_coverage,
                           args.device)
    aligned = sum(m.aligned_input for m in mappings)
    print(f"{len(mappings)} sequences scored ({aligned} aligned input, "
          f"{len(mappings) - aligned} aligned with the profile HMM) -> {args.out}")
