"""The report's section for genotype families: figures and a table in population-genetics
terms (`rbmflow.evaluation.genomes`), each score beside the natural train-vs-test value."""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from rbmflow.data.dataset import TEST, TRAIN, EncodedAlignment
from rbmflow.data.genotypes import load_genotype_info
from rbmflow.evaluation.genomes import GenomeSets, evaluate_genomes
from rbmflow.report.figures import SYNTH_COLOUR, TRAIN_COLOUR, TRUTH_COLOUR
from rbmflow.report.html import fmt
from rbmflow.report.inputs import lookup

_PALETTE = ("#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#319795", "#b7791f",
            "#4a5568")


def fig_allele_freq(m: dict[str, Any], a: dict[str, Any]) -> Figure:
    fig, ax = plt.subplots(figsize=(5.5, 5.2))
    freq = a["freq"]
    ax.scatter(freq["test"], freq["train"], s=10, c=TRAIN_COLOUR, alpha=0.5,
               label=f"natural train (Pearson {fmt(m['pearson_allele_freq_train_vs_test'])})")
    ax.scatter(freq["test"], freq["generated"], s=10, c=SYNTH_COLOUR, alpha=0.7,
               label=f"generated (Pearson {fmt(m['pearson_allele_freq'])})")
    ax.plot([0, 1], [0, 1], color="black", lw=0.8, ls="--", zorder=0)
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="ALT allele frequency, natural test",
           ylabel="ALT allele frequency", title="Allele frequencies")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def fig_ld(m: dict[str, Any], a: dict[str, Any]) -> Figure | None:
    dist, ld = a["ld_distance"], a["ld"]
    if dist.size == 0:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    edges = np.unique(np.geomspace(max(dist.min(), 1), dist.max() + 1, 16).astype(np.int64))
    centres = np.sqrt(edges[:-1] * edges[1:])
    for name, colour in (("test", TRUTH_COLOUR), ("train", TRAIN_COLOUR),
                         ("generated", SYNTH_COLOUR)):
        which = np.digitize(dist, edges) - 1
        means = [np.nanmean(ld[name][which == b]) if np.isfinite(ld[name][which == b]).sum() >= 5
                 else np.nan for b in range(centres.size)]  # bins of at least 5 pairs
        rows = a.get("rows", {}).get(name)
        label = (f"natural {name}" if name != "generated" else "generated") + (
            f" ({rows} rows)" if rows else "")
        left.plot(centres, means, "o-", color=colour, ms=3, label=label)
        if rows and rows > 1:  # E[r^2] of two independent SNPs over `rows` rows
            left.axhline(1.0 / (rows - 1), color=colour, lw=0.8, ls=":")
    left.set(xscale="log", xlabel="distance between the two SNPs (bp, same chromosome)",
             ylabel="mean r^2 (bins of >= 5 pairs)", title="LD decay (dotted: 1/(rows-1))")
    left.legend(fontsize=8)
    right.scatter(ld["test"], ld["train"], s=6, c=TRAIN_COLOUR, alpha=0.4,
                  label=f"natural train (Pearson {fmt(m['pearson_ld_r2_train_vs_test'])})")
    right.scatter(ld["test"], ld["generated"], s=6, c=SYNTH_COLOUR, alpha=0.6,
                  label=f"generated (Pearson {fmt(m['pearson_ld_r2'])})")
    finite = np.concatenate([v[np.isfinite(v)] for v in ld.values()])
    top = 1.05 * float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    right.plot([0, top], [0, top], color="black", lw=0.8, ls="--", zorder=0)
    right.set(xlim=(-0.02 * top, top), ylim=(-0.02 * top, top), xlabel="r^2, natural test",
              ylabel="r^2", title="LD of every same-chromosome pair")
    right.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def fig_distances(a: dict[str, Any]) -> Figure:
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    pairs = a["pair_distances"]
    low = min(int(v.min()) if v.size else 0 for v in pairs.values())
    top = max(int(v.max()) if v.size else 1 for v in pairs.values())
    step = max(1, int(np.ceil((top - low + 1) / 60)))  # whole numbers of differences per bin
    bins = np.arange(low, top + step + 1, step) - 0.5
    for name, colour in (("test", TRUTH_COLOUR), ("generated", SYNTH_COLOUR),
                         ("test_vs_generated", "#38a169")):
        ax.hist(pairs[name], bins=bins, density=True, histtype="step", lw=1.5, color=colour,
                label=name.replace("_", " "))
    ax.set(xlabel="allele differences between two rows", ylabel="density",
           title="Pairwise distances")
    ax.legend(fontsize=8)
    return fig


