"""Modes of what the server keeps on disk: directories 0700, files 0600, whatever the umask (the database, its WAL,
blobs, spools, the admin token and the secret key are nobody else's business)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["PRIVATE_DIR", "PRIVATE_FILE", "private_dir", "private_file"]

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def _tighten(path: Path, mode: int) -> None:
    with contextlib.suppress(OSError):  # not ours (an admin's shared directory): leave it as it is
        if path.stat().st_uid == os.geteuid():
            os.chmod(path, mode)


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner enters: missing components are created 0700, and ``path`` itself
    is set to 0700 (also when it existed already)."""
    path = Path(path).absolute()
    missing = []
    here = path
    while not here.exists():
        missing.append(here)
        here = here.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=PRIVATE_DIR)
        os.chmod(directory, PRIVATE_DIR)  # mkdir's mode is masked by the umask
    _tighten(path, PRIVATE_DIR)
    return path


def private_file(path: Path) -> Path:
    """``path`` as a file only its owner reads: created empty (0600) when absent, else set to 0600."""
    path = Path(path)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    _tighten(path, PRIVATE_FILE)
    return path
