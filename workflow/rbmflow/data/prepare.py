"""The prepare stage: from an alignment file to the encoded, weighted, split `alignment.npz`.

Steps, in order (conventions of parsing and encoding: `rbmflow.data.alignment`):

1. read the alignment (Stockholm, FASTA or A2M, gzip allowed), remove insert columns and
   encode to the gap-first alphabet; ambiguous letters become gaps (or, with
   `ambiguous="drop"`, remove their sequences);
2. drop the sequences whose fraction of gap symbols exceeds `max_gap_fraction`;
3. split, seeded, aiming at round(test_fraction * M) test sequences (0 < that number < M
   whenever test_fraction > 0): `split="random"` (default) draws them at random;
   `split="cluster"` sends whole connected components of the identity >= `identity` graph
   to one side, so no test sequence has a train neighbour at that identity. For either,
   the distribution of the test sequences' maximum identity to train is recorded;
4. compute the sequence weights within each part separately (`rbmflow.data.weights`), so that no
   test sequence lowers the weight of a train sequence or the reverse;
5. write `alignment.npz` (`rbmflow.data.dataset`) and `summary.json`, both atomically; if the
   second write fails the first is removed, so a failed run leaves neither.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rbmflow import ALPHABET
from rbmflow.data.alignment import AMBIGUOUS_RULES, FORMATS, encode_alignment, read_alignment
from rbmflow.data.dataset import TEST, TRAIN, EncodedAlignment, save_encoded
from rbmflow.data.genotypes import (
    GENOTYPE_FORMATS,
    GenotypeSettings,
    genotype_format,
    npz_arrays,
    read_genotypes,
    read_populations,
    row_populations,
)
from rbmflow.data.weights import identity_components, max_identity, sequence_weights
from rbmflow.errors import InputError
from rbmflow.provenance import atomic_paths, provenance, sha256_file, write_json

log = logging.getLogger(__name__)

SPLITS = ("random", "cluster")
IDENTITY_QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


@dataclass(frozen=True)
class PrepareSettings:
    """The stage's options (config section `prepare:`)."""

    identity: float = 0.8
    max_gap_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0
    ambiguous: str = "gap"
    split: str = "random"
    format: str | None = None  # None: from source.json, else sniffed from the content

    def check(self) -> None:
        if not 0.0 < self.identity <= 1.0:
            raise InputError(f"identity must lie in (0, 1], got {self.identity}")
        if not 0.0 <= self.max_gap_fraction <= 1.0:
            raise InputError(f"max_gap_fraction must lie in [0, 1], got {self.max_gap_fraction}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise InputError(f"test_fraction must lie in [0, 1), got {self.test_fraction}")
        if self.seed < 0:
            raise InputError(f"seed must be >= 0, got {self.seed}")
        if self.ambiguous not in AMBIGUOUS_RULES:
            raise InputError(f"ambiguous must be one of {', '.join(AMBIGUOUS_RULES)}, "
                             f"got {self.ambiguous!r}")
        if self.split not in SPLITS:
            raise InputError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.format is not None and self.format not in FORMATS:
            raise InputError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")


@dataclass(frozen=True)
class Source:
    """Where the alignment is: the file, its declared format and, from fetch, its record."""

    alignment: Path
    format: str | None
    record: Path | None  # source.json, when given one


def resolve_source(source: str | Path) -> Source:
    """Accept a fetch record (`source.json`: alignment_path, format, sha256) or an alignment file.

    A relative `alignment_path` is looked up from the working directory, then beside
    source.json. The file's sha256 must equal the one fetch recorded.
    """
    source = Path(source)
    if not source.is_file():
        raise InputError(f"{source}: input not found")
    if source.suffix.lower() != ".json":
        return Source(alignment=source, format=None, record=None)
    try:
        record = json.loads(source.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{source}: not a valid source.json ({err})") from err
    if not isinstance(record, dict) or not record.get("alignment_path"):
        raise InputError(f"{source}: no 'alignment_path' in this source record")
    declared = Path(record["alignment_path"])
    candidates = [declared]
    if not declared.is_absolute():
        candidates += [source.parent / declared, source.parent / declared.name]
    if record.get("resolved_path"):
        candidates.append(Path(record["resolved_path"]))
    alignment = next((path for path in candidates if path.is_file()), None)
    if alignment is None:
        raise InputError(f"{source}: alignment_path {declared} does not exist; rerun fetch")
    expected = record.get("sha256")
    if expected and sha256_file(alignment) != expected:
        raise InputError(f"{source}: {alignment} has changed since it was fetched (sha256 "
                         f"differs from the record); rerun fetch")
    fmt = record.get("format")
    if fmt is not None and fmt not in (*FORMATS, *GENOTYPE_FORMATS):
        raise InputError(f"{source}: unknown format {fmt!r} (expected "
                         f"{', '.join((*FORMATS, *GENOTYPE_FORMATS))})")
    return Source(alignment=alignment, format=fmt, record=source)


def random_split(num_sequences: int, test_fraction: float, seed: int) -> np.ndarray:
    """uint8 (M,) with TEST for round(test_fraction * M) sequences drawn at random, else TRAIN.

    With test_fraction > 0 both parts get at least one sequence (M >= 2 is then required).
    numpy's PCG64 generator seeded with `seed`, so the split is the same on every machine.
    """
    split = np.full(num_sequences, TRAIN, dtype=np.uint8)
    if test_fraction <= 0.0:
        return split
    if num_sequences < 2:
        raise ValueError(f"cannot split {num_sequences} sequence(s) into train and test")
    num_test = int(np.floor(test_fraction * num_sequences + 0.5))
    num_test = min(max(num_test, 1), num_sequences - 1)
    order = np.random.default_rng(seed).permutation(num_sequences)
    split[order[:num_test]] = TEST
    return split


def cluster_split(components: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """uint8 (M,) split in which every component (labels (M,)) lies wholly on one side.

    Components are visited in a seeded random order and each joins the test part if it
    does not take the test part past round(test_fraction * M); if none fits, the smallest
    one is the test part. Raises ValueError when there is a single component.
    """
    num_sequences = components.shape[0]
    split = np.full(num_sequences, TRAIN, dtype=np.uint8)
    if test_fraction <= 0.0:
        return split
    labels, inverse, sizes = np.unique(components, return_inverse=True, return_counts=True)
    if labels.size < 2:
        raise ValueError(f"all {num_sequences} sequences form one cluster; no cluster split")
    target = min(max(int(np.floor(test_fraction * num_sequences + 0.5)), 1), num_sequences - 1)
    chosen = np.zeros(labels.size, dtype=bool)
    count = 0
    for label in np.random.default_rng(seed).permutation(labels.size):
        if count + sizes[label] <= target:
            chosen[label] = True
            count += sizes[label]
            if count == target:
                break
    if count == 0:
        chosen[np.argmin(sizes)] = True
    split[chosen[inverse]] = TEST
    return split


def identity_distribution(identity: np.ndarray, threshold: float) -> dict[str, Any]:
    """Summary of the test sequences' maximum identity to train (values in [0, 1])."""
    finite = identity[np.isfinite(identity)]
    if finite.size == 0:
        return {"n": 0}
    edges = np.linspace(0.0, 1.0, 11)
    counts, _ = np.histogram(finite, bins=edges)
    return {
        "n": int(finite.size),
        "mean": float(finite.mean()),
        "quantiles": {f"{q:g}": float(np.quantile(finite, q)) for q in IDENTITY_QUANTILES},
        "fraction_at_or_above_threshold": float((finite >= threshold - 1e-12).mean()),
        "threshold": threshold,
        "histogram": {"edges": [round(float(e), 2) for e in edges],
                      "counts": counts.tolist()},
    }


def weights_within_parts(codes: np.ndarray, split: np.ndarray, identity: float,
                         device: torch.device | str = "cpu") -> np.ndarray:
    """float64 (M,): the weights of each part computed on that part alone."""
    weights = np.zeros(codes.shape[0], dtype=np.float64)
    for part in (TRAIN, TEST):
        members = np.flatnonzero(split == part)
        if members.size:
            weights[members] = sequence_weights(codes[members], identity, len(ALPHABET),
                                                device=device)
    return weights


def sequence_filter(encoded: Any, settings: PrepareSettings, path: Path
                    ) -> tuple[np.ndarray, dict[str, int]]:
    """(bool mask of the sequences kept, counts removed by each filter): ambiguous letters
    under `ambiguous: drop`, then gap fractions above `max_gap_fraction`."""
    num_input = encoded.codes.shape[0]
    keep = np.ones(num_input, dtype=bool)
    if settings.ambiguous == "drop":
        keep &= encoded.ambiguous == 0
    removed = {"ambiguous_letters": int(num_input - keep.sum())}
    gap_fraction = (encoded.codes == 0).mean(axis=1)
    too_gapped = keep & (gap_fraction > settings.max_gap_fraction)
    removed["too_many_gaps"] = int(too_gapped.sum())
    keep &= ~too_gapped
    if not keep.any():
        raise InputError(
            f"{path}: all {num_input} sequences were filtered away ({removed['too_many_gaps']} "
            f"with a gap fraction above max_gap_fraction = {settings.max_gap_fraction:g}, "
            f"{removed['ambiguous_letters']} with ambiguous letters under ambiguous = drop)")
    return keep, removed


def split_sequences(codes: np.ndarray, settings: PrepareSettings, path: Path,
                    device: torch.device) -> tuple[np.ndarray, np.ndarray | None]:
    """(split uint8 (M,), identity components or None): `cluster` or `random` split."""
    try:
        if settings.split == "cluster" and settings.test_fraction > 0:
            components = identity_components(codes, settings.identity, len(ALPHABET),
                                             device=device)
            return cluster_split(components, settings.test_fraction, settings.seed), components
        return random_split(codes.shape[0], settings.test_fraction, settings.seed), None
    except ValueError as err:
        raise InputError(f"{path}: {err} (test_fraction {settings.test_fraction:g})") from err


def _split_summary(settings: PrepareSettings, components: np.ndarray | None,
                   test_identity: np.ndarray) -> dict[str, Any]:
    """summary.json's `split`: the method and seed, the clusters (split="cluster") and the test
    sequences' maximum identity to train."""
    return {"method": settings.split, "test_fraction": settings.test_fraction,
            "seed": settings.seed, "generator": "numpy PCG64 permutation",
            **({} if components is None else {
                "clusters": int(np.unique(components).size),
                "largest_cluster": int(np.unique(components, return_counts=True)[1].max())}),
            "test_max_identity_to_train": identity_distribution(test_identity,
                                                                settings.identity)}


def _alignment_summary(encoded: Any, raw_format: str, removed: dict[str, int],
                       split: np.ndarray, weights: np.ndarray, settings: PrepareSettings,
                       split_summary: dict[str, Any], device: torch.device,
                       timing_s: dict[str, float], prov: dict[str, Any]) -> dict[str, Any]:
    """summary.json of an alignment: sizes before and after the filters (M, L, M_eff of
    each part), what was removed and why, the weights, the split, the times in seconds."""
    num_input, length = encoded.codes.shape
    parts = {name: split == part for name, part in (("train", TRAIN), ("test", TEST))}
    return {
        "input": {"path": prov["inputs"]["alignment"]["path"], "format": raw_format,
                  "sha256": prov["inputs"]["alignment"]["sha256"],
                  "sequences": num_input, "columns": encoded.input_columns},
        "M": int(split.size),
        "L": length,
        "q": len(ALPHABET),
        "alphabet": ALPHABET,
        "M_eff": float(weights.sum()),
        "M_train": int(parts["train"].sum()),
        "M_test": int(parts["test"].sum()),
        "M_eff_train": float(weights[parts["train"]].sum()),
        "M_eff_test": float(weights[parts["test"]].sum()),
        "removed_sequences": {"total": num_input - int(split.size), **removed},
        "filters": {"max_gap_fraction": settings.max_gap_fraction,
                    "ambiguous": settings.ambiguous},
        "removed_columns": {"insert": encoded.insert_columns},
        "ambiguous_letters": {"rule": settings.ambiguous,
                              "residues": int(encoded.ambiguous.sum()),
                              "sequences": int((encoded.ambiguous > 0).sum())},
        "weights": {"identity_threshold": settings.identity, "gaps_counted": True,
                    "computed": "within each split part" if settings.test_fraction > 0
                    else "over all sequences",
                    "device": str(device)},
        "split": split_summary,
        "timing_s": timing_s,
        "provenance": prov,
    }


def run_stage(
    source: str | Path,
    out: str | Path,
    summary_path: str | Path,
    settings: PrepareSettings,
    device: torch.device | str = "cpu",
    genotypes: GenotypeSettings | None = None,
) -> dict[str, Any]:
    """Run the stage; returns the summary written to `summary_path`.

    A VCF or `.hapt` source is a genotype family (`prepare_genotypes`, with `genotypes`)."""
    settings.check()
    device = torch.device(device)
    started = time.perf_counter()
    src = resolve_source(source)
    if genotype_format(src.alignment) is not None:
        return prepare_genotypes(src, out, summary_path, settings, genotypes or GenotypeSettings())
    raw = read_alignment(src.alignment, settings.format or src.format)
    encoded = encode_alignment(raw, settings.ambiguous)
    path = src.alignment
    log.info("%s: %d sequences x %d match columns (%s)", path, *encoded.codes.shape, raw.format)

    keep, removed = sequence_filter(encoded, settings, path)
    codes = encoded.codes[keep]
    filtered = time.perf_counter()
    split, components = split_sequences(codes, settings, path, device)
    test_identity = max_identity(codes[split == TEST], codes[split == TRAIN], len(ALPHABET),
                                 device=device)
    parsed = time.perf_counter()
    weights = weights_within_parts(codes, split, settings.identity, device)
    weighted = time.perf_counter()
    log.info("weights on %s: %.1f s, M_eff = %.1f", device, weighted - parsed, weights.sum())

    inputs: dict[str, str | Path] = {"alignment": path}
    if src.record is not None:
        inputs["source"] = src.record
    prov = provenance("prepare", inputs=inputs, settings={**asdict(settings),
                      "format_used": raw.format}, seed=settings.seed)
    timing_s = {"read_encode_filter": round(filtered - started, 3),
                "split": round(parsed - filtered, 3), "weights": round(weighted - parsed, 3)}
    summary = _alignment_summary(encoded, raw.format, removed, split, weights, settings,
                                 _split_summary(settings, components, test_identity), device,
                                 timing_s, prov)
    data = EncodedAlignment(codes=codes, weights=weights.astype(np.float32), split=split,
                            names=encoded.names[keep], columns=encoded.columns,
                            alphabet=ALPHABET, provenance={**prov, "summary": {
                                key: summary[key] for key in
                                ("M", "L", "M_eff", "M_train", "M_test", "M_eff_train",
                                 "M_eff_test", "split")}})
    with atomic_paths(out, summary_path) as (out_tmp, summary_tmp):
        save_encoded(out_tmp, data)
        write_json(summary_tmp, summary)
    return summary


def individual_split(individuals: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """uint8 (M,): `random_split` over the distinct individuals, each row on its
    individual's side (the two haplotypes of a person are never split apart)."""
    unique, inverse = np.unique(individuals, return_inverse=True)
    try:
        return random_split(unique.size, test_fraction, seed)[inverse]
    except ValueError as err:
        raise InputError(f"{err} (individuals)") from err


def prepare_genotypes(src: Source, out: str | Path, summary_path: str | Path,
                      settings: PrepareSettings, genotypes: GenotypeSettings) -> dict[str, Any]:
    """The stage for a genotype family: rows of haplotypes or allele counts
    (`rbmflow.data.genotypes`), split by individual, every weight 1 (haplotypes of related
    people are data, not redundancy to discount), written with the SNPs' CHROM/POS/ID/REF/ALT.
    """
    data = read_genotypes(src.alignment, genotypes)
    inputs: dict[str, str | Path] = {"alignment": src.alignment}
    if src.record is not None:
        inputs["source"] = src.record
    populations = None
    if genotypes.populations is not None:
        inputs["populations"] = genotypes.populations
        populations = row_populations(data.individuals, read_populations(genotypes.populations))
    split = individual_split(data.individuals, settings.test_fraction, settings.seed)
    weights = np.ones(data.codes.shape[0])
    prov = provenance("prepare", inputs=inputs, settings={**asdict(settings), **asdict(
        genotypes), "format_used": genotype_format(src.alignment)}, seed=settings.seed)
    parts = {name: split == part for name, part in (("train", TRAIN), ("test", TEST))}
    labelled = None
    if populations is not None:
        names, counts = np.unique(populations[populations != ""], return_counts=True)
        labelled = {"rows_per_population": dict(zip(names.tolist(), counts.tolist(),
                                                    strict=True)),
                    "unlabelled_rows": int((populations == "").sum())}
    summary: dict[str, Any] = {
        "input": {"path": str(src.alignment), "format": genotype_format(src.alignment),
                  "sha256": prov["inputs"]["alignment"]["sha256"],
                  "individuals": int(np.unique(data.individuals).size),
                  "records": data.counts["records"]},
        "M": int(data.codes.shape[0]), "L": int(data.codes.shape[1]),
        "q": len(data.alphabet), "alphabet": data.alphabet,
        "M_eff": float(weights.sum()),
        "M_train": int(parts["train"].sum()), "M_test": int(parts["test"].sum()),
        "M_eff_train": float(parts["train"].sum()), "M_eff_test": float(parts["test"].sum()),
        "genotypes": {"encoding": data.encoding, "phased_input": data.phased_input,
                      **data.counts},
        "populations": labelled,
        "weights": {"scheme": "uniform (every row weight 1)"},
        "split": {"method": "random", "unit": "individual",
                  "test_fraction": settings.test_fraction, "seed": settings.seed,
                  "generator": "numpy PCG64 permutation"},
        "provenance": prov,
    }
    encoded = EncodedAlignment(
        codes=data.codes, weights=weights.astype(np.float32), split=split, names=data.names,
        columns=data.columns, alphabet=data.alphabet, provenance={**prov, "summary": {
            key: summary[key] for key in ("M", "L", "M_eff", "M_train", "M_test",
                                          "M_eff_train", "M_eff_test", "split")}})
    with atomic_paths(out, summary_path) as (out_tmp, summary_tmp):
        save_encoded(out_tmp, encoded, extra=npz_arrays(data, populations))
        write_json(summary_tmp, summary)
    return summary
