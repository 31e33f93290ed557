"""Session fixtures: the shared real data, gateways over it, and a local channel built from recipes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
DERIVED = SHARED_DATA / "repodata" / "derived-from-lockfiles"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (it sits beside the checkout as ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def derived_alias(shared_data: Path) -> str:
    """A channel alias under which ``conda-forge`` is the real records derived from public lockfiles."""
    return (shared_data / "repodata" / "derived-from-lockfiles").as_uri() + "/"


@pytest.fixture(scope="session")
def repodata_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("repodata-cache")


@pytest.fixture(scope="session")
def derived_gateway(derived_alias: str, repodata_cache: Path):  # type: ignore[no-untyped-def]
    from envyard.builder.channels import ChannelOptions, make_gateway

    return make_gateway(repodata_cache, ChannelOptions(channel_alias=derived_alias))


@pytest.fixture(scope="session")
def demo_channel_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo channel built from specs/recipes, at ``<root>/demo``; alias = root."""
    from envyard.builder.localchannel import build_channel

    root = tmp_path_factory.mktemp("channels")
    build_channel([REPO_ROOT / "specs" / "recipes"], root / "demo")
    return root


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:<port>`` of Debian's docker-registry (plain HTTP, no auth), for the whole session."""
    from tests.servers import docker_registry, docker_registry_executable

    if docker_registry_executable() is None:
        pytest.skip("docker-registry not installed (apt-get install docker-registry)")
    with docker_registry(tmp_path_factory.mktemp("registry")) as host:
        yield host
