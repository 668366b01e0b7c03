"""Report figures read off the model itself: predicted contacts against a structure, and the
hidden units (weight logos, input distributions). Used by `rbmflow.report`."""

from __future__ import annotations

import math

import logomaker
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rbmflow.evaluation.contacts import (
    CONTACT_DISTANCE,
    MIN_SEPARATION,
    PPV_RANKS,
    Structure,
    ppv_curve,
)

_CHEMISTRY = {"GSTYC": "green", "NQ": "purple", "KRH": "blue", "DE": "red",
              "PAWFLIMV": "black", "-": "#a0aec0"}


def fig_contacts_ppv(scores: np.ndarray, structure: Structure) -> Figure:
    """PPV against k, the RBM's scores and (if any) the table's own scores."""
    L = scores.shape[0]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    max_rank = 3 * L
    curve = ppv_curve(scores, structure.distances, CONTACT_DISTANCE, MIN_SEPARATION, max_rank)
    ks = np.arange(1, len(curve) + 1)
    ax.plot(ks, curve, color="#2b6cb0", label="RBM effective couplings")
    if structure.other_scores is not None:
        other = np.nan_to_num(structure.other_scores, nan=-np.inf)
        other_curve = ppv_curve(other, structure.distances, CONTACT_DISTANCE, MIN_SEPARATION,
                                max_rank)
        ax.plot(np.arange(1, len(other_curve) + 1), other_curve, color="#718096", ls="--",
                label="distance table's score column")
    for label, factor in PPV_RANKS.items():
        ax.axvline(max(1, int(factor * L)), color="#a0aec0", ls=":", lw=1)
        ax.text(max(1, int(factor * L)), 0.02, label, fontsize=8, ha="center")
    ax.set(xscale="log", ylim=(0, 1.02), xlabel="number of top-ranked pairs k (|i-j| > 4)",
           ylabel="PPV (fraction < 8 A)", title=f"Contact precision ({structure.source})")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def fig_contact_map(scores: np.ndarray, structure: Structure) -> Figure:
    """True contacts below the diagonal, top-2L predictions above it."""
    L = scores.shape[0]
    d = structure.distances
    i, j = np.triu_indices(L, k=MIN_SEPARATION)
    true = ~np.isnan(d[i, j]) & (d[i, j] < CONTACT_DISTANCE)
    fig, ax = plt.subplots(figsize=(6.0, 6.0))
    ax.scatter(i[true] + 1, j[true] + 1, s=12, color="#cbd5e0", label="true contact")
    ax.scatter(j[true] + 1, i[true] + 1, s=12, color="#cbd5e0")
    known = ~np.isnan(d[i, j])
    i, j = i[known], j[known]
    order = np.lexsort((j, i, -scores[i, j]))[:2 * L]
    hit = d[i[order], j[order]] < CONTACT_DISTANCE
    ax.scatter(j[order][hit] + 1, i[order][hit] + 1, s=14, color="#2b6cb0",
               label="predicted, in contact")
    ax.scatter(j[order][~hit] + 1, i[order][~hit] + 1, s=14, color="#c53030",
               label="predicted, not in contact")
    ax.plot([0, L + 1], [0, L + 1], color="#a0aec0", lw=0.8)
    ax.set(xlim=(0, L + 1), ylim=(L + 1, 0), xlabel="position j", ylabel="position i",
           title=f"Top {2 * L} predicted pairs vs structure", aspect="equal")
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    return fig


def fig_hidden_units(weights: np.ndarray, units: np.ndarray, norms: np.ndarray,
                     alphabet: str) -> Figure:
    """Weight logos (logomaker) of `units`; weights (L, q, Nh) in the zero-sum gauge."""
    L = weights.shape[0]
    colours = {letter: colour for group, colour in _CHEMISTRY.items() for letter in group
               if letter in alphabet}
    colours.update({letter: "#4a5568" for letter in alphabet if letter not in colours})
    fig, axes = plt.subplots(len(units), 1, figsize=(max(6.0, 0.16 * L + 1.5),
                                                     1.9 * len(units)), squeeze=False)
    for row, unit in enumerate(units):
        ax = axes[row, 0]
        frame = pd.DataFrame(weights[:, :, unit], columns=list(alphabet),
                             index=range(1, L + 1))
        logomaker.Logo(frame, ax=ax, color_scheme=colours, font_name="DejaVu Sans",
                       flip_below=False)
        ax.axhline(0, color="#4a5568", lw=0.6)
        ax.set_xlim(0.5, L + 0.5)
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_title(f"hidden unit {unit + 1}, |W| = {norms[unit]:.2f}", fontsize=9, loc="left")
        ax.set_ylabel("weight")
    axes[-1, 0].set_xlabel("position in the encoded alignment (1-based)")
    fig.tight_layout()
    return fig


