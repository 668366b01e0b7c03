"""The report stage: metrics.json, figures and a self-contained report.html for one run,
and a summary table across runs.

Inputs of one run: the encoded alignment (natural train/test split and weights), the
generated sequences (FASTA), and, each optional, sampling.json, model.h5, train_log.csv,
loglik.json and the log-likelihood trajectory CSV. An absent optional input omits the
figures and rows that need it; the HTML says which and why.

The JSON side files must belong to the model (the sha256 they record) and hold values of the
right types; every warning a stage left is gathered at the top of the page and in metrics.json.

Modules: `inputs` (reading and checking them), `warnings` (the warnings of every stage),
`figures` and `model_figures` (drawing), `html` (the page), `captions/*.rst` (what each
figure shows, shared with the Snakemake report).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from rbmflow.data.dataset import TEST, TRAIN, EncodedAlignment, load_encoded
from rbmflow.device import resolve_device
from rbmflow.errors import InputError
from rbmflow.evaluation.metrics import Evaluation, EvaluationSettings, evaluate
from rbmflow.model.rbm import PottsRBM
from rbmflow.provenance import (
    FORMAT_VERSION,
    atomic_path,
    atomic_paths,
    now_utc,
    provenance,
    write_json,
)
from rbmflow.report.figures import (
    copy_figure,
    fig_correlations,
    fig_energy,
    fig_hamming,
    fig_loglik_trajectory,
    fig_logos,
    fig_pca,
    fig_sampling,
    fig_site_frequencies,
    fig_training,
    information_heights,
    placeholder,
    save_figure,
)
from rbmflow.report.genomes import add_genome_report
from rbmflow.report.html import CSS, FIGURES, caption, fmt, render_html
from rbmflow.report.inputs import (
    LOGLIK_FIELDS,
    MUTATIONS_FIELDS,
    SAMPLING_FIELDS,
    ReportInputs,
    load_model,
    lookup,
    mutations_coverage,
    read_csv,
    read_json,
    read_run_json,
    read_samples,
    require_one_model,
)
from rbmflow.report.model_figures import add_model_figures
from rbmflow.report.warnings import (
    checkpoint_warnings,
    loglik_warnings,
    sampling_warnings,
    training_warnings,
)

__all__ = ["FIGURES", "ReportInputs", "caption", "fig_training", "information_heights", "lookup",
           "read_samples", "run_stage", "summarize"]

log = logging.getLogger(__name__)

# -- the stage ------------------------------------------------------------------------------


def _scalar_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def training_chains(model_meta: dict[str, Any] | None) -> str | None:
    """Which chains fed the gradient's model term during training, why, and at what cost
    (model.h5 metadata; None without a model or for archives that do not say)."""
    model_meta = model_meta or {}
    settings = model_meta.get("settings") or {}
    decided = model_meta.get("training_chains")
    if model_meta.get("method") != "pcd" or "refresh_every" not in settings:
        return None
    if decided and decided.get("source") == "exact":
        return f"no chains: {decided['why']}; {_steps_text(settings)}"
    if decided and decided.get("source") == "jarzynski":
        return (f"persistent chains with Jarzynski weights (equilibrium_chains: jarzynski), "
                f"resampled {decided.get('resamples', '?')} times; {_steps_text(settings)}")
    every = settings["refresh_every"]
    text = (f"refreshed by trajectory tempering every {every} updates, step decaying to "
            f"{settings.get('lr_decay')} x" if every else "plain PCD")
    found = model_meta.get("subfamilies")
    if found is not None:
        text += " (auto: " + ("separated subfamilies, weight shares "
                              + "/".join(f"{x:.2f}" for x in found["shares"])
                              if found["separated"] else "one family") + ")"
    if not decided:
        return text
    if decided.get("switched_at") is None:
        return f"{text}; {decided['why']}"
    cost = decided.get("seconds_per_update") or {}
    return (f"{text} until update {decided['switched_at']}, then tempered chains over a ladder "
            f"of {decided.get('ladder_levels')} levels ({decided['why']})"
            + (f"; {cost['before']:.3g} s per update before, {cost['after']:.3g} s after"
               if cost else ""))


def _steps_text(settings: dict[str, Any]) -> str:
    """How the steps were taken: optimizer, data batch and the step's decay (settings of
    model.h5's metadata; keys that older archives lack are left out)."""
    text = f"{settings.get('optimizer', 'sgd')} steps"
    batch = settings.get("batch_size")
    if batch is not None:
        text += " on every training sequence" if batch == "all" else f" on batches of {batch}"
    decay, start = settings.get("lr_decay"), settings.get("lr_decay_from")
    if isinstance(decay, int | float) and decay != 1:
        at = (f" after update {round(start * settings['updates'])}"
              if isinstance(start, int | float) and start and "updates" in settings else "")
        text += f", decaying to {decay:g} x{at}"
    return text


