"""What a /v2/ request names, parsed before anything is looked up: repository names, tags, digests, byte ranges
and the ``scope`` parameters of the token endpoint.

Repositories are ``<namespace>/<environment>`` in the distribution spec's name grammar; content is addressed by
sha256 only: a malformed digest is 400 ``DIGEST_INVALID``, a well-formed digest of another algorithm (sha512) 400
``UNSUPPORTED``. The errors carry their OCI code in ``details["oci"]``; :mod:`envyard.api.problems` renders them.

>>> parse_repository("team/app")
Repository(name='team/app', namespace='team', environment='app')
>>> sha256_hex("sha256:" + "ab" * 32) == "ab" * 32
True
>>> byte_range("bytes=2-", 10), byte_range("bytes=-3", 10), byte_range("", 10)
((2, 8), (7, 3), None)
>>> requested_pulls(["repository:team/app:pull repository:team/other:push", "registry:catalog:*"])
['team/app']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from envyard.api.ids import parse_id
from envyard.builder.errors import EnvyardError, NotFoundError

__all__ = [
    "DIGEST",
    "NAME",
    "PULL_ACTIONS",
    "REPOSITORY",
    "TAG",
    "DigestError",
    "RangeError",
    "Repository",
    "build_id",
    "byte_range",
    "is_digest",
    "parse_repository",
    "requested_pulls",
    "sha256_hex",
    "unknown",
]

COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
NAME = re.compile(rf"^{COMPONENT}(?:/{COMPONENT})*$")
REPOSITORY = re.compile(rf"^{COMPONENT}/{COMPONENT}$")  # <namespace>/<environment>, as /v2/ serves them
DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
ENCODED = {"sha256": re.compile(r"[a-f0-9]{64}"), "sha384": re.compile(r"[a-f0-9]{96}"),
           "sha512": re.compile(r"[a-f0-9]{128}")}
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
PULL_ACTIONS = frozenset({"pull", "*"})


class RangeError(EnvyardError):
    """A ``Range`` header a blob cannot satisfy: 416 with ``Content-Range: bytes */SIZE``."""

    code = "range-invalid"
    title = "Range not satisfiable"
    status = 416

    def __init__(self, message: str, *, size: int | None = None, **fields: Any) -> None:
        super().__init__(message, **{"details": {"oci": "RANGE_INVALID"}, **fields})
        self.size = size

    def http_headers(self) -> dict[str, str]:
        return {} if self.size is None else {"Content-Range": f"bytes */{self.size}"}


class DigestError(EnvyardError):
    code = "digest-invalid"
    title = "Invalid digest"
    status = 400


def unknown(what: str, message: str, hint: str) -> NotFoundError:
    """A 404 with the OCI code ``what`` (NAME_UNKNOWN, MANIFEST_UNKNOWN, BLOB_UNKNOWN, NAME_INVALID)."""
    return NotFoundError(message, hint=hint, details={"oci": what})


def sha256_hex(digest: str) -> str:
    """The hex of a sha256 digest; DigestError (DIGEST_INVALID, or UNSUPPORTED for other algorithms) otherwise."""
    algorithm, _, encoded = digest.partition(":")
    pattern = ENCODED.get(algorithm)
    if not DIGEST.fullmatch(digest) or (pattern is not None and not pattern.fullmatch(encoded)):
        raise DigestError(f"'{digest}' is not a valid digest", hint="digests are sha256:<64 lowercase hex digits>",
                          details={"oci": "DIGEST_INVALID"})
    if algorithm != "sha256":
        raise DigestError(f"'{algorithm}' digests are not supported: envyard addresses content by sha256 only",
                          hint="ask for the content by its sha256 digest", details={"oci": "UNSUPPORTED"})
    return encoded


def is_digest(reference: str) -> bool:
    """Whether a manifest reference is a digest rather than a tag (tags have no colon)."""
    return ":" in reference


def build_id(reference: str) -> int | None:
    """The build id a tag names: canonical ASCII decimal digits within the id column (not ``02``, ``²``, ``２``)."""
    return parse_id(reference)


@dataclass(frozen=True, slots=True)
class Repository:
    """A repository name as the grammar allows it: ``<namespace>/<environment>``."""

    name: str
    namespace: str
    environment: str


def parse_repository(name: str) -> Repository:
    """The repository ``name`` denotes, validated by the name grammar before any lookup."""
    namespace, _, env_name = name.partition("/")
    if not NAME.fullmatch(name) or "/" in env_name or not env_name:
        raise unknown("NAME_INVALID", f"'{name}' is not a repository envyard serves",
                      "repositories are <namespace>/<environment> in lower case")
    return Repository(name, namespace, env_name)


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, length) of a single ``bytes=a-b`` range; None for the whole blob: no header, another unit or
    several ranges (a server must ignore units it does not know and may ignore any Range, RFC 9110 14.2)."""
    header = header.strip()
    if not header.lower().startswith("bytes=") or "," in header:
        return None
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header, re.IGNORECASE)
    if match is None or match.group(1) == match.group(2) == "":
        raise RangeError(f"Range '{header}' is not one bytes=START-END range", size=size)
    if match.group(1) == "":
        suffix = min(int(match.group(2)), size)
        if suffix == 0:
            raise RangeError(f"Range '{header}' selects no bytes of the blob's {size}", size=size)
        return size - suffix, suffix
    start = int(match.group(1))
    end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
    if start >= size or end < start:
        raise RangeError(f"Range '{header}' is outside the blob's {size} bytes", size=size)
    return start, end - start + 1


def requested_pulls(scopes: list[str]) -> list[str]:
    """Repository names whose pull a list of ``scope`` parameters asks for (``repository:NAME:ACTIONS``; several
    per parameter when separated by spaces); other resource types and malformed scopes are ignored."""
    names: list[str] = []
    for scope in (s for value in scopes for s in value.split()):
        resource, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if resource == "repository" and REPOSITORY.match(name) and PULL_ACTIONS & set(actions.split(",")):
            names.append(name)
    return names
