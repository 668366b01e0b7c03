"""The report page: metrics tables, warning boxes and figures with their captions, as one
self-contained HTML file."""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Sequence
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from rbmflow.provenance import now_utc
from rbmflow.report.inputs import lookup
from rbmflow.report.model_figures import model_sections_html

FIGURES = ("site_frequencies", "correlations", "pca", "hamming", "energy", "logos", "training",
           "loglik_trajectory", "sampling", "mutations", "contacts_ppv", "contact_map",
           "hidden_units", "hidden_inputs")
"""Every figure the report can draw: `{name}.png` in the report folder, its caption in
`captions/{name}.rst` (the same file Snakemake's report shows)."""
FIGURES += ("genome_allele_freq", "genome_ld", "genome_distances", "genome_pca",
            "genome_populations")  # genotype families (rbmflow.report.genomes)


@cache
def caption(name: str) -> str:
    """What figure `name` shows and how to read it: `captions/{name}.rst` as plain text.

    Paragraphs holding Jinja placeholders (`{{ snakemake.wildcards... }}`, for Snakemake's
    report) are left out; ``literal`` and **bold** markup is stripped.
    """
    text = (files("rbmflow.report") / "captions" / f"{name}.rst").read_text(encoding="utf-8")
    paragraphs = [" ".join(paragraph.split()) for paragraph in text.split("\n\n")
                  if paragraph.strip() and "{{" not in paragraph]
    return re.sub(r"``(.+?)``|\*\*(.+?)\*\*", lambda m: m.group(1) or m.group(2),
                  " ".join(paragraphs))


def _rates_text(rates: list[float] | None) -> str | None:
    """Swap rates as one short line: '0.61, 0.48, 0.52'."""
    if not rates:
        return None
    return ", ".join(f"{r:.2f}" for r in rates)


def fmt(value: Any, digits: int = 3) -> str:
    """A number as table or figure text: 3 significant digits, 'n/a' for None and NaN."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}g}" if abs(value) >= 1e4 or abs(value) < 1e-3 and value \
            else f"{value:.{digits}f}"
    return str(value)


# -- HTML -----------------------------------------------------------------------------------


CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #1a202c;
       padding: 0 1em; }
h1 { margin-bottom: 0.2em; } .sub { color: #4a5568; margin-top: 0; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #cbd5e0; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #edf2f7; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.warning { background: #fed7d7; border: 3px solid #c53030; color: #742a2a; padding: 0.8em 1em;
           font-weight: bold; font-size: 1.1em; margin: 1em 0; border-radius: 6px; }
.note { background: #fefcbf; border: 1px solid #d69e2e; padding: 0.5em 1em; margin: 0.5em 0; }
figure { margin: 2em 0; } figure img { max-width: 100%; border: 1px solid #e2e8f0; }
figcaption { color: #2d3748; font-size: 0.92em; max-width: 900px; }
pre { background: #f7fafc; border: 1px solid #e2e8f0; padding: 0.8em; overflow-x: auto;
      font-size: 0.8em; }
"""

