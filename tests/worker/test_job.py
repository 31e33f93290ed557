"""The build child (worker.job): artifacts, manifest and events, in-process and as ``python -m envyard.worker.job``."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
import zstandard

from envyard.builder.errors import InstallError, SpecError
from envyard.builder.lockfiles import read_lockfile, render_conda_lock
from envyard.builder.model import LockedPipPackage
from envyard.builder.settings import Settings
from envyard.worker.job import PARTIAL_PATH, JobManifest, JobSpec, run_job
from tests.commands import BUILD_CHILD
from tests.packages import build_e2e_channel

REPO = Path(__file__).resolve().parents[2]
DEPS = ["reloc-data", "pyhello", "python"]
TWO_PLATFORMS = ["linux-64", "linux-aarch64"]


class Recorder:
    """An EventSink that keeps everything."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def stage(self, name: str) -> None:
        self.events.append({"event": "stage", "stage": name})

    def progress(self, stage: str, detail: str, **fields: Any) -> None:
        self.events.append({"event": "progress", "stage": stage, "detail": detail, **fields})

    def log(self, line: str) -> None:
        self.events.append({"event": "log", "line": line})

    def stages(self) -> list[str]:
        return [e["stage"] for e in self.events if e["event"] == "stage"]


@pytest.fixture(scope="module")
def channels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("worker-channels")
    build_e2e_channel(root)
    return root


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One package and repodata cache for the module, as a worker shares one between its builds."""
    return tmp_path_factory.mktemp("worker-cache")


def _settings(cache_dir: Path, channels: Path) -> Settings:
    return Settings(cache_dir=cache_dir, channel_alias=channels.as_uri() + "/", _env_file=None)  # type: ignore[call-arg]


def _spec(deps: list[str]) -> str:
    return "name: worker-e2e\nchannels:\n  - e2e\ndependencies:\n" + "".join(f"  - {d}\n" for d in deps)


def _job(**fields: Any) -> JobSpec:
    values: dict[str, Any] = {"build_id": 7, "spec_text": _spec(DEPS), "platforms": ["linux-64"],
                              "image_name": "team/env:build-7", "source_date_epoch": 1_700_000_000, **fields}
    return JobSpec(**values)


@pytest.fixture(scope="module")
def built(channels: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, JobManifest,
                                                                                                Recorder]:
    job_dir = tmp_path_factory.mktemp("job")
    recorder = Recorder()
    manifest = run_job(_job(platforms=TWO_PLATFORMS), job_dir, _settings(cache_dir, channels), recorder)
    return job_dir, manifest, recorder


def _blob(job_dir: Path, digest: str) -> bytes:
    return (job_dir / "out/oci/blobs/sha256" / digest.split(":")[1]).read_bytes()


def test_every_artifact_is_there_with_its_digest(built: tuple[Path, JobManifest, Recorder]) -> None:
    job_dir, manifest, _ = built
    for artifact in manifest.artifacts:
        data = (job_dir / artifact.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == artifact.sha256 and len(data) == artifact.size, artifact
        assert not Path(artifact.path).is_absolute() and artifact.path.startswith("out/")
    names = {(a.kind, a.name) for a in manifest.artifacts if a.kind != "oci-blob"}
    per_platform = [("explicit", "explicit-{p}.txt"), ("environment", "environment-{p}.yml"),
                    ("archive", "env-{p}.tar.zst"), ("sbom", "sbom-{p}.spdx.json")]
    assert names == {("conda-lock", "conda-lock.yml"), ("pixi-lock", "pixi.lock"), ("oci-index", "image-index.json"),
                     *((kind, name.format(p=p)) for p in TWO_PLATFORMS for kind, name in per_platform)}
    assert manifest.platforms == TWO_PLATFORMS
    assert manifest.lock_sha256 == next(a.sha256 for a in manifest.artifacts if a.kind == "conda-lock")
    assert JobManifest.model_validate_json((job_dir / "out/manifest.json").read_text()) == manifest


def test_stages_in_order_with_builder_progress(built: tuple[Path, JobManifest, Recorder]) -> None:
    job_dir, _, recorder = built
    assert recorder.stages() == ["solving", "installing", "imaging"]
    assert not [e for e in recorder.events if str(job_dir) in json.dumps(e)], "events show worker paths"
    finished = [(e["stage"], e["step"]) for e in recorder.events if e.get("state") == "finished"]
    assert ("solving", "solve") in finished and ("installing", "install") in finished
    assert ("installing", "pack") in finished and ("imaging", "image") in finished
    pack = next(e for e in recorder.events if e.get("step") == "pack" and e.get("state") == "finished")
    assert pack["bytes"] > 0 and pack["files"] > 10


def test_image_index_and_blobs(built: tuple[Path, JobManifest, Recorder]) -> None:
    job_dir, manifest, _ = built
    index_artifact = next(a for a in manifest.artifacts if a.kind == "oci-index")
    index_bytes = (job_dir / index_artifact.path).read_bytes()
    assert manifest.image_digest == "sha256:" + hashlib.sha256(index_bytes).hexdigest()
    index = json.loads(index_bytes)
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64"]
    referenced = set()
    for entry in index["manifests"]:
        referenced.add(entry["digest"])
        platform_manifest = json.loads(_blob(job_dir, entry["digest"]))
        referenced |= {platform_manifest["config"]["digest"], *(x["digest"] for x in platform_manifest["layers"])}
        labels = json.loads(_blob(job_dir, platform_manifest["config"]["digest"]))["config"]["Labels"]
        assert labels["org.opencontainers.image.title"] == "team/env"
    layout = json.loads((job_dir / "out/oci/index.json").read_text())
    referrers = [m["digest"] for m in layout["manifests"] if m.get("artifactType") == "application/spdx+json"]
    assert len(referrers) == 2
    sbom_layers = set()
    for digest in referrers:
        referrer = json.loads(_blob(job_dir, digest))
        assert referrer["subject"]["digest"] == manifest.image_digest
        referenced |= {digest, referrer["config"]["digest"], referrer["layers"][0]["digest"]}
        sbom_layers.add(referrer["layers"][0]["digest"])
    blobs = {"sha256:" + a.sha256 for a in manifest.artifacts if a.kind == "oci-blob"}
    assert blobs == referenced
    assert {"sha256:" + a.sha256 for a in manifest.artifacts if a.kind == "sbom"} == sbom_layers


def test_packages_and_exports_match_the_lock(built: tuple[Path, JobManifest, Recorder]) -> None:
    job_dir, manifest, _ = built
    lock = read_lockfile(job_dir / "out/lock/conda-lock.yml")
    rows = {(r.platform, r.manager, r.name, r.version, r.build) for r in manifest.packages}
    assert rows == {(p, "conda", c.name, c.version, c.build) for p in TWO_PLATFORMS for c in lock.platforms[p].conda}
    assert {r.name for r in manifest.packages} == set(DEPS)
    exported = yaml.safe_load((job_dir / "out/environment-linux-aarch64.yml").read_text())
    assert exported["channels"] == ["e2e", "nodefaults"]
    assert sorted(exported["dependencies"]) == sorted(
        f"{c.name}=={c.version}={c.build}" for c in lock.platforms["linux-aarch64"].conda)
    archive = job_dir / "out/env-linux-64.tar.zst"
    raw = zstandard.ZstdDecompressor().stream_reader(archive.open("rb")).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert {"bin/conda-unpack", "share/reloc/prefix.txt", "conda-meta/history"} <= set(tar.getnames())


def test_reexported_lock_without_image_or_archive(built: tuple[Path, JobManifest, Recorder], cache_dir: Path,
                                                  channels: Path, tmp_path: Path) -> None:
    lock_text = (built[0] / "out/lock/conda-lock.yml").read_text()
    recorder = Recorder()
    job = _job(spec_text=lock_text, spec_filename="conda-lock.yml", platforms=["linux-aarch64"], image=False,
               archive=False, sbom=None)
    manifest = run_job(job, tmp_path, _settings(cache_dir, channels), recorder)
    assert recorder.stages() == ["solving", "installing"]
    assert manifest.image_digest is None and manifest.platforms == ["linux-aarch64"]
    assert {a.kind for a in manifest.artifacts} == {"conda-lock", "pixi-lock", "explicit", "environment"}
    prefix_file = tmp_path / "work/linux-aarch64/env/share/reloc/prefix.txt"
    assert prefix_file.read_text() == "/opt/env\n"  # installed for the job's env_prefix


def test_foreign_platform_with_pip_packages_is_refused(built: tuple[Path, JobManifest, Recorder], cache_dir: Path,
                                                       channels: Path, tmp_path: Path) -> None:
    lock = read_lockfile(built[0] / "out/lock/conda-lock.yml")
    pip = LockedPipPackage("attrs", "24.2.0", "https://files.example/attrs-24.2.0-py3-none-any.whl", "0" * 64)
    foreign = dataclasses.replace(lock.platforms["linux-aarch64"], pip=(pip,))
    lock = dataclasses.replace(lock, platforms={**lock.platforms, "linux-aarch64": foreign})
    recorder = Recorder()
    job = _job(spec_text=render_conda_lock(lock), spec_filename="conda-lock.yml", platforms=TWO_PLATFORMS)
    with pytest.raises(InstallError, match="linux-aarch64: the lock has pip packages"):
        run_job(job, tmp_path, _settings(cache_dir, channels), recorder)
    assert recorder.stages() == ["solving", "installing"]
    assert not (tmp_path / "out/manifest.json").exists()
    partial = JobManifest.model_validate_json((tmp_path / PARTIAL_PATH).read_text())  # the locks, for the user
    assert {a.kind for a in partial.artifacts} == {"conda-lock", "pixi-lock", "explicit", "environment"}
    for artifact in partial.artifacts:
        assert hashlib.sha256((tmp_path / artifact.path).read_bytes()).hexdigest() == artifact.sha256
    assert partial.lock_sha256 == hashlib.sha256((tmp_path / "out/lock/conda-lock.yml").read_bytes()).hexdigest()


def test_spec_errors_name_the_users_file(cache_dir: Path, channels: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        run_job(_job(spec_text="channels: [e2e]\ndependencies:\n  - [reloc-data\n"), tmp_path,
                _settings(cache_dir, channels), Recorder())
    assert caught.value.file == "environment.yml" and caught.value.line is not None
    assert not (tmp_path / PARTIAL_PATH).exists()  # nothing was solved


def _run_child(job: JobSpec, job_dir: Path, cache_dir: Path, channels: Path, tmp_path: Path
               ) -> tuple[int, list[dict[str, Any]], str]:
    """``python -m envyard.worker.job`` as the runner starts it; returns exit code, events and stderr."""
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "job.json").write_text(job.model_dump_json())
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "ENVYARD_CACHE_DIR": str(cache_dir),
           "ENVYARD_CHANNEL_ALIAS": channels.as_uri() + "/", "TMPDIR": str(system_tmp)}
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen([*BUILD_CHILD, str(job_dir), "--events-fd", str(write_fd)],
                                pass_fds=(write_fd,), env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, encoding="utf-8") as reader:
        lines = reader.read().splitlines()
    _, stderr = proc.communicate(timeout=120)
    assert list(system_tmp.iterdir()) == [], "the child left temporary files outside JOB_DIR"
    assert not (job_dir / "tmp").exists()
    return proc.returncode, [json.loads(line) for line in lines], stderr


def test_child_process_success(cache_dir: Path, channels: Path, tmp_path: Path) -> None:
    code, events, stderr = _run_child(_job(), tmp_path / "job", cache_dir, channels, tmp_path)
    assert code == 0, stderr
    assert [e["stage"] for e in events if e["event"] == "stage"] == ["solving", "installing", "imaging"]
    assert events[-1] == {"event": "result", "manifest": "out/manifest.json"}
    assert "==> imaging" in stderr
    manifest = JobManifest.model_validate_json((tmp_path / "job/out/manifest.json").read_text())
    index = next(a for a in manifest.artifacts if a.kind == "oci-index")
    assert index.name == "image-manifest.json" and index.platform == "linux-64"  # one platform: the root is a manifest
    assert manifest.image_digest == "sha256:" + index.sha256
    assert sorted(os.listdir(tmp_path / "job")) == ["input", "job.json", "out", "work"]


def test_child_process_unsolvable_spec(cache_dir: Path, channels: Path, tmp_path: Path) -> None:
    code, events, stderr = _run_child(_job(spec_text=_spec(["reloc-data >=99"])), tmp_path / "job", cache_dir,
                                      channels, tmp_path)
    assert code == 1
    error = events[-1]
    assert error["event"] == "error" and error["code"] == "unsatisfiable" and error["stage"] == "solving", error
    assert "reloc-data >=99" in error["message"] and error["hint"]
    assert stderr.strip().splitlines()[-1].startswith("error: linux-64: no solution for 'reloc-data >=99'")
    assert not (tmp_path / "job/out/manifest.json").exists()


def test_child_process_yaml_error(cache_dir: Path, channels: Path, tmp_path: Path) -> None:
    job = _job(spec_text="name: broken\nchannels: [e2e]\ndependencies:\n  - reloc-data\n   - python: [\n")
    code, events, stderr = _run_child(job, tmp_path / "job", cache_dir, channels, tmp_path)
    assert code == 1
    error = events[-1]
    assert error["event"] == "error" and error["code"] == "invalid-spec" and error["stage"] == "solving", error
    assert error["file"] == "environment.yml" and isinstance(error["line"], int)
    assert f"environment.yml:{error['line']}" in stderr
