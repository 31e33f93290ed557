"""Data snapshots: DVC-tracked paths pinned to a git commit, fetched and verified through DVC's own API.

:func:`snapshot_data` resolves a revision (tag, branch, commit) of a DVC repository to its commit sha and records
each path's DVC hash (``md5`` of a file, ``<md5>.dir`` of a directory), size and file count, and the remote's name
and URL. A moved tag cannot change what a snapshot means: :func:`fetch_data` reads at the commit, never at the tag,
and :func:`verify_data` re-hashes every fetched file with dvc-data and compares it with the snapshot.

Credentials never enter a snapshot: ``remote_config`` (``access_key_id``, ``secret_access_key``, ``endpointurl``
...) is handed to DVC's config in memory (``Repo(remote_config=...)``) and the remote URL is recorded without any
``user:password@`` part.

>>> DataPath(path="data/a.csv", hash_name="md5", hash="4f98f59e877ecb84ff75ef0fab45bac5", size=3).nfiles
1
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator

from envyard.builder.canonical import CanonicalModel
from envyard.builder.errors import (
    DataError,
    DataIntegrityError,
    DataUnavailableError,
    UnknownRemoteError,
    UnknownRevisionError,
    UntrackedPathError,
)

if TYPE_CHECKING:
    from dvc.repo import Repo

__all__ = [
    "DataMismatch",
    "DataPath",
    "DataSnapshot",
    "fetch_data",
    "load_snapshot",
    "quiet_dvc_logging",
    "snapshot_data",
    "verify_data",
]

logger = logging.getLogger(__name__)

COMMIT_PATTERN = r"^[0-9a-f]{40}([0-9a-f]{24})?$"
_HASH_PATTERN = r"^[0-9a-f]{32,128}(\.dir)?$"


def _clean_path(value: str) -> str:
    posix = PurePosixPath(value.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or str(posix) in ("", "."):
        raise ValueError(f"{value!r} must be a relative path inside the repository, without '..'")
    return str(posix)


class DataPath(CanonicalModel):
    """One DVC-tracked path of a snapshot: its hash as DVC records it, size and file count."""

    path: str = Field(description="Path inside the repository (POSIX, relative).")
    hash_name: str = Field(description="DVC's hash algorithm name (md5, md5-dos2unix).", pattern=r"^[a-z0-9-]+$")
    hash: str = Field(description="The hash value; a directory's ends in '.dir' (DVC's listing object).",
                      pattern=_HASH_PATTERN)
    is_dir: bool = False
    size: int | None = Field(default=None, ge=0, description="Bytes (all files of a directory).")
    nfiles: int = Field(default=1, ge=0, description="Files (1 for a file).")

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        return _clean_path(value)


class DataSnapshot(CanonicalModel):
    """DVC-tracked paths of a repository pinned to one commit, with the remote they are fetched from."""

    repo: str = Field(description="The repository as given: a URL or a local path.")
    commit: str = Field(description="The git commit the revision resolved to.", pattern=COMMIT_PATTERN)
    rev: str = Field(description="The revision as requested (tag, branch, commit).")
    paths: list[DataPath] = Field(min_length=1)
    remote: str | None = Field(default=None, description="The DVC remote name (none: the local cache only).")
    remote_url: str | None = Field(default=None, description="The remote's URL, without credentials.")

    def path(self, name: str) -> DataPath:
        """The entry for repository path ``name``."""
        for entry in self.paths:
            if entry.path == name:
                return entry
        raise KeyError(name)


def quiet_dvc_logging() -> None:
    """Importing ``dvc`` installs log handlers on **stdout** for its INFO lines ("Creating 'dvc.yaml'"); a command
    whose stdout is a JSON document calls this (once, at its start) to keep DVC's lines to warnings on stderr."""
    import dvc  # noqa: F401  (its import sets the handlers up)

    logging.getLogger("dvc").setLevel(logging.WARNING)


def load_snapshot(path: str | os.PathLike[str]) -> DataSnapshot:
    """Read a snapshot file (``envyard data snapshot -o``); DataError naming the file and field when invalid."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the snapshot: {exc.strerror}", file=path,
                        hint="give a file written by `envyard data snapshot -o FILE`") from None
    return DataSnapshot.parse(data, source=os.fspath(path), error=DataError)


def _without_credentials(url: str) -> str:
    """``url`` without a ``user:password@`` part.

    >>> _without_credentials("https://user:pw@example.org/data")
    'https://example.org/data'
    >>> _without_credentials("/srv/remote")
    '/srv/remote'
    """
    parts = urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return url


@contextmanager
def _open_repo(repo: str, rev: str, remote: str | None,
               remote_config: Mapping[str, str] | None) -> Iterator[Repo]:
    """DVC's ``Repo.open`` at ``rev`` (a clone for a URL, the repository itself for a local path)."""
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo
    from dvc.scm import CloneError, RevError

    try:
        opened = Repo.open(repo, rev=rev, remote=remote,
                           remote_config=dict(remote_config) if remote_config else None)
    except RevError:
        raise UnknownRevisionError(f"revision {rev!r} does not exist in {repo}", field="rev",
                                   hint="give a tag, branch or commit the repository has (git fetch first?)") from None
    except CloneError as exc:
        raise DataUnavailableError(f"cannot clone {repo}: {exc}", field="repo",
                                   hint="check the URL and that this machine can reach it") from None
    except NotDvcRepoError:
        raise DataError(f"{repo} is not a DVC repository at {rev}", field="repo",
                        hint="give the repository's root (the folder holding .dvc/)") from None
    except DvcException as exc:
        raise DataError(f"cannot open {repo} at {rev}: {exc}", field="repo") from None
    with opened:
        yield opened


