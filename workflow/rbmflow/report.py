"""The report stage: metrics.json, figures and a self-contained report.html for one run,
and a summary table across runs.

Inputs of one run: the encoded alignment (natural train/test split and weights), the
generated sequences (FASTA), and, each optional, sampling.json, model.h5, train_log.csv,
loglik.json and the log-likelihood trajectory CSV. An absent optional input omits the
figures and rows that need it; the HTML says which and why.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import logomaker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from Bio import SeqIO  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from rbmflow.dataset import TEST, TRAIN, EncodedAlignment, load_encoded  # noqa: E402
from rbmflow.device import resolve_device  # noqa: E402
from rbmflow.errors import InputError  # noqa: E402
from rbmflow.metrics import Evaluation, EvaluationSettings, evaluate  # noqa: E402
from rbmflow.model import PottsRBM  # noqa: E402
from rbmflow.model_figures import FIGURE_CAPTIONS as MODEL_FIGURE_CAPTIONS  # noqa: E402
from rbmflow.model_figures import add_model_figures, model_sections_html  # noqa: E402
from rbmflow.provenance import (  # noqa: E402
    FORMAT_VERSION,
    atomic_path,
    atomic_paths,
    now_utc,
    provenance,
    write_json,
)

log = logging.getLogger(__name__)

FIGURES = {
    "site_frequencies": "Site frequencies f_i(a), generated vs natural test: every site i and "
                        "state a (gaps included) is a point. Points on the diagonal are "
                        "reproduced; the natural train vs test cloud (grey) is the ceiling.",
    "correlations": "Connected correlations C_ij(a,b) = f_ij(a,b) - f_i(a) f_j(b) over all "
                    "pairs i<j and all q^2 states, coloured by point density (log scale). Left: "
                    "generated vs natural test; middle: natural train vs test, what a perfect "
                    "model would score; right: connected three-site correlations on a fixed "
                    "random set of site triplets.",
    "pca": "Natural sequences (one-hot, weighted) on their first two principal components "
           "(blue density), with the generated sequences projected on the same components "
           "(red points). Margins: weighted histograms along each component. A good model covers "
           "the same clusters with the same weights.",
    "hamming": "Distance from each generated sequence to its nearest training sequence "
               "(fraction of differing sites), beside the same for natural test sequences. "
               "Generated sequences far closer to the training set than test ones copy it; "
               "far more distant ones miss it.",
    "energy": "Free energies F(v) (nats) under the trained model of natural train, natural "
              "test and generated sequences. At equilibrium the generated distribution sits "
              "on the natural ones.",
    "logos": "Sequence logos (information content, bits) of the natural alignment (weighted) "
             "and of the generated sequences, position by position.",
    "training": "Training curves from train_log.csv against the number of gradient updates.",
    "loglik_trajectory": "Log-likelihood per sequence (nats) of natural train and test "
                         "sequences along training, and the estimated log Z.",
    "sampling": "Sampling diagnostics from sampling.json against Gibbs sweeps: mean energy, "
                "Pearson of connected correlations with the training data, and the overlap of "
                "each chain with itself at half the time vs with other chains.",
    "mutations": "Single mutants of the wild type (rbmflow mutations): delta log p = log "
                 "p(mutant) - log p(wild type) = F(wild type) - F(mutant), nats, for the 20 "
                 "amino acids (rows) at every wild-type position the model covers (columns, "
                 "wild-type numbering). Red: less likely than the wild type, blue: more; "
                 "black dots: the wild-type residue.",
}
"""Figure name -> caption (how to read it). Files are `{name}.png` in the report folder."""
FIGURES.update(MODEL_FIGURE_CAPTIONS)

TRUTH_COLOUR, SYNTH_COLOUR, TRAIN_COLOUR = "#2b6cb0", "#c53030", "#718096"


@dataclass(frozen=True)
class ReportInputs:
    """Paths of one run's inputs; all but `data` and `samples` may be None."""

    data: Path
    samples: Path
    sampling: Path | None = None
    model: Path | None = None
    train_log: Path | None = None
    loglik: Path | None = None
    trajectory: Path | None = None
    mutations_heatmap: Path | None = None
    mutations_summary: Path | None = None
    contacts: Path | None = None
    structure: Path | None = None
    structure_chain: str | None = None


# -- reading inputs -------------------------------------------------------------------------


