"""Parsing and encoding alignments: real files, insert removal, the alphabet, bad inputs."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from rbmflow import ALPHABET
from rbmflow.data.alignment import encode_alignment, load_alignment, read_alignment, sniff_format
from rbmflow.errors import InputError


def encode_by_hand(row: str) -> list[int]:
    """Reference encoding of one A2M row: drop lower-case and '.', index the rest."""
    return [ALPHABET.index(char) for char in row if not (char.islower() or char == ".")]


def ww_path() -> Path:
    logomaker = pytest.importorskip("logomaker")
    with logomaker.open_example_datafile("ww_sequences.fa", print_description=False) as handle:
        return Path(handle.name)


# ---------------------------------------------------------------------------- real files


def test_stockholm_luxc(shared_data: Path) -> None:
    path = shared_data / "fixtures" / "pyhmmer_LuxC.sto"
    raw = read_alignment(path)
    assert raw.format == "stockholm"
    assert len(raw.names) == 13  # '#=GF SQ 13'
    assert raw.names[0] == "Q9KV99_VIBCH/423-818"
    encoded = encode_alignment(raw)
    # All residues are upper case: every column is a match column, '.' is read as a gap.
    assert encoded.codes.shape == (13, 445)
    assert encoded.insert_columns == 0
    first = "LANQPLEAILGLINEARKSWSST............PELDPYRHTGLNF"
    expected = [ALPHABET.index("-" if char == "." else char) for char in first]
    assert encoded.codes[0, : len(first)].tolist() == expected


def test_fasta_with_inserts_pf14short(shared_data: Path) -> None:
    path = shared_data / "pfam" / "AttentionDCA_pf14short.fasta"
    raw = read_alignment(path)
    assert raw.format == "fasta" and len(raw.rows) == 1000 and len(raw.rows[0]) == 219
    encoded = encode_alignment(raw)
    assert encoded.codes.shape == (1000, 53)
    assert encoded.input_columns == 219 and encoded.insert_columns == 166
    for index in (0, 1, 517, 999):
        assert encoded.codes[index].tolist() == encode_by_hand(raw.rows[index])
    assert encoded.columns.shape == (53,)
    assert np.all(np.diff(encoded.columns) > 0)
    # The kept columns of the input hold no lower-case letter and no '.' in any row.
    kept = np.array([[row[c] for c in encoded.columns] for row in raw.rows])
    assert not np.isin(kept, list("abcdefghijklmnopqrstuvwxyz.")).any()


def test_logomaker_ww_with_comment_header() -> None:
    path = ww_path()
    assert path.read_text().startswith("#")
    encoded = load_alignment(path)
    assert encoded.codes.shape == (4025, 31)
    assert encoded.names[0] == "B7G9D5/250-280"
    assert encoded.codes[0].tolist() == encode_by_hand("LPPQW..TEA.VDVDT...GKFYFVHVET......."
                                                      "KETRWERP")
    # One 'X' in a match column: encoded as a gap by the default rule.
    assert encoded.ambiguous.sum() == 1


def test_gzip_found_by_content_not_name(shared_data: Path, tmp_path: Path) -> None:
    reference = load_alignment(shared_data / "pfam" / "PF00014_mgap6.fasta.gz")
    assert reference.codes.shape == (13600, 53)
    disguised = tmp_path / "alignment.fasta"
    disguised.write_bytes((shared_data / "pfam" / "PF00014_mgap6.fasta.gz").read_bytes())
    again = load_alignment(disguised)
    assert np.array_equal(again.codes, reference.codes)


# ------------------------------------------------------------------------- conventions


def write(tmp_path: Path, text: str, name: str = "aln.fasta") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a2m_rows_of_different_lengths_equal_padded_form(tmp_path: Path) -> None:
    a2m = ">s1\nAC-Dkl\nEF\n>s2\nmACnDEF-\n>s3\n-CYDE-\n"
    padded = ">s1\n.AC.-DklEF\n>s2\nmACnDE..F-\n>s3\n.-C.YD..E-\n"
    ragged = load_alignment(write(tmp_path, a2m, "x.a2m"))
    rect = load_alignment(write(tmp_path, padded, "y.fasta"))
    assert ragged.input_columns is None and rect.input_columns == 10
    expected = [encode_by_hand(row) for row in ("AC-DEF", "ACDEF-", "-CYDE-")]
    assert ragged.codes.tolist() == expected
    assert rect.codes.tolist() == expected
    assert rect.columns.tolist() == [1, 2, 4, 5, 8, 9]
    assert rect.insert_columns == 4


def test_comment_lines_anywhere_in_fasta(tmp_path: Path) -> None:
    text = "# header\n\n>a desc\nAC\n# between\nDE\n>b\n#c\nACDF\n"
    encoded = load_alignment(write(tmp_path, text))
    assert encoded.names.tolist() == ["a", "b"]
    assert encoded.codes.tolist() == [encode_by_hand("ACDE"), encode_by_hand("ACDF")]


def test_ambiguous_letters_become_gaps(tmp_path: Path) -> None:
    text = ">a\nABCZJ.\n>b\nXUOCCx\n>c\nACDEF.\n"
    encoded = load_alignment(write(tmp_path, text))
    # The lower-case 'x' is an insert state, removed with its column before encoding.
    assert encoded.columns.tolist() == [0, 1, 2, 3, 4]
    assert encoded.ambiguous.tolist() == [3, 3, 0]
    assert encoded.codes[0].tolist() == [1, 0, 2, 0, 0]


def test_mixed_case_column_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"column 2 mixes .*'b'.*'c'"):
        load_alignment(write(tmp_path, ">a\nAcD\n>b\nACD\n>b2\nAcD\n"))


def test_all_gap_column_kept_dots_only_column_removed(tmp_path: Path) -> None:
    encoded = load_alignment(write(tmp_path, ">a\nA-.C\n>b\nD-.E\n"))
    assert encoded.columns.tolist() == [0, 1, 3]
    assert encoded.codes.tolist() == [[1, 0, 2], [3, 0, 4]]


# -------------------------------------------------------------------------- bad inputs


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"aln.fasta: empty file"):
        load_alignment(write(tmp_path, ""))
    with pytest.raises(InputError, match=r"empty file"):
        load_alignment(write(tmp_path, "\n  \n"))


def test_comments_only(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"aln.fasta: no sequences"):
        load_alignment(write(tmp_path, "# nothing here\n"))


def test_ragged_alignment_names_record_and_lengths(tmp_path: Path) -> None:
    text = ">first\nACDE\n>second\nACDE\n>short_one\nACD\n"
    with pytest.raises(InputError, match=r"aln.fasta: ragged.*record 3 'short_one' has 3 "
                                         r"columns, expected 4"):
        load_alignment(write(tmp_path, text))
    with pytest.raises(InputError, match=r"record 2 's2' has 3 match columns.*expected 4"):
        load_alignment(write(tmp_path, ">s1\nACDEk\n>s2\nACaD\n"))


def test_stockholm_repeated_name(shared_data: Path) -> None:
    path = shared_data / "fixtures" / "prody_msa_Cys_knot.sth"
    with pytest.raises(InputError, match=r"prody_msa_Cys_knot.sth: line \d+: sequence name "
                                         r"'GTHB2_ONCKE/26-130' is repeated"):
        load_alignment(path)


def test_stockholm_ragged(tmp_path: Path) -> None:
    text = "# STOCKHOLM 1.0\nseq1 ACDEF\nseq2 ACDE\n//\n"
    with pytest.raises(InputError, match=r"x.sto: ragged.*'seq2' \(line 3\) has 4 columns, "
                                         r"expected 5"):
        load_alignment(write(tmp_path, text, "x.sto"))


def test_stockholm_interleaved_blocks_are_not_repeats(tmp_path: Path) -> None:
    text = ("# STOCKHOLM 1.0\n\nseq1 ACD\nseq2 AC-\n\nseq1 EFg\nseq2 EF.\n"
            "#=GC seq_cons ACDEF.\n//\n")
    encoded = load_alignment(write(tmp_path, text, "x.sto"))
    assert encoded.codes.tolist() == [encode_by_hand("ACDEF"), encode_by_hand("AC-EF")]


def test_binary_garbage(tmp_path: Path) -> None:
    path = tmp_path / "alignment.sto"
    path.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match=r"alignment.sto: binary data"):
        load_alignment(path)


def test_html_page_saved_as_alignment(tmp_path: Path) -> None:
    html = "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head></html>\n"
    with pytest.raises(InputError, match=r"alignment.sto: line 1 starts an HTML"):
        load_alignment(write(tmp_path, html, "alignment.sto"))
    gz = tmp_path / "alignment.sto.gz"
    gz.write_bytes(gzip.compress(html.encode()))
    with pytest.raises(InputError, match=r"alignment.sto.gz: line 1 starts an HTML"):
        load_alignment(gz)


def test_json_answer_saved_as_alignment(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"JSON"):
        load_alignment(write(tmp_path, '{"detail": "Not found."}'))


def test_unknown_letter_names_record_and_column(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"record 2 'b': unknown letter '\*' at column 4"):
        load_alignment(write(tmp_path, ">a\nACDE\n>b\nACD*\n"))
    with pytest.raises(InputError, match=r"record 1 'a': unknown letter '1' at column 2"):
        load_alignment(write(tmp_path, ">a\nA1DE\n"))


def test_text_before_first_record(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"line 2: 'oops'"):
        load_alignment(write(tmp_path, "# ok\noops\n>a\nAC\n"))


def test_only_insert_states(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no match columns"):
        load_alignment(write(tmp_path, ">a\nacde\n>b\nac.e\n"))


def test_truncated_gzip(tmp_path: Path) -> None:
    body = gzip.compress((">a\nACDE\n" * 20000).encode())
    path = tmp_path / "aln.fasta.gz"
    path.write_bytes(body[: len(body) // 2])
    with pytest.raises(InputError, match=r"aln.fasta.gz: .*(truncated|corrupt)"):
        load_alignment(path)


def test_declared_format_must_match(tmp_path: Path) -> None:
    path = write(tmp_path, ">a\nAC\n")
    assert sniff_format(path) == "fasta"
    with pytest.raises(InputError, match=r"declared as stockholm"):
        read_alignment(path, "stockholm")
    assert read_alignment(path, "a2m").format == "a2m"
