"""`rbmflow train`: train a Potts RBM on the train split of an alignment.npz.

Writes model.h5 (the `rbms` HDF5 layout, log-spaced checkpoints) and train_log.csv. Rerunning
the same command after an interruption resumes from the last complete checkpoint.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

from rbmflow.cli import number_or_auto, parse_bool
from rbmflow.data.dataset import load_training
from rbmflow.training.decision import CHOICES
from rbmflow.training.steps import DEFAULT_LEARNING_RATE, OPTIMIZERS
from rbmflow.training.train import (
    AUTO_LR_DECAY,
    DEFAULT_BATCH_SIZE,
    EXACT_LR_DECAY,
    EXACT_LR_DECAY_FROM,
    METHODS,
    TrainSettings,
    run_stage,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = SimpleNamespace(**{f.name: f.default for f in fields(TrainSettings)})
    parser.add_argument("alignment", type=Path, help="alignment.npz from `rbmflow prepare`")
    parser.add_argument("--out", type=Path, required=True, help="model archive to write (.h5)")
    parser.add_argument("--log", type=Path, required=True, help="train_log.csv to write")
    parser.add_argument("--family", default=None, help="family name recorded in the archive")
    parser.add_argument("--run-name", default=None, help="run name recorded in the archive")
    parser.add_argument("--hidden", type=int, default=d.hidden, help="number of hidden units")
    parser.add_argument("--updates", type=int, default=d.updates, help="gradient updates")
    parser.add_argument("--chains", type=int, default=d.chains, help="Markov chains (pcd, rdm)")
    parser.add_argument("--batch-size", type=number_or_auto(int, "all"), default=d.batch_size,
                        help="training sequences per update (all of them if larger, or all; "
                             f"auto: all when the model term is exact, else {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--gibbs-steps", type=int, default=d.gibbs_steps,
                        help="Gibbs sweeps per update")
    parser.add_argument("--learning-rate", type=number_or_auto(float), default=d.learning_rate,
                        help="step length (sgd with unit-norm steps) or Adam's elementwise "
                             f"rate (auto: {DEFAULT_LEARNING_RATE['sgd']} for sgd, "
                             f"{DEFAULT_LEARNING_RATE['adam']} for adam)")
    parser.add_argument("--optimizer", choices=(*OPTIMIZERS, "auto"), default=d.optimizer,
                        help="sgd: learning rate x gradient (unit-norm: --normalize-gradient); "
                             "adam: Adam on the same gradient; auto: adam when the model term "
                             "is exact or jarzynski, else sgd")
    parser.add_argument("--lr-decay", type=number_or_auto(float), default=d.lr_decay,
                        help="final / initial learning rate, exponential decay (1: constant; "
                             f"auto: {AUTO_LR_DECAY} when the chains are refreshed or jarzynski, "
                             f"{EXACT_LR_DECAY} with the exact model term, else 1)")
    parser.add_argument("--lr-decay-from", type=number_or_auto(float), default=d.lr_decay_from,
                        help="fraction of the updates after which the decay starts (auto: "
                             f"{EXACT_LR_DECAY_FROM} with the exact model term, else 0)")
    parser.add_argument("--method", choices=METHODS, default=d.method,
                        help="pcd: persistent chains; cd: CD-k from the batch; "
                             "rdm: chains restarted from random each update")
    parser.add_argument("--l1", type=float, default=d.l1, help="L1 penalty on the weights")
    parser.add_argument("--l2", type=float, default=d.l2, help="L2 penalty on the weights")
    parser.add_argument("--centered", type=parse_bool, default=d.centered, metavar="BOOL",
                        help="centred gradient (default true)")
    parser.add_argument("--normalize-gradient", type=parse_bool, default=d.normalize_gradient,
                        metavar="BOOL", help="unit-norm gradient steps, as rbms (default true)")
    parser.add_argument("--swap-threshold", type=float, default=d.swap_threshold,
                        help="save an extra checkpoint when the estimated swap acceptance "
                             "with the last saved one falls under this (0: log-spaced only)")
    parser.add_argument("--monitor", type=parse_bool, default=d.monitor, metavar="BOOL",
                        help="compare the chains with equilibrium samples at each log row "
                             "(default true)")
    parser.add_argument("--refresh-every", type=number_or_auto(int), default=d.refresh_every,
                        help="pcd: every that many updates, replace the persistent chains by "
                             "tempering over snapshots of the trajectory (0: never; auto: 5 "
                             "when the training sequences fall into separated subfamilies)")
    parser.add_argument("--equilibrium-chains", choices=CHOICES,
                        default=d.equilibrium_chains,
                        help="pcd: the model term computed exactly over the hidden "
                             "configurations (exact, at most 16 hidden units), from persistent "
                             "chains with importance weights that follow the parameters' moves "
                             "(jarzynski), or from a "
                             "trajectory-tempering ladder kept alive across updates when the "
                             "equilibrium monitor finds the persistent chains away from the "
                             "model's equilibrium (monitor), from the start (always) or never "
                             "(auto: exact when the hidden units allow, else never)")
    parser.add_argument("--refresh-sweeps", type=int, default=d.refresh_sweeps,
                        help="tempering rounds of each refresh")
    parser.add_argument("--checkpoints", type=int, default=d.checkpoints,
                        help="number of log-spaced checkpoints (the last update is always kept)")
    parser.add_argument("--log-every", type=int, default=d.log_every,
                        help="updates between two rows of the training log")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--restart", action="store_true",
                        help="ignore an interrupted run's partial archive and start over")
    parser.add_argument("--progress", type=parse_bool, default=None, metavar="BOOL",
                        help="progress bar (default: only on a terminal)")


def files(args: argparse.Namespace) -> tuple[dict, dict]:
    """(inputs, outputs) by option: no output may be an input (--out is read to resume)."""
    return {"ALIGNMENT": args.alignment}, {"--out": args.out, "--log": args.log}


def run(args: argparse.Namespace) -> None:
    load_training(args.alignment)  # one line for an empty or weightless train split
    settings = TrainSettings(**{f.name: getattr(args, f.name) for f in fields(TrainSettings)
                                if hasattr(args, f.name)})
    run_stage(args.alignment, args.out, args.log, settings, args.device, family=args.family,
              run_name=args.run_name, restart=args.restart, progress=args.progress)
