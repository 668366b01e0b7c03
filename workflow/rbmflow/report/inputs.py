"""Reading one run's inputs for the report: generated sequences (FASTA), JSON and CSV side files,
and the trained model. Bad input is an InputError naming the file and the record."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from Bio import SeqIO

from rbmflow.errors import InputError
from rbmflow.model.rbm import PottsRBM


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


def read_json(path: Path | None, role: str) -> dict[str, Any] | None:
    """The JSON object in `path` (None when path is None); `role` names the file in errors."""
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


def read_csv(path: Path | None, role: str, required: Sequence[str]) -> pd.DataFrame | None:
    """The CSV table in `path` (None when path is None), with numeric `required` columns."""
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


def load_model(path: Path | None, device: torch.device) -> tuple[PottsRBM | None, dict | None]:
    """(model in float32 on `device`, its metadata) from model.h5, or (None, None)."""
    if path is None:
        return None, None
    from rbmflow.model.archive import load_rbm, read_metadata

    return (load_rbm(path, device=device, dtype=torch.float32), read_metadata(path))


def mutations_coverage(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """The coverage numbers of `rbmflow mutations`' JSON summary, for metrics.json."""
    if summary is None:
        return None
    return {key: summary.get(key) for key in ("positions", "covered_positions", "columns",
                                              "matched_columns", "first")}


def lookup(mapping: dict[str, Any] | None, dotted: str) -> Any:
    """mapping['a']['b'] for 'a.b'; None when any level is missing."""
    value: Any = mapping
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value
