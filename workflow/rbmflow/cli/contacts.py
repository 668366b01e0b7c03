"""`rbmflow contacts`: effective couplings of a trained RBM, contact scores and exports.

    rbmflow contacts model.h5 --out contacts.csv [--alignment alignment.npz]
        [--structure FILE [--chain X]] [--export-dca params.dat] [--export-npz couplings.npz]

contacts.csv: i, j, score (1-based alignment columns, i < j, by descending score). Couplings
are averaged around the training sequences of --alignment (weighted), or around the model's
persistent chains when no alignment is given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rbmflow.model.couplings import METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="model.h5")
    parser.add_argument("--out", type=Path, required=True, help="contacts.csv to write")
    parser.add_argument("--alignment", type=Path, default=None,
                        help="alignment.npz: its training sequences are the backgrounds "
                             "(default: the model's persistent chains)")
    parser.add_argument("--method", choices=METHODS, default="gaussian",
                        help="gaussian: large-N second differences (default); background: "
                             "exact second differences around sampled backgrounds; tubiana: "
                             "second-order expansion")
    parser.add_argument("--backgrounds", type=int, default=200,
                        help="backgrounds drawn for --method background (default 200)")
    parser.add_argument("--structure", type=Path, default=None,
                        help="distance table (i j score distance) or PDB/mmCIF file")
    parser.add_argument("--chain", default=None,
                        help="chain of a PDB/mmCIF --structure; mapped to the columns with the "
                             "profile HMM of --alignment's training split (needed), refused "
                             "below the E-value, coverage and identity floors")
    parser.add_argument("--ppv-json", type=Path, default=None,
                        help="write the PPVs against --structure to this JSON file")
    parser.add_argument("--export-dca", type=Path, default=None,
                        help="fields and couplings in adabmDCA's text format")
    parser.add_argument("--export-npz", type=Path, default=None,
                        help="fields, couplings and scores as npz")
    parser.add_argument("--seed", type=int, default=0)


def files(args: argparse.Namespace) -> tuple[dict, dict]:
    """(inputs, outputs) by option: no output may be an input."""
    return ({"MODEL": args.model, "--alignment": args.alignment, "--structure": args.structure},
            {"--out": args.out, "--ppv-json": args.ppv_json, "--export-dca": args.export_dca,
             "--export-npz": args.export_npz})


def run(args: argparse.Namespace) -> None:
    from rbmflow.evaluation.contacts import run_stage

    run_stage(args.model, args.out, alignment=args.alignment, method=args.method,
              num_backgrounds=args.backgrounds, seed=args.seed, structure=args.structure,
              chain=args.chain, ppv_json=args.ppv_json, export_dca=args.export_dca,
              export_npz=args.export_npz, device=args.device)
