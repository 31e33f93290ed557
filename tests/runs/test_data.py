"""Data snapshots through DVC's API on a real git + DVC project (S3 remote on moto_server, local remote)."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from envyard.builder.data import DataSnapshot, fetch_data, snapshot_data, verify_data
from envyard.builder.errors import (
    DataIntegrityError,
    DataUnavailableError,
    UnknownRemoteError,
    UnknownRevisionError,
    UntrackedPathError,
)
from tests.runs.conftest import DataProject, commit_v2, git

PATHS = ["data/params.txt", "data/images"]


def test_snapshot_at_a_tag_pins_the_commit_and_survives_the_tag_moving(
        project_factory: Callable[[], DataProject], tmp_path: Path):
    project = project_factory()
    snapshot = snapshot_data(project.url, "release", PATHS, remote_config=project.remote_config)
    assert snapshot.commit == project.v1 and snapshot.rev == "release"
    assert snapshot.remote == "s3" and snapshot.remote_url == f"s3://{project.bucket}/store"
    params, images = snapshot.paths
    assert (params.is_dir, params.nfiles, params.size, params.hash_name) == (False, 1, 18, "md5")
    assert images.is_dir and images.nfiles == 2 and images.hash.endswith(".dir")

    commit_v2(project)
    moved = snapshot_data(project.url, "release", PATHS, remote_config=project.remote_config)
    assert moved.commit == project.v2 != snapshot.commit
    assert moved.paths[0].hash != params.hash and moved.paths[1].hash != images.hash

    fetch_data(snapshot, tmp_path / "v1", project.remote_config)  # the commit, not the tag: still v1
    verify_data(snapshot, tmp_path / "v1")
    assert (tmp_path / "v1/data/params.txt").read_text() == "learning_rate=0.1\n"
    assert (tmp_path / "v1/data/images/a.txt").read_text() == "image a v1\n"
    assert DataSnapshot.parse(snapshot.canonical_bytes()) == snapshot


def test_local_remote_and_no_credentials_in_the_snapshot(project: DataProject, tmp_path: Path):
    secret = {"access_key_id": "AKIDEXAMPLE", "secret_access_key": "wJalrXUtnFEMI-very-secret"}
    snapshot = snapshot_data(project.url, project.v1, PATHS, remote="local", remote_config=None)
    assert snapshot.remote == "local" and snapshot.remote_url == str(project.local_remote)
    fetch_data(snapshot, tmp_path / "out")  # a clone without any cache: the bytes come from the local remote
    verify_data(snapshot, tmp_path / "out")
    assert (tmp_path / "out/data/images/b.txt").read_text() == "image b (same in both versions)\n"
    s3 = snapshot_data(project.url, project.v1, PATHS, remote_config={**project.remote_config, **secret})
    assert b"AKIDEXAMPLE" not in s3.canonical_bytes() and b"very-secret" not in s3.canonical_bytes()
    assert "secret" not in (project.work / ".dvc" / "config").read_text()


@pytest.mark.parametrize(("rev", "paths", "remote", "error", "text"), [
    ("no-such-tag", ["data/params.txt"], None, UnknownRevisionError, "revision 'no-such-tag' does not exist"),
    ("release", ["data/absent.csv"], None, UntrackedPathError, "data/absent.csv does not exist"),
    ("release", ["data/params.txt.dvc"], None, UntrackedPathError, "is not tracked by DVC"),
    ("release", ["../etc/passwd"], None, UntrackedPathError, "relative path inside the repository"),
    ("release", ["data/params.txt"], "nowhere", UnknownRemoteError, "'nowhere' is not configured"),
])
def test_snapshot_errors(project: DataProject, rev: str, paths: list[str], remote: str | None,
                         error: type[Exception], text: str):
    with pytest.raises(error, match=text) as caught:
        snapshot_data(project.url, rev, paths, remote=remote, remote_config=project.remote_config)
    assert caught.value.hint  # type: ignore[attr-defined]


def test_unknown_commit_of_a_snapshot_fails_on_fetch(project: DataProject, tmp_path: Path):
    snapshot = snapshot_data(project.url, project.v1, PATHS, remote_config=project.remote_config)
    gone = snapshot.model_copy(update={"commit": "0" * 40})
    with pytest.raises(UnknownRevisionError, match="0000000000"):
        fetch_data(gone, tmp_path / "out", project.remote_config)
    assert not (tmp_path / "out" / "data").exists()


def _tamper(path: Path, text: str) -> None:
    os.chmod(path, stat.S_IWUSR | stat.S_IRUSR)  # DVC's cache files are read-only
    path.write_text(text)


def test_tampered_cache_is_caught_by_verify(project_factory: Callable[[], DataProject], tmp_path: Path):
    project = project_factory()
    snapshot = snapshot_data(str(project.work), "release", PATHS)  # the working repository: reads its cache
    params, images = snapshot.paths
    _tamper(project.cache_file(params.hash), "learning_rate=9.9\n")
    fetch_data(snapshot, tmp_path / "a")
    with pytest.raises(DataIntegrityError) as caught:
        verify_data(snapshot, tmp_path / "a")
    assert caught.value.details["path"] == "data/params.txt" and caught.value.details["expected"] == params.hash
    assert f"the snapshot pins {params.hash}" in caught.value.message

    a_md5 = next(name for name, info in _listing(project, images.hash).items() if name == "a.txt" and info)
    _tamper(project.cache_file(_listing(project, images.hash)[a_md5]), "not the image\n")
    shutil.rmtree(tmp_path / "a")
    fetch_data(snapshot.model_copy(update={"paths": [images]}), tmp_path / "a")
    with pytest.raises(DataIntegrityError) as caught:
        verify_data(snapshot.model_copy(update={"paths": [images]}), tmp_path / "a")
    assert caught.value.message.startswith("data/images/a.txt: md5 is ")
    assert [f["path"] for f in caught.value.details["files"]] == ["a.txt"]


def _listing(project: DataProject, dir_hash: str) -> dict[str, str]:
    import json

    entries = json.loads(project.cache_file(dir_hash.removesuffix(".dir")).with_suffix(".dir").read_text())
    return {entry["relpath"]: entry["md5"] for entry in entries}


def test_missing_remote_object_names_the_path(project_factory: Callable[[], DataProject], tmp_path: Path):
    project = project_factory()
    snapshot = snapshot_data(project.url, "release", PATHS, remote_config=project.remote_config)
    params = snapshot.paths[0]
    key = f"store/files/md5/{params.hash[:2]}/{params.hash[2:]}"
    assert key in project.remote_objects()
    project.s3().delete_object(Bucket=project.bucket, Key=key)
    with pytest.raises(DataUnavailableError) as caught:
        fetch_data(snapshot, tmp_path / "out", project.remote_config)
    assert caught.value.field == "data/params.txt" and params.hash in caught.value.message
    assert git(project.work, "rev-parse", "release") == project.v1


def test_fetch_replaces_what_was_there(project: DataProject, tmp_path: Path):
    snapshot = snapshot_data(project.url, project.v1, PATHS, remote_config=project.remote_config)
    (tmp_path / "data/images/images").mkdir(parents=True)
    (tmp_path / "data/images/stale.txt").write_text("left over\n")
    (tmp_path / "data/params.txt").write_text("old\n")
    fetch_data(snapshot, tmp_path, project.remote_config)
    verify_data(snapshot, tmp_path)
    assert sorted(p.name for p in (tmp_path / "data/images").iterdir()) == ["a.txt", "b.txt"]