def _side_files(inputs: ReportInputs) -> tuple[dict | None, dict | None, dict | None]:
    """sampling.json, loglik.json and the mutations summary, their values checked; each must
    record the model's sha256 (with model.h5), or all the same model (without)."""
    from rbmflow.provenance import sha256_file

    sha = sha256_file(inputs.model) if inputs.model is not None else None
    documents = {path: read_run_json(path, role, fields, inputs.model, sha)
                 for path, role, fields in ((inputs.sampling, "sampling", SAMPLING_FIELDS),
                                            (inputs.loglik, "log-likelihood", LOGLIK_FIELDS),
                                            (inputs.mutations_summary, "mutations summary",
                                             MUTATIONS_FIELDS))
                 if path is not None}
    require_one_model(documents)
    return tuple(documents.get(path) if path is not None else None  # type: ignore[return-value]
                 for path in (inputs.sampling, inputs.loglik, inputs.mutations_summary))


@dataclass(frozen=True)
class _Run:
    """One run's inputs, read and checked: the alignment, the generated codes (n, L) and each
    optional side file (None when not given)."""

    data: EncodedAlignment
    generated: np.ndarray
    sampling: dict | None
    loglik: dict | None
    mutations_summary: dict | None
    train_log: pd.DataFrame | None
    trajectory: pd.DataFrame | None
    model: PottsRBM | None
    model_meta: dict | None


def _read_run(inputs: ReportInputs, torch_device: torch.device) -> _Run:
    """Every input of the run, in this order, each refused with one InputError naming it."""
    try:
        data: EncodedAlignment = load_encoded(inputs.data)
    except ValueError as err:
        raise InputError(str(err)) from err
    generated = read_samples(inputs.samples, data.alphabet, data.length)
    sampling, loglik, mutations_summary = _side_files(inputs)
    train_log = read_csv(inputs.train_log, "training log", ["update"])
    trajectory = read_csv(inputs.trajectory, "log-likelihood trajectory", ["update"])
    model, model_meta = load_model(inputs.model, torch_device)
    if model is not None and (model.num_visibles, model.num_states) != (data.length,
                                                                          data.num_states):
        raise InputError(f"{inputs.model}: model has L={model.num_visibles}, "
                         f"q={model.num_states}; {inputs.data} has L={data.length}, "
                         f"q={data.num_states}")
    return _Run(data, generated, sampling, loglik, mutations_summary, train_log, trajectory,
                model, model_meta)


def _evaluate(run: _Run, settings: EvaluationSettings, torch_device: torch.device) -> Evaluation:
    """The generated sequences against the natural train and test parts (and the model)."""
    train, test = run.data.subset(TRAIN), run.data.subset(TEST)
    log.info("report: %d generated, %d train, %d test sequences, L=%d, on %s",
             run.generated.shape[0], train.num_sequences, test.num_sequences, run.data.length,
             torch_device)
    return evaluate(train.codes_tensor(torch_device),
                    train.weights_tensor(torch_device, torch.float64),
                    test.codes_tensor(torch_device),
                    test.weights_tensor(torch_device, torch.float64),
                    torch.from_numpy(run.generated.astype(np.int64)).to(torch_device),
                    run.data.num_states, settings, run.model)


def _stage_warnings(inputs: ReportInputs, run: _Run) -> list[str]:
    """Every warning the stages left (training, checkpoints, log Z, sampling), each logged."""
    warnings = (training_warnings(run.train_log)
                + checkpoint_warnings(inputs.model, run.loglik, run.sampling)
                + loglik_warnings(run.loglik) + sampling_warnings(run.sampling))
    for warning in warnings:
        log.warning("%s\nWARNING: %s\n%s", "!" * 78, warning, "!" * 78)
    return warnings