def fig_pca(a: dict[str, Any], real_pops: np.ndarray | None) -> Figure:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5), sharex=True, sharey=True)
    real, gen, ratio = a["real_pc"], a["generated_pc"], a["pc_ratio"]
    gen_pops = a.get("generated_populations")
    names = sorted(set(real_pops.tolist()) - {""}) if real_pops is not None else []
    colours = {name: _PALETTE[k % len(_PALETTE)] for k, name in enumerate(names)}
    for ax, points, pops, title in ((left, real, real_pops, "real"),
                                    (right, gen, gen_pops, "generated")):
        ax.scatter(real[:, 0], real[:, 1], s=4, c="#e2e8f0", zorder=0)
        if pops is None or not names:
            ax.scatter(points[:, 0], points[:, 1], s=5, alpha=0.5,
                       c=TRUTH_COLOUR if title == "real" else SYNTH_COLOUR)
        else:
            for name in names:
                here = pops == name
                ax.scatter(points[here, 0], points[here, 1], s=5, alpha=0.6, c=colours[name],
                           label=name)
            ax.legend(fontsize=8, markerscale=3)
        ax.set(title=f"{title} ({points.shape[0]} rows)"
               + (", coloured by nearest real neighbour" if title == "generated" and names
                  else ""),
               xlabel=f"PC1 ({100 * ratio[0]:.1f} %)",
               ylabel=f"PC2 ({100 * ratio[1]:.1f} %)" if ratio.size > 1 else "PC2")
    fig.tight_layout()
    return fig


def fig_populations(shares: dict[str, Any]) -> Figure:
    names = list(shares["generated"])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names) + 2), 4.5))
    x = np.arange(len(names))
    for k, (key, label, colour) in enumerate((
            ("real_labels", "natural test, labels", "#a0aec0"),
            ("real", "natural test, nearest-neighbour vote", TRUTH_COLOUR),
            ("generated", "generated, nearest-neighbour vote", SYNTH_COLOUR))):
        ax.bar(x + (k - 1) * 0.27, [shares[key][n] for n in names], 0.27, color=colour,
               label=label)
    ax.set_xticks(x, names)
    top = max(max(shares[key].values(), default=0.0) for key in
              ("real_labels", "real", "generated"))
    ax.set_ylim(0, 1.45 * top if top > 0 else 1.0)  # headroom for the legend
    ax.set(ylabel="share", title=f"Population shares (gap {fmt(shares['gap'])}, natural "
                                 f"{fmt(shares['gap_train_vs_test'])})")
    ax.legend(fontsize=8, loc="upper right")
    return fig


def genome_sets(data_path: str | os.PathLike[str], data: EncodedAlignment,
                generated: np.ndarray) -> GenomeSets | None:
    """The report's rows of a genotype family, or None for a protein family."""
    info = load_genotype_info(data_path)
    if info is None:
        return None
    train, test = data.split == TRAIN, data.split == TEST
    pops = info.populations
    return GenomeSets(train=data.codes[train], test=data.codes[test], generated=generated,
                      encoding=info.encoding, chrom=info.sites.chrom, pos=info.sites.pos,
                      train_individuals=info.individuals[train],
                      train_populations=None if pops is None else pops[train],
                      test_populations=None if pops is None else pops[test])


def add_genome_report(draw: Callable[..., None], metrics: dict[str, Any],
                      data_path: str | os.PathLike[str], data: EncodedAlignment,
                      generated: np.ndarray, size: int, seed: int) -> None:
    """For a genotype family: the genome metrics into `metrics`, the figures through `draw`."""
    sets = genome_sets(data_path, data, generated)
    if sets is None:
        return
    m = evaluate_genomes(sets, size=size, seed=seed)
    metrics.update(m)
    metrics["genome_encoding"] = sets.encoding
    a = sets.arrays
    pops = (None if sets.train_populations is None
            else np.concatenate([sets.train_populations, sets.test_populations]))
    draw("genome_allele_freq", lambda: fig_allele_freq(m, a))
    draw("genome_ld", lambda: fig_ld(m, a))
    draw("genome_distances", lambda: fig_distances(a))
    draw("genome_pca", lambda: fig_pca(a, pops))
    draw("genome_populations", lambda: fig_populations(m["population_shares"]),
         None if m["population_shares"] else "no populations table (families.{name}."
                                               "populations)")


