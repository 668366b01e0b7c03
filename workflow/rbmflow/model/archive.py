"""The model archive (`model.h5`): the HDF5 layout of the `rbms` package, plus our metadata.

Layout, compatible with `rbms.io.load_params` / `rbms.io.load_model`:

    model_type                  "PBRBM" (string dataset)
    hyperparameters/            batch_size, gibbs_steps, learning_rate, L1, L2, seed,
                                num_hiddens, num_visibles, num_chains, ... (scalar datasets;
                                L1, L2 in rbms' convention L1 sum|theta| + L2 sum theta^2,
                                weight_l1, weight_l2 rbmflow's l1 sum|W| + (l2/2) sum W^2)
    parallel_chains             (C, L) float32: state indices of the chains at the last checkpoint
                                (attribute rbmflow_sha256: their checksum, as above)
    update_{n}/params/          weight_matrix (L, q, Nh), vbias (L, q), hbias (Nh)
    update_{n}.attrs            rbmflow_sha256: checksum of the three parameter arrays, written
                                with them and verified on every read (archives of `rbms`,
                                which lack it, load unverified)
    update_{n}/time             cumulative training seconds at update n
    update_{n}/torch_rng_state, numpy_rng_arg0..4   global RNG states (what `rbms` restores)
    update_{n}/rbmflow_rng_state  uint8 state of the training torch.Generator (resume)
    rbmflow/                    group `rbms` ignores: attrs `metadata_json` (alphabet, family,
                                method, gibbs_steps, config hash, seeds, provenance, ...) and
                                `format_version`; dataset `train_log` (CSV text so far)

`save_checkpoint` writes into a copy of the archive that replaces the original by an atomic
rename only once complete, so a kill at any moment leaves the previous archive intact.

While training runs, checkpoints go to a directory of pieces instead (`piece_path`): one file
per checkpoint, `update_{n:06d}.h5`, itself an archive of the layout above holding the group
`update_{n}` with that checkpoint's chains, metadata and log, written once, atomically (when a
longer run extends a finished archive, its first piece is a copy of that archive).
`assemble` builds the final archive from the pieces in one pass, so the bytes written per
checkpoint do not grow with the number of checkpoints.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from rbmflow.errors import InputError
from rbmflow.model.rbm import PottsRBM
from rbmflow.provenance import FORMAT_VERSION, atomic_path, json_default

MODEL_TYPE = "PBRBM"
BERNOULLI_MODEL_TYPE = "BBRBM"  # the `rbms` package's binary RBM: W (L, Nh), vbias (L,)
METADATA_GROUP = "rbmflow"
_PARAM_NAMES = ("weight_matrix", "vbias", "hbias")
_REQUIRED_HYPERPARAMETERS = ("batch_size", "gibbs_steps", "learning_rate", "L1", "L2", "seed",
                             "num_hiddens", "num_chains")
_NUMERIC_HYPERPARAMETERS = (*_REQUIRED_HYPERPARAMETERS, "num_visibles", "num_states", "updates")
_PIECE_NAME = re.compile(r"update_(\d+)\.h5")
MAX_PARAMETERS = 2**28  # elements of one parameter array read from an archive (1 GiB float32)
CHECKSUM_ATTR = "rbmflow_sha256"
MAX_COMPRESSION = 100  # declared bytes / stored bytes of a compressed dataset, at most


def checksum(arrays: dict[str, np.ndarray]) -> str:
    """Hex sha256 of named arrays: each name, dtype, shape and C-order bytes, in the given
    order (what `CHECKSUM_ATTR` holds)."""
    digest = hashlib.sha256()
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        digest.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_checkpoint(
    path: str | os.PathLike[str],
    model: PottsRBM,
    chains: Tensor,
    update: int,
    time_s: float,
    rng_state: Tensor | None,
    hyperparameters: dict[str, Any],
    metadata: dict[str, Any],
    train_log: str | None = None,
) -> None:
    """Add checkpoint `update_{update}` to the archive at `path` (created if absent), atomically.

    chains: (C, L) integer codes, stored as floats in `parallel_chains` (replacing the previous
    ones, as `rbms` does). rng_state: the training generator's state (`Generator.get_state()`).
    hyperparameters: written once, when the archive is created (must hold the keys `rbms`
    reads). metadata: JSON-serialisable, (re)written each time. train_log: CSV text of the
    training log up to this update, (re)written each time when given.
    """
    path = Path(path)
    missing = [k for k in _REQUIRED_HYPERPARAMETERS if k not in hyperparameters]
    if missing:
        raise ValueError(f"hyperparameters lack {missing}")
    with atomic_path(path) as tmp, _via_memory(tmp, path if path.exists() else None) as f:
        if "model_type" not in f:
            f["model_type"] = MODEL_TYPE
            hyper = f.create_group("hyperparameters")
            for key, value in hyperparameters.items():
                hyper[key] = value
        key = f"update_{update}"
        if key in f:
            del f[key]
        group = f.create_group(key)
        params = group.create_group("params")
        arrays = {name: tensor.detach().to("cpu", torch.float32).numpy()
                  for name, tensor in model.named_parameters().items()}
        for name, array in arrays.items():
            params[name] = array
            group[name] = params[name]  # hard link, as `rbms` writes for older readers
        group.attrs[CHECKSUM_ATTR] = checksum({name: arrays[name] for name in _PARAM_NAMES})
        group["time"] = float(time_s)
        group["torch_rng_state"] = torch.get_rng_state().numpy()
        np_state = np.random.get_state()  # noqa: NPY002 (what `rbms` restores)
        for i, part in enumerate(np_state):
            group[f"numpy_rng_arg{i}"] = part
        if rng_state is not None:
            group["rbmflow_rng_state"] = rng_state.detach().cpu().numpy().astype(np.uint8)
        group.create_group("flags")
        chain_array = chains.detach().to("cpu").numpy().astype(np.float32)
        if "parallel_chains" in f and f["parallel_chains"].shape == chain_array.shape:
            f["parallel_chains"][...] = chain_array
        else:
            if "parallel_chains" in f:
                del f["parallel_chains"]
            f["parallel_chains"] = chain_array
        f["parallel_chains"].attrs[CHECKSUM_ATTR] = checksum({"parallel_chains": chain_array})
        meta = f.require_group(METADATA_GROUP)
        meta.attrs["format_version"] = FORMAT_VERSION
        meta.attrs["metadata_json"] = json.dumps(metadata, default=json_default)
        if train_log is not None:
            if "train_log" in meta:
                del meta["train_log"]
            meta["train_log"] = train_log


def piece_path(directory: str | os.PathLike[str], update: int) -> Path:
    """The piece of checkpoint `update` in a directory of pieces: `update_{update:06d}.h5`."""
    return Path(directory) / f"update_{update:06d}.h5"


def list_pieces(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(update, path) of the pieces in `directory`, oldest first; [] if it does not exist.

    Only names of the form `update_{n}.h5` count (temporary files start with '.').
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    pieces = []
    for path in directory.iterdir():
        match = _PIECE_NAME.fullmatch(path.name)
        if match:
            pieces.append((int(match.group(1)), path))
    return sorted(pieces)


def assemble(pieces: Sequence[str | os.PathLike[str]], path: str | os.PathLike[str]) -> None:
    """Write the archive at `path`, atomically, from archives `pieces` (oldest first).

    The result is a copy of the last piece (model_type, hyperparameters, parallel_chains,
    rbmflow group, its checkpoints) plus every `update_{n}` group of the other pieces that
    it lacks, the later piece winning. Each piece is read once and the result written once.
    """
    with atomic_path(path) as tmp:
        assemble_into(pieces, tmp)


def assemble_into(pieces: Sequence[str | os.PathLike[str]], target: str | os.PathLike[str]
                  ) -> None:
    """`assemble`, written in place to `target` (a temporary file of the caller's), fsynced."""
    sources = [Path(piece) for piece in pieces]
    if not sources:
        raise ValueError("no pieces to assemble")
    with _via_memory(Path(target), sources[-1]) as f:
        for source in reversed(sources[:-1]):
            with h5py.File(source, "r") as src:
                for key in src:
                    if key.startswith("update_") and key not in f:
                        src.copy(src[key], f, name=key)


def write_ladder(path: Path, update: int, levels: Sequence[tuple[PottsRBM, Tensor]]) -> None:
    """Write a tempering ladder to `path` (not atomic: give a temporary path): attributes
    `update` and `levels`; groups `level_{k}` with the model's parameters
    and its chains (`chains`, uint8 codes when they fit)."""
    with _via_memory(path, None) as f:
        f.attrs["update"] = update
        f.attrs["levels"] = len(levels)
        for k, (model, chains) in enumerate(levels):
            group = f.create_group(f"level_{k}")
            for name, value in model.named_parameters().items():
                group[name] = value.detach().cpu().numpy()
            codes = chains.cpu().numpy()
            group["chains"] = (codes.astype(np.uint8) if codes.size == 0 or codes.max() < 256
                               else codes)


def read_ladder(path: Path, device: torch.device | str, dtype: torch.dtype
                ) -> tuple[int, list[tuple[PottsRBM, Tensor]]]:
    """(update, levels) of a ladder written by `write_ladder`."""
    with h5py.File(path, "r") as f:
        levels = []
        for k in range(int(f.attrs["levels"])):
            group = f[f"level_{k}"]
            model = PottsRBM(*(torch.as_tensor(group[name][()], dtype=dtype, device=device)
                               for name in ("weight_matrix", "vbias", "hbias")))
            chains = torch.as_tensor(group["chains"][()].astype(np.int64), device=device)
            levels.append((model, chains))
        return int(f.attrs["update"]), levels


def write_state(path: Path, attributes: dict[str, int], arrays: dict[str, Tensor]) -> None:
    """Write a small HDF5 file of `attributes` and `arrays` to `path` (not atomic: give a
    temporary path), built in memory as the archive is."""
    with _via_memory(path, None) as f:
        f.attrs.update(attributes)
        for name, value in arrays.items():
            f[name] = value.detach().cpu().numpy()


def read_state(path: Path, update: int, device: torch.device | str
               ) -> tuple[dict[str, int], dict[str, Tensor]]:
    """The attributes and arrays that `write_state` wrote to `path` with checkpoint `update`;
    OSError, KeyError or ValueError when the file is missing, unreadable or of another
    update."""
    with h5py.File(path, "r") as f:
        if int(f.attrs["update"]) != update:
            raise ValueError(f"saved at update {int(f.attrs['update'])}, not {update}")
        attributes = {key: int(value) for key, value in f.attrs.items()}
        arrays = {name: torch.as_tensor(f[name][()], device=device) for name in f}
    return attributes, arrays


@contextmanager
def _via_memory(target: Path, initial: Path | None) -> Iterator[h5py.File]:
    """An HDF5 file built in memory (from a copy of `initial`, or empty), then written to
    `target` and fsynced with plain file I/O, so that a full disk or a file-size limit is one
    OSError naming `target` rather than a failure inside the HDF5 library."""
    buffer = io.BytesIO(initial.read_bytes() if initial is not None else b"")
    with h5py.File(buffer, "a" if initial is not None else "w") as f:
        yield f
    with open(target, "wb") as handle:
        handle.write(buffer.getbuffer())
        handle.flush()
        os.fsync(handle.fileno())


def _open(path: str | os.PathLike[str]) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable model archive ({err})") from err


def _dataset(f: h5py.File, name: str, path: str | os.PathLike[str],
             max_size: int = MAX_PARAMETERS) -> h5py.Dataset:
    """The numeric dataset `name`, refused (InputError) if it is reached through an external
    link, stores its data in another file, is not numeric or holds more than `max_size`."""
    node: Any = f
    parts = name.strip("/").split("/")
    for i, part in enumerate(parts):
        if not isinstance(node, h5py.Group) or part not in node:
            raise InputError(f"{path}: no {'/'.join(parts[:i + 1])}")
        link = node.get(part, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise InputError(f"{path}: {name} is an external link to {link.filename}; "
                             "archives must be self-contained")
        node = node[part]
    if not isinstance(node, h5py.Dataset):
        raise InputError(f"{path}: {name} is not a dataset")
    if node.external:
        raise InputError(f"{path}: {name} stores its data in another file; "
                         "archives must be self-contained")
    if node.dtype.kind not in "biuf":
        raise InputError(f"{path}: {name} has dtype {node.dtype}, expected numbers")
    if node.size > max_size:
        raise InputError(f"{path}: {name} declares shape {node.shape} ({node.size} values), "
                         f"more than the limit of {max_size}")
    _check_storage(node, name, path)
    return node


def _check_storage(node: h5py.Dataset, name: str, path: str | os.PathLike[str]) -> None:
    """Refuse, before reading, a dataset whose declared size its stored bytes cannot hold: an
    uncompressed one storing less than it declares (a shape edited, data never written), or a
    compressed one declaring over MAX_COMPRESSION times what it stores."""
    declared = node.size * node.dtype.itemsize
    if declared <= 1 << 16:
        return
    stored = node.id.get_storage_size()
    plist = node.id.get_create_plist()
    compressed = any(plist.get_filter(i)[0] not in (h5py.h5z.FILTER_SHUFFLE,
                                                    h5py.h5z.FILTER_FLETCHER32)
                     for i in range(plist.get_nfilters()))
    if (not compressed and stored < declared) or (
            compressed and declared > MAX_COMPRESSION * stored + (1 << 20)):
        raise InputError(f"{path}: {name} declares shape {node.shape} ({declared} bytes) but "
                         f"the file stores {stored} bytes for it; the archive is damaged")


def _parameters(f: h5py.File, update: int, path: str | os.PathLike[str]) -> list[np.ndarray]:
    """weight_matrix (L, q, Nh), vbias (L, q), hbias (Nh) of `update_{update}`, validated:
    shapes consistent (checked on the declared shapes, before reading), checksum as written
    (when the archive has one), values finite (InputError naming the file and the array
    otherwise)."""
    nodes = [_dataset(f, f"update_{update}/params/{name}", path) for name in _PARAM_NAMES]
    w_shape, v_shape, h_shape = (node.shape for node in nodes)
    if (len(w_shape) != 3 or len(v_shape) != 2 or len(h_shape) != 1
            or v_shape != w_shape[:2] or h_shape != w_shape[2:] or 0 in w_shape):
        raise InputError(
            f"{path}: update_{update}: inconsistent parameter shapes: weight_matrix "
            f"{w_shape}, vbias {v_shape}, hbias {h_shape} (expected (L, q, Nh), (L, q), (Nh,))")
    arrays = [np.asarray(node[()]) for node in nodes]
    for name, array in zip(_PARAM_NAMES, arrays, strict=True):
        if not np.isfinite(array).all():
            raise InputError(f"{path}: update_{update}/params/{name} holds NaN or inf")
    expected = f[f"update_{update}"].attrs.get(CHECKSUM_ATTR)
    if expected is not None:
        expected = expected.decode() if isinstance(expected, bytes) else str(expected)
        if checksum(dict(zip(_PARAM_NAMES, arrays, strict=True))) != expected:
            raise InputError(f"{path}: update_{update}: the parameters do not match the "
                             "checksum written with them; the archive is damaged")
    return arrays


def _complete_updates(f: h5py.File) -> list[int]:
    """Sorted numbers of the `update_{n}` groups; InputError if one lacks a parameter array
    (a damaged archive: never silently fall back on an older checkpoint)."""
    updates = []
    for key in f:
        if not key.startswith("update_"):
            continue
        try:
            n = int(key[len("update_"):])
        except ValueError:
            continue
        if not isinstance(f.get(key, getlink=True), h5py.HardLink | h5py.SoftLink):
            raise InputError(f"{f.filename}: {key} is an external link; archives must be "
                             "self-contained")
        group = f.get(key)
        lacking = [name for name in _PARAM_NAMES
                   if not isinstance(group, h5py.Group) or "params" not in group
                   or not isinstance(group["params"], h5py.Group) or name not in group["params"]]
        if lacking:
            raise InputError(f"{f.filename}: checkpoint {key} is incomplete (no params/"
                             f"{lacking[0]}); the archive is damaged or was cut short: train "
                             "again rather than fall back on an older checkpoint")
        updates.append(n)
    return sorted(updates)


def list_updates(path: str | os.PathLike[str]) -> list[int]:
    """Sorted update numbers of the complete checkpoints in the archive."""
    with _open(path) as f:
        return _complete_updates(f)


def load_rbm(path: str | os.PathLike[str], update: int | None = None,
             device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> PottsRBM:
    """The model at checkpoint `update` (None: the last one)."""
    with _open(path) as f:
        if "model_type" in f:
            model_type = f["model_type"][()]
            model_type = model_type.decode() if isinstance(model_type, bytes) else str(model_type)
            if model_type == BERNOULLI_MODEL_TYPE:
                return _load_bernoulli(f, path, update).to(device=device, dtype=dtype)
            if model_type != MODEL_TYPE:
                raise InputError(f"{path}: model_type {model_type!r}, expected {MODEL_TYPE!r}")
        updates = _complete_updates(f)
        if not updates:
            raise InputError(f"{path}: no complete checkpoint")
        if update is None:
            update = updates[-1]
        elif update not in updates:
            raise InputError(f"{path}: no checkpoint update_{update} (have {updates})")
        tensors = [torch.from_numpy(array).to(device=device, dtype=dtype)
                   for array in _parameters(f, update, path)]
    return PottsRBM(*tensors)


def bernoulli_to_potts(weight_matrix: Tensor, vbias: Tensor, hbias: Tensor) -> PottsRBM:
    """A Bernoulli-Bernoulli RBM (W (L, Nh), vbias (L,), hbias (Nh,); E = -v.vbias - h.hbias
    - v W h) as the q = 2 Potts RBM with the same p(v) and the same log Z (state 0 has zero
    parameters), in the zero-sum gauge (which shifts log Z by -sum_i vbias_i / 2)."""
    zeros = torch.zeros_like(weight_matrix)
    model = PottsRBM(torch.stack([zeros, weight_matrix], 1).clone(),
                     torch.stack([torch.zeros_like(vbias), vbias], 1).clone(), hbias.clone())
    model.apply_zero_sum_gauge_()
    return model


def potts_to_bernoulli(model: PottsRBM) -> tuple[dict[str, Tensor], float]:
    """A q = 2 Potts RBM as the `rbms` Bernoulli-Bernoulli parameters with the same p(v):
    W = W[:, 1] - W[:, 0], vbias = vbias[:, 1] - vbias[:, 0], hbias = hbias + sum_i W[i, 0];
    and the energy offset sum_i vbias[i, 0] (log Z_potts = log Z_bernoulli + offset)."""
    if model.num_states != 2:
        raise ValueError(f"a Bernoulli RBM needs q = 2, the model has q = {model.num_states}")
    w, vb = model.weight_matrix, model.vbias
    params = {"weight_matrix": w[:, 1] - w[:, 0], "vbias": vb[:, 1] - vb[:, 0],
              "hbias": model.hbias + w[:, 0].sum(0)}
    return params, float(vb[:, 0].sum())


def _load_bernoulli(f: h5py.File, path: str | os.PathLike[str], update: int | None
                    ) -> PottsRBM:
    updates = _complete_updates(f)
    if not updates or (update is not None and update not in updates):
        raise InputError(f"{path}: no checkpoint update_{update} (have {updates})")
    update = updates[-1] if update is None else update
    w, vb, hb = (np.asarray(_dataset(f, f"update_{update}/params/{name}", path)[()],
                            dtype=np.float64) for name in _PARAM_NAMES)
    if w.ndim != 2 or vb.shape != w.shape[:1] or hb.shape != w.shape[1:]:
        raise InputError(f"{path}: update_{update}: inconsistent BBRBM shapes: weight_matrix "
                         f"{w.shape}, vbias {vb.shape}, hbias {hb.shape}")
    if not all(np.isfinite(a).all() for a in (w, vb, hb)):
        raise InputError(f"{path}: update_{update} holds NaN or inf")
    return bernoulli_to_potts(*(torch.from_numpy(a) for a in (w, vb, hb)))


def export_bernoulli(path: str | os.PathLike[str], out: str | os.PathLike[str]) -> None:
    """Write the q = 2 archive at `path` as an `rbms` Bernoulli-Bernoulli archive at `out`
    (model_type BBRBM, every checkpoint converted by `potts_to_bernoulli`, the chains,
    hyperparameters and our metadata group copied), atomically."""
    with _open(path) as f, atomic_path(out) as tmp, h5py.File(tmp, "w") as g:
        for update in _complete_updates(f):
            model = PottsRBM(*(torch.from_numpy(a).double() for a in _parameters(f, update,
                                                                                 path)))
            params, _ = potts_to_bernoulli(model)
            group = g.create_group(f"update_{update}")
            for name, tensor in params.items():
                group.create_dataset(f"params/{name}", data=tensor.float().numpy())
                group[name] = group[f"params/{name}"]
            for key in ("time", "torch_rng_state", *(f"numpy_rng_arg{i}" for i in range(5))):
                if key in f[f"update_{update}"]:
                    f.copy(f[f"update_{update}/{key}"], group, key)
            group.create_group("flags")
        for key in ("hyperparameters", "parallel_chains", METADATA_GROUP):
            if key in f:
                f.copy(f[key], g, key)
        g["model_type"] = BERNOULLI_MODEL_TYPE


def load_chains(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> Tensor:
    """The persistent chains stored with the last checkpoint, int64 codes (C, L)."""
    with _open(path) as f:
        if "parallel_chains" not in f:
            raise InputError(f"{path}: no parallel_chains")
        node = _dataset(f, "parallel_chains", path)
        chains = np.asarray(node[()])
        expected = node.attrs.get(CHECKSUM_ATTR)
        if expected is not None and checksum({"parallel_chains": chains}) != (
                expected.decode() if isinstance(expected, bytes) else str(expected)):
            raise InputError(f"{path}: parallel_chains do not match the checksum written with "
                             "them; the archive is damaged")
    if chains.ndim != 2 or not np.isfinite(chains).all() or (chains.size and chains.min() < 0):
        raise InputError(f"{path}: parallel_chains must be a 2-D array of state indices, got "
                         f"shape {chains.shape}")
    return torch.from_numpy(np.rint(chains).astype(np.int64)).to(device)


def load_checkpoint_state(path: str | os.PathLike[str], update: int) -> dict[str, Any]:
    """What resuming needs at `update`: time_s, rng_state (uint8 tensor or None), train_log."""
    with _open(path) as f:
        group = f[f"update_{update}"]
        time_s = float(np.asarray(group["time"][()])) if "time" in group else 0.0
        rng_state = (torch.from_numpy(np.asarray(group["rbmflow_rng_state"][()]).copy())
                     if "rbmflow_rng_state" in group else None)
        train_log = None
        if METADATA_GROUP in f and "train_log" in f[METADATA_GROUP]:
            raw = f[METADATA_GROUP]["train_log"][()]
            train_log = raw.decode() if isinstance(raw, bytes) else str(raw)
    return {"time_s": time_s, "rng_state": rng_state, "train_log": train_log}


def _scalar(value: Any) -> Any:
    value = value.decode() if isinstance(value, bytes) else value
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode()
    return value


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Hyperparameters and our metadata, flat, plus `hyperparameters` and `model_type` keys.

    Always present: `method` (archives of `rbms` are PCD), `model_type`, `updates` (the
    complete checkpoints), `alphabet` (None when the archive does not say), and, when there is
    a complete checkpoint, `num_visibles`, `num_states`, `num_hiddens` read from the shape of
    its weight matrix (whatever `hyperparameters/` says). Every other hyperparameter is
    optional: absent from the result when absent from the archive.
    """
    with _open(path) as f:
        hyper: dict[str, Any] = {}
        if "hyperparameters" in f:
            group = f["hyperparameters"]
            for key in group:
                if key in _NUMERIC_HYPERPARAMETERS:
                    dataset = _dataset(f, f"hyperparameters/{key}", path, max_size=1)
                elif isinstance(group.get(key, getlink=True), h5py.ExternalLink):
                    raise InputError(f"{path}: hyperparameters/{key} is an external link")
                elif isinstance(group.get(key), h5py.Dataset) and group[key].size <= 1024:
                    dataset = group[key]
                else:
                    continue
                hyper[key] = _scalar(dataset[()])
        meta: dict[str, Any] = {}
        if METADATA_GROUP in f and "metadata_json" in f[METADATA_GROUP].attrs:
            try:
                meta = json.loads(_scalar(f[METADATA_GROUP].attrs["metadata_json"]))
            except (ValueError, TypeError, UnicodeDecodeError) as err:
                raise InputError(f"{path}: {METADATA_GROUP}/metadata_json is not valid JSON "
                                 f"({err})") from err
            if not isinstance(meta, dict):
                raise InputError(f"{path}: {METADATA_GROUP}/metadata_json is not a JSON object")
        model_type = _scalar(f["model_type"][()]) if "model_type" in f else None
        updates = _complete_updates(f)
        shape = (_dataset(f, f"update_{updates[-1]}/params/weight_matrix", path).shape
                 if updates else None)
    out: dict[str, Any] = dict(hyper)
    out.update(meta)
    out["hyperparameters"] = hyper
    out["model_type"] = model_type
    out["updates"] = updates
    if shape is not None and len(shape) == 3:
        out["num_visibles"], out["num_states"], out["num_hiddens"] = (int(n) for n in shape)
    out.setdefault("method", "pcd")
    out.setdefault("alphabet", None)
    if "gibbs_steps" not in out and "gibbs_steps" in hyper:
        out["gibbs_steps"] = hyper["gibbs_steps"]
    return out
