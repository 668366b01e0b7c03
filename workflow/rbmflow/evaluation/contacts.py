"""Contact prediction from a Potts RBM: scores, structures, precision, and parameter exports.

Positions are columns of the encoded alignment. In files and tables they are 1-based
(contacts.csv, distance tables); in arrays they are 0-based. A structure gives an (L, L)
matrix of distances in Angstrom with NaN where a column has no residue.

Structures come in two forms:
- a distance table, one pair per line: `i j score distance` (1-based columns; the score, e.g.
  another method's ranking, is kept for comparison);
- a PDB or mmCIF file and a chain, read with Biopython; the distance of two residues is the
  minimum distance between their heavy atoms. Modified residues (MSE selenomethionine, SEP,
  CSO, ...) count as their parent amino acid. The chain's residues are mapped to the columns
  with the profile HMM of the family's training split (the one `rbmflow score` uses), and the
  mapping must clear three floors: an E-value of at most STRUCTURE_MAX_EVALUE, at least
  STRUCTURE_MIN_COVERAGE of the L columns holding a residue of the chain, and at least
  STRUCTURE_MIN_IDENTITY identity to the family consensus over those columns. The consensus is
  that of the weighted training split, in the stage and in the report alike.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rbmflow.data.dataset import TRAIN, EncodedAlignment
from rbmflow.errors import InputError
from rbmflow.provenance import atomic_path

log = logging.getLogger("rbmflow.evaluation.contacts")

AMINO_ACID_LETTERS = "ACDEFGHIKLMNPQRSTVWY"

MIN_SEPARATION = 5
"""Pairs with |i - j| >= 5 (|i - j| > 4) are scored as contacts."""
CONTACT_DISTANCE = 8.0
"""A pair is in contact when its distance is below this (Angstrom)."""
PPV_RANKS = {"L/5": 0.2, "L/2": 0.5, "L": 1.0, "2L": 2.0}
STRUCTURE_MAX_EVALUE = 0.01
"""A chain whose best domain has a larger E-value (database of one sequence) is refused."""
STRUCTURE_MIN_COVERAGE = 0.5
"""... and one that puts a residue in fewer than this fraction of the L columns ..."""
STRUCTURE_MIN_IDENTITY = 0.2
"""... and one less identical than this to the family consensus over its mapped columns."""


@dataclass
class Structure:
    """distances (L, L) in Angstrom, NaN where unknown; other_scores (L, L) or None: the score
    column of a distance table (NaN where absent); source: a description for the report."""

    distances: np.ndarray
    other_scores: np.ndarray | None
    source: str
    mapped_columns: int


# -- reading structures -----------------------------------------------------------------------


def read_distance_table(path: str | os.PathLike[str], length: int) -> Structure:
    """Lines `i j score distance` (1-based columns, whitespace-separated, '#' comments)."""
    distances = np.full((length, length), np.nan)
    scores = np.full((length, length), np.nan)
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rt") as handle:
            lines = handle.readlines()
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise InputError(f"{path}: not a readable distance table ({err})") from err
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            if len(fields) != 4:
                raise ValueError(f"{len(fields)} fields")
            i, j = int(float(fields[0])), int(float(fields[1]))
            score, distance = float(fields[2]), float(fields[3])
        except ValueError as err:
            raise InputError(f"{path}: line {number}: expected `i j score distance` ({err})"
                             ) from err
        if not (1 <= i <= length and 1 <= j <= length) or i == j:
            raise InputError(f"{path}: line {number}: pair ({i}, {j}) outside 1..{length} "
                             f"or on the diagonal")
        distances[i - 1, j - 1] = distances[j - 1, i - 1] = distance
        scores[i - 1, j - 1] = scores[j - 1, i - 1] = score
    known = ~np.isnan(distances)
    if not known.any():
        raise InputError(f"{path}: no pair")
    mapped = int(known.any(1).sum())
    return Structure(distances, scores, f"distance table {Path(path).name}", mapped)


def chain_residues(path: str | os.PathLike[str], chain: str) -> tuple[str, list[np.ndarray]]:
    """One-letter sequence and heavy-atom coordinates (n_atoms, 3) of each standard residue of
    `chain` in the first model of a PDB or mmCIF file (`.cif`/`.mmcif`, optionally `.gz`)."""
    from Bio.PDB import MMCIFParser, PDBParser
    from Bio.PDB.PDBExceptions import PDBConstructionException
    from Bio.PDB.Polypeptide import is_aa
    from Bio.SeqUtils import seq1

    name = str(path).lower().removesuffix(".gz")
    parser = (MMCIFParser(QUIET=True) if name.endswith((".cif", ".mmcif"))
              else PDBParser(QUIET=True))
    try:
        if str(path).endswith(".gz"):
            with gzip.open(path, "rt") as handle:
                structure = parser.get_structure("s", handle)
        else:
            structure = parser.get_structure("s", str(path))
    except (OSError, ValueError, PDBConstructionException) as err:
        raise InputError(f"{path}: not a readable PDB/mmCIF file ({err})") from err
    models = list(structure)
    if not models:
        raise InputError(f"{path}: no model")
    chains = {c.id: c for c in models[0]}
    if chain not in chains:
        raise InputError(f"{path}: no chain {chain!r} (chains: {sorted(chains)})")
    letters, coordinates = [], []
    for residue in chains[chain]:
        letter = _residue_letter(residue, is_aa, seq1)
        heavy = [atom.coord for atom in residue if atom.element != "H"]
        if letter is None or not heavy:
            continue
        letters.append(letter)
        coordinates.append(np.asarray(heavy, dtype=np.float64))
    if not letters:
        raise InputError(f"{path}: chain {chain!r} has no amino-acid residue")
    return "".join(letters), coordinates


def _residue_letter(residue, is_aa, seq1) -> str | None:
    """One-letter code of a standard amino acid, or of the parent of a modified one (a HETATM
    polymer residue with a CA atom: MSE -> M, SEP -> S, ...); None for anything else."""
    from Bio.Data.PDBData import protein_letters_3to1_extended

    hetflag = residue.id[0]
    if hetflag == " ":
        return seq1(residue.get_resname()) if is_aa(residue, standard=True) else None
    parent = protein_letters_3to1_extended.get(residue.get_resname().upper())
    if hetflag.startswith("H_") and parent in AMINO_ACID_LETTERS and "CA" in residue:
        return parent
    return None


def residue_distances(coordinates: list[np.ndarray]) -> np.ndarray:
    """Minimum heavy-atom distance (n, n) between residues, Angstrom."""
    n = len(coordinates)
    out = np.zeros((n, n))
    for a in range(n):
        for b in range(a + 1, n):
            diff = coordinates[a][:, None, :] - coordinates[b][None, :, :]
            out[a, b] = out[b, a] = np.sqrt((diff ** 2).sum(-1)).min()
    return out


def consensus_sequence(codes: np.ndarray, weights: np.ndarray, alphabet: str,
                       gap: int = 0) -> str:
    """Most frequent non-gap letter of each column (weighted); (L,) letters."""
    q = len(alphabet)
    counts = np.zeros((codes.shape[1], q))
    for a in range(q):
        counts[:, a] = ((codes == a) * weights[:, None]).sum(0)
    counts[:, gap] = -1
    return "".join(alphabet[a] for a in counts.argmax(1))


def family_consensus(data: EncodedAlignment) -> str:
    """The consensus of the weighted training split of `data`: one letter per column."""
    train = data.split == TRAIN
    return consensus_sequence(data.codes[train], data.weights[train], data.alphabet)


def map_chain(sequence: str, data: EncodedAlignment, source: str,
              max_evalue: float = STRUCTURE_MAX_EVALUE,
              min_coverage: float = STRUCTURE_MIN_COVERAGE,
              min_identity: float = STRUCTURE_MIN_IDENTITY) -> tuple[np.ndarray, str]:
    """Column (0-based) of each chain residue, -1 where it matches none, by the profile HMM of
    `data`'s training split; and a one-line description of the mapping. InputError naming
    `source` when the chain is not of the family (E-value, coverage or identity floor)."""
    from rbmflow.evaluation.profile_hmm import FamilyProfile

    profile = FamilyProfile(data, max_evalue, min_coverage)
    hits = profile.search([("chain", sequence)])
    mapping = profile.align("chain", sequence, hits.get(0))
    columns = mapping.residue_columns
    residues = np.flatnonzero(columns >= 0)
    consensus = family_consensus(data)
    identity = (float(np.mean([sequence[r] == consensus[columns[r]] for r in residues]))
                if residues.size else 0.0)
    coverage = residues.size / data.length
    evalue = "none" if mapping.evalue is None else f"{mapping.evalue:.2g}"
    if not (profile.belongs(mapping) and coverage >= min_coverage
            and identity >= min_identity and residues.size >= 2):
        raise InputError(f"{source}: not of the family: E-value {evalue} (max {max_evalue:g}), "
                         f"{residues.size}/{data.length} columns covered (min {min_coverage:g})"
                         f", {100 * identity:.0f}% identical to the consensus (min "
                         f"{100 * min_identity:.0f}%)")
    return columns, (f"{residues.size} of {len(sequence)} residues on {data.length} columns "
                     f"(profile HMM, E-value {evalue}), {100 * identity:.0f}% identical to the "
                     "consensus")


def read_structure_file(path: str | os.PathLike[str], chain: str,
                        data: EncodedAlignment) -> Structure:
    """Distances (L, L) between columns from a PDB/mmCIF chain mapped with `map_chain`."""
    sequence, coordinates = chain_residues(path, chain)
    mapping, description = map_chain(sequence, data, f"{path} chain {chain}")
    L = data.length
    distances = np.full((L, L), np.nan)
    residues = np.flatnonzero(mapping >= 0)
    pair = residue_distances([coordinates[r] for r in residues])
    columns = mapping[residues]
    distances[np.ix_(columns, columns)] = pair
    np.fill_diagonal(distances, np.nan)
    return Structure(distances, None, f"{Path(path).name} chain {chain}: {description}",
                     int(residues.size))


def read_structure(path: str | os.PathLike[str], length: int, chain: str | None = None,
                   data: EncodedAlignment | None = None) -> Structure:
    """A distance table, or a PDB/mmCIF file when `chain` is given (then `data`, the encoded
    alignment whose training split the profile HMM is built from, is required)."""
    if chain is None:
        return read_distance_table(path, length)
    if data is None or data.length != length:
        raise InputError(f"{path}: a PDB/mmCIF chain is mapped to the columns with the family's "
                         "alignment: give the alignment (alignment.npz)")
    return read_structure_file(path, chain, data)


# -- precision ---------------------------------------------------------------------------------


def ppv_curve(scores: np.ndarray, distances: np.ndarray, threshold: float = CONTACT_DISTANCE,
              min_separation: int = MIN_SEPARATION, max_rank: int | None = None) -> np.ndarray:
    """Precision of the top-k pairs, k = 1..max_rank: fraction with distance < threshold among
    the k best-scored pairs i < j with j - i >= min_separation and a known distance."""
    L = scores.shape[0]
    i, j = np.triu_indices(L, k=min_separation)
    known = ~np.isnan(distances[i, j])
    i, j = i[known], j[known]
    order = np.lexsort((j, i, -scores[i, j]))
    hits = distances[i[order], j[order]] < threshold
    if max_rank is not None:
        hits = hits[:max_rank]
    return np.cumsum(hits) / np.arange(1, len(hits) + 1)


def ppv_at_ranks(curve: np.ndarray, length: int) -> dict[str, float | None]:
    """PPV at k = L/5, L/2, L, 2L (rounded down, at least 1); None beyond the curve."""
    out: dict[str, float | None] = {}
    for label, factor in PPV_RANKS.items():
        k = max(1, int(factor * length))
        out[label] = float(curve[k - 1]) if k <= len(curve) else None
    return out


# -- exports -----------------------------------------------------------------------------------


def write_adabmdca(path: str | os.PathLike[str], couplings: np.ndarray, fields: np.ndarray,
                   alphabet: str) -> None:
    """adabmDCA's text format: `J i j a b value` for i < j (0-based positions, letters of the
    alphabet, every q x q pair, a outer), then `h i a value`. Energy E(v) = -sum_i h_i(v_i)
    - sum_{i<j} J_ij(v_i, v_j), as adabmDCA."""
    L, q = fields.shape
    i, j = np.triu_indices(L, k=1)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for a_i, b_j in zip(i.tolist(), j.tolist(), strict=True):
            block = np.asarray(couplings[a_i, b_j], dtype=np.float64).tolist()
            handle.writelines(f"J {a_i} {b_j} {alphabet[a]} {alphabet[b]} {block[a][b]!r}\n"
                              for a in range(q) for b in range(q))
        values = np.asarray(fields, dtype=np.float64).tolist()
        handle.writelines(f"h {site} {alphabet[a]} {values[site][a]!r}\n"
                          for site in range(L) for a in range(q))


def read_adabmdca(path: str | os.PathLike[str], alphabet: str) -> tuple[np.ndarray, np.ndarray]:
    """(J (L, L, q, q), h (L, q)) from adabmDCA's text format (either triangle, or both)."""
    index = {letter: k for k, letter in enumerate(alphabet)}
    q = len(alphabet)
    records_j, records_h = [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            f = line.split()
            if not f or f[0].startswith("#"):
                continue
            try:
                if f[0] == "J" and len(f) == 6:
                    records_j.append((int(f[1]), int(f[2]), index[f[3]], index[f[4]], float(f[5])))
                elif f[0] == "h" and len(f) == 4:
                    records_h.append((int(f[1]), index[f[2]], float(f[3])))
                else:
                    raise ValueError("not a J or h record")
            except (KeyError, ValueError) as err:
                raise InputError(f"{path}: line {number}: {err}") from err
    L = 1 + max(r[0] for r in records_h)
    J, h = np.zeros((L, L, q, q)), np.zeros((L, q))
    for i, j, a, b, value in records_j:
        J[i, j, a, b] = value
        J[j, i, b, a] = value
    for i, a, value in records_h:
        h[i, a] = value
    return J, h


def write_npz(path: str | os.PathLike[str], couplings: np.ndarray, fields: np.ndarray,
              alphabet: str, scores: np.ndarray, method: str) -> None:
    """couplings (L, L, q, q), fields (L, q), contact scores (L, L), alphabet, method."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, couplings=couplings.astype(np.float32),
                            fields=fields.astype(np.float32), scores=scores,
                            alphabet=np.asarray(alphabet), method=np.asarray(method))


def write_contacts_csv(path: str | os.PathLike[str], ranked: list[tuple[int, int, float]]) -> None:
    """contacts.csv: i, j, score (1-based, i < j, by descending score)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write("i,j,score\n")
        handle.writelines(f"{i},{j},{score:.8g}\n" for i, j, score in ranked)


def read_contacts_csv(path: str | os.PathLike[str], length: int) -> np.ndarray:
    """Scores (L, L) from contacts.csv (NaN for absent pairs)."""
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable contacts CSV ({err})") from err
    if list(frame.columns[:3]) != ["i", "j", "score"]:
        raise InputError(f"{path}: expected columns i, j, score (has {list(frame.columns)})")
    i, j = frame["i"].to_numpy() - 1, frame["j"].to_numpy() - 1
    if len(i) and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= length):
        raise InputError(f"{path}: positions outside 1..{length}")
    scores = np.full((length, length), np.nan)
    scores[i, j] = scores[j, i] = frame["score"].to_numpy()
    return scores


