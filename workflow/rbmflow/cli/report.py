"""`rbmflow report`: metrics, figures and report.html for one run, or a summary of many.

One run:
    rbmflow report --data alignment.npz --samples samples.fasta [--sampling sampling.json]
        [--model model.h5] [--train-log train_log.csv] [--loglik loglik.json]
        [--trajectory loglik_trajectory.csv] [--mutations-heatmap mutations.png
        --mutations-summary mutations.json] --outdir results/F/R/report
Summary:
    rbmflow report --summary results/*/*/report/metrics.json --out results/summary.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rbmflow.data.dataset import load_training
from rbmflow.errors import InputError
from rbmflow.evaluation.metrics import EvaluationSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run = parser.add_argument_group("one run")
    run.add_argument("--data", type=Path, help="alignment.npz (natural train/test split)")
    run.add_argument("--samples", type=Path, help="generated sequences (FASTA)")
    run.add_argument("--sampling", type=Path, help="sampling.json (equilibrium diagnostics)")
    run.add_argument("--model", type=Path, help="model.h5 (free energies, settings)")
    run.add_argument("--train-log", type=Path, help="train_log.csv (training curves)")
    run.add_argument("--loglik", type=Path, help="loglik.json (log-likelihood, log Z)")
    run.add_argument("--trajectory", type=Path,
                     help="loglik_trajectory.csv (log-likelihood along training)")
    run.add_argument("--mutations-heatmap", type=Path,
                     help="heat map PNG of `rbmflow mutations` (shown in the report)")
    run.add_argument("--mutations-summary", type=Path,
                     help="JSON summary of `rbmflow mutations` (coverage, in metrics.json)")
    run.add_argument("--contacts", type=Path, help="contacts.csv from `rbmflow contacts`")
    run.add_argument("--structure", type=Path,
                     help="distance table (i j score distance) or PDB/mmCIF file: PPV and "
                          "contact map of --contacts")
    run.add_argument("--chain", help="chain of a PDB/mmCIF --structure")
    run.add_argument("--outdir", type=Path, help="output folder (metrics.json, figures, "
                                                 "report.html)")
    run.add_argument("--family", help="family name shown in the report (default: from outdir)")
    run.add_argument("--run", dest="run_name", help="run name (default: from outdir)")
    d = EvaluationSettings()
    run.add_argument("--seed", type=int, default=d.seed,
                     help="seed of every subsample (default %(default)s)")
    run.add_argument("--triplets", type=int, default=d.triplets,
                     help="site triplets for three-site correlations (default %(default)s)")
    run.add_argument("--nn-samples", type=int, default=d.nn_samples,
                     help="generated/test sequences in nearest-neighbour metrics "
                          "(default %(default)s)")
    run.add_argument("--nn-reference", type=int, default=d.nn_reference,
                     help="training sequences used as nearest-neighbour reference, 0 = all "
                          "(default %(default)s)")
    run.add_argument("--pca-components", type=int, default=d.pca_components,
                     help="principal components kept (default %(default)s)")
    summary = parser.add_argument_group("summary of several runs")
    summary.add_argument("--summary", nargs="+", type=Path, metavar="METRICS_JSON",
                         help="metrics.json files to put side by side")
    summary.add_argument("--out", type=Path,
                         help="summary CSV (an HTML table is written beside it)")


REPORT_FILES = ("metrics.json", "report.html", *(f"{name}.png" for name in (
    "site_frequencies", "correlations", "pca", "hamming", "energy", "logos", "training",
    "loglik_trajectory", "sampling", "mutations", "contacts_ppv", "contact_map", "hidden_units",
    "hidden_inputs")))
INPUT_OPTIONS = ("data", "samples", "sampling", "model", "train_log", "loglik", "trajectory",
                 "mutations_heatmap", "mutations_summary", "contacts", "structure")


def files(args: argparse.Namespace) -> tuple[dict, dict]:
    """(inputs, outputs) by option: no input may be replaced by the report's files."""
    if args.summary:
        inputs = {f"--summary {path}": path for path in args.summary}
        out = args.out
        return inputs, ({} if out is None else {"--out": out,
                                                "--out (.html)": out.with_suffix(".html")})
    inputs = {f"--{flag.replace('_', '-')}": getattr(args, flag) for flag in INPUT_OPTIONS}
    if args.outdir is None:
        return inputs, {}
    return inputs, {f"--outdir ({name})": args.outdir / name for name in REPORT_FILES}


def run(args: argparse.Namespace) -> None:
    from rbmflow.provenance import folder_built_aside
    from rbmflow.report import ReportInputs, run_stage, summarize

    if args.summary:
        if args.out is None:
            raise InputError("--summary needs --out (the summary CSV path)")
        summarize(args.summary, args.out)
        return
    missing = [flag for flag, value in (("--data", args.data), ("--samples", args.samples),
                                        ("--outdir", args.outdir)) if value is None]
    if missing:
        raise InputError(f"missing {', '.join(missing)} (or use --summary)")
    for flag in ("data", "samples", "sampling", "model", "train_log", "loglik", "trajectory",
                 "mutations_heatmap", "mutations_summary", "contacts", "structure"):
        path = getattr(args, flag)
        if path is not None and not path.is_file():
            raise InputError(f"{path}: no such file (--{flag.replace('_', '-')})")
    for flag in ("triplets", "nn_samples", "nn_reference", "pca_components"):
        if getattr(args, flag) < (1 if flag in ("nn_samples", "pca_components") else 0):
            raise InputError(f"--{flag.replace('_', '-')} must be positive")
    load_training(args.data)  # one line for an empty or weightless train split
    settings = EvaluationSettings(seed=args.seed, triplets=args.triplets,
                                  nn_samples=args.nn_samples, nn_reference=args.nn_reference,
                                  pca_components=args.pca_components)
    inputs = ReportInputs(args.data, args.samples, args.sampling, args.model, args.train_log,
                          args.loglik, args.trajectory, args.mutations_heatmap,
                          args.mutations_summary, contacts=args.contacts,
                          structure=args.structure, structure_chain=args.chain)
    family = args.family if args.family is not None else args.outdir.parent.parent.name
    run_name = args.run_name if args.run_name is not None else args.outdir.parent.name
    # built aside and renamed at the end: no figures without their report, even after a kill
    with folder_built_aside(args.outdir, last=("metrics.json", "report.html")) as folder:
        run_stage(inputs, folder, settings, args.device, family, run_name)
