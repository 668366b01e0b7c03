"""Genotype families: biallelic SNPs from a VCF (or a `.hapt` 0/1 matrix) as encoded rows.

Encodings (the model's alphabet):

- `haplotypes` (alphabet "01", q = 2): each diploid individual gives two rows, its first and
  second haplotype (`0|1` -> row A has 0, row B has 1); needs phased calls. Rows are named
  `{sample}_A` and `{sample}_B`.
- `counts` (alphabet "012", q = 3): one row per individual, the number of ALT alleles.
- `auto` (default): `haplotypes` when every heterozygous call is phased, else `counts`.

Records kept: biallelic SNPs only (REF and ALT one base of ACGTN each). Multi-allelic sites,
indels and other records (symbolic or missing ALT) are dropped and counted by kind.

Missing calls (`.` in a genotype): SNPs whose fraction of missing allele calls exceeds
`max_missing` are dropped first; then, with `missing: impute` (default), each remaining
missing call gets the SNP's major allele (for counts: the major homozygote; a half-missing
unphased call counts as missing), and with `missing: drop`, each individual with a
remaining missing call is dropped.

A `.hapt` file has one haplotype per line: two label columns (a label, then the haplotype's
name), then one 0/1 column per SNP, whitespace-separated. Its SNPs have no positions: they
are numbered 1..L on a chromosome named `hapt`, with REF `N` and the symbolic ALT `<ALT>`.
Haplotype names ending in `_A`/`_B` (or `_1`/`_2`) share an individual.

Populations table: tab-separated, a header line, then `sample<TAB>population` (more columns
are ignored); rows are matched by individual name.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from rbmflow import __version__
from rbmflow.errors import InputError
from rbmflow.provenance import atomic_path, now_utc

log = logging.getLogger(__name__)

ENCODINGS = ("auto", "haplotypes", "counts")
MISSING_POLICIES = ("impute", "drop")
GENOTYPE_FORMATS = ("vcf", "hapt")
HAPLOTYPE_ALPHABET, COUNT_ALPHABET = "01", "012"
HAPT_CHROM = "hapt"
_BASES = frozenset("ACGTN")
_SUFFIXES = {".vcf": "vcf", ".bcf": "vcf", ".hapt": "hapt"}
_HAPLOTYPE_SUFFIX = re.compile(r"[_.-](?:[AB12])$")
SITE_ARRAYS = ("site_chrom", "site_pos", "site_id", "site_ref", "site_alt")


def genotype_format(path: str | os.PathLike[str]) -> str | None:
    """'vcf' or 'hapt' from the file name (a trailing .gz ignored), else None."""
    name = Path(path).name.lower().removesuffix(".gz")
    return _SUFFIXES.get(Path(name).suffix)


@dataclass(frozen=True)
class GenotypeSettings:
    """How genotype calls become rows (config: families.{name}.encoding/missing/max_missing)."""

    encoding: str = "auto"
    missing: str = "impute"
    max_missing: float = 0.1
    populations: str | None = None

    def check(self) -> None:
        if self.encoding not in ENCODINGS:
            raise InputError(f"encoding must be one of {', '.join(ENCODINGS)}, "
                             f"got {self.encoding!r}")
        if self.missing not in MISSING_POLICIES:
            raise InputError(f"missing must be one of {', '.join(MISSING_POLICIES)}, "
                             f"got {self.missing!r}")
        if not 0.0 <= self.max_missing <= 1.0:
            raise InputError(f"max_missing must lie in [0, 1], got {self.max_missing}")


@dataclass
class Sites:
    """The kept SNPs, in input order: chrom (str), pos (int64, 1-based), ids, ref, alt (str)."""

    chrom: np.ndarray
    pos: np.ndarray
    ids: np.ndarray
    ref: np.ndarray
    alt: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        return dict(zip(SITE_ARRAYS, (self.chrom.astype(str), self.pos.astype(np.int64),
                                      self.ids.astype(str), self.ref.astype(str),
                                      self.alt.astype(str)), strict=True))


@dataclass
class Genotypes:
    """Encoded genotype rows.

    codes uint8 (M, L) in the alphabet; names (M,) row names; individuals (M,) the individual
    of each row; columns int64 (L,) indices of the kept SNPs among the input's records.
    """

    codes: np.ndarray
    names: np.ndarray
    individuals: np.ndarray
    columns: np.ndarray
    sites: Sites
    alphabet: str
    phased_input: bool
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def encoding(self) -> str:
        return "haplotypes" if self.alphabet == HAPLOTYPE_ALPHABET else "counts"


# -- VCF ------------------------------------------------------------------------------------


def _site_kind(ref: str, alts: list[str]) -> str:
    if len(alts) > 1:
        return "multiallelic"
    if not alts or alts[0] in (".", "*") or alts[0].startswith("<"):
        return "other"
    if len(ref) != 1 or len(alts[0]) != 1:
        return "indel"
    return "snp" if ref.upper() in _BASES and alts[0].upper() in _BASES else "other"


def _read_vcf_records(path: Path
                      ) -> tuple[list[str], np.ndarray, np.ndarray, list[tuple], dict[str, int]]:
    """Samples, alleles int8 (SNPs, N, 2) with -1 missing, phased flags (SNPs, N), the kept
    SNP records (index, chrom, pos, id, ref, alt) and the dropped records by kind."""
    import cyvcf2

    try:
        reader = cyvcf2.VCF(str(path), lazy=True)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable VCF ({err})") from err
    samples = list(reader.samples)
    if not samples:
        raise InputError(f"{path}: the VCF has no sample columns (no genotypes)")
    dropped = {"multiallelic": 0, "indel": 0, "other": 0}
    alleles, phased, sites = [], [], []
    try:
        for index, record in enumerate(reader):
            kind = _site_kind(record.REF, list(record.ALT))
            if kind != "snp":
                dropped[kind] += 1
                continue
            calls = record.genotype.array() if record.genotype is not None else None
            if calls is None or calls.shape[1] != 3 or (calls[:, :2] == -2).any():
                raise InputError(f"{path}: record {record.CHROM}:{record.POS} has no diploid "
                                 "GT call for every sample (two alleles per sample needed)")
            alleles.append(np.where(calls[:, :2] < 0, -1, calls[:, :2]).astype(np.int8))
            phased.append(calls[:, 2].astype(bool))
            sites.append((index, record.CHROM, record.POS, record.ID or ".", record.REF,
                          record.ALT[0]))
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: the VCF is malformed ({err})") from err
    finally:
        reader.close()
    if not sites:
        raise InputError(f"{path}: no biallelic SNP among the records ({dropped})")
    return samples, np.stack(alleles), np.stack(phased), sites, dropped


def read_vcf(path: str | os.PathLike[str], settings: GenotypeSettings) -> Genotypes:
    """Read a VCF/VCF.gz/BCF into rows per `settings` (see the module docstring)."""
    path = Path(path)
    samples, alleles, phased, sites, dropped = _read_vcf_records(path)
    alleles = alleles.transpose(1, 0, 2)  # (N, L, 2)
    phased = phased.T
    heterozygous = (alleles[..., 0] != alleles[..., 1]) & (alleles >= 0).all(-1)
    unphased = heterozygous & ~phased
    all_phased = not unphased.any()
    encoding = settings.encoding
    if encoding == "auto":
        encoding = "haplotypes" if all_phased else "counts"
    if encoding == "haplotypes" and not all_phased:
        n, snp = np.argwhere(unphased)[0]
        raise InputError(f"{path}: encoding haplotypes needs phased calls, but sample "
                         f"{samples[n]} at {sites[snp][1]}:{sites[snp][2]} is unphased (0/1); "
                         "use encoding: counts or auto")
    site_table = Sites(*(np.array([s[k] for s in sites]) for k in range(1, 6)))
    columns = np.array([s[0] for s in sites], dtype=np.int64)
    return _encode(alleles, np.array(samples), site_table, columns, encoding, settings,
                   all_phased, {"records": int(columns.size + sum(dropped.values())),
                                "dropped_records": dropped}, path)


def _encode(alleles: np.ndarray, samples: np.ndarray, sites: Sites, columns: np.ndarray,
            encoding: str, settings: GenotypeSettings, phased_input: bool,
            counts: dict[str, Any], path: Path) -> Genotypes:
    """alleles int8 (N, L, 2), -1 missing -> Genotypes after the missing-call policy."""
    missing = alleles < 0
    fraction = missing.mean(axis=(0, 2))
    keep = fraction <= settings.max_missing + 1e-12
    counts["dropped_snps_missing"] = int((~keep).sum())
    if not keep.any():
        raise InputError(f"{path}: every SNP has more than max_missing = "
                         f"{settings.max_missing:g} of its calls missing")
    alleles, missing = alleles[:, keep], missing[:, keep]
    sites = Sites(*(array[keep] for array in (sites.chrom, sites.pos, sites.ids, sites.ref,
                                              sites.alt)))
    columns = columns[keep]
    counts["missing_calls"] = int(missing.any(-1).sum())
    individuals_kept = np.ones(alleles.shape[0], dtype=bool)
    if settings.missing == "drop":
        individuals_kept = ~missing.any(axis=(1, 2))
        if not individuals_kept.any():
            raise InputError(f"{path}: every individual has a missing call (missing: drop); "
                             "use missing: impute or a smaller max_missing")
        alleles, samples = alleles[individuals_kept], samples[individuals_kept]
    else:
        alt_frequency = np.where(missing, 0, alleles).sum((0, 2)) / np.maximum(
            (~missing).sum((0, 2)), 1)
        major = (alt_frequency > 0.5).astype(np.int8)  # ties: REF
        if encoding == "counts":
            missing = missing.any(-1, keepdims=True) | missing
        alleles = np.where(missing, major[None, :, None], alleles)
    counts["dropped_individuals_missing"] = int((~individuals_kept).sum())
    counts["missing_policy"] = settings.missing
    if encoding == "haplotypes":
        codes = alleles.transpose(0, 2, 1).reshape(-1, alleles.shape[1])
        names = np.array([f"{s}_{h}" for s in samples for h in "AB"])
        individuals = np.repeat(samples, 2)
        alphabet = HAPLOTYPE_ALPHABET
    else:
        codes, names, individuals = alleles.sum(-1), samples.copy(), samples.copy()
        alphabet = COUNT_ALPHABET
    return Genotypes(codes.astype(np.uint8), names.astype(str), individuals.astype(str),
                     columns, sites, alphabet, phased_input, counts)


# -- .hapt ----------------------------------------------------------------------------------


def _open_text(path: Path) -> IO[str]:
    """`path` opened as text, gunzipped when it starts with the gzip magic bytes."""
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt") if gzipped else open(path, encoding="utf-8")


def read_hapt(path: str | os.PathLike[str], settings: GenotypeSettings) -> Genotypes:
    """Read a `.hapt` haplotype matrix (one haplotype per line, see the module docstring)."""
    path = Path(path)
    names, rows = [], []
    try:
        with _open_text(path) as handle:
            for number, line in enumerate(handle, 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) < 3 or any(v not in ("0", "1") for v in fields[2:]):
                    raise InputError(f"{path}: line {number} is not 'label name 0/1 ...' "
                                     "(two labels then 0/1 values)")
                if rows and len(fields) - 2 != rows[0].size:
                    raise InputError(f"{path}: line {number} has {len(fields) - 2} SNPs, "
                                     f"line 1 has {rows[0].size}")
                names.append(fields[1])
                rows.append(np.array(fields[2:], dtype=np.uint8))
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise InputError(f"{path}: not a readable .hapt file ({err})") from err
    if not rows:
        raise InputError(f"{path}: no haplotype in this .hapt file")
    if settings.encoding == "counts":
        raise InputError(f"{path}: a .hapt file holds haplotypes; encoding counts is not "
                         "supported for it (use auto or haplotypes)")
    codes = np.stack(rows)
    length = codes.shape[1]
    sites = Sites(np.full(length, HAPT_CHROM), np.arange(1, length + 1, dtype=np.int64),
                  np.array([f"snp{k}" for k in range(1, length + 1)]), np.full(length, "N"),
                  np.full(length, "<ALT>"))
    individuals = np.array([_HAPLOTYPE_SUFFIX.sub("", name) for name in names])
    return Genotypes(codes, np.array(names), individuals, np.arange(length, dtype=np.int64),
                     sites, HAPLOTYPE_ALPHABET, True,
                     {"records": length, "dropped_records": {}, "dropped_snps_missing": 0,
                      "missing_calls": 0, "dropped_individuals_missing": 0})


def read_genotypes(path: str | os.PathLike[str], settings: GenotypeSettings) -> Genotypes:
    """A VCF or `.hapt` file (by name) as encoded rows."""
    settings.check()
    fmt = genotype_format(path)
    if fmt is None:
        raise InputError(f"{path}: not a genotype file (expected .vcf, .vcf.gz, .bcf or .hapt)")
    return read_vcf(path, settings) if fmt == "vcf" else read_hapt(path, settings)


def read_populations(path: str | os.PathLike[str]) -> dict[str, str]:
    """`sample -> population` from a tab-separated table with a header line."""
    path = Path(path)
    table: dict[str, str] = {}
    try:
        with _open_text(path) as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise InputError(f"{path}: not a readable populations table ({err})") from err
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
            raise InputError(f"{path}: line {number} is not 'sample<TAB>population'")
        table[fields[0].strip()] = fields[1].strip()
    if not table:
        raise InputError(f"{path}: the populations table has no rows after its header")
    return table


def row_populations(individuals: np.ndarray, table: dict[str, str]) -> np.ndarray:
    """Population of each row (str (M,)); '' for individuals the table does not name."""
    return np.array([table.get(str(name), "") for name in individuals], dtype=str)


# -- the extra arrays of alignment.npz and samples.vcf -------------------------------------


def npz_arrays(data: Genotypes, populations: np.ndarray | None) -> dict[str, np.ndarray]:
    """What alignment.npz holds beside the common arrays for a genotype family."""
    arrays = {**data.sites.arrays(), "individuals": data.individuals.astype(str),
              "genotype_encoding": np.asarray(data.encoding)}
    if populations is not None:
        arrays["populations"] = populations.astype(str)
    return arrays


@dataclass(frozen=True)
class GenotypeInfo:
    """The genotype arrays of an alignment.npz: sites, encoding, individuals, populations."""

    sites: Sites
    encoding: str
    individuals: np.ndarray
    populations: np.ndarray | None


def load_genotype_info(path: str | os.PathLike[str]) -> GenotypeInfo | None:
    """The genotype arrays of `path`, or None for a protein alignment.npz."""
    with np.load(path, allow_pickle=False) as archive:
        if "genotype_encoding" not in archive.files:
            return None
        missing = [name for name in (*SITE_ARRAYS, "individuals") if name not in archive.files]
        if missing:
            raise InputError(f"{path}: genotype arrays {missing} missing")
        sites = Sites(*(archive[name] for name in SITE_ARRAYS))
        populations = archive["populations"] if "populations" in archive.files else None
        return GenotypeInfo(sites, str(archive["genotype_encoding"]), archive["individuals"],
                            populations)


def vcf_text(codes: np.ndarray, info: GenotypeInfo, header: dict[str, str]) -> tuple[str, int]:
    """samples.vcf text and the number of individuals written.

    codes (C, L): haplotypes are paired in order into phased calls (an odd last one is left
    out); counts become unphased genotypes 0/0, 0/1, 1/1. Individuals are AG1, AG2, ...
    """
    codes = np.asarray(codes, dtype=np.int64)
    if info.encoding == "haplotypes":
        pairs = codes[: codes.shape[0] // 2 * 2].reshape(-1, 2, codes.shape[1])
        calls = np.char.add(np.char.add(pairs[:, 0].astype(str), "|"), pairs[:, 1].astype(str))
    else:
        calls = np.array(["0/0", "0/1", "1/1"])[codes]
    individuals = calls.shape[0]
    sites = info.sites
    lines = ["##fileformat=VCFv4.2", f"##fileDate={now_utc()[:10].replace('-', '')}",
             f"##source=rbmflow {__version__} (Potts-Bernoulli RBM samples)"]
    lines += [f"##rbmflow_{key}={value}" for key, value in header.items()]
    lines += [f"##contig=<ID={chrom}>" for chrom in dict.fromkeys(sites.chrom.astype(str))]
    if (sites.alt.astype(str) == "<ALT>").any():
        lines.append('##ALT=<ID=ALT,Description="allele 1 of a .hapt matrix; no bases given">')
    lines.append('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">')
    lines.append("\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO",
                            "FORMAT", *(f"AG{k}" for k in range(1, individuals + 1))]))
    for snp in range(codes.shape[1]):
        lines.append("\t".join([str(sites.chrom[snp]), str(int(sites.pos[snp])),
                                str(sites.ids[snp]), str(sites.ref[snp]), str(sites.alt[snp]),
                                ".", ".", ".", "GT", *calls[:, snp]]))
    return "\n".join(lines) + "\n", individuals


def write_samples_vcf(fasta_path: str | os.PathLike[str], codes: Any,
                      data_path: str | os.PathLike[str], record: dict[str, Any]) -> Path | None:
    """For a genotype family, write `samples.vcf` beside `fasta_path` (atomically) from the
    generated codes (C, L); the header names the model, its update, the sampling and the
    provenance's git commit and input checksums. Returns its path (None for proteins)."""
    info = load_genotype_info(data_path)
    if info is None:
        return None
    prov = record.get("provenance") or {}
    inputs = prov.get("inputs") or {}
    header = {
        "model": f"{(inputs.get('model') or {}).get('path')} update={record.get('model_update')}"
                 f" sha256={(inputs.get('model') or {}).get('sha256')}",
        "data": f"{(inputs.get('data') or {}).get('path')} "
                f"sha256={(inputs.get('data') or {}).get('sha256')}",
        "sampling": f"method={record.get('method')} sweeps={record.get('sweeps')} "
                    f"beta={record.get('beta')} seed={record.get('seed')} "
                    f"equilibrated={record.get('equilibrated')}",
        "git_commit": str(prov.get("git_commit")),
        "encoding": info.encoding,
    }
    array = codes.detach().cpu().numpy() if hasattr(codes, "detach") else np.asarray(codes)
    text, individuals = vcf_text(array, info, header)
    out = Path(fasta_path).with_suffix(".vcf")
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    log.info("%s: %d synthetic individuals (%s)", out, individuals, info.encoding)
    return out