def read_samples(path: str | os.PathLike[str], alphabet: str, length: int) -> np.ndarray:
    """Generated sequences from FASTA as uint8 codes (n, L) in `alphabet`.

    Letters are matched case-insensitively; any other symbol or length is an InputError
    naming the file and record.
    """
    lookup = np.full(256, 255, dtype=np.uint8)
    for index, letter in enumerate(alphabet):
        lookup[ord(letter.upper())] = index
        lookup[ord(letter.lower())] = index
    rows = []
    try:
        records = list(SeqIO.parse(str(path), "fasta"))
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable FASTA file ({err})") from err
    for number, record in enumerate(records, start=1):
        text = str(record.seq)
        if len(text) != length:
            raise InputError(f"{path}: record {number} ({record.id}) has length {len(text)}, "
                             f"the alignment has L={length}")
        raw = np.frombuffer(text.encode("ascii", errors="replace"), dtype=np.uint8)
        codes = lookup[raw]
        if (codes == 255).any():
            bad = sorted({text[i] for i in np.flatnonzero(codes == 255)})
            raise InputError(f"{path}: record {number} ({record.id}) has symbols {bad} outside "
                             f"the alphabet {alphabet!r}")
        rows.append(codes)
    if not rows:
        raise InputError(f"{path}: no sequences")
    return np.stack(rows)


def _read_json(path: Path | None, role: str) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not a readable {role} JSON file ({err})") from err
    if not isinstance(document, dict):
        raise InputError(f"{path}: a {role} JSON file holds an object, not "
                         f"{type(document).__name__}")
    return document


def _read_csv(path: Path | None, role: str, required: Sequence[str]) -> pd.DataFrame | None:
    if path is None:
        return None
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable {role} CSV file ({err})") from err
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: {role} lacks columns {missing} (has {list(frame.columns)})")
    text = [c for c in required if not pd.api.types.is_numeric_dtype(frame[c])]
    if text:
        raise InputError(f"{path}: {role} column {text[0]!r} holds text, expected numbers")
    return frame


def _load_model(path: Path | None, device: torch.device) -> tuple[PottsRBM | None, dict | None]:
    if path is None:
        return None, None
    from rbmflow.archive import load_rbm, read_metadata

    return (load_rbm(path, device=device, dtype=torch.float32), read_metadata(path))


# -- warnings -------------------------------------------------------------------------------


def sampling_warnings(sampling: dict[str, Any] | None) -> list[str]:
    """Loud messages when sampling.json says the chains are not at equilibrium."""
    if sampling is None:
        return []
    mode = sampling.get("mode", "equilibrium")
    not_eq = sampling.get("not_equilibrated")
    if not_eq is None:
        not_eq = mode == "equilibrium" and sampling.get("equilibrated") is False
    if not not_eq:
        return []
    detail = sampling.get("warning") or (f"chains not equilibrated after "
                                         f"{sampling.get('sweeps', '?')} sweeps")
    return [f"SAMPLES NOT AT EQUILIBRIUM: {detail}"]


def _rates_text(rates: list[float] | None) -> str | None:
    """Swap rates as one short line: '0.61, 0.48, 0.52'."""
    if not rates:
        return None
    return ", ".join(f"{r:.2f}" for r in rates)


def loglik_warnings(loglik: dict[str, Any] | None) -> list[str]:
    """The warnings loglik.json carries (a string or a list), each prefixed."""
    if loglik is None:
        return []
    raw = loglik.get("warnings") or loglik.get("warning") or []
    items = [raw] if isinstance(raw, str) else list(raw)
    return [f"LOG-LIKELIHOOD: {item}" for item in items if item]


# -- figures --------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
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


def _diagonal(ax: plt.Axes, lo: float, hi: float) -> None:
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, ls="--", zorder=0)


def _text_box(ax: plt.Axes, text: str) -> None:
    ax.text(0.03, 0.97, text, transform=ax.transAxes, va="top", ha="left", fontsize=9,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85, "edgecolor": "0.7"})


def fig_site_frequencies(ev: Evaluation) -> Figure:
    m, a = ev.metrics, ev.arrays
    fig, ax = plt.subplots(figsize=(5.5, 5.2))
    ref_label = f"natural {m['reference']}"
    if m["pearson_fi_train_vs_test"] is not None:
        ax.scatter(a["fi_reference"].ravel(), a["fi_train"].ravel(), s=6, c=TRAIN_COLOUR,
                   alpha=0.35,
                   label=f"natural train (Pearson {_fmt(m['pearson_fi_train_vs_test'])})")
    ax.scatter(a["fi_reference"].ravel(), a["fi_generated"].ravel(), s=6, c=SYNTH_COLOUR,
               alpha=0.6, label=f"generated (Pearson {_fmt(m['pearson_fi'])})")
    _diagonal(ax, 0, 1)
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel=f"{ref_label} frequency f_i(a)",
           ylabel="frequency f_i(a)", title="Site frequencies")
    ax.legend(loc="lower right", fontsize=8)
    _text_box(ax, f"Pearson generated vs {m['reference']}: {_fmt(m['pearson_fi'])}")
    return fig


