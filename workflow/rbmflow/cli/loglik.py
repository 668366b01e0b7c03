"""`rbmflow loglik MODEL DATA --out loglik.json`: log Z and the log-likelihood per sequence.

    rbmflow loglik model.h5 alignment.npz --out loglik.json
        [--trajectory-csv loglik_trajectory.csv] [--method auto|exact,ais,reverse,trajectory]
        [--checkpoint N] [--betas K] [--chains C] [--schedule sigmoid|linear|power]
        [--repeats R] [--seed S] [--device auto|cpu|cuda:N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rbmflow.cli import check_model_fits
from rbmflow.errors import InputError
from rbmflow.evaluation.loglik import METHODS, LoglikSettings, run_stage, settings_from_mapping
from rbmflow.model.partition import SCHEDULES

_DEFAULTS = LoglikSettings()


def _methods(text: str) -> tuple[str, ...]:
    methods = tuple(m.strip() for m in text.replace(" ", ",").split(",") if m.strip())
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown}; choose from "
                                         f"{', '.join(METHODS)} (comma-separated)")
    return methods


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = _DEFAULTS
    parser.add_argument("model", type=Path, help="model.h5 (rbms HDF5 layout)")
    parser.add_argument("data", type=Path, help="alignment.npz from `rbmflow prepare`")
    parser.add_argument("--out", type=Path, required=True, help="loglik.json to write")
    parser.add_argument("--trajectory-csv", type=Path,
                        help="also write log Z and log-likelihoods at every checkpoint here")
    parser.add_argument("--method", dest="methods", type=_methods, default=d.methods,
                        help="comma-separated estimators, first preferred for log_z: "
                             f"{', '.join(METHODS)} (default: auto = exact when Nh <= "
                             f"{d.exact_max_hiddens}, else ais,reverse,trajectory)")
    parser.add_argument("--checkpoint", type=int, default=None,
                        help="update number of the checkpoint to evaluate (default: last)")
    parser.add_argument("--betas", type=int, default=d.betas,
                        help=f"inverse temperatures of the AIS paths (default {d.betas})")
    parser.add_argument("--chains", type=int, default=d.chains,
                        help=f"AIS chains per repeat (default {d.chains})")
    parser.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                        help=f"temperature schedule (default {d.schedule}: denser at both ends)")
    parser.add_argument("--sweeps", type=int, default=d.sweeps,
                        help=f"Gibbs sweeps per temperature (default {d.sweeps})")
    parser.add_argument("--repeats", type=int, default=d.repeats,
                        help=f"independent groups of chains, for the error bar "
                             f"(default {d.repeats})")
    parser.add_argument("--trajectory-steps", type=int, default=d.trajectory_steps,
                        help="annealing steps between the first and last checkpoint "
                             f"(default {d.trajectory_steps})")
    parser.add_argument("--trajectory-betas", type=int, default=d.trajectory_betas,
                        help="temperatures from the base to the first checkpoint "
                             f"(default {d.trajectory_betas})")
    parser.add_argument("--equilibration-sweeps", type=int, default=d.equilibration_sweeps,
                        help="sweeps of the tempering run (over the checkpoints, else in "
                             "beta) that makes the reverse AIS equilibrium samples "
                             f"(default {d.equilibration_sweeps})")
    parser.add_argument("--pseudocount", type=float, default=d.pseudocount,
                        help=f"uniform weight in the base's frequencies (default {d.pseudocount})")
    parser.add_argument("--tolerance", type=float, default=d.tolerance,
                        help="nats: estimates further apart than 3 combined standard errors "
                             "plus this raise a warning "
                             f"(default {d.tolerance})")
    parser.add_argument("--min-ess", type=float, default=d.min_ess,
                        help="effective sample size / chains below which a warning is raised "
                             f"(default {d.min_ess})")
    parser.add_argument("--exact-max-hiddens", type=int, default=d.exact_max_hiddens,
                        help="auto uses exact enumeration up to this many hidden units "
                             f"(default {d.exact_max_hiddens})")
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed")
    parser.add_argument("--target-std", type=float, default=d.target_std,
                        help="nats: standard error of log Z the annealing is sized for from a "
                             "pilot run; betas, chains, trajectory steps become maxima "
                             "(0: run them as given; default %(default)s)")
    parser.add_argument("--samples", type=Path, default=None,
                        help="the sample stage's samples.fasta: reverse AIS starts from them "
                             "when --samples-info says they are equilibrium samples")
    parser.add_argument("--samples-info", type=Path, default=None,
                        help="the sample stage's sampling.json (with --samples)")


def files(args: argparse.Namespace) -> tuple[dict, dict]:
    """(inputs, outputs) by option: no output may be an input."""
    return ({"MODEL": args.model, "DATA": args.data, "--samples": args.samples,
             "--samples-info": args.samples_info},
            {"--out": args.out, "--trajectory-csv": args.trajectory_csv})


def run(args: argparse.Namespace) -> None:
    for role, path in (("model", args.model), ("alignment", args.data)):
        if not path.is_file():
            raise InputError(f"{path}: {role} file not found")
    for role, path in (("samples", args.samples), ("samples info", args.samples_info)):
        if path is not None and not path.is_file():
            raise InputError(f"{path}: {role} file not found")
    if (args.samples is None) != (args.samples_info is None):
        raise InputError("--samples and --samples-info go together")
    check_model_fits(args.model, args.data)  # and an empty or weightless train split
    settings = settings_from_mapping(vars(args))
    doc = run_stage(args.model, args.data, args.out, settings, args.device, args.trajectory_csv,
                    args.samples, args.samples_info)
    test = doc["loglik_test"]
    print(f"log Z = {doc['log_z']:.4f} +- {doc['log_z_std']:.4f} ({doc['method']}); loglik "
          f"train {doc['loglik_train']:.4f}, test {'n/a' if test is None else f'{test:.4f}'} "
          "nats/sequence")
    for message in doc["warnings"]:
        print(f"warning: {message}")
