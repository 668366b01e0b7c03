"""The encoded alignment (`alignment.npz`) that every stage after `prepare` reads.

Layout: `codes` uint8 (M, L) alphabet indices; `weights` float32 (M);
`split` uint8 (M), 0 train and 1 test; `names_utf8` uint8 (the names' UTF-8 bytes end to
end) and `names_offsets` int64 (M + 1; name m is bytes offsets[m]:offsets[m + 1]); `names`
str (M) as well while that fixed-width copy stays under NAMES_COPY_BYTES (numpy stores every
name at the width of the longest, so one huge name would cost M times its size); `columns`
int (kept positions of the input alignment, 0-based); `alphabet` str. Loaded with
allow_pickle=False; files with `names` only (older ones) load too.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rbmflow.errors import InputError
from rbmflow.provenance import FORMAT_VERSION, atomic_path

TRAIN, TEST = 0, 1
MAX_BYTES = 2**31  # decompressed size of all arrays of an alignment.npz, checked before reading
_REQUIRED = ("codes", "weights", "split", "columns", "alphabet")
NAMES_COPY_BYTES = 1 << 26  # the fixed-width `names` copy is written only under this size


@dataclass(frozen=True)
class EncodedAlignment:
    codes: np.ndarray  # uint8 (M, L)
    weights: np.ndarray  # float32 (M,)
    split: np.ndarray  # uint8 (M,)
    names: np.ndarray  # str or object array of str (M,)
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


def load_training(path: str | os.PathLike[str]) -> EncodedAlignment:
    """The train part of the alignment.npz at `path`; InputError if it holds no sequence or
    its weights sum to zero (nothing to average over)."""
    train = load_encoded(path).subset(TRAIN)
    if train.num_sequences == 0:
        raise InputError(f"{path}: no sequence in the train split")
    if not float(train.weights.astype(np.float64).sum()) > 0:
        raise InputError(f"{path}: the weights of the {train.num_sequences} training "
                         "sequences are all zero")
    return train


def pack_names(names: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes uint8, offsets int64 (M + 1)) of `names`: memory linear in their total
    length, whatever the longest."""
    encoded = [str(name).encode("utf-8", "surrogateescape") for name in names]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(item) for item in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def unpack_names(path: Path, raw: np.ndarray, offsets: np.ndarray, count: int) -> np.ndarray:
    """Object array of the `count` names packed by `pack_names` (InputError if inconsistent)."""
    if (raw.ndim != 1 or raw.dtype != np.uint8 or offsets.shape != (count + 1,)
            or offsets.dtype.kind not in "iu" or offsets[0] != 0
            or offsets[-1] != raw.size or (np.diff(offsets) < 0).any()):
        raise InputError(f"{path}: names_utf8 and names_offsets are inconsistent (expected "
                         f"{count + 1} non-decreasing offsets from 0 to the {raw.size} bytes)")
    data = raw.tobytes()
    try:
        items = [data[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:],
                                                             strict=True)]
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: names_utf8 is not UTF-8 ({err})") from err
    out = np.empty(count, dtype=object)
    out[:] = items
    return out


def save_encoded(path: str | os.PathLike[str], data: EncodedAlignment,
                 extra: dict[str, np.ndarray] | None = None) -> None:
    """Write `data` to an NPZ archive atomically, provenance as a JSON string; `extra`
    arrays (no pickled objects) are stored beside the common ones."""
    names_utf8, names_offsets = pack_names(data.names)
    widest = int(np.diff(names_offsets).max()) if len(data.names) else 0
    copy = ({"names": np.asarray(data.names, dtype=str)}
            if 4 * widest * len(data.names) <= NAMES_COPY_BYTES else {})
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(
            handle,
            codes=data.codes.astype(np.uint8),
            weights=data.weights.astype(np.float32),
            split=data.split.astype(np.uint8),
            names_utf8=names_utf8, names_offsets=names_offsets, **copy,
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
    _check_declared_shapes(path)
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
            if "names_utf8" in archive.files and "names_offsets" in archive.files:
                codes = arrays["codes"]
                arrays["names"] = (unpack_names(path, archive["names_utf8"],
                                                archive["names_offsets"], codes.shape[0])
                                   if codes.ndim == 2 else np.empty(0, dtype=object))
            elif "names" in archive.files:
                arrays["names"] = archive["names"]
            else:
                raise InputError(f"{path}: missing arrays ['names_utf8'] (or 'names')")
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


def _declared_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The shape each .npy member of the archive declares in its header (nothing else read)."""
    shapes = {}
    with zipfile.ZipFile(path) as bundle:
        for info in bundle.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with bundle.open(info) as member:
                version = np.lib.format.read_magic(member)
                reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                          else np.lib.format.read_array_header_2_0)
                shapes[info.filename[:-4]] = reader(member)[0]
    return shapes


def _check_declared_shapes(path: Path) -> None:
    """Refuse (InputError) per-sequence and per-column arrays whose declared shapes disagree
    with `codes` before any array is read."""
    try:
        shapes = _declared_shapes(path)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise InputError(f"{path}: not a readable alignment.npz ({err})") from err
    codes = shapes.get("codes")
    if codes is None or len(codes) != 2:
        return  # reported with the arrays
    m, length = codes
    expected = {"weights": (m,), "split": (m,), "names": (m,), "columns": (length,),
                "names_offsets": (m + 1,)}
    for name, dims in expected.items():
        if name in shapes and tuple(shapes[name]) != dims:
            raise InputError(f"{path}: {name} declares shape {tuple(shapes[name])}, expected "
                             f"{dims} (codes are {tuple(codes)})")


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
    if columns.dtype.kind not in "iu" or names.dtype.kind not in "USO":
        raise InputError(f"{path}: columns must be integers and names strings")
    if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= len(alphabet)):
        bad = np.argwhere((codes < 0) | (codes >= len(alphabet)))[0]
        raise InputError(f"{path}: codes[{bad[0]}, {bad[1]}] = {codes[tuple(bad)]} is outside "
                         f"the alphabet of {len(alphabet)} letters")
    return EncodedAlignment(
        codes=codes.astype(np.uint8), weights=weights.astype(np.float32),
        split=split.astype(np.uint8), names=names, columns=columns.astype(np.int64),
        alphabet=alphabet, provenance=prov)