def _hexbin(ax: plt.Axes, x: np.ndarray, y: np.ndarray, title: str, xlabel: str,
            ylabel: str, text: str, cmap: str) -> None:
    lo = float(min(x.min(), y.min())) if x.size else -1.0
    hi = float(max(x.max(), y.max())) if x.size else 1.0
    pad = 0.03 * (hi - lo or 1.0)
    ax.hexbin(x, y, gridsize=70, bins="log", cmap=cmap, mincnt=1,
              extent=(lo - pad, hi + pad, lo - pad, hi + pad))
    _diagonal(ax, lo - pad, hi + pad)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel, xlim=(lo - pad, hi + pad),
           ylim=(lo - pad, hi + pad))
    _text_box(ax, text)


def _plot_subsample(*arrays: np.ndarray, limit: int = 1_000_000, seed: int = 0) -> list:
    n = arrays[0].shape[0]
    if n <= limit:
        return list(arrays)
    keep = np.random.default_rng(seed).choice(n, limit, replace=False)
    return [x[keep] for x in arrays]


def fig_correlations(ev: Evaluation) -> Figure:
    m, a = ev.metrics, ev.arrays
    ref = m["reference"]
    panels = 3 if "cijk_reference" in a else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 5.0))
    x, y = _plot_subsample(a["cij_reference"], a["cij_generated"])
    _hexbin(axes[0], x, y, "Connected correlations C_ij, generated",
            f"natural {ref} C_ij(a,b)", "generated C_ij(a,b)",
            f"Pearson = {_fmt(m['pearson_cij'])}\nslope = {_fmt(m['slope_cij'])}", "Reds")
    if m["pearson_cij_train_vs_test"] is not None:
        x, y = _plot_subsample(a["cij_reference"], a["cij_train"])
        _hexbin(axes[1], x, y, "Natural ceiling: train vs test", "natural test C_ij(a,b)",
                "natural train C_ij(a,b)",
                f"Pearson = {_fmt(m['pearson_cij_train_vs_test'])}\n"
                f"slope = {_fmt(m['slope_cij_train_vs_test'])}", "Greys")
    else:
        axes[1].axis("off")
        axes[1].text(0.5, 0.5, "no test split:\nno natural ceiling", ha="center", va="center")
    if panels == 3:
        x, y = _plot_subsample(a["cijk_reference"], a["cijk_generated"])
        _hexbin(axes[2], x, y, f"Three-site C_ijk ({m['n_triplets']} triplets)",
                f"natural {ref} C_ijk(a,b,c)", "generated C_ijk(a,b,c)",
                f"Pearson = {_fmt(m['pearson_cijk'])}\n"
                f"ceiling = {_fmt(m['pearson_cijk_train_vs_test'])}", "Purples")
    fig.tight_layout()
    return fig


