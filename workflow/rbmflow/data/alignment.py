"""Reading protein alignments (Stockholm, FASTA, A2M; gzip allowed) and encoding them.

Conventions (the same for every format):

- Alphabet: gap-first `-ACDEFGHIKLMNPQRSTVWY` (`rbmflow.ALPHABET`, q = 21); code 0 is the gap.
- Insert states are removed before encoding, A2M style: lower-case letters and '.' are
  inserts, upper-case letters and '-' are match states. In a rectangular alignment (every
  row as long as the first) the decision is made per column: a column is an insert column
  when it holds no upper-case letter and at least one lower-case letter or '.'; every other
  column is a match column and a '.' in it is read as a gap (old Pfam Stockholm files, like
  pyhmmer's LuxC.sto, write every gap as '.'). A column that mixes upper- and lower-case
  letters is an error. Rows of different lengths are read as A2M: each row keeps its
  upper-case letters and '-', and the rows must then agree in length. Biopython's Stockholm
  reader turns '.' into '-', so in a Stockholm file an insert column is one with a
  lower-case letter and no upper-case letter; an all-gap column is kept as a match column.
- Ambiguous letters B, Z, J, X, U, O (either case) in match columns follow `ambiguous`:
  "gap" (default) encodes them as the gap state, so they count towards a sequence's gap
  fraction; "drop" removes every sequence that holds one. Any other character is an error.
- '#' lines before and between FASTA/A2M records are comments and skipped. Empty files,
  binary data, HTML or JSON pages, repeated Stockholm names and ragged rows are errors
  (`InputError`) that name the file and the record or line.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from Bio import AlignIO
from Bio.SeqIO.FastaIO import SimpleFastaParser

from rbmflow import ALPHABET
from rbmflow.errors import InputError

FORMATS = ("stockholm", "fasta", "a2m")
AMBIGUOUS_LETTERS = "BZJXUO"
AMBIGUOUS_RULES = ("gap", "drop")
GZIP_MAGIC = b"\x1f\x8b"
_SNIFF_BYTES = 1 << 16
MAX_COLUMNS = 200_000  # characters per record of an input alignment (inserts included)

_INVALID = 255
_AMBIGUOUS = 254


def _lookup_tables() -> tuple[np.ndarray, np.ndarray]:
    """(code of each byte in a match column, whether each byte may appear at all)."""
    code = np.full(256, _INVALID, dtype=np.uint8)
    for index, letter in enumerate(ALPHABET):
        code[ord(letter)] = index
    code[ord(".")] = 0
    for letter in AMBIGUOUS_LETTERS:
        code[ord(letter)] = _AMBIGUOUS
    valid = np.zeros(256, dtype=bool)
    for letter in ALPHABET[1:] + AMBIGUOUS_LETTERS:
        valid[ord(letter)] = valid[ord(letter.lower())] = True
    valid[ord("-")] = valid[ord(".")] = True
    return code, valid


_CODE, _VALID = _lookup_tables()
_DELETE_INSERTS = str.maketrans("", "", "abcdefghijklmnopqrstuvwxyz.")


@dataclass(frozen=True)
class RawAlignment:
    """Rows of an alignment file as written, before insert removal and encoding."""

    path: Path
    format: str  # "stockholm" | "fasta" | "a2m"
    names: list[str]
    rows: list[str]


@dataclass(frozen=True)
class Encoded:
    """An alignment after insert removal and encoding.

    `codes` uint8 (M, L) alphabet indices; `names` (M,); `columns` int64 (L,), the kept
    columns' 0-based positions in the input (in the rows of a rectangular alignment, else
    the match-state index); `input_columns` the input's width (None for ragged A2M rows);
    `ambiguous` int64 (M,) ambiguous letters per sequence found in match columns.
    """

    codes: np.ndarray
    names: np.ndarray
    columns: np.ndarray
    input_columns: int | None
    ambiguous: np.ndarray
    format: str

    @property
    def insert_columns(self) -> int | None:
        """Columns removed as insert states (None when the rows were ragged A2M)."""
        return None if self.input_columns is None else self.input_columns - len(self.columns)


# ------------------------------------------------------------------------------ reading


@contextlib.contextmanager
def open_text(path: Path) -> Iterator[IO[str]]:
    """Open `path` as UTF-8 text, transparently decompressing gzip (found by its magic bytes)."""
    with open(path, "rb") as probe:
        compressed = probe.read(2) == GZIP_MAGIC
    raw: IO[bytes] = gzip.open(path, "rb") if compressed else open(path, "rb")
    with raw, io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline=None) as text:
        yield text


def _head(path: Path) -> bytes:
    """The first bytes of the (decompressed) file."""
    try:
        with open(path, "rb") as probe:
            compressed = probe.read(2) == GZIP_MAGIC
        opener = gzip.open if compressed else open
        with opener(path, "rb") as handle:
            return handle.read(_SNIFF_BYTES)
    except (OSError, EOFError, zlib.error) as err:
        raise InputError(f"{path}: not a readable (gzip) file ({err})") from err


def sniff_format(path: str | Path) -> str:
    """'stockholm' or 'fasta' (which also reads A2M) from the file's first lines.

    Raises InputError for an empty file, binary data, or an HTML, XML or JSON page.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: alignment file not found")
    head = _head(path)
    if not head.strip():
        raise InputError(f"{path}: empty file, no alignment in it")
    nul = head.find(b"\x00")
    if nul >= 0:
        raise InputError(f"{path}: binary data (byte {nul} is NUL), not a text alignment")
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: binary data (byte {err.start} is not UTF-8 text), "
                         f"not a text alignment") from err
    lines = text.lstrip("\ufeff").splitlines()
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.upper().startswith("# STOCKHOLM"):
            return "stockholm"
        if stripped.startswith(">"):
            return "fasta"
        if stripped.startswith("#"):
            continue
        if stripped.startswith("<"):
            raise InputError(f"{path}: line {number} starts an HTML/XML page "
                             f"({stripped[:60]!r}), not an alignment")
        if stripped[0] in "{[":
            raise InputError(f"{path}: line {number} starts a JSON document "
                             f"({stripped[:60]!r}), not an alignment")
        raise InputError(f"{path}: line {number}: {stripped[:60]!r} is neither a FASTA/A2M "
                         f"header ('>') nor a Stockholm header ('# STOCKHOLM 1.0')")
    return "fasta"


