"""The score stage: free energy, log-likelihood and distance to the training set of any
protein sequences, aligned to the model's columns or not (`rbmflow score`).

Free energies and log-likelihoods are in nats: log p(v) = -F(v) - log Z, with log Z from the
model's loglik.json (refused when computed for another model file). The distance is the
Hamming distance to the nearest training sequence over the L columns, divided by L.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rbmflow.data.dataset import TRAIN
from rbmflow.evaluation.metrics import free_energies, nearest_hamming
from rbmflow.evaluation.profile_hmm import (
    DEFAULT_MAX_EVALUE,
    DEFAULT_MIN_COVERAGE,
    ColumnMapping,
    map_sequences,
)
from rbmflow.evaluation.scoring import (
    input_paths,
    load_model_and_data,
    read_fasta_records,
    read_log_z,
)
from rbmflow.model.rbm import PottsRBM
from rbmflow.provenance import FORMAT_VERSION, atomic_path, atomic_paths, provenance, write_json

SCORE_COLUMNS = ("name", "free_energy", "loglik", "nearest_train_distance", "aligned_input",
                 "residues", "matched_columns", "coverage", "unmatched_residues", "bit_score",
                 "evalue", "sequence_in_columns")


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


def run_stage(model_path: Path, sequences_path: Path, out: Path, data_path: Path | None = None,
                loglik_path: Path | None = None, summary_path: Path | None = None,
                mode: str = "auto", max_evalue: float = DEFAULT_MAX_EVALUE,
                min_coverage: float = DEFAULT_MIN_COVERAGE,
                device: torch.device | str = "cpu") -> list[ColumnMapping]:
    """The score stage (`rbmflow score`): scores.csv (SCORE_COLUMNS) and a JSON summary with
    provenance. The model is taken at the checkpoint whose log Z loglik.json holds (else the
    last one)."""
    log_z, checkpoint = (read_log_z(loglik_path, model_path) if loglik_path is not None
                         else (None, None))
    model, data, alphabet = load_model_and_data(model_path, data_path, torch.device(device),
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
           "provenance": provenance("score", input_paths(model=model_path, sequences=sequences_path,
                                                    alignment=data_path, loglik=loglik_path),
                                    {"mode": mode, "max_evalue": max_evalue,
                                     "min_coverage": min_coverage})}
    with atomic_paths(out, summary_path) as (tmp_csv, tmp_json):
        write_scores_csv(tmp_csv, mappings, scores, alphabet)
        write_json(tmp_json, doc)
    return mappings