def fig_pca(ev: Evaluation) -> Figure:
    m, a = ev.metrics, ev.arrays
    nat, gen = a["pca_natural"], a["pca_generated"]
    w = a["pca_natural_weights"]
    ratio = a["pca_explained_ratio"]
    fig = plt.figure(figsize=(6.6, 6.4))
    grid = fig.add_gridspec(2, 2, width_ratios=(4, 1), height_ratios=(1, 4), wspace=0.05,
                            hspace=0.05)
    ax = fig.add_subplot(grid[1, 0])
    top = fig.add_subplot(grid[0, 0], sharex=ax)
    right = fig.add_subplot(grid[1, 1], sharey=ax)
    if nat.shape[1] < 2:
        nat = np.concatenate([nat, np.zeros((nat.shape[0], 1))], axis=1)
        gen = np.concatenate([gen, np.zeros((gen.shape[0], 1))], axis=1)
        ratio = np.append(ratio, 0.0)
    everything = np.concatenate([nat[:, :2], gen[:, :2]])
    lo, hi = everything.min(0), everything.max(0)
    pad = 0.05 * np.maximum(hi - lo, 1e-9)
    extent = (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])
    ax.hexbin(nat[:, 0], nat[:, 1], C=w, reduce_C_function=np.sum, gridsize=35, cmap="Blues",
              norm=LogNorm(), extent=extent, mincnt=1, linewidths=0.1,
              label="natural (weighted density, log)")
    (shown,) = _plot_subsample(gen, limit=3000)
    ax.scatter(shown[:, 0], shown[:, 1], s=7, c=SYNTH_COLOUR, alpha=0.6, label="generated",
               linewidths=0)
    ax.set(xlim=extent[:2], ylim=extent[2:], xlabel=f"PC1 ({100 * ratio[0]:.1f}% of variance)",
           ylabel=f"PC2 ({100 * ratio[1]:.1f}% of variance)")
    ax.legend(loc="lower right", fontsize=8, markerscale=3)
    bins_x, bins_y = np.linspace(*extent[:2], 50), np.linspace(*extent[2:], 50)
    for data, weights, colour, label in ((nat, w, TRUTH_COLOUR, "natural"),
                                         (gen, None, SYNTH_COLOUR, "generated")):
        top.hist(data[:, 0], bins=bins_x, weights=weights, density=True, histtype="step",
                 color=colour, lw=1.5, label=label)
        right.hist(data[:, 1], bins=bins_y, weights=weights, density=True, histtype="step",
                   color=colour, lw=1.5, orientation="horizontal")
    top.legend(fontsize=7, loc="upper right")
    top.tick_params(labelbottom=False)
    right.tick_params(labelleft=False)
    top.set_ylabel("density")
    right.set_xlabel("density")
    pca = m["pca"]
    top.set_title(f"PCA of natural sequences, generated projected\ndistance = "
                  f"{_fmt(pca['distance'])} (train vs test: "
                  f"{_fmt(pca['distance_train_vs_test'])})", fontsize=10)
    return fig


def fig_hamming(ev: Evaluation) -> Figure:
    m, a = ev.metrics, ev.arrays
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    L = m["length"]
    step = max(1, math.ceil(L / 60))
    bins = (np.arange(0, L + step + 1, step) - 0.5) / L  # one bin per distance (or a few)
    ax.hist(a["hamming_generated"], bins=bins, density=True, alpha=0.6, color=SYNTH_COLOUR,
            label=f"generated (median {_fmt(m['hamming_nn_median'])})")
    if "hamming_test" in a:
        ax.hist(a["hamming_test"], bins=bins, density=True, histtype="step", lw=2,
                color=TRUTH_COLOUR,
                label=f"natural test (median {_fmt(m['hamming_nn_median_test'])})")
    top = max(a["hamming_generated"].max(), a.get("hamming_test", np.zeros(1)).max())
    ax.set(xlim=(bins[0], min(1.0, top + 0.1)), xlabel="distance to nearest training sequence "
           "(fraction of sites)", ylabel="density",
           title="Nearest training sequence: generated vs natural test")
    ax.legend(fontsize=8, loc="center right")
    nnaa = m.get("nnaa") or {}
    _text_box(ax, f"exact copies of training: {100 * m['copy_fraction']:.2f}%\n"
                  f"NN adversarial accuracy: {_fmt(nnaa.get('AA'))} (0.5 ideal)")
    return fig


def fig_energy(ev: Evaluation) -> Figure:
    a, energy = ev.arrays, ev.metrics["energy"]
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    values = [a[f"energy_{n}"] for n in ("train", "test", "generated") if a[f"energy_{n}"].size]
    bins = np.linspace(min(v.min() for v in values), max(v.max() for v in values), 60)
    style = {"train": (TRAIN_COLOUR, "step"), "test": (TRUTH_COLOUR, "step"),
             "generated": (SYNTH_COLOUR, "stepfilled")}
    for name, (colour, kind) in style.items():
        if not a[f"energy_{name}"].size:
            continue
        ax.hist(a[f"energy_{name}"], bins=bins, weights=a[f"energy_weights_{name}"], density=True,
                histtype=kind, color=colour, alpha=0.5 if kind == "stepfilled" else 1.0, lw=1.8,
                label=f"{'natural ' if name != 'generated' else ''}{name} "
                      f"(mean {_fmt(energy[name]['mean'])})")
    ax.set(xlabel="free energy F(v) (nats)", ylabel="density",
           title="Free energy of natural and generated sequences")
    ax.legend(fontsize=8)
    return fig


def information_heights(freqs: np.ndarray) -> np.ndarray:
    """Letter heights of an information logo: f_i(a) * (log2 q - H_i), in bits; (L, q)."""
    q = freqs.shape[1]
    safe = np.where(freqs > 0, freqs, 1.0)
    info = np.log2(q) + (freqs * np.log2(safe)).sum(1, keepdims=True)
    return freqs * info


