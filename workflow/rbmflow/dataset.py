"""The encoded alignment (`alignment.npz`) that every stage after `prepare` reads.

Layout (DESIGN.md): `codes` uint8 (M, L) alphabet indices; `weights` float32 (M);
`split` uint8 (M), 0 train and 1 test; `names` str (M); `columns` int (kept positions of the
input alignment, 0-based); `alphabet` str. Loaded with allow_pickle=False.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rbmflow.provenance import FORMAT_VERSION, atomic_path

TRAIN, TEST = 0, 1


@dataclass(frozen=True)
class EncodedAlignment:
    codes: np.ndarray  # uint8 (M, L)
    weights: np.ndarray  # float32 (M,)
    split: np.ndarray  # uint8 (M,)
    names: np.ndarray  # str (M,)
    columns: np.ndarray  # int64 (L,)
    alphabet: str
    provenance: dict | None = None

    @property
    def num_sequences(self) -> int:
        return int(self.codes.shape[0])

    @property
    def length(self) -> int:
        return int(self.codes.shape[1])

    @property
    def num_states(self) -> int:
        return len(self.alphabet)

    def subset(self, part: int) -> EncodedAlignment:
        """The train (0) or test (1) part."""
        keep = self.split == part
        return EncodedAlignment(self.codes[keep], self.weights[keep], self.split[keep],
                                self.names[keep], self.columns, self.alphabet, self.provenance)

    def codes_tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Codes as an int64 tensor (M, L) on `device`."""
        return torch.from_numpy(self.codes.astype(np.int64)).to(device)

    def weights_tensor(self, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.from_numpy(self.weights).to(device=device, dtype=dtype)


def save_encoded(path: str | os.PathLike[str], data: EncodedAlignment) -> None:
    """Write `data` to an NPZ archive atomically, provenance as a JSON string."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(
            handle,
            codes=data.codes.astype(np.uint8),
            weights=data.weights.astype(np.float32),
            split=data.split.astype(np.uint8),
            names=np.asarray(data.names, dtype=str),
            columns=np.asarray(data.columns, dtype=np.int64),
            alphabet=np.asarray(data.alphabet),
            format_version=np.asarray(FORMAT_VERSION),
            provenance=np.asarray(json.dumps(data.provenance or {})),
        )


def load_encoded(path: str | os.PathLike[str]) -> EncodedAlignment:
    """Read an `alignment.npz` written by `save_encoded` (or any file with the same arrays)."""
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable alignment.npz ({err})") from err
    with archive:
        missing = {"codes", "weights", "split", "names", "columns", "alphabet"} - set(archive.files)
        if missing:
            raise ValueError(f"{path}: missing arrays {sorted(missing)}")
        prov = json.loads(str(archive["provenance"])) if "provenance" in archive.files else None
        return EncodedAlignment(
            codes=archive["codes"].astype(np.uint8),
            weights=archive["weights"].astype(np.float32),
            split=archive["split"].astype(np.uint8),
            names=archive["names"],
            columns=archive["columns"].astype(np.int64),
            alphabet=str(archive["alphabet"]),
            provenance=prov,
        )
