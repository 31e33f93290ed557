"""``verify_manifest``: every pinned digest re-derived; drift reported field by field; a rebuild gets the digest."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from envyard.builder.data import snapshot_data
from envyard.builder.oci.image import ImageOptions
from envyard.builder.run_manifest import CodeRef, EnvironmentRef
from envyard.builder.verify import rebuild_image_digest, verify_manifest
from tests.runs.conftest import DataProject, Environment
from tests.runs.test_run import PATHS, make_manifest


def test_a_fresh_manifest_verifies(project: DataProject, environment: Environment):
    snapshot = snapshot_data(project.url, project.v1, PATHS, remote_config=project.remote_config)
    manifest = make_manifest(environment, snapshot).model_copy(
        update={"code": CodeRef(repository=str(project.work), commit=project.v1)})
    assert verify_manifest(manifest, lock_path=environment.lock, image_layout=environment.layout,
                           remote_config=project.remote_config) == []


def test_drift_is_reported_field_by_field(project: DataProject, environment: Environment, tmp_path: Path):
    snapshot = snapshot_data(project.url, project.v1, PATHS, remote_config=project.remote_config)
    params, images = snapshot.paths
    forged = snapshot.model_copy(update={"paths": [params.model_copy(update={"hash": "0" * 32}), images]})
    good = make_manifest(environment, snapshot)
    manifest = make_manifest(environment, forged).model_copy(update={
        "environment": EnvironmentRef(lock=good.environment.lock, images={"linux-64": "sha256:" + "2" * 64}),
        "code": CodeRef(repository=str(project.work), commit="3" * 40)})
    relocked = tmp_path / "conda-lock.yml"
    relocked.write_bytes(environment.lock.read_bytes() + b"# relocked\n")
    drift = {d.field: d for d in verify_manifest(manifest, lock_path=relocked, image_layout=environment.layout,
                                                 remote_config=project.remote_config)}
    assert sorted(drift) == ["code.commit", "data[0].data/params.txt", "data[0].snapshot.paths[0].hash",
                             "environment.images.linux-64", "environment.lock.sha256"]
    assert drift["environment.lock.sha256"].expected == good.environment.lock.sha256
    assert drift["environment.images.linux-64"].actual == environment.digest
    assert drift["data[0].snapshot.paths[0].hash"].actual == params.hash
    assert drift["data[0].data/params.txt"].actual == params.hash and drift["data[0].data/params.txt"].expected
    assert drift["code.commit"].actual is None and drift["code.commit"].expected == "3" * 40


def test_unknown_commit_and_missing_remote_object(project_factory: Callable[[], DataProject],
                                                  environment: Environment):
    project = project_factory()
    snapshot = snapshot_data(project.url, project.v1, PATHS, remote_config=project.remote_config)
    gone = make_manifest(environment, snapshot.model_copy(update={"commit": "e" * 40}))
    drift = verify_manifest(gone, remote_config=project.remote_config)
    assert [(d.field, d.expected, d.actual) for d in drift] == [("data[0].snapshot.commit", "e" * 40, None)]

    images = snapshot.paths[1]
    key = f"store/files/md5/{images.hash[:2]}/{images.hash[2:]}"
    project.s3().delete_object(Bucket=project.bucket, Key=key)  # the .dir listing of data/images
    drift = verify_manifest(make_manifest(environment, snapshot), remote_config=project.remote_config)
    assert [(d.field, d.expected, d.actual) for d in drift] == [("data[0].data/images", images.hash, None)]


def test_rebuild_from_the_lock_gets_the_same_digest(environment: Environment, tmp_path: Path):
    digest = rebuild_image_digest(environment.lock, "linux-64", ImageOptions(), environment.install_options(),
                                  tmp_path / "store")
    assert digest == environment.digest