def fig_logos(ev: Evaluation, alphabet: str, natural_freqs: np.ndarray,
              per_row: int = 60) -> Figure:
    """Information logos (logomaker) of the natural and generated sequences, per_row sites a row."""
    L = natural_freqs.shape[0]
    rows = math.ceil(L / per_row)
    width = min(per_row, L)
    fig, axes = plt.subplots(2 * rows, 1, figsize=(max(6.0, 0.2 * width + 1.5), 2.2 * 2 * rows),
                             squeeze=False)
    chemistry = {"GSTYC": "green", "NQ": "purple", "KRH": "blue", "DE": "red",
                 "PAWFLIMV": "black", "-": "#a0aec0"}
    colours = {letter: colour for group, colour in chemistry.items() for letter in group
               if letter in alphabet}
    colours.update({letter: "#4a5568" for letter in alphabet if letter not in colours})
    for block in range(rows):
        sl = slice(block * per_row, min(L, (block + 1) * per_row))
        for offset, (freqs, label) in enumerate(((natural_freqs, "natural (weighted)"),
                                                 (ev.arrays["fi_generated"], "generated"))):
            ax = axes[2 * block + offset, 0]
            heights = pd.DataFrame(information_heights(freqs[sl]), columns=list(alphabet),
                                   index=range(sl.start + 1, sl.stop + 1))
            logomaker.Logo(heights, ax=ax, color_scheme=colours, font_name="DejaVu Sans")
            ax.set(ylim=(0, math.log2(len(alphabet))), ylabel="bits",
                   xlim=(sl.start + 0.5, sl.start + width + 0.5))
            ax.spines[["top", "right"]].set_visible(False)
            ax.set_title(f"{label}, positions {sl.start + 1}-{sl.stop}", fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("position in the encoded alignment (1-based)")
    fig.suptitle("Sequence logos: natural vs generated", fontsize=11)
    fig.tight_layout()
    return fig


def _log_axis(ax: plt.Axes, steps: np.ndarray) -> None:
    """Log-scaled x axis for log-spaced steps (symmetric-log when step 0 is recorded)."""
    steps = np.asarray(steps, dtype=float)
    if steps.size < 3 or steps.min() < 0:
        return
    positive = steps[steps > 0]
    if positive.size and positive.max() / positive.min() > 20:
        if steps.min() == 0:
            ax.set_xscale("symlog", linthresh=max(1.0, float(positive.min())))
        else:
            ax.set_xscale("log")


def fig_training(frame: pd.DataFrame) -> Figure | None:
    if frame.empty:
        return None
    numeric = [c for c in frame.columns if c != "update" and pd.api.types.is_numeric_dtype(frame[c])
               and frame[c].notna().any()]
    groups: dict[str, list[str]] = {}
    for column in numeric:
        key = ("pearson" if column.startswith("pearson") else
               "energy" if "energy" in column else
               "chains vs equilibrium" if column.startswith("monitor") else column)
        groups.setdefault(key, []).append(column)
    panels = list(groups.items())[:9]
    cols = min(3, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    updates = frame["update"].to_numpy()
    for ax, (key, columns) in zip(axes.ravel(), panels, strict=False):
        for column in columns:
            ax.plot(updates, frame[column], lw=1.4, label=column)
        last = ", ".join(f"{c} = {_fmt(float(frame[c].dropna().iloc[-1]))}" for c in columns)
        ax.set(xlabel="gradient updates", ylabel=key, title=f"last: {last}"
               if len(last) < 60 else key)
        ax.title.set_fontsize(8)
        _log_axis(ax, updates)
        if len(columns) > 1:
            ax.legend(fontsize=7)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.suptitle("Training curves (train_log.csv)", fontsize=11)
    fig.tight_layout()
    return fig


def fig_loglik_trajectory(frame: pd.DataFrame) -> Figure | None:
    if frame.empty:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.4, 4.2))
    updates = frame["update"].to_numpy()
    for column, colour in (("loglik_train", TRAIN_COLOUR), ("loglik_test", TRUTH_COLOUR)):
        if column in frame:
            left.plot(updates, frame[column], marker="o", ms=3, color=colour,
                      label=f"{column} (last {_fmt(float(frame[column].iloc[-1]))})")
    left.set(xlabel="gradient updates", ylabel="log-likelihood per sequence (nats)",
             title="Log-likelihood along training")
    left.legend(fontsize=8)
    if "log_z" in frame:
        right.plot(updates, frame["log_z"], marker="o", ms=3, color="black")
        right.set(xlabel="gradient updates", ylabel="log Z (nats)",
                  title=f"Log partition function (last {_fmt(float(frame['log_z'].iloc[-1]))})")
    else:
        right.axis("off")
    for ax in (left, right):
        _log_axis(ax, updates)
    fig.tight_layout()
    return fig