_METRIC_ROWS = [
    ("Pearson of site frequencies f_i", "pearson_fi", "pearson_fi_train_vs_test",
     "1 is perfect; the ceiling is natural train vs test"),
    ("Pearson of connected correlations C_ij", "pearson_cij", "pearson_cij_train_vs_test",
     "the main score of a generative Potts model"),
    ("Slope of C_ij (generated vs natural)", "slope_cij", "slope_cij_train_vs_test",
     "below 1: correlations too weak; above 1: too strong"),
    ("Pearson of three-site C_ijk", "pearson_cijk", "pearson_cijk_train_vs_test",
     "higher-order statistics the model was not trained on"),
    ("PCA distance (PC1-2, in natural std)", "pca.distance", "pca.distance_train_vs_test",
     "0 is perfect; Wasserstein-1 per component, averaged"),
    ("Median distance to nearest training sequence", "hamming_nn_median",
     "hamming_nn_median_test", "fraction of sites; the natural test value is the reference"),
    ("Fraction of exact copies of training sequences", "copy_fraction", "copy_fraction_test",
     "a copy of the training set is not a generative model"),
    ("NN adversarial accuracy AA", "nnaa.AA", "nnaa_test_vs_train.AA",
     "0.5 ideal; near 0: copies training; near 1: far from it"),
    ("  AA_truth (training sequences)", "nnaa.AA_truth", "nnaa_test_vs_train.AA_truth", ""),
    ("  AA_syn (generated sequences)", "nnaa.AA_syn", "nnaa_test_vs_train.AA_syn", ""),
    ("Mean free energy F (nats)", "energy.generated.mean", "energy.test.mean",
     "generated vs natural test"),
    ("Slope of C_ij, total least squares", "slope_cij_tls", "slope_cij_tls_train_vs_test",
     "not attenuated by the test set's sampling noise, unlike the least-squares slope"),
    ("Pearson of C_ij, amino acids only", "pearson_cij_aa", "pearson_cij_aa_train_vs_test",
     "entries with a gap left out: the gap blocks dominate the all-entries value"),
    ("Median distance to nearest training sequence (weighted)", "hamming_nn_median_weighted",
     "hamming_nn_median_test_weighted", "natural sets subsampled in proportion to their weights"),
    ("NN adversarial accuracy AA (weighted)", "nnaa_weighted.AA",
     "nnaa_test_vs_train_weighted.AA", "natural sets subsampled in proportion to their weights"),
    ("Privacy loss AA(test, gen) - AA(train, gen)", "privacy_loss.value", "",
     "Yelmen et al.: near 0 is good; positive: the model memorises training sequences"),
]


_PROTEIN_ONLY = ("pearson_cij_aa",)
"""Rows that mean nothing for genotype data (no gap state)."""


def row_noun(metrics: dict[str, Any]) -> str:
    """What one row of the data is called on the page: "sequence" for alignments,
    "haplotype" or "genotype" for genotype families (phased rows or alt-allele counts)."""
    encoding = metrics.get("genome_encoding")
    if encoding is None:
        return "sequence"
    return "genotype" if encoding == "counts" else "haplotype"


