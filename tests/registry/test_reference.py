"""parse_reference and is_loopback, table-driven; the registry modules' doctests."""

from __future__ import annotations

import doctest

import pytest

import envyard.registry.client
import envyard.registry.reference
from envyard.builder.errors import RegistryError
from envyard.registry.reference import ImageReference, is_loopback, parse_reference

DIGEST = "sha256:" + "a1" * 32

VALID = [
    ("127.0.0.1:5000/team/env:tag", ImageReference("127.0.0.1:5000", "team/env", "tag")),
    ("localhost/env", ImageReference("localhost", "env")),
    ("localhost:5000/a/b/c:1.0-rc.1", ImageReference("localhost:5000", "a/b/c", "1.0-rc.1")),
    (f"ghcr.io/org/app@{DIGEST}", ImageReference("ghcr.io", "org/app", None, DIGEST)),
    (f"ghcr.io/org/app:v2@{DIGEST}", ImageReference("ghcr.io", "org/app", "v2", DIGEST)),
    ("python", ImageReference("registry-1.docker.io", "library/python")),
    ("python:3.11-slim", ImageReference("registry-1.docker.io", "library/python", "3.11-slim")),
    ("docker.io/python", ImageReference("registry-1.docker.io", "library/python")),
    ("index.docker.io/library/python:3", ImageReference("registry-1.docker.io", "library/python", "3")),
    ("condaforge/miniforge3:latest", ImageReference("registry-1.docker.io", "condaforge/miniforge3", "latest")),
    ("[::1]:5000/x/y", ImageReference("[::1]:5000", "x/y")),
    ("reg.example.com:443/a_b/c__d/e-f:T_1", ImageReference("reg.example.com:443", "a_b/c__d/e-f", "T_1")),
]

INVALID = [
    ("", "it is empty"),
    ("https://ghcr.io/org/app", "no URL scheme"),
    ("ghcr.io/Org/app", "repository component 'Org'"),
    ("ghcr.io/org//app", "repository component '' is empty"),
    ("ghcr.io/org/app:", "tag ''"),
    ("ghcr.io/org/app:-bad", "tag '-bad'"),
    ("ghcr.io/org/app@sha256:abc", "digest 'sha256:abc'"),
    (f"ghcr.io/org/app@md5:{'0' * 32}", "is not sha256:"),
    ("bad_host.example.com:5000/app", "'bad_host.example.com:5000' is not a registry host[:port]"),
    ("ghcr.io/", "the repository name is missing"),
    ("app!", "repository component 'app!'"),
]


@pytest.mark.parametrize(("text", "expected"), VALID, ids=[t for t, _ in VALID])
def test_valid_references(text: str, expected: ImageReference) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(("text", "why"), INVALID, ids=[t or "empty" for t, _ in INVALID])
def test_invalid_references_name_the_text_and_the_form(text: str, why: str) -> None:
    with pytest.raises(RegistryError) as caught:
        parse_reference(text)
    line = caught.value.one_line()
    assert f"invalid image reference {text!r}" in line and why in line
    assert "[REGISTRY[:PORT]/]REPOSITORY[:TAG][@sha256:DIGEST]" in line


def test_str_and_reference() -> None:
    ref = parse_reference(f"127.0.0.1:5000/team/env@{DIGEST}")
    assert (str(ref), ref.reference) == (f"127.0.0.1:5000/team/env@{DIGEST}", DIGEST)
    assert parse_reference("ghcr.io/org/app").reference == "latest"


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.1:5000", True), ("127.1.2.3:80", True), ("localhost", True),
    ("localhost:5000", True), ("::1", True), ("[::1]:5000", True), ("registry.localhost:5000", True),
    ("10.0.0.1:5000", False), ("ghcr.io", False), ("registry-1.docker.io", False), ("[2001:db8::1]:5000", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("module", [envyard.registry.reference, envyard.registry.client], ids=lambda m: m.__name__)
def test_doctests(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.failed == 0 and result.attempted > 0
