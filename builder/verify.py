"""Re-derive every digest a run manifest pins and report what drifted, field by field.

* ``environment.lock.sha256``: the lockfile's bytes (when the lock is given);
* ``environment.images.<platform>``: the image manifest's digest in an OCI layout (when given), and, with a rebuild,
  the digest of the image built again from the lock with the same options (:func:`rebuild_image_digest`);
* ``data[i]``: the DVC hashes at the pinned commit (the commit must still exist), then the bytes themselves: fetched
  through DVC and re-hashed with dvc-data (a tampered cache or a missing remote object shows here);
* ``code.commit``: the commit must exist in the code repository.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from envyard.builder.canonical import CanonicalModel
from envyard.builder.data import fetch_data, snapshot_data, verify_data
from envyard.builder.errors import DataError, DataIntegrityError, EnvyardError, ManifestError
from envyard.builder.image import ImageRequest, build_image
from envyard.builder.install import InstallOptions
from envyard.builder.oci.image import ImageOptions
from envyard.builder.oci.store import BlobStore
from envyard.builder.run import lock_sha256
from envyard.builder.run_manifest import CodeRef, RunManifest

__all__ = ["Drift", "code_commit_exists", "rebuild_image_digest", "resolve_code", "verify_manifest"]


class Drift(CanonicalModel):
    """One pinned value that re-derives differently (``actual`` None: it cannot be derived any more)."""

    field: str
    expected: str | None
    actual: str | None
    detail: str | None = None


def code_commit_exists(code: CodeRef) -> str | None:
    """None when ``code.commit`` exists in ``code.repository`` (a path or a git URL); else why not."""
    from scmrepo.exceptions import SCMError
    from scmrepo.git import Git

    try:
        if Path(code.repository).exists():
            with Git(code.repository) as git:
                return None if git.resolve_rev(code.commit) == code.commit else "resolves to another commit"
        with tempfile.TemporaryDirectory(prefix="envyard-code-") as tmp, Git.clone(code.repository, tmp) as git:
            return None if git.resolve_rev(code.commit) == code.commit else "resolves to another commit"
    except SCMError as exc:
        return f"{type(exc).__name__}: {exc}"


def resolve_code(value: str) -> CodeRef:
    """``REPO@REV`` (a path or git URL, a commit, tag or branch) -> a :class:`CodeRef` pinned to the commit."""
    from scmrepo.exceptions import SCMError
    from scmrepo.git import Git

    repository, sep, rev = value.rpartition("@")
    if not sep or not repository or not rev:
        raise ManifestError(f"--code {value!r} is not REPO@COMMIT", field="code",
                            hint="for example --code https://github.com/org/project@3f2a9c1 or --code .@HEAD")
    try:
        if Path(repository).exists():
            repository = str(Path(repository).absolute())  # "." means nothing elsewhere
            with Git(repository) as git:
                commit = git.resolve_rev(rev)
        else:
            with tempfile.TemporaryDirectory(prefix="envyard-code-") as tmp, Git.clone(repository, tmp) as git:
                commit = git.resolve_rev(rev)
    except SCMError as exc:
        raise ManifestError(f"cannot resolve {rev!r} in {repository}: {exc}", field="code",
                            hint="give a commit, tag or branch the repository has") from None
    return CodeRef(repository=repository, commit=commit)


def rebuild_image_digest(lock_path: Path, platform: str, options: ImageOptions, install: InstallOptions,
                         store_dir: Path, name: str | None = None) -> str:
    """Build the image for ``platform`` from the lock again (the pipeline of ``envyard image``); its digest."""
    from envyard.builder.lockfiles import read_lockfile

    lock = read_lockfile(lock_path)
    title = name or lock.name or lock_path.parent.name or "environment"  # what `envyard image` names it
    request = ImageRequest(lock, (platform,), options, install, name=title)
    return build_image(request, BlobStore(store_dir)).image.digest


def _data_drift(manifest: RunManifest, remote_config: Mapping[str, str] | None, fetch: bool) -> list[Drift]:
    drift: list[Drift] = []
    for index, mount in enumerate(manifest.data):
        pinned = mount.snapshot
        where = f"data[{index}].snapshot"
        try:
            now = snapshot_data(pinned.repo, pinned.commit, [p.path for p in pinned.paths], pinned.remote,
                                remote_config)
        except DataError as exc:
            drift.append(Drift(field=f"{where}.commit" if exc.code == "unknown-revision" else where,
                               expected=pinned.commit, actual=None, detail=exc.one_line()))
            continue
        for position, (old, new) in enumerate(zip(pinned.paths, now.paths, strict=True)):
            if (old.hash_name, old.hash) != (new.hash_name, new.hash):
                drift.append(Drift(field=f"{where}.paths[{position}].hash", expected=old.hash, actual=new.hash,
                                   detail=old.path))
        if now.remote_url != pinned.remote_url:
            drift.append(Drift(field=f"{where}.remote_url", expected=pinned.remote_url, actual=now.remote_url))
        if not fetch:
            continue
        with tempfile.TemporaryDirectory(prefix="envyard-verify-") as tmp:
            try:
                fetch_data(pinned, tmp, remote_config)
                verify_data(pinned, tmp, remote_config)
            except DataIntegrityError as exc:
                drift.append(Drift(field=f"data[{index}].{exc.details.get('path')}",
                                   expected=exc.details.get("expected"), actual=exc.details.get("actual"),
                                   detail=exc.message))
            except DataError as exc:
                drift.append(Drift(field=f"data[{index}].{exc.details.get('path', '')}".rstrip("."),
                                   expected=exc.details.get("hash"), actual=None, detail=exc.message))
    return drift


def verify_manifest(manifest: RunManifest, *, lock_path: Path | None = None, image_layout: Path | None = None,
                    platform: str | None = None, remote_config: Mapping[str, str] | None = None,
                    fetch: bool = True, rebuilt: Mapping[str, str] | None = None) -> list[Drift]:
    """Every drift of ``manifest`` from what can be derived now (empty: it verifies).

    ``rebuilt`` maps platforms to digests of images rebuilt from the lock (:func:`rebuild_image_digest`).
    """
    drift: list[Drift] = []
    if lock_path is not None:
        try:
            actual: str | None = lock_sha256(lock_path.read_bytes())
        except OSError as exc:
            actual = None
            detail: str | None = f"{lock_path}: {exc.strerror}"
        else:
            detail = os.fspath(lock_path)
        if actual != manifest.environment.lock.sha256:
            drift.append(Drift(field="environment.lock.sha256", expected=manifest.environment.lock.sha256,
                               actual=actual, detail=detail))
    if image_layout is not None:
        from envyard.builder.oci.unpack import find_platform_manifest

        for name, expected in sorted(manifest.environment.images.items()):
            if platform is not None and name != platform:
                continue
            try:
                found: str | None = find_platform_manifest(image_layout, name).digest
                problem = None
            except EnvyardError as exc:
                found, problem = None, exc.one_line()
            if found != expected:
                drift.append(Drift(field=f"environment.images.{name}", expected=expected, actual=found,
                                   detail=problem or os.fspath(image_layout)))
    for name, digest in sorted((rebuilt or {}).items()):
        pinned = manifest.environment.images.get(name)
        if digest != pinned:
            drift.append(Drift(field=f"environment.images.{name}", expected=pinned, actual=digest,
                               detail="rebuilt from the lock"))
    drift += _data_drift(manifest, remote_config, fetch)
    if manifest.code is not None:
        problem = code_commit_exists(manifest.code)
        if problem is not None:
            drift.append(Drift(field="code.commit", expected=manifest.code.commit, actual=None, detail=problem))
    return drift
