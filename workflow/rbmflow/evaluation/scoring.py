"""Scoring sequences and single mutants with a trained model.

Free energies are in nats, F(v) = -sum_i vbias[i, v_i] - sum_mu softplus(hbias[mu] +
sum_i W[i, v_i, mu]); log p(v) = -F(v) - log Z. A single mutant's effect is
delta_log_p = log p(mutant) - log p(wild type) = F(wild type) - F(mutant): log Z cancels.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from Bio.SeqIO.FastaIO import SimpleFastaParser

from rbmflow import ALPHABET
from rbmflow.data.alignment import AMBIGUOUS_LETTERS, open_text
from rbmflow.data.dataset import TRAIN, EncodedAlignment, load_encoded
from rbmflow.errors import InputError
from rbmflow.evaluation.metrics import free_energies, nearest_hamming
from rbmflow.evaluation.profile_hmm import (
    AMINO_ACIDS,
    DEFAULT_MAX_EVALUE,
    DEFAULT_MIN_COVERAGE,
    ColumnMapping,
    map_sequences,
)
from rbmflow.model.archive import load_rbm, read_metadata
from rbmflow.model.rbm import PottsRBM
from rbmflow.provenance import (
    FORMAT_VERSION,
    atomic_path,
    atomic_paths,
    provenance,
    sha256_file,
    write_json,
)

SCORE_COLUMNS = ("name", "free_energy", "loglik", "nearest_train_distance", "aligned_input",
                 "residues", "matched_columns", "coverage", "unmatched_residues", "bit_score",
                 "evalue", "sequence_in_columns")
MUTATION_COLUMNS = ("mutant", "position", "column", "delta_log_p")


def read_fasta_records(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """(name, sequence text) of every record of a FASTA file (.gz allowed), whitespace removed.

    The name is the first word of the header. Raises InputError for a missing, empty or
    non-FASTA file, naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: sequence file not found")
    try:
        with open_text(path) as handle:
            records = [(title.split()[0] if title.split() else "", "".join(seq.split()))
                       for title, seq in SimpleFastaParser(handle)]
    except (UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{path}: not a readable FASTA file ({err})") from err
    if not records:
        raise InputError(f"{path}: no FASTA records")
    for index, (name, _) in enumerate(records):
        if not name:
            raise InputError(f"{path}: record {index + 1} has no name")
    return records


def read_log_z(path: str | os.PathLike[str], model_path: str | os.PathLike[str] | None = None
               ) -> tuple[float, int | None]:
    """(log Z, its checkpoint or None) from loglik.json; refuses one computed for a different
    model file (by the sha256 it records)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        log_z = float(doc["log_z"])
        checkpoint = doc.get("checkpoint")
        checkpoint = None if checkpoint is None else int(checkpoint)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{path}: no readable log_z ({err})") from err
    if not math.isfinite(log_z):
        raise InputError(f"{path}: log_z is {log_z}")
    recorded = (((doc.get("provenance") or {}).get("inputs") or {}).get("model") or {})
    if model_path is not None and recorded.get("sha256"):
        if recorded["sha256"] != sha256_file(model_path):
            raise InputError(f"{path}: log Z was computed for another model "
                             f"({recorded.get('path')}), not {model_path}")
    return log_z, checkpoint


@dataclass(frozen=True)
class SequenceScores:
    """Per-sequence scores (n,): free energy and log-likelihood in nats (log-likelihood NaN
    without log Z), normalised Hamming distance to the nearest training sequence (NaN without
    training data)."""

    free_energy: np.ndarray
    loglik: np.ndarray
    nearest_train_distance: np.ndarray


@torch.no_grad()
def score_codes(model: PottsRBM, codes: torch.Tensor, log_z: float | None = None,
                train_codes: torch.Tensor | None = None) -> SequenceScores:
    """Scores of codes (n, L) under `model` (evaluated in float64); see SequenceScores."""
    free = free_energies(model.to(dtype=torch.float64), codes.to(model.device)).cpu().numpy()
    loglik = -free - log_z if log_z is not None else np.full_like(free, np.nan)
    if train_codes is not None and train_codes.shape[0] > 0:
        nearest = nearest_hamming(codes.to(model.device), train_codes.to(model.device),
                                  model.num_states).cpu().numpy() / model.num_visibles
    else:
        nearest = np.full_like(free, np.nan)
    return SequenceScores(free, loglik, nearest.astype(np.float64))


def _number(value: float | None, digits: int = 6) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:.{digits}f}"


def write_scores_csv(path: str | os.PathLike[str], mappings: list[ColumnMapping],
                     scores: SequenceScores, alphabet: str) -> None:
    """scores.csv: SCORE_COLUMNS, one row per sequence in input order; unmatched residues are
    1-based positions in the sequence, ';'-separated; empty cells for missing values."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(SCORE_COLUMNS)
        for k, m in enumerate(mappings):
            writer.writerow([
                m.name, _number(scores.free_energy[k]), _number(scores.loglik[k]),
                _number(scores.nearest_train_distance[k]), str(m.aligned_input).lower(),
                len(m.residues), m.matched_columns, _number(m.coverage, 4),
                ";".join(str(r + 1) for r in m.unmatched_residues),
                _number(m.bit_score, 2), "" if m.evalue is None else f"{m.evalue:.3g}",
                "".join(alphabet[c] for c in m.codes)])


# -- single mutants ---------------------------------------------------------------------------


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


# -- stages -----------------------------------------------------------------------------------


def _load_model_and_data(model_path: Path, data_path: Path | None, device: torch.device,
                         checkpoint: int | None = None
                         ) -> tuple[PottsRBM, EncodedAlignment | None, str]:
    """The model at `checkpoint` (None: the last), the encoded alignment (if given) and the
    model's alphabet; checks that they agree in length and alphabet."""
    for role, path in (("model", model_path), ("alignment", data_path)):
        if path is not None and not Path(path).is_file():
            raise InputError(f"{path}: {role} file not found")
    model = load_rbm(model_path, update=checkpoint, device=device)
    alphabet = read_metadata(model_path).get("alphabet")
    data = None
    if data_path is not None:
        try:
            data = load_encoded(data_path)
        except ValueError as err:
            raise InputError(str(err)) from err
        if data.length != model.num_visibles:
            raise InputError(f"{data_path}: {data.length} columns, but the model {model_path} "
                             f"has {model.num_visibles}")
        if alphabet is not None and alphabet != data.alphabet:
            raise InputError(f"{data_path}: alphabet {data.alphabet!r} differs from the model's "
                             f"{alphabet!r}")
        alphabet = data.alphabet
    alphabet = alphabet or ALPHABET
    if len(alphabet) != model.num_states:
        raise InputError(f"{model_path}: {model.num_states} states, alphabet {alphabet!r}")
    return model, data, alphabet


def score_stage(model_path: Path, sequences_path: Path, out: Path, data_path: Path | None = None,
                loglik_path: Path | None = None, summary_path: Path | None = None,
                mode: str = "auto", max_evalue: float = DEFAULT_MAX_EVALUE,
                min_coverage: float = DEFAULT_MIN_COVERAGE,
                device: torch.device | str = "cpu") -> list[ColumnMapping]:
    """`rbmflow score`: scores.csv (SCORE_COLUMNS) and a JSON summary with provenance. The
    model is taken at the checkpoint whose log Z loglik.json holds (else the last one)."""
    log_z, checkpoint = (read_log_z(loglik_path, model_path) if loglik_path is not None
                         else (None, None))
    model, data, alphabet = _load_model_and_data(model_path, data_path, torch.device(device),
                                                 checkpoint)
    records = read_fasta_records(sequences_path)
    mappings = map_sequences(records, model.num_visibles, alphabet, data, str(sequences_path),
                             mode, max_evalue, min_coverage)
    codes = torch.from_numpy(np.stack([m.codes for m in mappings]))
    train = data.codes_tensor()[torch.from_numpy(data.split == TRAIN)] if data else None
    scores = score_codes(model, codes, log_z, train)
    summary_path = summary_path or out.with_suffix(".json")
    doc = {"format_version": FORMAT_VERSION, "sequences": len(mappings), "log_z": log_z,
           "checkpoint": checkpoint,
           "columns": model.num_visibles,
           "aligned_inputs": sum(m.aligned_input for m in mappings),
           "provenance": provenance("score", _inputs(model=model_path, sequences=sequences_path,
                                                    alignment=data_path, loglik=loglik_path),
                                    {"mode": mode, "max_evalue": max_evalue,
                                     "min_coverage": min_coverage})}
    with atomic_paths(out, summary_path) as (tmp_csv, tmp_json):
        write_scores_csv(tmp_csv, mappings, scores, alphabet)
        write_json(tmp_json, doc)
    return mappings


def _inputs(**paths: Path | None) -> dict[str, Path]:
    return {role: path for role, path in paths.items() if path is not None}


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


def mutations_stage(model_path: Path, data_path: Path, wildtype: str, out: Path,
                    heatmap: Path | None = None, summary_path: Path | None = None,
                    first: int = 1, mode: str = "auto", max_evalue: float = DEFAULT_MAX_EVALUE,
                    min_coverage: float = DEFAULT_MIN_COVERAGE,
                    device: torch.device | str = "cpu") -> MutationScan:
    """`rbmflow mutations`: mutations.csv, the heat map PNG and a JSON summary (the wild type's
    mapping to the columns, coverage, provenance)."""
    from matplotlib import pyplot as plt

    model, data, alphabet = _load_model_and_data(model_path, data_path, torch.device(device))
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
