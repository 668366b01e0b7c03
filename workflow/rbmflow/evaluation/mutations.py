"""The mutations stage: log p(mutant) - log p(wild type) of every single substitution of a
wild type at the positions it covers among the model's columns (`rbmflow mutations`).

delta_log_p = F(wild type) - F(mutant) in nats: log Z cancels. Residues are numbered from
`first` in the order of the wild type's own residues, inserts (A2M lower-case letters, or
residues the profile HMM leaves out) included; only residues in a model column are scanned.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rbmflow.data.alignment import AMBIGUOUS_LETTERS
from rbmflow.errors import InputError
from rbmflow.evaluation.metrics import free_energies
from rbmflow.evaluation.profile_hmm import (
    AMINO_ACIDS,
    DEFAULT_MAX_EVALUE,
    DEFAULT_MIN_COVERAGE,
    ColumnMapping,
    map_sequences,
)
from rbmflow.evaluation.scoring import load_model_and_data, read_fasta_records
from rbmflow.model.rbm import PottsRBM
from rbmflow.provenance import FORMAT_VERSION, atomic_path, atomic_paths, provenance, write_json

MUTATION_COLUMNS = ("mutant", "position", "column", "delta_log_p")


@dataclass(frozen=True)
class MutationScan:
    """Every single substitution at the wild type's covered positions.

    `positions` (P,): residue numbers (`first` + 0-based residue index) of the covered
    positions, in sequence order; `columns` (P,) their 0-based model columns; `wildtype`
    their wild-type letters; `delta_log_p` (P, 20) F(wt) - F(mutant) in nats for the 20 amino
    acids AMINO_ACIDS (0 for the wild-type letter itself).
    """

    positions: np.ndarray
    columns: np.ndarray
    wildtype: str
    delta_log_p: np.ndarray
    wildtype_free_energy: float

    def rows(self) -> list[tuple[str, int, int, float]]:
        """(mutant, position, column 1-based, delta_log_p) of every substitution (19 per
        position, the wild-type letter left out)."""
        out = []
        for p, (position, column, wt) in enumerate(zip(self.positions, self.columns,
                                                        self.wildtype, strict=True)):
            for a, letter in enumerate(AMINO_ACIDS):
                if letter != wt:
                    out.append((f"{wt}{position}{letter}", int(position), int(column) + 1,
                                float(self.delta_log_p[p, a])))
        return out


@torch.no_grad()
def scan_single_mutants(model: PottsRBM, mapping: ColumnMapping, alphabet: str,
                        first: int = 1) -> MutationScan:
    """delta_log_p of all 20 amino acids at every residue of `mapping` that matches a column
    and is one of the 20 amino acids (ambiguous letters are skipped); free energies in
    float64."""
    matched = [r for r in range(len(mapping.residues))
               if mapping.residue_columns[r] >= 0 and mapping.residues[r] in AMINO_ACIDS]
    if not matched:
        raise InputError(f"wild type {mapping.name!r}: no residue matches a model column")
    columns = mapping.residue_columns[matched]
    aa_codes = torch.tensor([alphabet.index(a) for a in AMINO_ACIDS], dtype=torch.long)
    wt = torch.from_numpy(mapping.codes).long()
    mutants = wt.repeat(len(matched) * len(AMINO_ACIDS), 1).view(len(matched),
                                                                  len(AMINO_ACIDS), -1)
    mutants[torch.arange(len(matched)), :, torch.from_numpy(columns)] = aa_codes
    device, model = model.device, model.to(dtype=torch.float64)
    f_wt = float(free_energies(model, wt[None].to(device))[0])
    f_mut = free_energies(model, mutants.view(-1, wt.shape[0]).to(device))
    delta = (f_wt - f_mut).view(len(matched), len(AMINO_ACIDS)).cpu().numpy()
    wildtype = "".join(mapping.residues[r] for r in matched)
    for p, letter in enumerate(wildtype):
        delta[p, AMINO_ACIDS.index(letter)] = 0.0  # the same sequence: exactly 0
    return MutationScan(np.asarray(matched, dtype=np.int64) + first, columns, wildtype, delta,
                        f_wt)


def write_mutations_csv(path: str | os.PathLike[str], scan: MutationScan) -> None:
    """mutations.csv: MUTATION_COLUMNS, positions in sequence order, amino acids in
    alphabet order."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(MUTATION_COLUMNS)
        for mutant, position, column, delta in scan.rows():
            writer.writerow([mutant, position, column, f"{delta:.6f}"])


