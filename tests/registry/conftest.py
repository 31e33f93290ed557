"""Registries for the registry tests: one open, one behind htpasswd, each on loopback for the module."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from envyard.builder.oci.store import BlobStore
from tests.servers import docker_registry, docker_registry_executable

USER, PASSWORD = "alice", "correct horse"


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the open registry keeps its config, log and ``storage/``."""
    return tmp_path_factory.mktemp("registry")


@pytest.fixture(scope="module")
def registry_host(registry_root: Path) -> Iterator[str]:
    """``127.0.0.1:<port>`` of a plain-HTTP distribution registry without auth."""
    if docker_registry_executable() is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    with docker_registry(registry_root) as host:
        yield host


@pytest.fixture(scope="module")
def stored_blob(registry_root: Path) -> Callable[[str], Path]:
    """digest -> the file where the open registry's filesystem driver keeps that blob (or manifest)."""

    def path(digest: str) -> Path:
        hex_digest = digest.split(":", 1)[1]
        return registry_root / "storage/docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"

    return path


@pytest.fixture(scope="module")
def auth_registry_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registry that wants basic auth as ``alice`` (bcrypt htpasswd)."""
    if docker_registry_executable() is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    bcrypt = pytest.importorskip("bcrypt", reason="bcrypt makes the htpasswd line (pip install -e '.[test]')")
    root = tmp_path_factory.mktemp("auth-registry")
    htpasswd = root / "htpasswd"
    htpasswd.write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()}\n")
    with docker_registry(root, htpasswd=htpasswd) as host:
        yield host


@pytest.fixture()
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "store")
