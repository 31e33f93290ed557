"""Lockfile text read from memory (:func:`parse_lockfile`): the same lock as from the file, errors naming the
source given, no temporary file left behind (the service checks submitted locks this way)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from envyard.builder.errors import LockfileError
from envyard.builder.lockfiles import parse_lockfile, read_lockfile

LOCKS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "locks"
FILES = sorted(p for folder in ("conda-lock", "explicit", "pixi") for p in (LOCKS / folder).iterdir())


def readable(path: Path) -> bool:
    try:
        read_lockfile(path)
    except LockfileError:
        return False
    return True


@pytest.mark.parametrize("path", [p for p in FILES if readable(p)], ids=lambda p: p.name[-60:])
def test_text_reads_as_the_file_does(path: Path) -> None:
    assert parse_lockfile(path.read_text(encoding="utf-8"), source=path.name) == read_lockfile(path)


@pytest.mark.parametrize("text", ["version: 6\nenvironments: [\n", "neither: a lock\n", "package: [1\n"])
def test_errors_name_the_source_not_a_temporary_file(text: str) -> None:
    with pytest.raises(LockfileError) as caught:
        parse_lockfile(text, source="pixi.lock")
    assert str(caught.value.file) == "pixi.lock" and "envyard-pixi" not in str(caught.value)


def test_a_pixi_lock_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    pixi = next(p for p in FILES if p.parent.name == "pixi" and readable(p))
    parse_lockfile(pixi.read_text(encoding="utf-8"), source="pixi.lock")
    assert list(tmp_path.iterdir()) == []