def mutation_heatmap(scan: MutationScan, title: str = "") -> Any:
    """Figure: delta_log_p, amino acids (rows) x covered positions (columns), diverging colours
    centred on 0 (red: less likely than the wild type, blue: more), wild-type letters marked
    with a dot."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    values = scan.delta_log_p.T  # (20, P)
    num = values.shape[1]
    fig, ax = plt.subplots(figsize=(min(40.0, max(6.0, 0.09 * num + 2.0)), 4.6))
    low, high = float(min(values.min(), -1e-6)), float(max(values.max(), 1e-6))
    image = ax.imshow(values, aspect="auto", interpolation="nearest", cmap="RdBu",
                      norm=TwoSlopeNorm(0.0, low, high))
    ax.scatter(np.arange(num), [AMINO_ACIDS.index(c) for c in scan.wildtype], s=4, c="black",
               marker="o", linewidths=0)
    ax.set_yticks(range(len(AMINO_ACIDS)), list(AMINO_ACIDS), fontsize=7)
    step = max(1, int(math.ceil(num / 40)))
    ticks = np.arange(0, num, step)
    ax.set_xticks(ticks, [f"{scan.wildtype[t]}{scan.positions[t]}" for t in ticks],
                  rotation=90, fontsize=6)
    ax.set_xlabel("wild-type residue (covered positions)")
    ax.set_ylabel("mutant amino acid")
    ax.set_title(title or f"single mutants: log p(mutant) - log p(wild type), {num} positions",
                 fontsize=9)
    fig.colorbar(image, ax=ax, label="delta log p (nats)", fraction=0.03, pad=0.01)
    fig.tight_layout()
    return fig


def read_wildtype(text: str) -> tuple[str, str]:
    """(name, sequence) of a wild type given as letters or as a FASTA file of one record."""
    path = Path(text)
    try:
        is_file = path.is_file()
    except OSError:  # e.g. a sequence longer than a file name may be
        is_file = False
    if is_file:
        records = read_fasta_records(path)
        if len(records) != 1:
            raise InputError(f"{path}: {len(records)} records; the wild type must be one")
        return records[0]
    if not text or not set(text) <= set(AMINO_ACIDS + AMBIGUOUS_LETTERS + "-."
                                        + (AMINO_ACIDS + AMBIGUOUS_LETTERS).lower()):
        raise InputError(f"--wildtype {text[:30]!r}: neither a file nor a protein sequence")
    return "wildtype", text


def run_stage(model_path: Path, data_path: Path, wildtype: str, out: Path,
                    heatmap: Path | None = None, summary_path: Path | None = None,
                    first: int = 1, mode: str = "auto", max_evalue: float = DEFAULT_MAX_EVALUE,
                    min_coverage: float = DEFAULT_MIN_COVERAGE,
                    device: torch.device | str = "cpu") -> MutationScan:
    """The mutations stage (`rbmflow mutations`): mutations.csv, the heat map PNG and a JSON
    summary (the wild type's mapping to the columns, coverage, provenance)."""
    from matplotlib import pyplot as plt

    model, data, alphabet = load_model_and_data(model_path, data_path, torch.device(device))
    name, text = read_wildtype(wildtype)
    [mapping] = map_sequences([(name, text)], model.num_visibles, alphabet, data,
                              "wild type", mode, max_evalue, min_coverage)
    scan = scan_single_mutants(model, mapping, alphabet, first)
    heatmap = heatmap or out.with_suffix(".png")
    summary_path = summary_path or out.with_suffix(".json")
    positions = len(mapping.residues)
    doc = {"format_version": FORMAT_VERSION, "wildtype": mapping.residues, "first": first,
           "positions": positions, "covered_positions": len(scan.positions),
           "columns": model.num_visibles, "matched_columns": mapping.matched_columns,
           "coverage_positions": len(scan.positions) / positions,
           "coverage_columns": mapping.coverage,
           "covered": [f"{wt}{p}:{c + 1}" for wt, p, c in zip(scan.wildtype, scan.positions,
                                                               scan.columns, strict=True)],
           "unmatched_positions": [int(r) + first for r in mapping.unmatched_residues],
           "wildtype_free_energy": scan.wildtype_free_energy,
           "mapping": mapping.summary(),
           "provenance": provenance("mutations", {"model": model_path, "alignment": data_path},
                                    {"wildtype": wildtype if len(wildtype) < 4096 else None,
                                     "first": first, "mode": mode, "max_evalue": max_evalue,
                                     "min_coverage": min_coverage})}
    fig = mutation_heatmap(scan, f"{name}: log p(mutant) - log p(wild type), "
                                 f"{len(scan.positions)}/{positions} positions covered")
    with atomic_paths(out, heatmap, summary_path) as (tmp_csv, tmp_png, tmp_json):
        write_mutations_csv(tmp_csv, scan)
        fig.savefig(tmp_png, dpi=120, format="png")
        write_json(tmp_json, doc)
    plt.close(fig)
    return scan
