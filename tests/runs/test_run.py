"""``run_manifest``: a real environment (busybox from the e2e channel), real DVC data, the prefix runtime and the
image runtime through runc and bwrap; every failure is caught before the command starts (it would write a marker)."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from envyard.builder.data import DataSnapshot, snapshot_data
from envyard.builder.errors import (
    DataIntegrityError,
    DataUnavailableError,
    ManifestError,
    RunFailedError,
    RunIntegrityError,
    UnknownRevisionError,
)
from envyard.builder.run import RunOptions, run_manifest
from envyard.builder.run_manifest import DataMount, EnvironmentRef, LockRef, RunManifest
from tests.runs.conftest import DataProject, Environment, commit_v2

PATHS = ["data/params.txt", "data/images"]
#: deterministic: the data (params + both images) copied and summed into out/
COMMAND = ["sh", "-c", "mkdir -p out/sums && cat data/in/data/params.txt data/in/data/images/a.txt > out/result.txt"
           " && busybox sha256sum data/in/data/images/a.txt data/in/data/images/b.txt > out/sums/images.txt"]
MARKER = ["sh", "-c", "touch ran.marker"]


def make_manifest(environment: Environment, snapshot: DataSnapshot, command: list[str] = COMMAND,
                  **changes: object) -> RunManifest:
    lock = LockRef(sha256=hashlib.sha256(environment.lock.read_bytes()).hexdigest(), filename="conda-lock.yml",
                   format="conda-lock")
    manifest = RunManifest(
        environment=EnvironmentRef(lock=lock, images={"linux-64": environment.digest}, prefix="/opt/env"),
        data=[DataMount(snapshot=snapshot, mount="/work/data/in")], command=command, workdir="/work",
        env={"LC_ALL": "C"})
    return manifest.model_copy(update=changes)


def options(environment: Environment, workdir: Path, runtime: str = "prefix", **extra: object) -> RunOptions:
    given = {"lock_path": environment.lock, "image_layout": environment.layout,
             "install": environment.install_options(), "outputs": ("out",), **extra}
    return RunOptions(workdir=workdir, runtime=runtime, **given)  # type: ignore[arg-type]


def test_a_manifest_made_at_v1_reruns_on_v1_after_the_tag_moved(
        project_factory: Callable[[], DataProject], environment: Environment, tmp_path: Path):
    project = project_factory()
    snapshot = snapshot_data(project.url, "release", PATHS, remote_config=project.remote_config)
    manifest = make_manifest(environment, snapshot)
    commit_v2(project)  # the tag moves to v2; the manifest pins v1's commit

    first = run_manifest(manifest, options(environment, tmp_path / "one", remote_config=project.remote_config))
    assert (tmp_path / "one/out/result.txt").read_text() == "learning_rate=0.1\nimage a v1\n"
    assert first.verified[0] == "environment.lock.sha256" and "environment.packages" in first.verified
    assert {"data[0].data/params.txt", "data[0].data/images"} <= set(first.verified)
    result = first.manifest
    assert result.parent == manifest.digest and result.data == manifest.data
    assert [o.path for o in result.outputs] == ["out/result.txt", "out/sums/images.txt"]
    assert result.outputs[0].sha256 == hashlib.sha256(b"learning_rate=0.1\nimage a v1\n").hexdigest()

    second = run_manifest(manifest, options(environment, tmp_path / "two", remote_config=project.remote_config))
    assert second.manifest.outputs == result.outputs and second.manifest.digest == result.digest


@pytest.mark.parametrize("runtime", ["runc", "bwrap"])
def test_image_runtime_reproduces_the_prefix_outputs(runtime: str, project: DataProject, environment: Environment,
                                                     tmp_path: Path):
    if shutil.which(runtime) is None:
        pytest.fail(f"{runtime} is not installed (apt-get install {runtime}); the image runtime needs it")
    snapshot = snapshot_data(project.url, project.v1, PATHS, remote_config=project.remote_config)
    manifest = make_manifest(environment, snapshot)
    in_prefix = run_manifest(manifest, options(environment, tmp_path / "prefix", remote_config=project.remote_config))
    contained = run_manifest(manifest, options(environment, tmp_path / runtime, runtime,
                                               remote_config=project.remote_config, platform="linux-64"))
    assert contained.verified[0] == "environment.images.linux-64" and "environment.layers" in contained.verified
    assert contained.manifest.outputs == in_prefix.manifest.outputs
    assert (tmp_path / runtime / "out/result.txt").read_text() == "learning_rate=0.1\nimage a v1\n"


def _refused(manifest: RunManifest, run_options: RunOptions, error: type[Exception]) -> Exception:
    with pytest.raises(error) as caught:
        run_manifest(manifest, run_options)
    assert not (run_options.workdir / "ran.marker").exists(), "the command ran although a check failed"
    return caught.value


def test_changed_lock_bytes_stop_the_run(project: DataProject, environment: Environment, tmp_path: Path):
    snapshot = snapshot_data(project.url, project.v1, PATHS, remote_config=project.remote_config)
    manifest = make_manifest(environment, snapshot, MARKER)
    relocked = tmp_path / "conda-lock.yml"
    relocked.write_bytes(environment.lock.read_bytes() + b"# relocked\n")
    error = _refused(manifest, options(environment, tmp_path / "w", lock_path=relocked,
                                       remote_config=project.remote_config), RunIntegrityError)
    assert error.field == "environment.lock.sha256" and manifest.environment.lock.sha256 in error.message  # type: ignore[attr-defined]


@pytest.mark.parametrize("runtime", ["runc", "bwrap"])
def test_a_wrong_image_digest_stops_the_run(runtime: str, project: DataProject, environment: Environment,
                                            tmp_path: Path):
    snapshot = snapshot_data(project.url, project.v1, PATHS, remote_config=project.remote_config)
    other = "sha256:" + "1" * 64
    manifest = make_manifest(environment, snapshot, MARKER).model_copy(
        update={"environment": EnvironmentRef(lock=make_manifest(environment, snapshot).environment.lock,
                                              images={"linux-64": other})})
    error = _refused(manifest, options(environment, tmp_path / "w", runtime, platform="linux-64",
                                       remote_config=project.remote_config), RunIntegrityError)
    assert error.field == "environment.images.linux-64"  # type: ignore[attr-defined]
    assert environment.digest in error.message and other in error.message  # type: ignore[attr-defined]


def test_tampered_cached_data_stops_the_run(project_factory: Callable[[], DataProject], environment: Environment,
                                            tmp_path: Path):
    import os
    import stat

    project = project_factory()
    snapshot = snapshot_data(str(project.work), "release", PATHS)  # the working repository reads its own cache
    cached = project.cache_file(snapshot.paths[0].hash)
    os.chmod(cached, stat.S_IRUSR | stat.S_IWUSR)
    cached.write_text("learning_rate=99\n")
    error = _refused(make_manifest(environment, snapshot, MARKER), options(environment, tmp_path / "w"),
                     DataIntegrityError)
    assert error.details["path"] == "data/params.txt"  # type: ignore[attr-defined]


def test_missing_remote_object_stops_the_run(project_factory: Callable[[], DataProject], environment: Environment,
                                             tmp_path: Path):
    project = project_factory()
    snapshot = snapshot_data(project.url, "release", PATHS, remote_config=project.remote_config)
    for key in project.remote_objects():
        if key.endswith(".dir"):
            continue
        project.s3().delete_object(Bucket=project.bucket, Key=key)
        break
    error = _refused(make_manifest(environment, snapshot, MARKER),
                     options(environment, tmp_path / "w", remote_config=project.remote_config), DataUnavailableError)
    assert "cannot fetch data/" in error.message  # type: ignore[attr-defined]


def test_an_unknown_snapshot_commit_stops_the_run(project: DataProject, environment: Environment, tmp_path: Path):
    snapshot = snapshot_data(project.url, project.v1, PATHS, remote_config=project.remote_config)
    gone = snapshot.model_copy(update={"commit": "f" * 40})
    error = _refused(make_manifest(environment, gone, MARKER),
                     options(environment, tmp_path / "w", remote_config=project.remote_config), UnknownRevisionError)
    assert "f" * 40 in error.message  # type: ignore[attr-defined]


def test_prefix_runtime_refuses_a_mount_outside_the_workdir(project: DataProject, environment: Environment,
                                                           tmp_path: Path):
    snapshot = snapshot_data(project.url, project.v1, PATHS, remote_config=project.remote_config)
    manifest = make_manifest(environment, snapshot, MARKER).model_copy(
        update={"data": [DataMount(snapshot=snapshot, mount="/data")]})
    error = _refused(manifest, options(environment, tmp_path / "w", remote_config=project.remote_config),
                     ManifestError)
    assert error.field == "data[0].mount"  # type: ignore[attr-defined]


def test_failing_command_and_missing_output(project: DataProject, environment: Environment, tmp_path: Path):
    snapshot = snapshot_data(project.url, project.v1, PATHS, remote_config=project.remote_config)
    with pytest.raises(RunFailedError, match="status 3"):
        run_manifest(make_manifest(environment, snapshot, ["sh", "-c", "exit 3"]),
                     options(environment, tmp_path / "a", remote_config=project.remote_config))
    with pytest.raises(RunFailedError, match="declared output out was not written"):
        run_manifest(make_manifest(environment, snapshot, ["true"]),
                     options(environment, tmp_path / "b", remote_config=project.remote_config))


def test_a_tampered_image_layer_stops_the_run(project: DataProject, environment: Environment, tmp_path: Path):
    from envyard.builder.oci.unpack import find_platform_manifest

    layout = tmp_path / "oci"
    shutil.copytree(environment.layout, layout)
    layer = find_platform_manifest(layout, "linux-64").layers()[0]
    blob = layout / "blobs" / "sha256" / layer.hex
    blob.write_bytes(blob.read_bytes()[:-1] + bytes([blob.read_bytes()[-1] ^ 1]))
    snapshot = snapshot_data(project.url, project.v1, PATHS, remote_config=project.remote_config)
    error = _refused(make_manifest(environment, snapshot, MARKER),
                     options(environment, tmp_path / "w", "bwrap", image_layout=layout, platform="linux-64",
                             remote_config=project.remote_config), RunIntegrityError)
    assert layer.digest in error.message and "hashes to" in error.message  # type: ignore[attr-defined]