def _run_metrics(run: _Run, ev: Evaluation, warnings: list[str], family: str,
                 run_name: str) -> dict[str, Any]:
    """metrics.json's numbers from the evaluation and the side files (figures come later)."""
    loglik, sampling = run.loglik, run.sampling
    return {
        "format_version": FORMAT_VERSION,
        "family": family,
        "run": run_name,
        **ev.metrics,
        "loglik_train": _scalar_or_none(lookup(loglik, "loglik_train")),
        "loglik_test": _scalar_or_none(lookup(loglik, "loglik_test")),
        "log_z": _scalar_or_none(lookup(loglik, "log_z")),
        "log_z_std": _scalar_or_none(lookup(loglik, "log_z_std")),
        "loglik_method": lookup(loglik, "method"),
        "loglik_ess": _scalar_or_none(lookup(loglik, "ess")),
        "equilibrated": lookup(sampling, "equilibrated"),
        "mixing_time": lookup(sampling, "mixing_time"),
        "sampling_sweeps": lookup(sampling, "sweeps"),
        "sampling_mode": lookup(sampling, "mode"),
        "split": lookup(run.data.provenance, "summary.split"),
        "sampling_method": lookup(sampling, "method"),
        "swap_rates": lookup(sampling, "swap_rates"),
        "min_swap_rate": min(lookup(sampling, "swap_rates") or [None],
                             key=lambda r: -1.0 if r is None else r),
        "gibbs_agrees_with_tempering": lookup(sampling, "gibbs_vs_tempering.passed"),
        "warnings": warnings,
        "notes": list(ev.notes),
    }


class _Figures:
    """The figures saved as outdir/NAME.png, and those omitted with the reason."""

    def __init__(self, outdir: Path) -> None:
        self.outdir = outdir
        self.saved: dict[str, Path] = {}
        self.omitted: dict[str, str] = {}

    def draw(self, name: str, maker: Callable[[], Figure | None],
             missing: str | None = None) -> None:
        """Save maker()'s figure (a placeholder when it draws nothing), or record `missing`."""
        if missing is not None:
            self.omitted[name] = missing
            return
        fig = maker()
        if fig is None:
            fig = placeholder(name, "its input holds nothing to draw")
        self.saved[name] = save_figure(fig, self.outdir / f"{name}.png")


def _draw_figures(inputs: ReportInputs, run: _Run, ev: Evaluation, metrics: dict[str, Any],
                  settings: EvaluationSettings, outdir: Path) -> _Figures:
    """Every figure of the page; the contact, hidden-unit, mutation and genome numbers go into
    `metrics` on the way."""
    figures = _Figures(outdir)
    draw, data, model = figures.draw, run.data, run.model
    train, test = data.subset(TRAIN), data.subset(TEST)
    natural_freqs = (ev.arrays["fi_train"] * train.weights.sum()
                     + ev.arrays["fi_reference"] * (test.weights.sum() if test.num_sequences
                                                    else 0.0))
    natural_freqs = natural_freqs / natural_freqs.sum(1, keepdims=True)
    draw("site_frequencies", lambda: fig_site_frequencies(ev))
    draw("correlations", lambda: fig_correlations(ev))
    draw("pca", lambda: fig_pca(ev))
    draw("hamming", lambda: fig_hamming(ev) if "hamming_generated" in ev.arrays else None)
    draw("energy", lambda: fig_energy(ev), None if model is not None else "no model.h5 given")
    draw("logos", lambda: fig_logos(ev, data.alphabet, natural_freqs))
    draw("training", lambda: fig_training(run.train_log),
         None if run.train_log is not None else "no train_log.csv given")
    draw("loglik_trajectory", lambda: fig_loglik_trajectory(run.trajectory),
         None if run.trajectory is not None else "no log-likelihood trajectory CSV given")
    draw("sampling", lambda: fig_sampling(run.sampling),
         None if run.sampling is not None else "no sampling.json given")
    if inputs.mutations_heatmap is not None:
        figures.saved["mutations"] = copy_figure(inputs.mutations_heatmap,
                                                 outdir / "mutations.png")
        metrics["mutations"] = mutations_coverage(run.mutations_summary)
    add_model_figures(draw, metrics, model, data, run.generated, inputs.contacts,
                      inputs.structure, inputs.structure_chain)
    add_genome_report(draw, metrics, inputs.data, data, run.generated, settings.nn_samples,
                      settings.seed)
    return figures


def _add_notes(metrics: dict[str, Any], run: _Run) -> None:
    """The training's chains, and notes on a missing loglik.json or Rdm-k samples."""
    metrics["training_chains"] = training_chains(run.model_meta)
    if run.loglik is None:
        metrics["notes"].append("no loglik.json given: log-likelihood rows are empty")
    if run.sampling is not None and run.sampling.get("mode") == "rdm":
        metrics["notes"].append("samples drawn the way the model was trained (Rdm-k: k sweeps "
                                "from random starts), not at equilibrium: "
                                + str(run.sampling.get("mode_reason") or ""))


