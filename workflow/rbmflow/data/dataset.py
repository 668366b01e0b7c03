"""The encoded alignment (`alignment.npz`) that every stage after `prepare` reads.

Layout: `codes` uint8 (M, L) alphabet indices; `weights` float32 (M);
`split` uint8 (M), 0 train and 1 test; `names` str (M); `columns` int (kept positions of the
input alignment, 0-based); `alphabet` str. Loaded with allow_pickle=False.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rbmflow.errors import InputError
from rbmflow.provenance import FORMAT_VERSION, atomic_path

TRAIN, TEST = 0, 1
MAX_BYTES = 2**31  # decompressed size of all arrays of an alignment.npz, checked before reading
_REQUIRED = ("codes", "weights", "split", "names", "columns", "alphabet")


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


def save_encoded(path: str | os.PathLike[str], data: EncodedAlignment,
                 extra: dict[str, np.ndarray] | None = None) -> None:
    """Write `data` to an NPZ archive atomically, provenance as a JSON string; `extra`
    arrays (no pickled objects) are stored beside the common ones."""
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
            **(extra or {}),
        )


def load_encoded(path: str | os.PathLike[str]) -> EncodedAlignment:
    """Read an `alignment.npz` written by `save_encoded` (or any file with the same arrays).

    Refused with InputError naming the file and the array: a file that is not such an archive,
    arrays whose declared decompressed size exceeds MAX_BYTES in all (checked before reading),
    wrong shapes or types, codes outside the alphabet, a non-ASCII alphabet, non-finite or
    negative weights, a split other than 0/1.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as bundle:
            declared = sum(info.file_size for info in bundle.infolist())
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        raise InputError(f"{path}: not a readable alignment.npz ({err})") from err
    if declared > MAX_BYTES:
        raise InputError(f"{path}: its arrays declare {declared} bytes once decompressed, more "
                         f"than the limit of {MAX_BYTES}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable alignment.npz ({err})") from err
    try:
        with archive:
            missing = set(_REQUIRED) - set(archive.files)
            if missing:
                raise InputError(f"{path}: missing arrays {sorted(missing)}")
            arrays = {name: archive[name] for name in _REQUIRED}
            prov = None
            if "provenance" in archive.files:
                try:
                    prov = json.loads(str(archive["provenance"]))
                except ValueError as err:
                    raise InputError(f"{path}: provenance is not valid JSON ({err})") from err
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(f"{path}: not a readable alignment.npz ({err})") from err
    return _validated(path, arrays, prov)


def _validated(path: Path, arrays: dict[str, np.ndarray], prov: dict | None
               ) -> EncodedAlignment:
    codes, weights, split = arrays["codes"], arrays["weights"], arrays["split"]
    names, columns, alphabet_array = arrays["names"], arrays["columns"], arrays["alphabet"]
    if codes.ndim != 2 or codes.dtype.kind not in "iu":
        raise InputError(f"{path}: codes must be a 2-D integer array (M, L), got "
                         f"{codes.dtype} {codes.shape}")
    m, length = codes.shape
    if alphabet_array.shape != () or alphabet_array.dtype.kind not in "US":
        raise InputError(f"{path}: alphabet must be one string")
    alphabet = str(alphabet_array)
    if not alphabet.isascii() or not 2 <= len(alphabet) <= 64 or len(set(alphabet)) != len(
            alphabet) or not alphabet.isprintable():
        raise InputError(f"{path}: alphabet {alphabet[:70]!r} must be 2 to 64 distinct printable "
                         "ASCII characters")
    for name, array, dims in (("weights", weights, (m,)), ("split", split, (m,)),
                              ("names", names, (m,)), ("columns", columns, (length,))):
        if array.shape != dims:
            raise InputError(f"{path}: {name} has shape {array.shape}, expected {dims} "
                             f"(codes are {codes.shape})")
    if weights.dtype.kind not in "iuf" or not np.isfinite(weights).all() or (weights < 0).any():
        raise InputError(f"{path}: weights must be finite non-negative numbers")
    if split.dtype.kind not in "iub" or not np.isin(split, (TRAIN, TEST)).all():
        raise InputError(f"{path}: split must hold only 0 (train) and 1 (test)")
    if columns.dtype.kind not in "iu" or names.dtype.kind not in "US":
        raise InputError(f"{path}: columns must be integers and names strings")
    if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= len(alphabet)):
        bad = np.argwhere((codes < 0) | (codes >= len(alphabet)))[0]
        raise InputError(f"{path}: codes[{bad[0]}, {bad[1]}] = {codes[tuple(bad)]} is outside "
                         f"the alphabet of {len(alphabet)} letters")
    return EncodedAlignment(
        codes=codes.astype(np.uint8), weights=weights.astype(np.float32),
        split=split.astype(np.uint8), names=names, columns=columns.astype(np.int64),
        alphabet=alphabet, provenance=prov)