# -- the stage ---------------------------------------------------------------------------------


@dataclass
class ContactResult:
    """couplings (L, L, q, q) and fields (L, q) in the zero-sum gauge; scores (L, L) APC-
    corrected; ranked: (i, j, score) 1-based, descending; ppv: PPV at L/5..2L or None."""

    couplings: np.ndarray
    fields: np.ndarray
    scores: np.ndarray
    ranked: list[tuple[int, int, float]]
    method: str
    num_backgrounds: int


def predict_contacts(model, backgrounds, weights=None, method: str = "gaussian",
                     max_backgrounds: int = 200, seed: int = 0) -> ContactResult:
    """Effective couplings of `model` (a PottsRBM) around `backgrounds` (codes (n, L) tensor,
    optional weights (n,)), their fields, and the contact scores.

    The `background` method is costly (n L^2 q^2 Nh): it uses at most `max_backgrounds`
    backgrounds, drawn with their weights (seeded), as do the fields; the other coupling
    methods use all of them.
    """
    import torch

    from rbmflow.model import couplings as C

    backgrounds = backgrounds.long()
    drawn, drawn_weights = backgrounds, weights
    if backgrounds.shape[0] > max_backgrounds:
        generator = torch.Generator().manual_seed(seed)
        probs = (torch.ones(backgrounds.shape[0]) if weights is None
                 else weights.detach().cpu().to(torch.float64))
        picks = torch.multinomial(probs, max_backgrounds, replacement=True,
                                  generator=generator).to(backgrounds.device)
        drawn, drawn_weights = backgrounds[picks], None
    if method == "background":
        backgrounds, weights = drawn, drawn_weights
    J = C.effective_couplings(model, backgrounds, weights, method=method,
                              work_dtype=torch.float32)
    h = C.effective_fields(model, drawn, drawn_weights, J)
    scores = C.contact_scores(J)
    return ContactResult(J, h, scores, C.ranked_pairs(scores), method,
                         int(backgrounds.shape[0]))