def read_alignment(path: str | Path, format: str | None = None) -> RawAlignment:
    """Parse an alignment file with Biopython; `format` None sniffs it from the content."""
    path = Path(path)
    sniffed = sniff_format(path)
    if format is None:
        format = sniffed
    elif format not in FORMATS:
        raise InputError(f"{path}: unknown alignment format {format!r} "
                         f"(expected one of {', '.join(FORMATS)})")
    elif (format == "stockholm") != (sniffed == "stockholm"):
        raise InputError(f"{path}: declared as {format} but the content looks like {sniffed}")
    try:
        if format == "stockholm":
            names, rows = _read_stockholm(path)
        else:
            names, rows = _read_fasta(path)
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: binary data (not UTF-8 text) after the first "
                         f"{_SNIFF_BYTES} bytes: {err.reason}") from err
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise InputError(f"{path}: truncated or corrupt gzip data ({err})") from err
    if not rows:
        raise InputError(f"{path}: no sequences found in this {format} file")
    return RawAlignment(path=path, format=format, names=names, rows=rows)


def _fasta_lines(handle: IO[str], path: Path) -> Iterator[str]:
    """Lines of a FASTA/A2M file without '#' comments; text before the first record is an error."""
    started = False
    for number, line in enumerate(handle, start=1):
        if line.startswith("#"):
            continue
        if not started:
            if not line.strip():
                continue
            if not line.startswith(">"):
                raise InputError(f"{path}: line {number}: {line.strip()[:60]!r} before the "
                                 f"first '>' record")
            started = True
        yield line