def _metrics_table(metrics: dict[str, Any]) -> str:
    ref = metrics.get("reference", "test")
    noun = row_noun(metrics)
    head = (f"<tr><th>metric</th><th>generated vs natural {ref}</th>"
            "<th>natural train vs test</th><th>how to read</th></tr>")
    rows = []
    for label, key, ceiling, meaning in _METRIC_ROWS:
        if noun != "sequence":
            if key in _PROTEIN_ONLY:
                continue
            label, meaning = label.replace("sequence", noun), meaning.replace("sequence", noun)
        rows.append(f"<tr><td>{html.escape(label)}</td>"
                    f"<td class='num'>{html.escape(fmt(lookup(metrics, key)))}</td>"
                    f"<td class='num'>{html.escape(fmt(lookup(metrics, ceiling)))}</td>"
                    f"<td>{html.escape(meaning)}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _split_note(split: dict[str, Any] | None, noun: str = "sequence") -> str:
    """Which train/test split was used, and how close the test rows (`noun`s) are to
    train."""
    if not isinstance(split, dict):
        return "<p>Train/test split: not recorded in alignment.npz.</p>"
    method = split.get("method", "random")
    text = (f"Train/test split: <b>{html.escape(str(method))}</b>"
            + (f" (the default, as in the literature: test {noun}s may keep near-copies in "
               "train)" if method == "random" else
               " (whole clusters of the identity graph on one side)") + ".")
    dist = split.get("test_max_identity_to_train") or {}
    quantiles = dist.get("quantiles") or {}
    if dist.get("n"):
        above = dist.get("fraction_at_or_above_threshold")
        text += (f" Test {noun}s' maximum identity to train: median "
                 f"{fmt(quantiles.get('0.5'))}, 5-95 % {fmt(quantiles.get('0.05'))}-"
                 f"{fmt(quantiles.get('0.95'))}; {fmt(above)}"
                 f" of them at or above {fmt(dist.get('threshold'))}.")
    return f"<p>{text}</p>"


def _kv_table(items: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td class='num'>{html.escape(fmt(v))}</td></tr>"
                   for k, v in items)
    return f"<table>{rows}</table>"


def _figure_html(name: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f"<figure id='fig-{name}'><img src='data:image/png;base64,{data}' "
            f"alt='{html.escape(name)}' data-file='{html.escape(path.name)}'>"
            f"<figcaption><b>{html.escape(name.replace('_', ' ').capitalize())}</b> "
            f"(<a href='{html.escape(path.name)}'>{html.escape(path.name)}</a>). "
            f"{html.escape(caption(name))}</figcaption></figure>")


def render_html(metrics: dict[str, Any], figures: dict[str, Path], omitted: dict[str, str],
                settings: dict[str, Any] | None, provenance_blocks: dict[str, Any]) -> str:
    """The self-contained report page: figures embedded as base64 PNG, no external resource."""
    family, run = metrics.get("family", "?"), metrics.get("run", "?")
    title = f"rbmflow report: {family} / {run}"
    noun = row_noun(metrics)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1><p class='sub'>created {html.escape(now_utc())}; "
             f"{metrics['n_generated']} generated {noun}s vs {metrics['n_train']} natural "
             f"train and {metrics['n_test']} natural test {noun}s, L = {metrics['length']}, "
             f"q = {metrics['num_states']}</p>"]
    for warning in metrics.get("warnings", []):
        parts.append(f"<div class='warning'>&#9888; {html.escape(warning)}</div>")
    for note in metrics.get("notes", []):
        parts.append(f"<div class='note'>{html.escape(note)}</div>")
    parts.append("<h2>Metrics</h2>")
    parts.append(f"<p>Natural statistics are weighted by the {noun} weights, generated ones "
                 "unweighted, no pseudocount; correlations over all pairs i&lt;j and all q^2 "
                 f"states{' including gaps' if noun == 'sequence' else ''}. The natural column "
                 "is what a perfect model would score given the finite test set.</p>")
    parts.append(_metrics_table(metrics))
    parts.append(_split_note(metrics.get("split"), noun))
    parts.append("<h3>Likelihood and sampling</h3>")
    parts.append(_kv_table([
        (f"log-likelihood train (nats/{noun})", metrics.get("loglik_train")),
        (f"log-likelihood test (nats/{noun})", metrics.get("loglik_test")),
        ("log Z", metrics.get("log_z")), ("log Z std", metrics.get("log_z_std")),
        ("log Z method", metrics.get("loglik_method")),
        ("training chains", metrics.get("training_chains")),
        ("effective sample size (AIS)", metrics.get("loglik_ess")),
        ("sampling mode", metrics.get("sampling_mode")),
        ("sampling method", metrics.get("sampling_method")),
        ("swap acceptance rates (neighbouring levels)", _rates_text(
            metrics.get("swap_rates"))),
        ("smallest swap rate", metrics.get("min_swap_rate")),
        ("plain Gibbs agrees with tempering", metrics.get("gibbs_agrees_with_tempering")),
        ("sweeps", metrics.get("sampling_sweeps")),
        ("mixing time (sweeps)", metrics.get("mixing_time")),
        ("equilibrated", metrics.get("equilibrated")),
        (f"generated {noun}s", metrics.get("n_generated")),
    ]))
    if metrics.get("mutations"):
        coverage = metrics["mutations"]
        parts.append("<h3>Single mutants of the wild type</h3>")
        parts.append(_kv_table([
            ("wild-type positions covered", f"{coverage.get('covered_positions')} / "
                                            f"{coverage.get('positions')}"),
            ("model columns matched", f"{coverage.get('matched_columns')} / "
                                      f"{coverage.get('columns')}"),
            ("number of the first residue", coverage.get("first")),
        ]))
    parts.append("<h2>Figures</h2>")
    for name, path in figures.items():
        parts.append(_figure_html(name, path))
    parts.append(model_sections_html(metrics))
    from rbmflow.report.genomes import genomes_html  # here: genomes imports this module
    parts.append(genomes_html(metrics))
    if omitted:
        parts.append("<h3>Omitted</h3><ul>")
        parts.extend(f"<li><b>{html.escape(name)}</b>: {html.escape(why)}</li>"
                     for name, why in omitted.items())
        parts.append("</ul>")
    parts.append("<h2>Settings and provenance</h2>")
    if settings:
        parts.append("<h3>Model (model.h5 metadata)</h3><pre>"
                     + html.escape(json.dumps(settings, indent=2, default=str)) + "</pre>")
    for role, block in provenance_blocks.items():
        if block:
            parts.append(f"<details><summary>{html.escape(role)}</summary><pre>"
                         + html.escape(json.dumps(block, indent=2, default=str))
                         + "</pre></details>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


