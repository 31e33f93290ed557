"""A channel on S3 (MinIO-style, path addressing), served by moto_server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from envyard.builder.channels import ChannelOptions, S3Options, make_gateway, s3_buckets
from envyard.builder.errors import ChannelError
from envyard.builder.solve import SolveRequest, solve_platform
from envyard.builder.virtual_packages import virtual_packages_for
from tests.servers import moto_s3


@pytest.fixture(scope="module")
def s3_channel(demo_channel_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from urllib.parse import urlparse

    from minio import Minio

    with moto_s3(tmp_path_factory.mktemp("moto")) as endpoint:
        client = Minio(urlparse(endpoint).netloc, access_key="testing", secret_key="testing", secure=False)
        client.make_bucket("envs")
        root = demo_channel_root / "demo"
        for file in sorted(root.rglob("*")):
            if file.is_file():
                client.fput_object("envs", f"demo/{file.relative_to(root)}", str(file))
        yield endpoint


@pytest.fixture()
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """rattler's S3 middleware reads the standard AWS variables."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.mark.usefixtures("s3_credentials")
def test_solve_from_an_s3_channel(s3_channel: str, tmp_path: Path):
    options = ChannelOptions(s3=S3Options(s3_channel, "us-east-1", "path"))
    gateway = make_gateway(tmp_path, options, channel_urls=["s3://envs/demo"])
    request = SolveRequest("linux-64", ("greet-cli",), ("s3://envs/demo",), virtual_packages_for("linux-64"))
    packages = {p.name: p for p in asyncio.run(solve_platform(request, gateway))}
    assert set(packages) == {"greet-cli", "libgreet", "demo-data"}
    assert packages["libgreet"].url == "s3://envs/demo/linux-64/libgreet-1.2.0-h4f8a2b1_0.conda"
    assert packages["demo-data"].version == "2024.06"


@pytest.mark.usefixtures("s3_credentials")
def test_missing_s3_channel_is_a_channel_error(s3_channel: str, tmp_path: Path):
    options = ChannelOptions(s3=S3Options(s3_channel, "us-east-1", "path"))
    gateway = make_gateway(tmp_path, options, channel_urls=["s3://envs/absent"])
    request = SolveRequest("linux-64", ("greet-cli",), ("s3://envs/absent",), virtual_packages_for("linux-64"))
    with pytest.raises(ChannelError):
        asyncio.run(solve_platform(request, gateway))


def test_s3_buckets_are_taken_from_channel_urls():
    assert s3_buckets(["s3://a/x", "s3://b/y/z", "file:///c"]) == ("a", "b")