def _bounded_lines(lines: Iterator[str], path: Path) -> Iterator[str]:
    """`lines`, refusing a record of more than MAX_COLUMNS characters (before it is joined)."""
    size, name = 0, ""
    for line in lines:
        if line.startswith(">"):
            size, name = 0, line[1:].strip()[:40]
        else:
            size += len(line.strip())
            if size > MAX_COLUMNS:
                raise InputError(f"{path}: record {name!r} is longer than {MAX_COLUMNS} "
                                 "columns, the limit of an input alignment")
        yield line


def _read_fasta(path: Path) -> tuple[list[str], list[str]]:
    names, rows = [], []
    with open_text(path) as handle:
        for title, sequence in SimpleFastaParser(_bounded_lines(_fasta_lines(handle, path),
                                                                path)):
            names.append(title.split(maxsplit=1)[0] if title.strip() else f"record_{len(names)+1}")
            rows.append(sequence)
    return names, rows


def _check_stockholm_names(path: Path) -> None:
    """Find repeated names within a block, rows of unequal total length or longer than
    MAX_COLUMNS, and a missing closing '//' (a truncated file), with line numbers.

    Biopython's reader only says that lengths differ "or" a name repeats; this names both.
    """
    lengths: dict[str, int] = {}
    first_line: dict[str, int] = {}
    in_block: set[str] = set()
    last, last_number = "", 0
    with open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            stripped = line.strip()
            if not stripped:
                in_block = set()
                continue
            last, last_number = stripped, number
            if stripped.startswith("#") or stripped == "//":
                if stripped == "//":
                    in_block = set()
                continue
            fields = stripped.split()
            if len(fields) != 2:
                raise InputError(f"{path}: line {number}: expected 'name sequence', got "
                                 f"{len(fields)} fields ({stripped[:60]!r})")
            name, sequence = fields
            if name in in_block:
                raise InputError(f"{path}: line {number}: sequence name {name!r} is repeated "
                                 f"(first at line {first_line[name]}); names must be unique")
            in_block.add(name)
            first_line.setdefault(name, number)
            lengths[name] = lengths.get(name, 0) + len(sequence)
            if lengths[name] > MAX_COLUMNS:
                raise InputError(f"{path}: line {number}: record {name!r} is longer than "
                                 f"{MAX_COLUMNS} columns, the limit of an input alignment")
    if last != "//":
        raise InputError(f"{path}: no closing '//' line (the file ends at line {last_number}: "
                         "truncated?)")
    if lengths:
        expected_name, expected = next(iter(lengths.items()))
        for name, length in lengths.items():
            if length != expected:
                raise InputError(f"{path}: ragged alignment: record {name!r} (line "
                                 f"{first_line[name]}) has {length} columns, expected "
                                 f"{expected} (as {expected_name!r})")


def _read_stockholm(path: Path) -> tuple[list[str], list[str]]:
    _check_stockholm_names(path)
    try:
        with open_text(path) as handle:
            alignment = AlignIO.read(handle, "stockholm")
    except ValueError as err:
        if "No records found" in str(err):
            return [], []
        raise InputError(f"{path}: not a valid single Stockholm alignment ({err})") from err
    return [record.id for record in alignment], [str(record.seq) for record in alignment]


# ----------------------------------------------------------------------------- encoding


