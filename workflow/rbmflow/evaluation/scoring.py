"""Helpers shared by the `score` and `mutations` stages (evaluation/score.py and
evaluation/mutations.py): reading sequences, log Z and the model with its alignment, and
checking that a side file belongs to the model.

Free energies are in nats, F(v) = -sum_i vbias[i, v_i] - sum_mu softplus(hbias[mu] +
sum_i W[i, v_i, mu]); log p(v) = -F(v) - log Z.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from Bio.SeqIO.FastaIO import SimpleFastaParser

from rbmflow import ALPHABET
from rbmflow.data.alignment import open_text
from rbmflow.data.dataset import EncodedAlignment, load_encoded
from rbmflow.errors import InputError
from rbmflow.model.archive import load_rbm, read_metadata
from rbmflow.model.rbm import PottsRBM
from rbmflow.provenance import sha256_file


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


def recorded_model_sha256(doc: dict[str, Any]) -> str | None:
    """The sha256 of the model file a stage's JSON output records among its inputs, or None."""
    provenance = doc.get("provenance")
    inputs = provenance.get("inputs") if isinstance(provenance, dict) else None
    model = inputs.get("model") if isinstance(inputs, dict) else None
    sha = model.get("sha256") if isinstance(model, dict) else None
    return sha if isinstance(sha, str) else None


def require_same_model(doc: dict[str, Any], path: str | os.PathLike[str],
                       model_path: str | os.PathLike[str], model_sha256: str | None = None,
                       what: str = "it") -> None:
    """InputError unless the JSON document `doc` (read from `path`) records `model_path`'s
    sha256 as its model input; `model_sha256` saves hashing the model again. A document that
    records no model hash is refused too: nothing says it belongs to this model."""
    recorded = recorded_model_sha256(doc)
    if recorded is None:
        raise InputError(f"{path}: records no model sha256, so nothing shows {what} belongs "
                         f"to {model_path}")
    if recorded != (model_sha256 or sha256_file(model_path)):
        source = (((doc.get("provenance") or {}).get("inputs") or {}).get("model") or {})
        raise InputError(f"{path}: {what} was computed for another model "
                         f"({source.get('path')}), not {model_path}")


def read_log_z(path: str | os.PathLike[str], model_path: str | os.PathLike[str] | None = None
               ) -> tuple[float, int | None]:
    """(log Z, its checkpoint or None) from loglik.json; refuses a non-finite log Z and one
    computed for a different model file (by the sha256 it records)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        log_z = doc["log_z"]
        if isinstance(log_z, bool) or not isinstance(log_z, (int, float)):
            raise TypeError(f"log_z is {type(log_z).__name__}, not a number")
        log_z = float(log_z)
        checkpoint = doc.get("checkpoint")
        checkpoint = None if checkpoint is None else int(checkpoint)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{path}: no readable log_z ({err})") from err
    if not math.isfinite(log_z):
        raise InputError(f"{path}: log_z is {log_z}")
    if model_path is not None:
        require_same_model(doc, path, model_path, what="log Z")
    return log_z, checkpoint


def load_model_and_data(model_path: Path, data_path: Path | None, device: torch.device,
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


def input_paths(**paths: Path | None) -> dict[str, Path]:
    """The given paths by role, for provenance (None left out)."""
    return {role: path for role, path in paths.items() if path is not None}


