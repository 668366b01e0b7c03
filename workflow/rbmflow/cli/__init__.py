"""Command-line interface: `rbmflow <stage> ...`, one sub-command per pipeline stage.

Each stage lives in its own module of this sub-package with two functions:
`add_arguments(parser)` and `run(args)`. They parse and delegate to the stage module's
`run_stage`; the science is elsewhere. The options every computing stage shares, `--device`
and `--threads`, are declared here once and applied before `run`: `args.device` reaches the
stage as a resolved `torch.device`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

# Idle OpenMP threads sleep instead of spinning: on a shared machine or cluster node, spinning
# threads slow every job down. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from rbmflow import __version__
from rbmflow.errors import RbmflowError
from rbmflow.provenance import refuse_output_onto_input

STAGES = {
    "fetch": "fetch a family's alignment (InterPro, a local file, or the embedded example)",
    "prepare": "encode, filter, weight and split an alignment into alignment.npz",
    "train": "train a Potts RBM and write model.h5 and train_log.csv",
    "loglik": "estimate log Z and the log-likelihood of train and test sequences",
    "sample": "generate sequences from a trained model, with equilibrium checks",
    "report": "compare generated and natural sequences: metrics, figures, report.html",
    "score": "free energy, log-likelihood and nearest training distance of sequences",
    "mutations": "log p(mutant) - log p(wild type) of every single substitution, heat map",
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


def number_or_auto(cast: type, *words: str) -> Callable[[str], int | float | str]:
    """argparse type for settings that take a number (int or float), "auto" or one of
    `words`."""
    accepted = ("auto", *words)

    def parse(text: str) -> int | float | str:
        if text.strip().lower() in accepted:
            return text.strip().lower()
        try:
            return cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number or {' or '.join(accepted)}, got {text!r}") from None
    parse.__name__ = f"{cast.__name__} or {' or '.join(accepted)}"
    return parse


# Stages that compute with torch: they get --device and --threads.
COMPUTE_STAGES = ("prepare", "train", "loglik", "sample", "report", "score", "mutations",
                  "contacts")


def add_compute_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto",
                        help="auto | cpu | cuda | cuda:N (default: auto, CUDA when present)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice)")


def apply_compute_arguments(args: argparse.Namespace) -> None:
    """Set torch's CPU threads and turn `args.device` into a torch.device (an error when CUDA
    is asked for and absent)."""
    import torch

    from rbmflow.device import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = resolve_device(args.device)


def existing(path: str | os.PathLike[str] | None) -> str | os.PathLike[str] | None:
    """`path` if it names an existing file, else None (also for a text too long to be one)."""
    try:
        return path if path is not None and os.path.isfile(path) else None
    except (OSError, ValueError):
        return None


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (`rbmflow STAGE: error: ...`, exit 2),
    without the usage text that `--help` shows."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def check_model_fits(model: str | os.PathLike[str], data: str | os.PathLike[str]) -> None:
    """InputError naming both files when the model's (L, q) differ from the alignment's."""
    from rbmflow.data.dataset import load_training
    from rbmflow.model.archive import read_metadata

    train = load_training(data)
    meta = read_metadata(model)
    if (meta.get("num_visibles"), meta.get("num_states")) != (train.length, train.num_states):
        raise RbmflowError(f"{data}: L={train.length}, q={train.num_states}; the model {model} "
                           f"has L={meta.get('num_visibles')}, q={meta.get('num_states')}")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="rbmflow", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"rbmflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage, help_text in STAGES.items():
        module = importlib.import_module(f"rbmflow.cli.{stage}")
        stage_parser = sub.add_parser(stage, help=help_text, description=help_text)
        module.add_arguments(stage_parser)
        if stage in COMPUTE_STAGES:
            add_compute_arguments(stage_parser)
        stage_parser.set_defaults(run=module.run, files=getattr(module, "files", None))
    return parser


# Bounds on the integer options of every stage (an option absent from a stage is skipped): a
# typo such as `hidden: 1e9` stops with one line instead of allocating without bound.
INT_LIMITS: dict[str, tuple[int, int]] = {
    "seed": (0, 2**63 - 1), "hidden": (1, 100_000), "updates": (1, 100_000_000),
    "chains": (1, 10_000_000), "batch_size": (1, 100_000_000), "gibbs_steps": (1, 1_000_000),
    "checkpoints": (1, 100_000), "log_every": (1, 100_000_000), "threads": (1, 4096),
    "sweeps": (1, 100_000_000), "max_sweeps": (1, 100_000_000), "data_chains": (0, 10_000_000),
    "betas": (2, 100_000_000), "trajectory_betas": (2, 100_000_000),
    "trajectory_steps": (1, 100_000_000), "repeats": (1, 10_000),
    "equilibration_sweeps": (0, 100_000_000), "record_every": (0, 100_000_000),
    "triplets": (0, 10_000_000), "nn_samples": (1, 10_000_000),
    "nn_reference": (0, 100_000_000), "pca_components": (1, 1000), "attempts": (1, 1000),
    "exact_max_hiddens": (0, 30), "refresh_sweeps": (1, 100_000), "refresh_every": (0, 100_000_000),
    "pt_levels": (2, 1000), "max_levels": (2, 1000), "reference_chains": (0, 10_000_000),
    "directions": (1, 1000), "backgrounds": (1, 1_000_000), "first": (-10**9, 10**9),
    "checkpoint": (0, 10**12), "update": (0, 10**12),
}
# Bounds (inclusive) on the float options; a stage may refuse an end point with its own line.
FLOAT_LIMITS: dict[str, tuple[float, float]] = {
    "learning_rate": (0.0, 1e6), "lr_decay": (0.0, 1e6), "lr_decay_from": (0.0, 1.0),
    "l1": (0.0, 1e6), "l2": (0.0, 1e6), "min_ess": (0.0, 1.0), "swap_threshold": (0.0, 1.0),
    "identity": (0.0, 1.0), "max_gap_fraction": (0.0, 1.0), "test_fraction": (0.0, 1.0),
    "beta": (0.0, 1e6), "swap_floor": (0.0, 1.0), "min_swap_rate": (0.0, 1.0),
    "rhat_max": (1.0, 1e6), "z_max": (0.0, 1e6), "effect_max": (0.0, 1e6),
    "pearson_tolerance": (0.0, 2.0), "pseudocount": (0.0, 1.0), "tolerance": (0.0, 1e6),
    "min_coverage": (0.0, 1.0), "timeout": (0.0, 86_400.0), "deadline": (0.0, 604_800.0),
    "backoff": (0.0, 3600.0), "min_rate": (0.0, 1e12), "min_rate_window": (0.0, 86_400.0),
    "target_std": (0.0, 1e3), "max_missing": (0.0, 1.0),
}
# Longest text of the name options (family and run names become paths and titles).
MAX_NAME = 100
NAME_OPTIONS = ("family", "run_name", "chain")


def check_numbers(args: argparse.Namespace) -> None:
    """Refuse (RbmflowError naming the option) integers outside INT_LIMITS, floats outside
    FLOAT_LIMITS, any NaN or infinite float option and names longer than MAX_NAME."""
    for name, value in vars(args).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and name in INT_LIMITS:
            low, high = INT_LIMITS[name]
            if not low <= value <= high:
                raise RbmflowError(f"{flag} {value} is out of range: allowed {low} to {high}")
        elif isinstance(value, float) and not math.isfinite(value):
            raise RbmflowError(f"{flag} must be a finite number, got {value}")
        elif isinstance(value, float) and name in FLOAT_LIMITS:
            low_f, high_f = FLOAT_LIMITS[name]
            if not low_f <= value <= high_f:
                raise RbmflowError(f"{flag} {value:g} is out of range: allowed {low_f:g} to "
                                   f"{high_f:g}")
        elif isinstance(value, str) and name in NAME_OPTIONS and len(value) > MAX_NAME:
            raise RbmflowError(f"{flag} is {len(value)} characters long: at most {MAX_NAME}")


def os_error_message(err: OSError) -> str:
    """One line naming the path and the cause of an operating-system error."""
    cause = err.strerror or str(err) or type(err).__name__
    where = err.filename if err.filename is not None else None
    text = f"{where}: {cause}" if where is not None and str(where) not in cause else cause
    if err.filename2 is not None:
        text += f" (and {err.filename2})"
    return " ".join(text.split())


class Terminated(BaseException):
    """SIGTERM, raised where the process is so that every clean-up runs (as Ctrl-C raises
    KeyboardInterrupt); not an Exception, so that no `except Exception` swallows it."""


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(signum)


def _unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """A SIGTERM that landed in a finaliser (where Python prints and drops exceptions) is
    sent again a moment later, to be raised in the stage's own code."""
    if isinstance(unraisable.exc_value, Terminated):
        import threading

        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
        return
    sys.__unraisablehook__(unraisable)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if hasattr(signal, "SIGXFSZ"):  # a file-size limit: an OSError (EFBIG), not a kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        previous_sigterm = signal.signal(signal.SIGTERM, _raise_terminated)
        sys.unraisablehook = _unraisable
    except ValueError:  # not the main thread: SIGTERM keeps its handler
        previous_sigterm = None
    done = False
    try:
        try:
            check_numbers(args)
            if args.files is not None:
                refuse_output_onto_input(*args.files(args))
            if args.stage in COMPUTE_STAGES:
                apply_compute_arguments(args)
            args.run(args)
            done = True
        finally:
            if previous_sigterm is not None:
                signal.signal(signal.SIGTERM, previous_sigterm)
    except (Terminated, KeyboardInterrupt) as err:
        if done:  # the signal came after the outputs were complete
            return 0
        signum = err.args[0] if isinstance(err, Terminated) else signal.SIGINT
        return _fail(args.stage, f"interrupted by {signal.Signals(signum).name}; no output of "
                     "this run was completed", 128 + int(signum))
    except RbmflowError as err:
        return _fail(args.stage, str(err))
    except OSError as err:  # read-only folder, full disk, file-size limit, I/O error
        return _fail(args.stage, os_error_message(err))
    except MemoryError:
        return _fail(args.stage, "out of memory; use smaller settings or inputs")
    return 0


def _fail(stage: str, message: str, code: int = 1) -> int:
    """Print the one error line of `stage`; the exit status `code`."""
    print(f"rbmflow {stage}: error: {' '.join(message.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