def fig_sampling(sampling: dict[str, Any]) -> Figure | None:
    trajectories = sampling.get("trajectories") or {}
    series = {name: t for name, t in trajectories.items() if isinstance(t, dict) and t.get("sweep")}
    if not series:
        return None
    quantities = [("energy_mean", "mean energy (nats)"),
                  ("pearson_cij_train", "Pearson C_ij vs training data"),
                  ("overlap_same", "overlap")]
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.0))
    colours = {0: SYNTH_COLOUR, 1: TRUTH_COLOUR}
    for index, (name, traj) in enumerate(series.items()):
        sweeps = np.asarray(traj["sweep"], dtype=float)
        colour = colours.get(index, None)
        for ax, (key, label) in zip(axes, quantities, strict=True):
            values = np.array([np.nan if v is None else v for v in traj.get(key, [])], dtype=float)
            if values.size != sweeps.size:
                continue
            ax.plot(sweeps, values, marker="o", ms=3, color=colour, label=f"{name} start"
                    + (": t vs t/2" if key == "overlap_same" else ""))
            if key == "overlap_same" and traj.get("overlap_different"):
                other = np.array([np.nan if v is None else v for v in traj["overlap_different"]],
                                 dtype=float)
                if other.size == sweeps.size:
                    ax.plot(sweeps, other, ls="--", color=colour,
                            label=f"{name} start: different chains")
            ax.set(xlabel="Gibbs sweeps", ylabel=label)
            _log_axis(ax, sweeps)
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=7)
    mixing = sampling.get("mixing_time")
    eq = sampling.get("equilibrated")
    fig.suptitle(f"Sampling diagnostics: {sampling.get('sweeps', '?')} sweeps, mixing time "
                 f"{_fmt(mixing)}, equilibrated: {_fmt(eq)}", fontsize=11,
                 color="black" if eq is not False else "#c53030")
    fig.tight_layout()
    return fig


def _placeholder(name: str, reason: str) -> Figure:
    """A figure that says why there is nothing to show (its file is a declared output)."""
    fig, ax = plt.subplots(figsize=(6.4, 2.0))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{name.replace('_', ' ')}: not available\n({reason})", ha="center",
            va="center", fontsize=11)
    return fig


def _copy_figure(source: Path, path: Path) -> Path:
    """A figure drawn by another stage, copied into the report folder."""
    if source.resolve() != path.resolve():
        with atomic_path(path) as tmp:
            shutil.copyfile(source, tmp)
    return path


