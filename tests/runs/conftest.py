"""A real git + DVC project built from Python, with an S3 remote on moto_server (addressed as MinIO is) and a local
remote; two data versions and a tag that moves from v1 to v2.

Layout of :class:`DataProject`: ``work/`` (the working repository: ``data/params.txt`` a file, ``data/images/`` a
directory of two files), ``origin.git`` (a bare clone: snapshots of ``file://.../origin.git`` clone it and fetch from
the S3 remote, never from the working repository's cache), ``local-remote/`` and an S3 bucket of its own.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import moto_s3

CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing"}
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, env=GIT_ENV,
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


@dataclass
class DataProject:
    root: Path
    work: Path
    origin: Path
    local_remote: Path
    bucket: str
    endpoint: str
    v1: str
    v2: str

    @property
    def url(self) -> str:
        """The origin as a URL: DVC clones it (no cache of the working repository is reachable)."""
        return self.origin.as_uri()

    @property
    def remote_config(self) -> dict[str, str]:
        """Credentials of the S3 remote: handed to DVC in memory, never written into the project."""
        return dict(CREDENTIALS)

    def s3(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def remote_objects(self) -> list[str]:
        listed = self.s3().list_objects_v2(Bucket=self.bucket)
        return [item["Key"] for item in listed.get("Contents", [])]

    def cache_file(self, md5: str) -> Path:
        return self.work / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def _write_version(work: Path, version: str) -> None:
    (work / "data" / "images").mkdir(parents=True, exist_ok=True)
    (work / "data" / "params.txt").write_text(f"learning_rate={'0.1' if version == 'v1' else '0.2'}\n")
    (work / "data" / "images" / "a.txt").write_text(f"image a {version}\n")
    (work / "data" / "images" / "b.txt").write_text("image b (same in both versions)\n")


def _commit(work: Path, version: str) -> str:
    from dvc.repo import Repo

    _write_version(work, version)
    with Repo(str(work), remote_config=CREDENTIALS) as repo:
        repo.add([str(work / "data" / "params.txt"), str(work / "data" / "images")])
        repo.push(remote="s3")
        repo.push(remote="local")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", f"data {version}")
    git(work, "tag", "-f", "release")
    return git(work, "rev-parse", "HEAD")


def make_project(root: Path, endpoint: str) -> DataProject:
    """Build the project at v1 (tag ``release``), pushed to both remotes and to ``origin.git``."""
    import boto3
    from dvc.repo import Repo

    bucket = f"dvc-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=bucket)
    work, origin, local_remote = root / "work", root / "origin.git", root / "local-remote"
    work.mkdir(parents=True)
    git(work, "init", "-q")
    with Repo.init(work) as repo, repo.config.edit() as conf:  # .dvc/config (committed): no credentials
        conf["remote"]["s3"] = {"url": f"s3://{bucket}/store", "endpointurl": endpoint, "region": "us-east-1"}
        conf["remote"]["local"] = {"url": str(local_remote)}
        conf["core"]["remote"] = "s3"
    v1 = _commit(work, "v1")
    assert "secret" not in (work / ".dvc" / "config").read_text()
    git(root, "clone", "-q", "--bare", str(work), str(origin))
    git(work, "remote", "add", "origin", str(origin))
    return DataProject(root, work, origin, local_remote, bucket, endpoint, v1, "")


def commit_v2(project: DataProject) -> DataProject:
    """Commit v2, push it, and move the tag ``release`` to it (in the origin too)."""
    if not project.v2:
        project.v2 = _commit(project.work, "v2")
        git(project.work, "push", "-q", "--force", "origin", "HEAD:refs/heads/main", "refs/tags/release")
    return project


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_s3(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def project_factory(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Callable[[], DataProject]:
    """make() -> a fresh project at v1 with its own bucket (for tests that move the tag or damage data)."""
    return lambda: make_project(tmp_path_factory.mktemp("dvc-project"), s3_endpoint)


@pytest.fixture(scope="session")
def project(project_factory: Callable[[], DataProject]) -> DataProject:
    """One shared project at v2, the tag moved (tests must not change it)."""
    return commit_v2(project_factory())


@dataclass
class Environment:
    """A real environment from the e2e channel (busybox): its lock, an OCI layout of its image, a package cache."""

    root: Path
    lock: Path
    layout: Path
    digest: str
    env: dict[str, str]

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def install_options(self):  # type: ignore[no-untyped-def]
        from envyard.builder.settings import Settings

        settings = Settings(cache_dir=self.cache)
        from envyard.builder.install import InstallOptions

        return InstallOptions(cache_layers=settings.package_cache_layers, pip_cache_dir=settings.pip_cache_dir)


def envyard(*args: str, cwd: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    from tests.commands import ENVYARD

    result = subprocess.run([*ENVYARD, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, f"envyard {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def write_spec(path: Path, deps: list[str]) -> Path:
    path.write_text("name: runs\nchannels:\n  - e2e\ndependencies:\n" + "".join(f"  - {d}\n" for d in deps))
    return path


@pytest.fixture(scope="session")
def environment(tmp_path_factory: pytest.TempPathFactory) -> Environment:
    """``envyard lock`` + ``envyard image --output oci:…`` of a busybox environment from the e2e channel."""
    import json
    import os

    from tests.packages import build_e2e_channel

    root = tmp_path_factory.mktemp("environment")
    build_e2e_channel(root / "channels")
    env = {**os.environ, "ENVYARD_CACHE_DIR": str(root / "cache"), "SOURCE_DATE_EPOCH": "0",
           "ENVYARD_CHANNEL_ALIAS": f"file://{root / 'channels'}/"}
    spec = write_spec(root / "environment.yml", ["busybox"])
    envyard("lock", str(spec), "-o", str(root / "lock"), cwd=root, env=env)
    lock = root / "lock" / "conda-lock.yml"
    built = json.loads(envyard("image", str(lock), "-p", "linux-64", "--output", f"oci:{root / 'oci'}:runs",
                               "--json", cwd=root, env=env).stdout)
    return Environment(root, lock, root / "oci", built["digest"], env)
