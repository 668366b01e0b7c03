"""Aligning any protein sequence to a model's columns with a profile HMM of its family.

The model's L columns are the match columns of the training alignment (`alignment.npz`). A
profile HMM built from the training split with every one of those columns a match state
(HMMER's hand architecture, pyhmmer) has exactly L match states: match state k is model
column k. A sequence is aligned to it by HMMER's search pipeline; the alignment of its best
domain says, for each residue, which column it matches, or none (an insert state, or outside
the domain). Columns the domain deletes or does not reach are gaps of the encoded sequence.

A sequence belongs to the family when its best domain has an E-value (database size 1, so it
does not depend on how many sequences are scored together) at most `max_evalue` and matches
at least `min_coverage` x L columns; any other sequence is refused with an `InputError` that
names it.

Input already aligned to the model is used as it is, with no HMM, when it shows alignment
evidence: A2M rows whose upper-case letters and '-' number L (lower-case letters are inserts:
residues that match no column but still count in the residue numbering; '.' is ignored), or
rows of exactly L characters holding at least one gap '-'. A row of exactly L letters with
no gap and no insert may be any sequence of that length: it is aligned with the HMM like an
unaligned one (mode "auto"), unless the caller says it is aligned (mode "aligned"). Models
over other alphabets (no gap symbol) take L-character rows as aligned.

Ambiguous letters (B, Z, J, X, U, O) are residues but cover no column: they are encoded as
gaps and left out of the coverage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyhmmer import easel, plan7

from rbmflow import ALPHABET
from rbmflow.data.alignment import AMBIGUOUS_LETTERS
from rbmflow.data.dataset import TRAIN, EncodedAlignment
from rbmflow.errors import InputError

AMINO_ACIDS = ALPHABET[1:]
INPUT_MODES = ("auto", "aligned", "unaligned")
DEFAULT_MAX_EVALUE = 0.01
DEFAULT_MIN_COVERAGE = 0.5
# Sequences of the training split the HMM is built from at most (a seeded subset above it).
MAX_PROFILE_SEQUENCES = 50_000
_RESIDUES = set(AMINO_ACIDS + AMBIGUOUS_LETTERS)
_LOWER_OR_DOT = set("abcdefghijklmnopqrstuvwxyz.")


@dataclass(frozen=True)
class ColumnMapping:
    """Where the residues of one sequence sit among the model's L columns.

    `residues`: the sequence's residues, upper case, gaps removed (residue r is the r-th
    letter, 0-based). `residue_columns` (len(residues),): the 0-based model column residue r
    matches, -1 when it matches none (insert, or outside the aligned domain). `codes` (L,):
    model-alphabet codes of the sequence in the model's columns, 0 (gap) where no residue
    matches and for ambiguous letters (B, Z, J, X, U, O). `bit_score` and `evalue` of the best
    domain (None for aligned input).
    """

    name: str
    residues: str
    residue_columns: np.ndarray
    codes: np.ndarray
    aligned_input: bool
    bit_score: float | None = None
    evalue: float | None = None

    @property
    def length(self) -> int:
        return int(self.codes.shape[0])

    @property
    def column_residues(self) -> np.ndarray:
        """(L,) the 0-based residue index in each model column, -1 where none."""
        out = np.full(self.length, -1, dtype=np.int64)
        matched = np.flatnonzero(self.residue_columns >= 0)
        out[self.residue_columns[matched]] = matched
        return out

    @property
    def matched_columns(self) -> int:
        """Columns holding a residue of this sequence; ambiguous letters (encoded as gaps) do
        not count."""
        return int(sum(1 for r in np.flatnonzero(self.residue_columns >= 0)
                       if self.residues[r] not in AMBIGUOUS_LETTERS))

    @property
    def unmatched_residues(self) -> np.ndarray:
        """0-based indices of the residues that match no column."""
        return np.flatnonzero(self.residue_columns < 0)

    @property
    def coverage(self) -> float:
        """Fraction of the model's columns holding a residue of this sequence."""
        return self.matched_columns / self.length

    def summary(self) -> dict[str, object]:
        """JSON-ready description: counts, scores and the unmatched residues (0-based)."""
        return {"name": self.name, "aligned_input": self.aligned_input,
                "residues": len(self.residues), "matched_columns": self.matched_columns,
                "columns": self.length, "coverage": self.coverage,
                "unmatched_residues": self.unmatched_residues.tolist(),
                "bit_score": self.bit_score, "evalue": self.evalue}


def encode_residues(text: str, alphabet: str) -> np.ndarray:
    """Codes of letters in `alphabet`; ambiguous letters and '-' become 0 (gap)."""
    lookup = {letter: index for index, letter in enumerate(alphabet)}
    return np.array([lookup.get(c, 0) for c in text], dtype=np.int64)