def encode_alignment(raw: RawAlignment, ambiguous: str = "gap") -> Encoded:
    """Remove insert states and encode to the gap-first alphabet (rules: module docstring).

    With `ambiguous="drop"` the sequences holding an ambiguous letter stay in the result
    (their `ambiguous` count says which); the caller drops them and reports how many.
    """
    if ambiguous not in AMBIGUOUS_RULES:
        raise ValueError(f"ambiguous must be one of {AMBIGUOUS_RULES}, got {ambiguous!r}")
    path = raw.path
    _check_characters(raw)
    widths = np.fromiter((len(row) for row in raw.rows), dtype=np.int64, count=len(raw.rows))
    if not widths.any():
        raise InputError(f"{path}: the records have names but no sequence letters "
                         "(headers only)")
    if np.all(widths == widths[0]):
        chars = _as_bytes(raw.rows, int(widths[0]))
        columns = _match_columns(chars, raw)
        matches = chars[:, columns]
        input_columns: int | None = int(widths[0])
    else:
        stripped = [row.translate(_DELETE_INSERTS) for row in raw.rows]
        lengths = np.fromiter((len(row) for row in stripped), dtype=np.int64,
                              count=len(stripped))
        bad = np.flatnonzero(lengths != lengths[0])
        if bad.size:
            index = int(bad[0])
            with_inserts = any(row != raw_row for row, raw_row in zip(stripped, raw.rows,
                                                                        strict=True))
            what = "match columns (upper-case letters and '-')" if with_inserts else "columns"
            raise InputError(f"{path}: ragged alignment: record {index + 1} "
                             f"{raw.names[index]!r} has {lengths[index]} {what}, expected "
                             f"{lengths[0]} (as record 1 {raw.names[0]!r})")
        matches = _as_bytes(stripped, int(lengths[0]))
        columns = np.arange(matches.shape[1], dtype=np.int64)
        input_columns = None
    if matches.shape[1] == 0:
        raise InputError(f"{path}: no match columns: every column holds only insert states "
                         f"(lower-case letters or '.')")
    codes = _CODE[matches]
    is_ambiguous = codes == _AMBIGUOUS
    ambiguous_counts = is_ambiguous.sum(axis=1).astype(np.int64)
    codes[is_ambiguous] = 0
    return Encoded(codes=codes, names=np.asarray(raw.names, dtype=object), columns=columns,
                   input_columns=input_columns, ambiguous=ambiguous_counts, format=raw.format)


def load_alignment(path: str | Path, format: str | None = None,
                   ambiguous: str = "gap") -> Encoded:
    """`read_alignment` then `encode_alignment`."""
    return encode_alignment(read_alignment(path, format), ambiguous)


def _check_characters(raw: RawAlignment) -> None:
    """Every character must be a residue letter (any case), ambiguous letter, '-' or '.'."""
    for index, row in enumerate(raw.rows):
        data = row.encode("utf-8")
        if len(data) == len(row):
            bad = np.flatnonzero(~_VALID[np.frombuffer(data, dtype=np.uint8)])
            if not bad.size:
                continue
            position = int(bad[0])
        else:
            position = next(i for i, char in enumerate(row) if not char.isascii())
        raise InputError(f"{raw.path}: record {index + 1} {raw.names[index]!r}: unknown "
                         f"letter {row[position]!r} at column {position + 1} (allowed: "
                         f"{ALPHABET[1:]}, ambiguous {AMBIGUOUS_LETTERS}, either case, "
                         f"'-' and '.')")


def _as_bytes(rows: list[str], width: int) -> np.ndarray:
    """(M, width) uint8 array of ASCII rows of equal length."""
    return np.frombuffer("".join(rows).encode("ascii"), dtype=np.uint8).reshape(len(rows), width)


def _match_columns(chars: np.ndarray, raw: RawAlignment) -> np.ndarray:
    """0-based match columns of a rectangular alignment (rules: module docstring)."""
    upper = (chars >= ord("A")) & (chars <= ord("Z"))
    lower = (chars >= ord("a")) & (chars <= ord("z"))
    has_upper = upper.any(axis=0)
    has_lower = lower.any(axis=0)
    mixed = np.flatnonzero(has_upper & has_lower)
    if mixed.size:
        column = int(mixed[0])
        upper_row = int(np.flatnonzero(upper[:, column])[0])
        lower_row = int(np.flatnonzero(lower[:, column])[0])
        raise InputError(
            f"{raw.path}: column {column + 1} mixes match and insert states: record "
            f"{upper_row + 1} {raw.names[upper_row]!r} has {chr(chars[upper_row, column])!r}, "
            f"record {lower_row + 1} {raw.names[lower_row]!r} has "
            f"{chr(chars[lower_row, column])!r}")
    has_dot = (chars == ord(".")).any(axis=0)
    insert = ~has_upper & (has_lower | has_dot)
    return np.flatnonzero(~insert).astype(np.int64)