def _remote_of(repo: Repo, remote: str | None) -> tuple[str | None, str | None]:
    remotes: dict[str, Any] = dict(repo.config.get("remote", {}))
    name = remote or repo.config.get("core", {}).get("remote")
    if name is None:
        return None, None
    if not remotes.get(name, {}).get("url"):  # remote_config alone makes an entry without a URL
        known = ", ".join(sorted(key for key, value in remotes.items() if value.get("url"))) or "none"
        raise UnknownRemoteError(f"DVC remote {name!r} is not configured (configured: {known})", field="remote",
                                 hint="give one of the configured remotes with --remote, or add it with "
                                 "`dvc remote add`")
    return name, _without_credentials(str(remotes[name]["url"]))


def snapshot_data(repo: str, rev: str, paths: Sequence[str], remote: str | None = None,
                  remote_config: Mapping[str, str] | None = None) -> DataSnapshot:
    """Pin ``paths`` (DVC-tracked files or directories) of ``repo`` at ``rev`` to its commit and DVC hashes."""
    from dvc.fs import DVCFileSystem

    if not paths:
        raise DataError("a snapshot needs at least one path", field="paths", hint="give --path PATH")
    try:
        cleaned = [_clean_path(path) for path in paths]
    except ValueError as exc:
        raise UntrackedPathError(str(exc), field="paths",
                                 hint="give paths as the repository lists them, e.g. data/train") from None
    with _open_repo(repo, rev, remote, remote_config) as opened:
        commit = opened.get_rev()
        remote_name, remote_url = _remote_of(opened, remote)
        fs = DVCFileSystem(repo=opened)
        entries = [_describe(fs, path, repo, rev) for path in cleaned]
    logger.info("snapshot of %s at %s (%s): %d path(s)", repo, rev, commit, len(entries))
    return DataSnapshot(repo=repo, commit=commit, rev=rev, paths=entries, remote=remote_name, remote_url=remote_url)


def _describe(fs: Any, path: str, repo: str, rev: str) -> DataPath:
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise UntrackedPathError(f"{path} does not exist in {repo} at {rev}", field=path,
                                 hint="give a path DVC tracks (a .dvc file's output or a dvc.yaml out)") from None
    dvc_info = info.get("dvc_info")
    if not dvc_info or not info.get("isout", dvc_info.get("isout")):
        raise UntrackedPathError(f"{path} is not tracked by DVC in {repo} at {rev}", field=path,
                                 hint="track it with `dvc add` and commit the .dvc file, or give its DVC output")
    entry = dvc_info["entry"]
    hash_info, meta = entry.hash_info, entry.meta
    if hash_info is None or not hash_info.value:
        raise UntrackedPathError(f"{path} has no DVC hash in {repo} at {rev}", field=path,
                                 hint="run `dvc commit` for it and commit the result")
    is_dir = bool(meta.isdir) if meta is not None else info["type"] == "directory"
    return DataPath(path=path, hash_name=hash_info.name or "md5", hash=hash_info.value, is_dir=is_dir,
                    size=meta.size if meta is not None else None,
                    nfiles=(meta.nfiles or 0) if is_dir and meta is not None else 1)


def fetch_data(snapshot: DataSnapshot, destination: str | os.PathLike[str],
               remote_config: Mapping[str, str] | None = None) -> Path:
    """Materialize every path of ``snapshot`` at its commit under ``destination`` (``destination/<path>``).

    Reads through DVC (its cache first, then the snapshot's remote); whatever was at ``destination/<path>`` before
    is replaced. The files are not verified here: call :func:`verify_data` (``envyard data fetch`` and
    ``envyard run`` always do).
    """
    from dvc.fs import DVCFileSystem

    root = Path(destination)
    root.mkdir(parents=True, exist_ok=True)
    with _open_repo(snapshot.repo, snapshot.commit, snapshot.remote, remote_config) as opened:
        fs = DVCFileSystem(repo=opened)
        for entry in snapshot.paths:
            target = root / entry.path
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)  # a directory would be fetched *into* an existing one
            elif target.exists() or target.is_symlink():
                target.unlink()
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                fs.get(entry.path, os.fspath(target), recursive=entry.is_dir)
            except Exception as exc:  # dvc raises many kinds here (missing object, remote refused)
                raise DataUnavailableError(
                    f"cannot fetch {entry.path} ({entry.hash}) at {snapshot.commit[:12]} from "
                    f"{snapshot.remote_url or 'the local cache'}: {type(exc).__name__}: {exc}",
                    field=entry.path, details={"path": entry.path, "hash": entry.hash, "remote": snapshot.remote},
                    hint="push the data to the remote (`dvc push`) or give the remote's credentials") from None
    return root