def _aligned_rows(text: str, length: int, alphabet: str) -> str | None:
    """`text` itself if it is aligned input of width `length` with alignment evidence, else None.

    Aligned: A2M, whose upper-case letters and '-' number `length` and whose lower-case letters
    (inserts) and '.' are ignored for the width; or exactly `length` characters of the alphabet
    with at least one gap '-'. Over an alphabet without a gap symbol, any `length` characters
    of the alphabet. Ambiguous letters are allowed.
    """
    allowed = set(alphabet) | set(AMBIGUOUS_LETTERS)
    if "-" not in alphabet:
        return text if len(text) == length and set(text) <= allowed else None
    matched = "".join(c for c in text if c not in _LOWER_OR_DOT)
    if len(matched) != length or not set(matched) <= allowed:
        return None
    inserts = {c.upper() for c in text if c in _LOWER_OR_DOT and c != "."}
    if not inserts <= _RESIDUES:
        return None
    evidence = "-" in matched or len(matched) != len(text)
    return text if evidence else None


def map_aligned(name: str, text: str, alphabet: str) -> ColumnMapping:
    """The mapping of an aligned row (see `_aligned_rows`): upper-case letters and '-' are the
    model's columns in order; lower-case letters are residues in no column (inserts), numbered
    with the others; '.' is skipped."""
    lookup = {letter: index for index, letter in enumerate(alphabet)}
    residues, residue_columns, codes = [], [], []
    for c in text:
        if c == ".":
            continue
        if c in _LOWER_OR_DOT:
            residues.append(c.upper())
            residue_columns.append(-1)
            continue
        if c != "-":
            residues.append(c)
            residue_columns.append(len(codes))
        codes.append(lookup.get(c, 0))
    return ColumnMapping(name=name, residues="".join(residues),
                         residue_columns=np.asarray(residue_columns, dtype=np.int64),
                         codes=np.asarray(codes, dtype=np.int64), aligned_input=True)


class FamilyProfile:
    """A profile HMM of a family's training alignment, with one match state per model column.

    Built in memory from `alignment.npz` each time (about a second for 6,000 x 200); nothing
    is cached on disk. Needs the protein alphabet `-ACDEFGHIKLMNPQRSTVWY`.
    """

    def __init__(self, data: EncodedAlignment, max_evalue: float = DEFAULT_MAX_EVALUE,
                 min_coverage: float = DEFAULT_MIN_COVERAGE, seed: int = 0) -> None:
        if data.alphabet != ALPHABET:
            raise InputError(f"alignment alphabet {data.alphabet!r}: aligning unaligned "
                             f"sequences needs the protein alphabet {ALPHABET!r}")
        self.length = data.length
        self.alphabet = data.alphabet
        self.max_evalue = max_evalue
        self.min_coverage = min_coverage
        codes = data.codes[data.split == TRAIN]
        if codes.shape[0] == 0:
            raise InputError("alignment has no training sequences to build a profile HMM from")
        if codes.shape[0] > MAX_PROFILE_SEQUENCES:
            keep = np.random.default_rng(seed).choice(codes.shape[0], MAX_PROFILE_SEQUENCES,
                                                      replace=False)
            codes = codes[np.sort(keep)]
        letters = np.frombuffer(self.alphabet.encode("ascii"), dtype=np.uint8)[codes]
        msa = easel.TextMSA(name="family", sequences=[
            easel.TextSequence(name=f"train{m}", sequence=row.tobytes().decode("ascii"))
            for m, row in enumerate(letters)])
        msa.reference = "x" * self.length  # every column a match state
        self._abc = easel.Alphabet.amino()
        self._background = plan7.Background(self._abc)
        builder = plan7.Builder(self._abc, architecture="hand", seed=seed + 42)
        self.hmm, _, _ = builder.build_msa(msa.digitize(self._abc), self._background)
        if self.hmm.M != self.length:
            raise InputError(f"profile HMM has {self.hmm.M} match states for {self.length} "
                             "columns")

    def search(self, named: list[tuple[str, str]]) -> dict[int, plan7.Hit]:
        """Best hit of each (name, residues) by index; sequences with no domain are absent."""
        sequences = [easel.TextSequence(name=f"query{i}", sequence=residues).digitize(self._abc)
                     for i, (_, residues) in enumerate(named)]
        # No filters and no reporting thresholds: every sequence gets its best domain scored;
        # the family decision is ours (max_evalue, min_coverage).
        pipeline = plan7.Pipeline(self._abc, background=self._background, Z=1, domZ=1,
                                  bias_filter=False, F1=1.0, F2=1.0, F3=1.0, E=1e9, domE=1e9)
        hits = pipeline.search_hmm(self.hmm, easel.DigitalSequenceBlock(self._abc, sequences))
        return {int(hit.name.removeprefix("query")): hit for hit in hits}

    def align(self, name: str, residues: str, hit: plan7.Hit | None) -> ColumnMapping:
        """The mapping of one unaligned sequence from its best hit (None: no domain found)."""
        residue_columns = np.full(len(residues), -1, dtype=np.int64)
        codes = np.zeros(self.length, dtype=np.int64)
        if hit is None:
            return ColumnMapping(name, residues, residue_columns, codes, False, None, None)
        domain = hit.best_domain
        alignment = domain.alignment
        column, residue = alignment.hmm_from - 1, alignment.target_from - 1
        for state, letter in zip(alignment.hmm_sequence, alignment.target_sequence, strict=True):
            if state == ".":  # insert state: a residue, no column
                residue += 1
            elif letter == "-":  # deletion: a column, no residue
                column += 1
            else:
                residue_columns[residue] = column
                column += 1
                residue += 1
        matched = np.flatnonzero(residue_columns >= 0)
        codes[residue_columns[matched]] = encode_residues(residues, self.alphabet)[matched]
        return ColumnMapping(name, residues, residue_columns, codes, False,
                             float(domain.score), float(domain.i_evalue))

    def belongs(self, mapping: ColumnMapping) -> bool:
        return (mapping.aligned_input or (
            mapping.evalue is not None and mapping.evalue <= self.max_evalue
            and mapping.coverage >= self.min_coverage))

    def refusal(self, mapping: ColumnMapping) -> str:
        if mapping.evalue is None:
            return f"{mapping.name!r} (no domain of the family found)"
        return (f"{mapping.name!r} (E-value {mapping.evalue:.2g}, max {self.max_evalue:g}; "
                f"{mapping.matched_columns}/{mapping.length} columns matched, min "
                f"{self.min_coverage:g})")


