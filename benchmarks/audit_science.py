"""Audit of mislabelled results: report side files, sequences scored against the wrong
family, mutant numbering with inserts, structures of the family (with modified residues) and
of another family.

Every case must end either with exit 1, one line on stderr naming the file or record, and no
output left; or with exit 0 and the right answer (checked against a truth written here). Prints
one line per failing case and the counts per class (report side files, score, mutant numbering,
structures) and in all.

    python benchmarks/audit_science.py [--luxc tests-data/pyhmmer_LuxC.sto]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rbmflow import ALPHABET
from rbmflow.cli import main
from rbmflow.data import synthetic
from rbmflow.data.alignment import load_alignment
from rbmflow.data.dataset import EncodedAlignment, save_encoded
from rbmflow.data.fetch import locate_example
from rbmflow.model import archive
from rbmflow.provenance import sha256_file
from rbmflow.report.inputs import LOGLIK_FIELDS, MUTATIONS_FIELDS, SAMPLING_FIELDS

BAD_VALUES = {"number": [math.nan, math.inf, -math.inf, "1.0", True, [1.0], {"v": 1}],
              "count": [-1, 1.5, math.nan, "3", True, [3]],
              "int": [1.5, math.nan, "3", True, None],
              "bool": ["yes", 1, 0, None, [True]],
              "text": [1, True, ["a"], {"a": 1}],
              "numbers": [[0.5, math.nan], [0.5, "0.4"], 0.5, [True], [math.inf]],
              "texts": [1, [1, "a"], {"a": 1}, True]}


class Audit:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []
        self.by_class: dict[str, list[int]] = {}  # class (first word of a name): [pass, fail]

    def refused(self, name: str, argv: list[str], outputs: list[Path], needle: str) -> None:
        """Exit 1, one stderr line holding `needle`, none of `outputs` left."""
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
        lines = err.getvalue().strip().splitlines()
        left = [str(p) for p in outputs if p.exists() and (p.is_file() or any(p.iterdir()))]
        ok = code == 1 and len(lines) == 1 and needle in lines[0] and not left
        self.record(name, ok, f"exit {code}, stderr {lines[-3:]}, left {left}")

    def record(self, name: str, ok: bool, detail: str = "") -> None:
        self.by_class.setdefault(name.split()[0], [0, 0])[0 if ok else 1] += 1
        if ok:
            self.passed += 1
        else:
            self.failed.append(f"{name}: {detail}")


def save_model(path: Path, model) -> Path:
    archive.save_checkpoint(path, model, torch.zeros(2, model.num_visibles, dtype=torch.long),
                            1, 0.0, None, {"batch_size": 1, "gibbs_steps": 1,
                                           "learning_rate": 0.1, "L1": 0.0, "L2": 0.0,
                                           "seed": 0, "num_hiddens": model.num_hiddens,
                                           "num_chains": 2}, {"alphabet": ALPHABET})
    return path


def family(root: Path) -> dict[str, Path]:
    """WW (4,025 x 31) split 80/20, a random 3-unit model over it, its side files and samples."""
    enc = load_alignment(*locate_example("example:ww"))
    split = (np.random.default_rng(0).random(enc.codes.shape[0]) < 0.2).astype(np.uint8)
    data = EncodedAlignment(enc.codes, np.ones(enc.codes.shape[0], np.float32), split,
                            enc.names, np.arange(enc.codes.shape[1]), ALPHABET, {})
    save_encoded(root / "ww.npz", data)
    model = save_model(root / "model.h5", synthetic.random_structured_rbm(
        data.length, 21, 3, generator=torch.Generator().manual_seed(2)))
    (root / "samples.fasta").write_text("".join(
        f">s{k}\n{''.join(ALPHABET[c] for c in row)}\n" for k, row in enumerate(enc.codes[:50])))
    stamp = {"provenance": {"inputs": {"model": {"path": str(model),
                                                 "sha256": sha256_file(model)}}}}
    good = {"loglik.json": {"log_z": 30.0, "loglik_train": -20.0, "loglik_test": -21.0,
                            "checkpoint": 1, "warnings": [], **stamp},
            "sampling.json": {"equilibrated": True, "sweeps": 100, "method": "gibbs",
                              "swap_rates": None, **stamp},
            "mutations.json": {"positions": 31, "covered_positions": 31, "columns": 31,
                               "matched_columns": 31, "first": 1, **stamp}}
    for name, document in good.items():
        (root / name).write_text(json.dumps(document))
    (root / "mutations.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return {"root": root, "data": root / "ww.npz", "model": model, "encoded": data,
            **{name: root / name for name in good}}


def audit_report(audit: Audit, run: dict[str, Path]) -> None:
    flags = {"loglik.json": "--loglik", "sampling.json": "--sampling",
             "mutations.json": "--mutations-summary"}
    specs = {"loglik.json": LOGLIK_FIELDS, "sampling.json": SAMPLING_FIELDS,
             "mutations.json": MUTATIONS_FIELDS}
    base = ["report", "--data", str(run["data"]), "--samples", str(run["root"] / "samples.fasta"),
            "--model", str(run["model"]), "--device", "cpu"]
    extra = ["--mutations-heatmap", str(run["root"] / "mutations.png")]
    case = 0
    for name, fields in specs.items():
        good = json.loads(run[name].read_text())
        for key, (kind, required) in fields.items():
            values = [v for v in BAD_VALUES[kind] if v is not None or required]
            if required:
                values.append(None)
            for value in values:
                case += 1
                document = json.loads(json.dumps(good))
                target = document
                *parents, last = key.split(".")
                for part in parents:
                    target = target.setdefault(part, {})
                target[last] = value
                path = run["root"] / f"bad{case}_{name}"
                path.write_text(json.dumps(document))
                out = run["root"] / f"out{case}"
                audit.refused(f"report {name} {key}={value!r}",
                              [*base, flags[name], str(path), *extra, "--outdir", str(out)],
                              [out], str(path))
        for label, stamp in (("another model", {"inputs": {"model": {"sha256": "0" * 64}}}),
                             ("no model recorded", {"inputs": {}}), ("no provenance", None)):
            case += 1
            document = {**good, "provenance": stamp}
            path = run["root"] / f"bad{case}_{name}"
            path.write_text(json.dumps(document))
            out = run["root"] / f"out{case}"
            audit.refused(f"report {name} {label}", [*base, flags[name], str(path), *extra,
                                                     "--outdir", str(out)], [out], str(path))


def audit_score(audit: Audit, run: dict[str, Path], luxc: Path | None) -> None:
    L = run["encoded"].length
    rng = np.random.default_rng(1)
    aa = list(ALPHABET[1:])
    foreign = {f"random{k}": "".join(rng.choice(aa, L)) for k in range(20)}
    for letter in "BZJXUO":
        foreign[f"all_{letter}"] = letter * L
    foreign["mixed_ambiguous"] = "".join(rng.choice(list("BZJXUO"), L))
    if luxc is not None:
        rows = load_alignment(luxc).codes
        for k in range(min(20, rows.shape[0])):
            text = "".join(ALPHABET[c] for c in rows[k] if c > 0)
            for start in (0, len(text) // 2):
                if len(text) >= start + L:
                    foreign[f"luxc{k}_{start}"] = text[start:start + L]
    for name, text in foreign.items():
        fasta = run["root"] / f"{name}.fasta"
        fasta.write_text(f">{name}\n{text}\n")
        out = run["root"] / f"{name}.csv"
        audit.refused(f"score {name}", ["score", str(run["model"]), str(fasta), "--data",
                                        str(run["data"]), "--out", str(out)],
                      [out, out.with_suffix(".json")], name)


def audit_numbering(audit: Audit, run: dict[str, Path]) -> None:
    """A2M wild types with random inserts: each mutant is labelled with its residue's number
    counted over all residues, inserts included, and sits in its own column."""
    data = run["encoded"]
    rng = np.random.default_rng(4)
    members = [r for r in data.codes if (r > 0).all()][:30]
    aa = np.array(list(ALPHABET[1:]))
    for k, member in enumerate(members):
        columns = [ALPHABET[c] for c in member]
        pieces, truth, residue = [], {}, 0
        for column, letter in enumerate(columns):
            inserts = "".join(rng.choice(aa, rng.integers(0, 3))).lower()
            pieces.append(inserts)
            residue += len(inserts)
            pieces.append(letter)
            residue += 1
            truth[column + 1] = f"{letter}{residue + 9}"
        out = run["root"] / f"mut{k}.csv"
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(["mutations", str(run["model"]), str(run["data"]), "--wildtype",
                         "".join(pieces), "--first", "10", "--out", str(out)])
        got = {}
        if code == 0:
            for line in out.read_text().splitlines()[1:]:
                mutant, _, column, _ = line.split(",")
                got[int(column)] = mutant[:-1]
        audit.record(f"mutations A2M member {k}", code == 0 and got == truth,
                     f"exit {code}, {sorted(set(got.items()) ^ set(truth.items()))[:4]}")


def write_chain(path: Path, sequence: str, modified: dict[int, str], seed: int) -> list:
    """A PDB file of one chain A, one CA per residue on a seeded random walk, residues in
    `modified` (0-based index -> HETATM residue name, e.g. MSE) written as HETATM with an
    extra heavy atom; returns the heavy-atom coordinates of each residue."""
    from Bio.Data.PDBData import protein_letters_1to3
    from Bio.PDB import PDBIO, StructureBuilder

    steps = np.random.default_rng(seed).normal(size=(len(sequence), 3))
    xyz = np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=1, keepdims=True), axis=0)
    builder = StructureBuilder.StructureBuilder()
    builder.init_structure("s")
    builder.init_model(0)
    builder.init_chain("A")
    atoms = []
    for k, letter in enumerate(sequence):
        het = modified.get(k)
        builder.init_seg("    ")
        builder.init_residue(het or protein_letters_1to3[letter].upper(),
                             f"H_{het}" if het else " ", k + 1, " ")
        builder.init_atom("CA", xyz[k], 0.0, 1.0, " ", " CA ", element="C")
        atoms.append([xyz[k]])
        if het:
            builder.init_atom("X1", xyz[k] + 0.7, 0.0, 1.0, " ", " X1 ", element="C")
            atoms[-1].append(xyz[k] + 0.7)
    io_ = PDBIO()
    io_.set_structure(builder.get_structure())
    io_.save(str(path))
    return [np.asarray(a) for a in atoms]


def audit_structures(audit: Audit, run: dict[str, Path], luxc: Path | None) -> None:
    """Member chains with flanks and modified residues map each residue to its own column
    with the chain's distances (all but at most two end columns); chains of no family or
    another one are refused."""
    from rbmflow.evaluation.contacts import read_structure, residue_distances

    data = run["encoded"]
    rng = np.random.default_rng(6)
    members = [r for r in data.codes if (r > 0).all()][:12]
    aa = list(ALPHABET[1:])
    parents = {"MSE": "M", "SEP": "S", "TPO": "T", "CSO": "C", "MLY": "K"}
    for k, member in enumerate(members):
        core = [ALPHABET[c] for c in member]
        het, parent = list(parents.items())[k % len(parents)]
        spot = int(rng.integers(0, len(core)))
        core[spot] = parent
        left = "".join(rng.choice(aa, rng.integers(0, 6)))
        sequence = left + "".join(core) + "".join(rng.choice(aa, rng.integers(0, 6)))
        pdb = run["root"] / f"member{k}.pdb"
        atoms = write_chain(pdb, sequence, {len(left) + spot: het}, k)
        truth = residue_distances(atoms[len(left):len(left) + len(core)])
        np.fill_diagonal(truth, np.nan)
        try:
            got = read_structure(pdb, data.length, "A", data).distances
            known = ~np.isnan(got)  # the local alignment may leave an end column out
            ok = (np.allclose(got[known], truth[known], atol=5e-3)
                  and (known.any(0).sum() >= data.length - 2))
        except Exception as err:  # noqa: BLE001 - any failure is a failed case
            ok, got = False, err
        audit.record(f"structure member {k} ({het})", ok, str(got)[:200])
    foreign = {f"random{k}": "".join(rng.choice(aa, 40 + 7 * k)) for k in range(8)}
    if luxc is not None:
        rows = load_alignment(luxc).codes
        for k in range(min(12, rows.shape[0])):
            foreign[f"luxc{k}"] = "".join(ALPHABET[c] for c in rows[k] if c > 0)[:80]
    for name, sequence in foreign.items():
        pdb = run["root"] / f"{name}.pdb"
        write_chain(pdb, sequence, {}, 0)
        out = run["root"] / f"{name}_contacts.csv"
        audit.refused(f"structure {name}", ["contacts", str(run["model"]), "--alignment",
                                            str(run["data"]), "--out", str(out), "--structure",
                                            str(pdb), "--chain", "A", "--ppv-json",
                                            str(out.with_suffix(".json"))],
                      [out, out.with_suffix(".json")], f"{pdb} chain A")


def run_audit(luxc: Path | None) -> Audit:
    torch.set_num_threads(1)
    audit = Audit()
    with tempfile.TemporaryDirectory() as tmp:
        run = family(Path(tmp))
        sections: list[Callable[[], None]] = [
            lambda: audit_report(audit, run), lambda: audit_score(audit, run, luxc),
            lambda: audit_numbering(audit, run), lambda: audit_structures(audit, run, luxc)]
        for section in sections:
            section()
    return audit


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--luxc", type=Path, default=None,
                        help="a Stockholm alignment of another family (foreign sequences)")
    args = parser.parse_args()
    result = run_audit(args.luxc)
    for line in result.failed:
        print("FAIL", line)
    print(f"{'class':12s} {'cases':>6s} {'pass':>6s} {'FAIL':>6s}")
    for klass, (good, bad) in result.by_class.items():
        print(f"{klass:12s} {good + bad:6d} {good:6d} {bad:6d}")
    print(f"{result.passed} of {result.passed + len(result.failed)} cases end cleanly")
    sys.exit(1 if result.failed else 0)