def _write_report(inputs: ReportInputs, run: _Run, metrics: dict[str, Any], figures: _Figures,
                  settings: EvaluationSettings, device: str, outdir: Path) -> None:
    """Add the figure list, settings and provenance to `metrics`; write metrics.json and
    report.html together (atomically)."""
    present = {role: path for role, path in asdict(inputs).items()
               if path is not None and role != "structure_chain"}
    metrics["figures"] = {name: path.name for name, path in figures.saved.items()}
    metrics["omitted_figures"] = figures.omitted
    metrics["settings"] = asdict(settings)
    metrics["provenance"] = provenance("report", inputs=present,
                                       settings={**asdict(settings), "device": device},
                                       seed=settings.seed)
    page = render_html(metrics, figures.saved, figures.omitted, run.model_meta, {
        "report": metrics["provenance"],
        "alignment (alignment.npz)": run.data.provenance,
        "sampling (sampling.json)": lookup(run.sampling, "provenance"),
        "log-likelihood (loglik.json)": lookup(run.loglik, "provenance"),
        "model (model.h5 metadata)": lookup(run.model_meta, "provenance"),
    })
    with atomic_paths(outdir / "metrics.json", outdir / "report.html") as (metrics_tmp, page_tmp):
        write_json(metrics_tmp, metrics)
        page_tmp.write_text(page, encoding="utf-8")


def run_stage(inputs: ReportInputs, outdir: str | os.PathLike[str],
                settings: EvaluationSettings | None = None, device: str = "auto",
                family: str | None = None, run: str | None = None) -> dict[str, Any]:
    """Compute the metrics, draw the figures and write metrics.json and report.html in outdir.

    family and run default to the names of outdir's grandparent and parent folders
    (results/FAMILY/RUN/report). Returns the metrics dictionary that was written.
    """
    settings = settings or EvaluationSettings()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    torch_device = resolve_device(device)
    read = _read_run(inputs, torch_device)
    ev = _evaluate(read, settings, torch_device)
    metrics = _run_metrics(read, ev, _stage_warnings(inputs, read),
                           family if family is not None else outdir.parent.parent.name,
                           run if run is not None else outdir.parent.name)
    figures = _draw_figures(inputs, read, ev, metrics, settings, outdir)
    _add_notes(metrics, read)
    _write_report(inputs, read, metrics, figures, settings, device, outdir)
    log.info("report written to %s (pearson_cij %s, ceiling %s)", outdir / "report.html",
             fmt(metrics["pearson_cij"]), fmt(metrics["pearson_cij_train_vs_test"]))
    return metrics


# -- summary across runs --------------------------------------------------------------------

SUMMARY_COLUMNS = [
    "family", "run", "n_generated", "pearson_fi", "pearson_cij", "slope_cij",
    "pearson_cij_train_vs_test", "pearson_cijk", "pca.distance", "pca.distance_train_vs_test",
    "hamming_nn_median", "hamming_nn_median_test", "copy_fraction", "nnaa.AA", "nnaa.AA_truth",
    "nnaa.AA_syn", "loglik_train", "loglik_test", "equilibrated", "mixing_time", "warnings",
]


def summarize(metric_paths: Sequence[str | os.PathLike[str]],
              out_csv: str | os.PathLike[str]) -> pd.DataFrame:
    """Put the metrics of several runs side by side: `out_csv` and the same table as HTML
    (same path, suffix .html). Rows are sorted by family, then run."""
    rows = []
    for path in metric_paths:
        metrics = read_json(Path(path), "metrics")
        assert metrics is not None
        row = {key: lookup(metrics, key) for key in SUMMARY_COLUMNS}
        row["warnings"] = "; ".join(metrics.get("warnings") or [])
        row["metrics"] = str(path)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=[*SUMMARY_COLUMNS, "metrics"])
    frame = frame.sort_values(["family", "run"], kind="stable").reset_index(drop=True)
    out_csv = Path(out_csv)
    with atomic_path(out_csv) as tmp:
        frame.to_csv(tmp, index=False)
    table = frame.to_html(index=False, na_rep="n/a", float_format=lambda v: f"{v:.4g}",
                          escape=True, border=0)
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>rbmflow "
            f"summary</title><style>{CSS}</style></head><body><h1>rbmflow summary</h1>"
            f"<p class='sub'>{len(frame)} runs, created {escape(now_utc())}. Generated vs "
            "natural test; *_train_vs_test columns are the natural ceiling. NNAA 0.5 is "
            "ideal.</p>" + table + "</body></html>\n")
    with atomic_path(out_csv.with_suffix(".html")) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return frame
