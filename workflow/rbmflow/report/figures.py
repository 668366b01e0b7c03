"""The report's figures drawn from the metrics and the run's side files (matplotlib, Agg
backend: no display needed)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import logomaker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from rbmflow.evaluation.metrics import Evaluation  # noqa: E402
from rbmflow.provenance import atomic_path  # noqa: E402
from rbmflow.report.html import fmt  # noqa: E402

TRUTH_COLOUR, SYNTH_COLOUR, TRAIN_COLOUR = "#2b6cb0", "#c53030", "#718096"


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
                   label=f"natural train (Pearson {fmt(m['pearson_fi_train_vs_test'])})")
    ax.scatter(a["fi_reference"].ravel(), a["fi_generated"].ravel(), s=6, c=SYNTH_COLOUR,
               alpha=0.6, label=f"generated (Pearson {fmt(m['pearson_fi'])})")
    _diagonal(ax, 0, 1)
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel=f"{ref_label} frequency f_i(a)",
           ylabel="frequency f_i(a)", title="Site frequencies")
    ax.legend(loc="lower right", fontsize=8)
    _text_box(ax, f"Pearson generated vs {m['reference']}: {fmt(m['pearson_fi'])}")
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
            f"Pearson = {fmt(m['pearson_cij'])}\nslope = {fmt(m['slope_cij'])}", "Reds")
    if m["pearson_cij_train_vs_test"] is not None:
        x, y = _plot_subsample(a["cij_reference"], a["cij_train"])
        _hexbin(axes[1], x, y, "Natural ceiling: train vs test", "natural test C_ij(a,b)",
                "natural train C_ij(a,b)",
                f"Pearson = {fmt(m['pearson_cij_train_vs_test'])}\n"
                f"slope = {fmt(m['slope_cij_train_vs_test'])}", "Greys")
    else:
        axes[1].axis("off")
        axes[1].text(0.5, 0.5, "no test split:\nno natural ceiling", ha="center", va="center")
    if panels == 3:
        x, y = _plot_subsample(a["cijk_reference"], a["cijk_generated"])
        _hexbin(axes[2], x, y, f"Three-site C_ijk ({m['n_triplets']} triplets)",
                f"natural {ref} C_ijk(a,b,c)", "generated C_ijk(a,b,c)",
                f"Pearson = {fmt(m['pearson_cijk'])}\n"
                f"ceiling = {fmt(m['pearson_cijk_train_vs_test'])}", "Purples")
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
                  f"{fmt(pca['distance'])} (train vs test: "
                  f"{fmt(pca['distance_train_vs_test'])})", fontsize=10)
    return fig


def fig_hamming(ev: Evaluation) -> Figure:
    m, a = ev.metrics, ev.arrays
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    L = m["length"]
    step = max(1, math.ceil(L / 60))
    bins = (np.arange(0, L + step + 1, step) - 0.5) / L  # one bin per distance (or a few)
    ax.hist(a["hamming_generated"], bins=bins, density=True, alpha=0.6, color=SYNTH_COLOUR,
            label=f"generated (median {fmt(m['hamming_nn_median'])})")
    if "hamming_test" in a:
        ax.hist(a["hamming_test"], bins=bins, density=True, histtype="step", lw=2,
                color=TRUTH_COLOUR,
                label=f"natural test (median {fmt(m['hamming_nn_median_test'])})")
    top = max(a["hamming_generated"].max(), a.get("hamming_test", np.zeros(1)).max())
    ax.set(xlim=(bins[0], min(1.0, top + 0.1)), xlabel="distance to nearest training sequence "
           "(fraction of sites)", ylabel="density",
           title="Nearest training sequence: generated vs natural test")
    ax.legend(fontsize=8, loc="center right")
    nnaa = m.get("nnaa") or {}
    _text_box(ax, f"exact copies of training: {100 * m['copy_fraction']:.2f}%\n"
                  f"NN adversarial accuracy: {fmt(nnaa.get('AA'))} (0.5 ideal)")
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
                      f"(mean {fmt(energy[name]['mean'])})")
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


MONITOR_DISTANCES = ("monitor_ks", "monitor_ks_critical", "monitor_occupancy_tv")
"""train_log.csv columns drawn together in the "chains vs equilibrium" panel (distances on one
scale); the monitor's other columns (passages, swap rates) get panels of their own."""


def _panel(column: str) -> str:
    return ("pearson" if column.startswith("pearson") else
            "energy" if "energy" in column else
            "chains vs equilibrium" if column in MONITOR_DISTANCES else column)


def fig_training(frame: pd.DataFrame) -> Figure | None:
    """Panels of train_log.csv's numeric columns against the update; a column recorded at some
    rows only (the monitor's) is drawn through its recorded rows, with markers."""
    if frame.empty:
        return None
    numeric = [c for c in frame.columns if c != "update" and pd.api.types.is_numeric_dtype(frame[c])
               and frame[c].notna().any()]
    groups: dict[str, list[str]] = {}
    for column in numeric:
        groups.setdefault(_panel(column), []).append(column)
    panels = list(groups.items())[:9]
    cols = min(3, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    updates = frame["update"].to_numpy()
    for ax, (key, columns) in zip(axes.ravel(), panels, strict=False):
        for column in columns:
            kept = frame[column].notna().to_numpy()
            ax.plot(updates[kept], frame[column].to_numpy()[kept], lw=1.4, label=column,
                    marker="o" if not kept.all() else None, ms=3)
        last = ", ".join(f"{c} = {fmt(float(frame[c].dropna().iloc[-1]))}" for c in columns)
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
                      label=f"{column} (last {fmt(float(frame[column].iloc[-1]))})")
    left.set(xlabel="gradient updates", ylabel="log-likelihood per sequence (nats)",
             title="Log-likelihood along training")
    left.legend(fontsize=8)
    if "log_z" in frame:
        right.plot(updates, frame["log_z"], marker="o", ms=3, color="black")
        right.set(xlabel="gradient updates", ylabel="log Z (nats)",
                  title=f"Log partition function (last {fmt(float(frame['log_z'].iloc[-1]))})")
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
                 f"{fmt(mixing)}, equilibrated: {fmt(eq)}", fontsize=11,
                 color="black" if eq is not False else "#c53030")
    fig.tight_layout()
    return fig


def placeholder(name: str, reason: str) -> Figure:
    """A figure that says why there is nothing to show (its file is a declared output)."""
    fig, ax = plt.subplots(figsize=(6.4, 2.0))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{name.replace('_', ' ')}: not available\n({reason})", ha="center",
            va="center", fontsize=11)
    return fig


def copy_figure(source: Path, path: Path) -> Path:
    """A figure drawn by another stage, copied into the report folder."""
    if source.resolve() != path.resolve():
        with atomic_path(path) as tmp:
            shutil.copyfile(source, tmp)
    return path


def save_figure(fig: Figure, path: Path) -> Path:
    """Write `fig` as PNG (atomically) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path

