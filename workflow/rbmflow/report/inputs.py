"""Reading one run's inputs for the report: generated sequences (FASTA), JSON and CSV side files,
and the trained model. Bad input is an InputError naming the file and the record."""

from __future__ import annotations

import json
import math
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


# What the report reads of each JSON side file: key (dotted) -> (kind, required). Kinds:
# "number" (finite), "count" (integer >= 0), "bool", "text", "numbers" (a list of finite
# numbers), "texts" (a string or a list of strings). Absent or null optional keys are fine.
LOGLIK_FIELDS = {"log_z": ("number", True), "log_z_std": ("number", False),
                 "loglik_train": ("number", False), "loglik_test": ("number", False),
                 "ess": ("number", False), "method": ("text", False),
                 "checkpoint": ("count", False), "warnings": ("texts", False),
                 "warning": ("text", False)}
SAMPLING_FIELDS = {"equilibrated": ("bool", False), "not_equilibrated": ("bool", False),
                   "mixing_time": ("number", False), "sweeps": ("count", False),
                   "mode": ("text", False), "mode_reason": ("text", False),
                   "method": ("text", False), "swap_rates": ("numbers", False),
                   "gibbs_vs_tempering.passed": ("bool", False), "warning": ("text", False),
                   "gibbs_vs_tempering_warning": ("text", False),
                   "model_update": ("count", False)}
MUTATIONS_FIELDS = {"positions": ("count", True), "covered_positions": ("count", True),
                    "columns": ("count", True), "matched_columns": ("count", True),
                    "first": ("int", True)}


def _is_number(value: Any) -> bool:
    return (not isinstance(value, bool) and isinstance(value, int | float)
            and math.isfinite(value))


_KINDS = {
    "number": (_is_number, "a finite number"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "count": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
              "a non-negative integer"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "text": (lambda v: isinstance(v, str), "a string"),
    "numbers": (lambda v: isinstance(v, list) and all(_is_number(x) for x in v),
                "a list of finite numbers"),
    "texts": (lambda v: isinstance(v, str) or (isinstance(v, list)
                                              and all(isinstance(x, str) for x in v)),
              "a string or a list of strings"),
}


def check_fields(document: dict[str, Any], path: Path, fields: dict[str, tuple[str, bool]]
                 ) -> None:
    """InputError naming the file and key when a value the report reads is missing (when
    required) or of the wrong type; NaN and infinities are refused as numbers."""
    for key, (kind, required) in fields.items():
        value = lookup(document, key)
        if value is None:
            if required:
                raise InputError(f"{path}: no {key}")
            continue
        test, expected = _KINDS[kind]
        if not test(value):
            raise InputError(f"{path}: {key} is {json.dumps(value)[:40]}, expected {expected}")


def read_run_json(path: Path | None, role: str, fields: dict[str, tuple[str, bool]],
                  model: Path | None, model_sha256: str | None) -> dict[str, Any] | None:
    """A stage's JSON output (None when path is None), its values checked (`fields`) and, with
    a model, refused unless it records that model's sha256 among its inputs."""
    from rbmflow.evaluation.scoring import require_same_model

    document = read_json(path, role)
    if document is None:
        return None
    check_fields(document, Path(path), fields)
    if model is not None:
        require_same_model(document, path, model, model_sha256, f"this {role} file")
    return document


def require_one_model(documents: dict[Path, dict[str, Any] | None]) -> None:
    """Without model.h5: the JSON side files that record a model must all record the same."""
    from rbmflow.evaluation.scoring import recorded_model_sha256

    seen: dict[str, Path] = {}
    for path, document in documents.items():
        sha = recorded_model_sha256(document) if document is not None else None
        if sha is not None:
            seen.setdefault(sha, path)
    if len(seen) > 1:
        first, second = list(seen.values())[:2]
        raise InputError(f"{first} and {second} were computed for different models")


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