def ppv_summary(scores: np.ndarray, structure: Structure) -> dict[str, object]:
    """PPV at L/5, L/2, L, 2L for 8 A (the default) and 7 A, and the same for the table's own
    score column when there is one."""
    L = scores.shape[0]
    out: dict[str, object] = {"source": structure.source,
                              "min_separation": MIN_SEPARATION,
                              "mapped_columns": structure.mapped_columns}
    for threshold in (CONTACT_DISTANCE, 7.0):
        key = f"{threshold:g}A"
        out[f"ppv_{key}"] = ppv_at_ranks(ppv_curve(scores, structure.distances, threshold), L)
        if structure.other_scores is not None:
            other = np.nan_to_num(structure.other_scores, nan=-np.inf)
            out[f"ppv_table_score_{key}"] = ppv_at_ranks(
                ppv_curve(other, structure.distances, threshold), L)
    return out


def run_stage(model_path: str | os.PathLike[str], out: str | os.PathLike[str],
              alignment: str | os.PathLike[str] | None = None, method: str = "gaussian",
              num_backgrounds: int = 200, seed: int = 0,
              structure: str | os.PathLike[str] | None = None, chain: str | None = None,
              ppv_json: str | os.PathLike[str] | None = None,
              export_dca: str | os.PathLike[str] | None = None,
              export_npz: str | os.PathLike[str] | None = None,
              device: torch.device | str = "cpu") -> None:
    """The contacts stage: effective couplings of the model around the training sequences of
    `alignment` (weighted; else the archive's persistent chains), contacts.csv, optional
    exports, and the PPVs against `structure` (logged; written to `ppv_json`)."""
    from rbmflow.data.dataset import load_encoded
    from rbmflow.model.archive import load_chains, load_rbm, read_metadata
    from rbmflow.provenance import nothing_written_on_failure, write_json

    if num_backgrounds < 1:
        raise InputError("--backgrounds must be positive")
    if ppv_json is not None and structure is None:
        raise InputError("--ppv-json needs --structure")
    device = torch.device(device)
    model = load_rbm(model_path, device=device, dtype=torch.float64)
    alphabet = read_metadata(model_path).get("alphabet")
    full = None
    if alignment is not None:
        try:
            full = load_encoded(alignment)
            data = full.subset(TRAIN)
        except ValueError as err:
            raise InputError(str(err)) from err
        if data.num_sequences == 0 or not float(data.weights.sum()) > 0:
            raise InputError(f"{alignment}: no training sequence with a positive weight")
        if (data.length, data.num_states) != (model.num_visibles, model.num_states):
            raise InputError(f"{alignment}: L={data.length}, q={data.num_states}; the "
                             f"model has L={model.num_visibles}, q={model.num_states}")
        alphabet = data.alphabet
        backgrounds = data.codes_tensor(device)
        weights = data.weights_tensor(device, torch.float64)
    else:
        backgrounds, weights = load_chains(model_path, device), None
    if alphabet is None or len(alphabet) != model.num_states:
        raise InputError(f"{model_path}: the archive names no alphabet of {model.num_states} "
                         "letters; give --alignment")
    if structure is not None:  # read before anything is written; mapped with the profile HMM
        structure = read_structure(structure, model.num_visibles, chain, full)
    result = predict_contacts(model, backgrounds, weights, method, num_backgrounds,
                              seed)
    with nothing_written_on_failure() as written:
        write_contacts_csv(written(out), result.ranked)
        log.info("wrote %s (%d pairs; method %s, %d backgrounds)", out, len(result.ranked),
                 method, result.num_backgrounds)
        if export_dca is not None:
            write_adabmdca(written(export_dca), result.couplings, result.fields, alphabet)
            log.info("wrote %s", export_dca)
        if export_npz is not None:
            write_npz(written(export_npz), result.couplings, result.fields, alphabet,
                      result.scores, method)
            log.info("wrote %s", export_npz)
        if structure is not None:
            summary = ppv_summary(result.scores, structure)
            log.info("PPV vs %s: %s", structure.source, json.dumps(summary))
            if ppv_json is not None:
                write_json(written(ppv_json), summary)