_ROWS = (
    ("Pearson of ALT allele frequencies", "pearson_allele_freq",
     "pearson_allele_freq_train_vs_test", "1 is perfect", ""),
    ("Pearson of LD r^2 (same-chromosome SNP pairs)", "pearson_ld_r2",
     "pearson_ld_r2_train_vs_test", "linkage disequilibrium reproduced", ""),
    ("AATS (nearest-neighbour adversarial accuracy)", "aats", "aats_train_vs_test",
     "0.5 ideal; below: too close to the real rows (copies); above: too far", "aats_spread"),
    ("  AA_TS (real rows)", "aats_detail.generated_vs_test.AA_TS",
     "aats_detail.train_vs_test.AA_TS", "", ""),
    ("  AA_ST (generated rows)", "aats_detail.generated_vs_test.AA_ST",
     "aats_detail.train_vs_test.AA_ST", "", ""),
    ("Privacy loss AATS(vs test) - AATS(vs train)", "privacy_loss.value",
     "privacy_loss.train_vs_test", "near 0 is good; positive: training rows memorised",
     "privacy_loss.spread"),
    ("Population-share gap (largest difference)", "population_shares.gap",
     "population_shares.gap_train_vs_test", "generated vs test, both by the same vote", ""),
)
"""(label, metrics key, natural key, how to read, key of the value's standard error)"""


def _indent(label: str) -> str:
    """A sub-row's cell attribute (labels that start with spaces), else nothing."""
    return " style='padding-left:2em'" if label.startswith(" ") else ""


def _value(metrics: dict[str, Any], key: str, spread: str) -> str:
    """The formatted value at `key`, with ± its standard error where `spread` names one."""
    error = lookup(metrics, spread) if spread else None
    value = fmt(lookup(metrics, key))
    return value if error is None else f"{value} ± {fmt(error)}"


def genomes_html(metrics: dict[str, Any]) -> str:
    """The genome section of report.html (empty for a protein family)."""
    if "pearson_allele_freq" not in metrics:
        return ""
    rows = "".join(f"<tr><td{_indent(label)}>{html.escape(label.strip())}</td>"
                   f"<td class='num'>{html.escape(_value(metrics, key, spread))}</td>"
                   f"<td class='num'>{html.escape(fmt(lookup(metrics, ceiling)))}</td>"
                   f"<td>{html.escape(meaning)}</td></tr>"
                   for label, key, ceiling, meaning, spread in _ROWS)
    detail = metrics.get("aats_detail") or {}
    draws = (f" AATS and the privacy loss are means over {detail['repeats']} draws of "
             f"{detail['n']} rows from each set (± their standard error over the draws)."
             if "repeats" in detail else "")
    parts = ["<h2>Genomes</h2>",
             f"<p>Rows are {html.escape(str(metrics.get('genome_encoding')))}; distances count "
             "differing alleles. The natural column compares the real train and test rows "
             f"(for the privacy loss: half the test rows standing in for a generated set).{draws}"
             "</p>",
             "<table><tr><th>score</th><th>generated vs natural test</th><th>natural train "
             f"vs test</th><th>how to read</th></tr>{rows}</table>"]
    shares = metrics.get("population_shares")
    if shares:
        head = "".join(f"<th>{html.escape(n)}</th>" for n in shares["generated"])
        body = "".join(
            f"<tr><td>{html.escape(label)}</td>"
            + "".join(f"<td class='num'>{fmt(shares[key][n])}</td>" for n in shares["generated"])
            + "</tr>" for key, label in (("generated", "generated (vote)"),
                                         ("real", "natural test (vote)"),
                                         ("real_train", "natural train (vote, own individual "
                                                        "left out)"),
                                         ("real_labels", "natural test (labels)")))
        parts.append(f"<h3>Population shares</h3><table><tr><th>set</th>{head}</tr>{body}"
                     f"</table><p>Vote: the population of the nearest labelled training row. "
                     f"Vote accuracy on the test rows: {fmt(shares.get('test_vote_accuracy'))}."
                     "</p>")
    return "\n".join(parts)