def mutations_coverage(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """The coverage numbers of `rbmflow mutations`' JSON summary, for metrics.json."""
    if summary is None:
        return None
    return {key: summary.get(key) for key in ("positions", "covered_positions", "columns",
                                              "matched_columns", "first")}


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


# -- HTML -----------------------------------------------------------------------------------


_CSS = """
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


def lookup(mapping: dict[str, Any] | None, dotted: str) -> Any:
    """mapping['a']['b'] for 'a.b'; None when any level is missing."""
    value: Any = mapping
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _metrics_table(metrics: dict[str, Any]) -> str:
    ref = metrics.get("reference", "test")
    head = (f"<tr><th>metric</th><th>generated vs natural {ref}</th>"
            "<th>natural train vs test</th><th>how to read</th></tr>")
    rows = []
    for label, key, ceiling, meaning in _METRIC_ROWS:
        rows.append(f"<tr><td>{html.escape(label)}</td>"
                    f"<td class='num'>{html.escape(_fmt(lookup(metrics, key)))}</td>"
                    f"<td class='num'>{html.escape(_fmt(lookup(metrics, ceiling)))}</td>"
                    f"<td>{html.escape(meaning)}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _split_note(split: dict[str, Any] | None) -> str:
    """Which train/test split was used, and how close the test sequences are to train."""
    if not isinstance(split, dict):
        return "<p>Train/test split: not recorded in alignment.npz.</p>"
    method = split.get("method", "random")
    text = (f"Train/test split: <b>{html.escape(str(method))}</b>"
            + (" (the default, as in the literature: test sequences may keep near-copies in "
               "train)" if method == "random" else
               " (whole clusters of the identity graph on one side)") + ".")
    dist = split.get("test_max_identity_to_train") or {}
    quantiles = dist.get("quantiles") or {}
    if dist.get("n"):
        above = dist.get("fraction_at_or_above_threshold")
        text += (f" Test sequences' maximum identity to train: median "
                 f"{_fmt(quantiles.get('0.5'))}, 5-95 % {_fmt(quantiles.get('0.05'))}-"
                 f"{_fmt(quantiles.get('0.95'))}; {_fmt(above)}"
                 f" of them at or above {_fmt(dist.get('threshold'))}.")
    return f"<p>{text}</p>"


def _kv_table(items: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td class='num'>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in items)
    return f"<table>{rows}</table>"


def _figure_html(name: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f"<figure id='fig-{name}'><img src='data:image/png;base64,{data}' "
            f"alt='{html.escape(name)}' data-file='{html.escape(path.name)}'>"
            f"<figcaption><b>{html.escape(name.replace('_', ' ').capitalize())}</b> "
            f"(<a href='{html.escape(path.name)}'>{html.escape(path.name)}</a>). "
            f"{html.escape(FIGURES[name])}</figcaption></figure>")


def render_html(metrics: dict[str, Any], figures: dict[str, Path], omitted: dict[str, str],
                settings: dict[str, Any] | None, provenance_blocks: dict[str, Any]) -> str:
    """The self-contained report page: figures embedded as base64 PNG, no external resource."""
    family, run = metrics.get("family", "?"), metrics.get("run", "?")
    title = f"rbmflow report: {family} / {run}"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1><p class='sub'>created {html.escape(now_utc())}; "
             f"{metrics['n_generated']} generated sequences vs {metrics['n_train']} natural "
             f"train and {metrics['n_test']} natural test sequences, L = {metrics['length']}, "
             f"q = {metrics['num_states']}</p>"]
    for warning in metrics.get("warnings", []):
        parts.append(f"<div class='warning'>&#9888; {html.escape(warning)}</div>")
    for note in metrics.get("notes", []):
        parts.append(f"<div class='note'>{html.escape(note)}</div>")
    parts.append("<h2>Metrics</h2>")
    parts.append("<p>Natural statistics are weighted by the sequence weights, generated ones "
                 "unweighted, no pseudocount; correlations over all pairs i&lt;j and all q^2 "
                 "states including gaps. The natural column is what a perfect model would "
                 "score given the finite test set.</p>")
    parts.append(_metrics_table(metrics))
    parts.append(_split_note(metrics.get("split")))
    parts.append("<h3>Likelihood and sampling</h3>")
    parts.append(_kv_table([
        ("log-likelihood train (nats/sequence)", metrics.get("loglik_train")),
        ("log-likelihood test (nats/sequence)", metrics.get("loglik_test")),
        ("log Z", metrics.get("log_z")), ("log Z std", metrics.get("log_z_std")),
        ("log Z method", metrics.get("loglik_method")),
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
        ("generated sequences", metrics.get("n_generated")),
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


# -- the stage ------------------------------------------------------------------------------


def _scalar_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def run_stage(inputs: ReportInputs, outdir: str | os.PathLike[str],
                settings: EvaluationSettings | None = None, device: str = "auto",
                family: str | None = None, run: str | None = None) -> dict[str, Any]:
    """Compute the metrics, draw the figures and write metrics.json and report.html in outdir.

    Returns the metrics dictionary that was written.
    """
    settings = settings or EvaluationSettings()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    torch_device = resolve_device(device)
    try:
        data: EncodedAlignment = load_encoded(inputs.data)
    except ValueError as err:
        raise InputError(str(err)) from err
    generated_np = read_samples(inputs.samples, data.alphabet, data.length)
    sampling = _read_json(inputs.sampling, "sampling")
    loglik = _read_json(inputs.loglik, "log-likelihood")
    train_log = _read_csv(inputs.train_log, "training log", ["update"])
    trajectory = _read_csv(inputs.trajectory, "log-likelihood trajectory", ["update"])
    model, model_meta = _load_model(inputs.model, torch_device)
    if model is not None and (model.num_visibles, model.num_states) != (data.length,
                                                                          data.num_states):
        raise InputError(f"{inputs.model}: model has L={model.num_visibles}, "
                         f"q={model.num_states}; {inputs.data} has L={data.length}, "
                         f"q={data.num_states}")

    train, test = data.subset(TRAIN), data.subset(TEST)
    log.info("report: %d generated, %d train, %d test sequences, L=%d, on %s",
             generated_np.shape[0], train.num_sequences, test.num_sequences, data.length,
             torch_device)
    ev = evaluate(train.codes_tensor(torch_device), train.weights_tensor(torch_device,
                                                                         torch.float64),
                  test.codes_tensor(torch_device), test.weights_tensor(torch_device,
                                                                       torch.float64),
                  torch.from_numpy(generated_np.astype(np.int64)).to(torch_device),
                  data.num_states, settings, model)

    warnings = sampling_warnings(sampling) + loglik_warnings(loglik)
    for warning in warnings:
        log.warning("%s\nWARNING: %s\n%s", "!" * 78, warning, "!" * 78)
    metrics: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "family": family if family is not None else outdir.parent.parent.name,
        "run": run if run is not None else outdir.parent.name,
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
        "split": lookup(data.provenance, "summary.split"),
        "sampling_method": lookup(sampling, "method"),
        "swap_rates": lookup(sampling, "swap_rates"),
        "min_swap_rate": min(lookup(sampling, "swap_rates") or [None],
                             key=lambda r: -1.0 if r is None else r),
        "gibbs_agrees_with_tempering": lookup(sampling, "gibbs_vs_tempering.passed"),
        "warnings": warnings,
        "notes": list(ev.notes),
    }

    figures: dict[str, Path] = {}
    omitted: dict[str, str] = {}

    def draw(name: str, maker: Callable[[], Figure | None], missing: str | None = None) -> None:
        if missing is not None:
            omitted[name] = missing
            return
        fig = maker()
        if fig is None:
            fig = _placeholder(name, "its input holds nothing to draw")
        figures[name] = _save(fig, outdir / f"{name}.png")

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
    draw("training", lambda: fig_training(train_log),
         None if train_log is not None else "no train_log.csv given")
    draw("loglik_trajectory", lambda: fig_loglik_trajectory(trajectory),
         None if trajectory is not None else "no log-likelihood trajectory CSV given")
    draw("sampling", lambda: fig_sampling(sampling),
         None if sampling is not None else "no sampling.json given")
    if inputs.mutations_heatmap is not None:
        figures["mutations"] = _copy_figure(inputs.mutations_heatmap, outdir / "mutations.png")
        metrics["mutations"] = mutations_coverage(_read_json(inputs.mutations_summary,
                                                             "mutations summary"))
    add_model_figures(draw, metrics, model, data, generated_np, inputs.contacts,
                      inputs.structure, inputs.structure_chain)
    if loglik is None:
        metrics["notes"].append("no loglik.json given: log-likelihood rows are empty")
    if sampling is not None and sampling.get("mode") == "rdm":
        metrics["notes"].append("samples drawn the way the model was trained (Rdm-k: k sweeps "
                                "from random starts), not at equilibrium: "
                                + str(sampling.get("mode_reason") or ""))

    present = {role: path for role, path in asdict(inputs).items()
               if path is not None and role != "structure_chain"}
    metrics["figures"] = {name: path.name for name, path in figures.items()}
    metrics["omitted_figures"] = omitted
    metrics["settings"] = asdict(settings)
    metrics["provenance"] = provenance("report", inputs=present,
                                       settings={**asdict(settings), "device": device},
                                       seed=settings.seed)
    page = render_html(metrics, figures, omitted, model_meta, {
        "report": metrics["provenance"],
        "alignment (alignment.npz)": data.provenance,
        "sampling (sampling.json)": lookup(sampling, "provenance"),
        "log-likelihood (loglik.json)": lookup(loglik, "provenance"),
        "model (model.h5 metadata)": lookup(model_meta, "provenance"),
    })
    with atomic_paths(outdir / "metrics.json", outdir / "report.html") as (metrics_tmp, page_tmp):
        write_json(metrics_tmp, metrics)
        page_tmp.write_text(page, encoding="utf-8")
    log.info("report written to %s (pearson_cij %s, ceiling %s)", outdir / "report.html",
             _fmt(metrics["pearson_cij"]), _fmt(metrics["pearson_cij_train_vs_test"]))
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
        metrics = _read_json(Path(path), "metrics")
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
            f"summary</title><style>{_CSS}</style></head><body><h1>rbmflow summary</h1>"
            f"<p class='sub'>{len(frame)} runs, created {html.escape(now_utc())}. Generated vs "
            "natural test; *_train_vs_test columns are the natural ceiling. NNAA 0.5 is "
            "ideal.</p>" + table + "</body></html>\n")
    with atomic_path(out_csv.with_suffix(".html")) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return frame