class DataMismatch(CanonicalModel):
    """One file whose bytes differ from what a snapshot pins."""

    path: str
    expected: str | None
    actual: str | None


def _file_hash(path: Path, name: str) -> str:
    from dvc_data.hashfile.hash import file_md5

    return str(file_md5(os.fspath(path), name=name))


def _tree_of(path: Path, name: str) -> Any:
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem
    from dvc_objects.fs.memory import MemoryFileSystem

    _, _, tree = build(HashFileDB(MemoryFileSystem(), "/odb"), os.fspath(path),  # type: ignore[no-untyped-call]
                      LocalFileSystem(), name)  # type: ignore[no-untyped-call]
    return tree


def _expected_files(snapshot: DataSnapshot, entry: DataPath,
                    remote_config: Mapping[str, str] | None) -> dict[str, str] | None:
    """The per-file hashes of directory ``entry`` from DVC's ``.dir`` listing; None when unreachable."""
    from dvc.fs import DVCFileSystem

    try:
        with _open_repo(snapshot.repo, snapshot.commit, snapshot.remote, remote_config) as opened:
            fs = DVCFileSystem(repo=opened)
            found = fs.fs.find(entry.path, detail=True)  # the fsspec filesystem: find with details
            return {str(PurePosixPath(name).relative_to(entry.path)): str(info.get("md5") or "")
                    for name, info in found.items() if info.get("type") == "file"}
    except Exception:  # the listing is only used to name the file that differs
        logger.debug("no .dir listing for %s", entry.path, exc_info=True)
        return None


def verify_data(snapshot: DataSnapshot, directory: str | os.PathLike[str],
                remote_config: Mapping[str, str] | None = None) -> None:
    """Re-hash every file of ``snapshot`` under ``directory`` with dvc-data; raise on the first path that differs.

    A file compares its own hash; a directory compares the ``.dir`` hash of its listing (names, per-file md5s),
    and when that differs, the file that differs is named from DVC's listing at the pinned commit.
    """
    root = Path(directory)
    for entry in snapshot.paths:
        local = root / entry.path
        if not entry.is_dir:
            if not local.is_file():
                raise DataIntegrityError(f"{entry.path} is missing under {root}", file=local,
                                         hint="fetch the snapshot again (`envyard data fetch`)")
            actual = _file_hash(local, entry.hash_name)
            if actual != entry.hash:
                raise DataIntegrityError(
                    f"{entry.path}: {entry.hash_name} is {actual}, the snapshot pins {entry.hash}",
                    file=local, details={"path": entry.path, "expected": entry.hash,
                                                           "actual": actual},
                    hint="the data (or DVC's cache it came from) was changed; remove the cache entry and fetch "
                    "again from the remote")
            continue
        if not local.is_dir():
            raise DataIntegrityError(f"directory {entry.path} is missing under {root}", file=local,
                                     hint="fetch the snapshot again (`envyard data fetch`)")
        tree = _tree_of(local, entry.hash_name)
        actual = str(tree.hash_info.value)
        if actual == entry.hash:
            continue
        mismatches = _directory_mismatches(snapshot, entry, tree, remote_config)
        first = mismatches[0] if mismatches else None
        what = (f"{entry.path}/{first.path}: {entry.hash_name} is {first.actual or 'missing'}, the snapshot pins "
                f"{first.expected or 'no such file'}" if first else
                f"{entry.path}: listing hash is {actual}, the snapshot pins {entry.hash}")
        more = f" ({len(mismatches)} file(s) differ)" if len(mismatches) > 1 else ""
        raise DataIntegrityError(
            what + more, file=local,
            details={"path": entry.path, "expected": entry.hash, "actual": actual,
                     "files": [mismatch.model_dump() for mismatch in mismatches]},
            hint="the data (or DVC's cache it came from) was changed; remove the cache entry and fetch again")


def _directory_mismatches(snapshot: DataSnapshot, entry: DataPath, tree: Any,
                          remote_config: Mapping[str, str] | None) -> list[DataMismatch]:
    actual = {"/".join(key): str(hash_info.value) for key, _, hash_info in tree}
    expected = _expected_files(snapshot, entry, remote_config)
    if expected is None:
        return []
    return [DataMismatch(path=name, expected=expected.get(name), actual=actual.get(name))
            for name in sorted(set(actual) | set(expected)) if actual.get(name) != expected.get(name)]

