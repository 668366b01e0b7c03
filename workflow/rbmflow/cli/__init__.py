"""Command-line interface: `rbmflow <stage> ...`, one sub-command per pipeline stage.

Each stage lives in its own module of this sub-package with two functions:
`add_arguments(parser)` and `run(args)`. They parse and delegate; the science is elsewhere.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Idle OpenMP threads sleep instead of spinning: on a shared machine or cluster node, spinning
# threads slow every job down. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from rbmflow import __version__
from rbmflow.errors import RbmflowError

STAGES = {
    "fetch": "fetch a family's alignment (InterPro, a local file, or the embedded example)",
    "prepare": "encode, filter, weight and split an alignment into alignment.npz",
    "train": "train a Potts RBM and write model.h5 and train_log.csv",
    "loglik": "estimate log Z and the log-likelihood of train and test sequences",
    "sample": "generate sequences from a trained model, with equilibrium checks",
    "report": "compare generated and natural sequences: metrics, figures, report.html",
    "contacts": "effective couplings, contact scores and their exports from a trained model",
}


def parse_bool(text: str) -> bool:
    """argparse type for true/false flags (true, 1, yes, on / false, 0, no, off)."""
    value = text.strip().lower()
    if value in {"true", "1", "yes", "on"}:
        return True
    if value in {"false", "0", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rbmflow", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"rbmflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage, help_text in STAGES.items():
        module = importlib.import_module(f"rbmflow.cli.{stage}")
        stage_parser = sub.add_parser(stage, help=help_text, description=help_text)
        module.add_arguments(stage_parser)
        stage_parser.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        args.run(args)
    except RbmflowError as err:
        print(f"rbmflow {args.stage}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