def fig_hidden_inputs(natural: np.ndarray, natural_weights: np.ndarray,
                      generated: np.ndarray, units: np.ndarray) -> Figure:
    """Histograms of the inputs (n, len(units)) of natural (weighted) and generated sequences."""
    cols = min(3, len(units))
    rows = math.ceil(len(units) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
    for k, unit in enumerate(units):
        ax = axes[k // cols, k % cols]
        values = np.concatenate([natural[:, k], generated[:, k]])
        bins = np.linspace(values.min(), values.max() + 1e-9, 40)
        ax.hist(natural[:, k], bins=bins, weights=natural_weights, density=True, alpha=0.55,
                color="#2b6cb0", label="natural")
        ax.hist(generated[:, k], bins=bins, density=True, histtype="step", lw=1.5,
                color="#c53030", label="generated")
        ax.set_title(f"hidden unit {unit + 1}", fontsize=9)
        ax.set_xlabel("input I")
    for k in range(len(units), rows * cols):
        axes[k // cols, k % cols].axis("off")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def add_model_figures(draw, metrics: dict, model, data, generated: np.ndarray,
                      contacts_csv=None, structure_path=None, structure_chain=None,
                      units_shown: int = 6) -> None:
    """Draw the contact and hidden-unit figures of one run through the report's `draw(name,
    maker, missing)` and put their numbers in `metrics` (`contacts`, `hidden_units`).

    data: the EncodedAlignment; generated: codes (n, L); contacts_csv: contacts.csv or None;
    structure_path / structure_chain: as `rbmflow contacts --structure/--chain`.
    """
    import torch

    from rbmflow.evaluation.contacts import ppv_summary, read_contacts_csv, read_structure
    from rbmflow.model.hidden_units import gauged_weights, summarize_unit, unit_inputs, weight_norms

    L = data.length
    scores = structure = None
    if contacts_csv is not None:
        scores = read_contacts_csv(contacts_csv, L)
        scores = np.nan_to_num(scores, nan=-np.inf)
    if structure_path is not None:
        structure = read_structure(structure_path, L, structure_chain, data)
    missing = ("no contacts.csv given" if scores is None else
               "no structure given (families.<name>.structure)" if structure is None else None)
    if scores is not None and structure is not None:
        metrics["contacts"] = ppv_summary(scores, structure)
    draw("contacts_ppv", lambda: fig_contacts_ppv(scores, structure), missing)
    draw("contact_map", lambda: fig_contact_map(scores, structure), missing)

    if model is None:
        draw("hidden_units", lambda: None, "no model.h5 given")
        draw("hidden_inputs", lambda: None, "no model.h5 given")
        return
    norms = weight_norms(model)
    units = np.argsort(-norms, kind="stable")[:min(units_shown, model.num_hiddens)]
    metrics["hidden_units"] = [
        {"unit": int(u) + 1, "norm": float(norms[u]),
         "description": summarize_unit(model, int(u), data.alphabet).describe()}
        for u in units]
    draw("hidden_units", lambda: fig_hidden_units(gauged_weights(model), units, norms,
                                                  data.alphabet))
    device = model.device
    natural = unit_inputs(model, data.codes_tensor(device), units)
    synthetic = unit_inputs(model, torch.as_tensor(generated.astype(np.int64), device=device),
                            units)
    draw("hidden_inputs", lambda: fig_hidden_inputs(natural, data.weights, synthetic, units))


def model_sections_html(metrics: dict) -> str:
    """HTML of the PPV table and the hidden units' descriptions ('' when there are none)."""
    import html

    parts = []
    contacts = metrics.get("contacts")
    if contacts:
        ranks = list(PPV_RANKS)
        head = "".join(f"<th>PPV@{html.escape(r)}</th>" for r in ranks)
        rows = []
        for key, label in (("ppv_8A", "RBM, < 8 A"), ("ppv_table_score_8A", "table score, < 8 A"),
                           ("ppv_7A", "RBM, < 7 A"), ("ppv_table_score_7A", "table score, < 7 A")):
            if key in contacts:
                values = [contacts[key][r] for r in ranks]
                cells = "".join(f"<td class='num'>{'' if v is None else f'{v:.3f}'}</td>"
                                for v in values)
                rows.append(f"<tr><td>{label}</td>{cells}</tr>")
        parts.append(f"<h3>Contacts</h3><p>{html.escape(str(contacts['source']))}; pairs with "
                     f"|i-j| &gt; 4.</p><table><tr><th></th>{head}</tr>{''.join(rows)}</table>")
    units = metrics.get("hidden_units")
    if units:
        parts.append("<h3>Hidden units</h3><ul>")
        parts.extend(f"<li>{html.escape(u['description'])}</li>" for u in units)
        parts.append("</ul>")
    return "\n".join(parts)
