"""Atomic writes: a finished-looking file appears only when everything it belongs to is done."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from rbmflow.provenance import atomic_path, atomic_paths, provenance, write_json


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path: Path) -> None:
    target = tmp_path / "out" / "table.csv"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half a table")
        raise RuntimeError("interrupted")
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_atomic_paths_renames_all_or_none(tmp_path: Path) -> None:
    first, second = tmp_path / "samples.fasta", tmp_path / "sampling.json"
    with pytest.raises(TypeError), atomic_paths(first, second) as (a, b):
        a.write_text(">s\nACD\n")
        write_json(b, {"bad": object()})
    assert list(tmp_path.iterdir()) == []
    with atomic_paths(first, second) as (a, b):
        a.write_text(">s\nACD\n")
        write_json(b, {"n": 1})
    assert first.read_text() == ">s\nACD\n" and json.loads(second.read_text()) == {"n": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.fasta", "sampling.json"]


def test_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "x.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644


def test_provenance_records_inputs_with_their_sha256(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(b"abc")
    block = provenance("prepare", {"alignment": source}, {"identity": 0.8}, seed=3)
    assert block["inputs"]["alignment"]["sha256"] == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    assert block["format_version"] >= 1 and block["seed"] == 3
    assert block["settings"] == {"identity": 0.8} and "torch" in block["versions"]