def unaligned_residues(name: str, text: str, source: str) -> str:
    """Upper-case residues of `text` with gaps ('-', '.') removed; InputError on bad letters."""
    residues = text.replace("-", "").replace(".", "").upper()
    bad = sorted(set(residues) - _RESIDUES)
    if bad:
        raise InputError(f"{source}: record {name!r}: characters {''.join(bad)!r} are not "
                         "amino acids")
    if not residues:
        raise InputError(f"{source}: record {name!r}: no residues")
    return residues


def map_sequences(records: list[tuple[str, str]], length: int, alphabet: str,
                  data: EncodedAlignment | None, source: str, mode: str = "auto",
                  max_evalue: float = DEFAULT_MAX_EVALUE,
                  min_coverage: float = DEFAULT_MIN_COVERAGE) -> list[ColumnMapping]:
    """Map (name, text) records to the model's `length` columns over `alphabet`.

    mode "aligned": every record must be aligned input; "unaligned": every record is aligned
    with the profile HMM of `data`; "auto": aligned input as it is, the rest with the HMM.
    `source` names the input in errors. Records that are not of the family raise one
    `InputError` naming each of them (up to five).
    """
    if mode not in INPUT_MODES:
        raise ValueError(f"mode {mode!r}: choose from {INPUT_MODES}")
    mappings: list[ColumnMapping | None] = []
    to_align: list[tuple[int, str, str]] = []
    for index, (name, text) in enumerate(records):
        row = None if mode == "unaligned" else _aligned_rows(text, length, alphabet)
        if row is None and mode == "aligned" and len(text) == length:
            row = text if set(text) <= set(alphabet) | set(AMBIGUOUS_LETTERS) else None
        if row is not None:
            mapping = map_aligned(name, row, alphabet)
            if mapping.matched_columns == 0:
                raise InputError(f"{source}: record {name!r} holds no residue in the model's "
                                 "columns (ambiguous letters and gaps only)")
            mappings.append(mapping)
            continue
        if mode == "aligned":
            raise InputError(f"{source}: record {name!r} is not aligned to the model's {length} "
                             f"columns ({len(text)} characters)")
        to_align.append((index, name, unaligned_residues(name, text, source)))
        mappings.append(None)
    if to_align:
        if data is None:
            raise InputError(f"{source}: unaligned sequences (first: {to_align[0][1]!r}) need "
                             "the training alignment (alignment.npz) to build a profile HMM; "
                             f"a row of {length} letters with no gap is checked against it "
                             "too, unless given as aligned input (--input aligned)")
        if data.length != length:
            raise InputError(f"alignment has {data.length} columns, the model {length}")
        profile = FamilyProfile(data, max_evalue, min_coverage)
        hits = profile.search([(name, residues) for _, name, residues in to_align])
        refused = []
        for position, (index, name, residues) in enumerate(to_align):
            mapping = profile.align(name, residues, hits.get(position))
            if not profile.belongs(mapping):
                refused.append(profile.refusal(mapping))
            mappings[index] = mapping
        if refused:
            more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
            raise InputError(f"{source}: not of the model's family: {'; '.join(refused[:5])}"
                             f"{more}")
    return [m for m in mappings if m is not None]
