"""`rbmflow sample`: generate sequences from a trained model, with equilibrium checks."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from rbmflow.cli import check_model_fits, parse_bool
from rbmflow.errors import InputError
from rbmflow.sampling.mixing import Criteria
from rbmflow.sampling.sample import METHODS, MODES, SamplingSettings, run_stage


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= minimum."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, not {value}")
        return value
    return parse


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SamplingSettings()
    criteria = Criteria()
    parser.add_argument("model", help="model archive (model.h5)")
    parser.add_argument("data", help="encoded alignment (alignment.npz): alphabet, training set")
    parser.add_argument("--out", required=True, help="FASTA of the generated sequences")
    parser.add_argument("--info", required=True, help="sampling.json: settings, diagnostics")
    parser.add_argument("--chains", type=_int_at_least(2), default=defaults.chains,
                        help="independent chains started from random = sequences written "
                             "(default %(default)s)")
    parser.add_argument("--sweeps", type=_int_at_least(1), default=defaults.sweeps,
                        help="Gibbs sweeps v->h->v (default %(default)s; rdm mode: the "
                             "model's training gibbs_steps)")
    parser.add_argument("--beta", type=_positive_float, default=defaults.beta,
                        help="inverse temperature (default %(default)s)")
    parser.add_argument("--seed", type=_int_at_least(0), default=defaults.seed)
    parser.add_argument("--mode", choices=MODES, default=defaults.mode,
                        help="auto: rdm for models trained with rdm, else equilibrium")
    parser.add_argument("--method", choices=METHODS, default=defaults.method,
                        help="auto: ptt when the archive holds >= 2 checkpoints, else pt; "
                             "gibbs: plain chains, checked against a tempering reference")
    parser.add_argument("--swap-floor", type=_positive_float, default=defaults.swap_floor,
                        help="tempering ladder: neighbouring swap rates kept at or above this "
                             "(default %(default)s)")
    parser.add_argument("--min-swap-rate", type=_positive_float,
                        default=defaults.min_swap_rate,
                        help="tempering verdict: smallest accepted swap rate "
                             "(default %(default)s)")
    parser.add_argument("--max-levels", type=_int_at_least(2), default=defaults.max_levels,
                        help="tempering ladder: at most this many levels (default %(default)s)")
    parser.add_argument("--pt-levels", type=_int_at_least(2), default=defaults.pt_levels,
                        help="pt: inverse temperatures the ladder starts from "
                             "(default %(default)s)")
    parser.add_argument("--reference-chains", type=_int_at_least(0),
                        default=defaults.reference_chains,
                        help="chains of the comparison run: plain Gibbs beside tempering, "
                             "tempering beside gibbs (default %(default)s; 0: none)")
    parser.add_argument("--directions", type=_int_at_least(1), default=defaults.directions,
                        help="top singular vectors of W the chains are projected on "
                             "(default %(default)s)")
    parser.add_argument("--rhat-max", type=_positive_float, default=defaults.rhat_max,
                        help="largest accepted R-hat of the projections (default %(default)s)")
    parser.add_argument("--record-every", type=_int_at_least(0), default=defaults.record_every,
                        help="also record diagnostics every K sweeps (0: log-spaced only)")
    parser.add_argument("--auto-extend", type=parse_bool, nargs="?", const=True,
                        default=defaults.auto_extend,
                        help="run on until the chains look equilibrated, up to --max-sweeps "
                             "(plain Gibbs: doubling the sweeps; tempering: segments)")
    parser.add_argument("--max-sweeps", type=_int_at_least(1), default=defaults.max_sweeps,
                        help="cap of --auto-extend (default %(default)s)")
    parser.add_argument("--data-chains", type=_int_at_least(0), default=None,
                        help="chains started from training sequences (default: as many as "
                             "--chains, at most the training set; 0: none)")
    parser.add_argument("--update", type=_int_at_least(0), default=None,
                        help="checkpoint to sample (default: the last)")
    parser.add_argument("--z-max", type=_positive_float, default=criteria.z_max,
                        help="equilibrium tests: a gap under this many standard errors passes")
    parser.add_argument("--effect-max", type=_positive_float, default=criteria.effect_max,
                        help="equilibrium tests: a gap under this many standard deviations "
                             "passes")
    parser.add_argument("--pearson-tolerance", type=_positive_float,
                        default=criteria.pearson_tolerance,
                        help="accepted Pearson difference, random vs data-start chains")


def files(args: argparse.Namespace) -> tuple[dict, dict]:
    """(inputs, outputs) by option: no output may be an input."""
    return ({"MODEL": args.model, "DATA": args.data},
            {"--out": args.out, "--info": args.info})


def run(args: argparse.Namespace) -> None:
    for role, path in (("model", args.model), ("alignment", args.data)):
        if not Path(path).is_file():
            raise InputError(f"{path}: {role} file not found")
    check_model_fits(args.model, args.data)  # and an empty or weightless train split
    settings = SamplingSettings(
        chains=args.chains, sweeps=args.sweeps, beta=args.beta, seed=args.seed, mode=args.mode,
        record_every=args.record_every, auto_extend=args.auto_extend,
        max_sweeps=args.max_sweeps, data_chains=args.data_chains, method=args.method,
        swap_floor=args.swap_floor, min_swap_rate=args.min_swap_rate,
        max_levels=args.max_levels, pt_levels=args.pt_levels,
        reference_chains=args.reference_chains, directions=args.directions,
        rhat_max=args.rhat_max,
        criteria=Criteria(z_max=args.z_max, effect_max=args.effect_max,
                          pearson_tolerance=args.pearson_tolerance))
    run_stage(args.model, args.data, args.out, args.info, settings, device=args.device,
                 update=args.update)
