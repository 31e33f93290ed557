"""A client for one distribution-spec (OCI) registry: blobs, manifests and referrers.

Manifests are sent and checked as exact bytes (their digest is the sha256 of those
bytes); blobs are streamed from and into files, never held whole in memory.
Every failure is a :class:`builder.errors.RegistryError` with the URL and status.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import requests

from envyard.builder.errors import RegistryError
from envyard.builder.oci.model import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_MANIFEST,
    Descriptor,
    ManifestBlob,
    sha256_digest,
)
from envyard.builder.oci.store import BlobStore
from envyard.registry.reference import is_loopback
from envyard.registry.transport import Credentials, Transport, display_url, docker_config_credentials

PushOutcome = Literal["exists", "mounted", "uploaded"]

#: Every manifest kind we read: OCI and Docker schema 2, single-platform and multi-platform.
MANIFEST_ACCEPT: tuple[str, ...] = (MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)
#: Larger manifests are refused (containerd's limit too).
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
DEFAULT_CHUNK_SIZE = 32 * 1024 * 1024


def referrers_tag(digest: str) -> str:
    """The OCI 1.1 referrers tag schema: ``sha256:<hex>`` -> ``sha256-<hex>``.

    >>> referrers_tag("sha256:" + "ab" * 32)[:11]
    'sha256-abab'
    """
    return digest.replace(":", "-")[:128]


@dataclass(frozen=True, slots=True)
class ManifestPut:
    """What a registry said to a manifest PUT: the digest, and the ``OCI-Subject`` header (None if absent)."""

    digest: str
    oci_subject: str | None


class _Window:
    """``length`` bytes of a file from ``offset``, read in blocks by the HTTP layer (one PATCH chunk)."""

    def __init__(self, path: Path, offset: int, length: int) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by Transport after the request
        self._file.seek(offset)
        self._left = length

    def __len__(self) -> int:
        return self._left

    def read(self, size: int = -1, /) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._file.read(size)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._file.close()


class RegistryClient:
    """Blobs, manifests and referrers on one registry (``host[:port]``).

    Loopback hosts and ``insecure=True`` use plain HTTP, as Docker does; others HTTPS (``verify_tls=False``:
    without checking the certificate).
    Credentials: ``username``/``password``, else the registry's ``auths`` entry in
    ``docker_config`` (a Docker ``config.json``), else anonymous.
    """

    def __init__(
        self,
        registry: str,
        *,
        insecure: bool = False,
        username: str | None = None,
        password: str | None = None,
        docker_config: Path | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        timeout: float = 120.0,
        verify_tls: bool = True,
        plain_http: bool | None = None,
    ) -> None:
        """``plain_http`` None: HTTP for ``insecure`` or loopback registries, else HTTPS; a bool forces it."""
        if (username is None) != (password is None):
            raise RegistryError("a username needs a password and a password a username",
                                hint="pass both --username and --password, or neither")
        credentials = (Credentials(username, password, "--username/--password")
                       if username is not None and password is not None
                       else docker_config_credentials(registry, docker_config))
        self.registry = registry
        self.chunk_size = chunk_size
        if plain_http is None:
            plain_http = insecure or is_loopback(registry)
        self.transport = Transport(registry, plain_http=plain_http,
                                   credentials=credentials, timeout=timeout)
        self.transport.session.verify = verify_tls

    def close(self) -> None:
        """Close the HTTP session."""
        self.transport.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _url(self, repo: str, kind: str, reference: str = "", query: dict[str, str] | None = None) -> str:
        url = f"{self.transport.base_url}/v2/{repo}/{kind}/{reference}"
        return url + ("?" + urlencode(query) if query else "")

    def _location(self, response: requests.Response, method: str, url: str) -> str:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(f"registry {self.registry} gave no Location for an upload ({method} "
                                f"{display_url(url)}: {response.status_code})")
        return urljoin(url, location)

    # -- blobs ---------------------------------------------------------------------------------------------------

    def blob_exists(self, repo: str, digest: str) -> bool:
        """Whether ``repo`` holds the blob (HEAD)."""
        response = self.transport.request("HEAD", self._url(repo, "blobs", digest), ok={200, 404})
        response.close()
        return response.status_code == 200

    def push_blob(self, repo: str, descriptor: Descriptor, path: Path | Callable[[], Path], *,
                  mount_from: str | None = None) -> PushOutcome:
        """Make ``repo`` hold the blob: already there, mounted from ``mount_from``, or streamed from ``path``.

        ``path`` may be a function giving the file: it is called only when the blob has to be uploaded (a source
        that must first copy the blob out of remote storage then does so only for blobs the registry lacks)."""
        if self.blob_exists(repo, descriptor.digest):
            return "exists"
        if not mount_from:
            path = self._readable(descriptor, path)
        query = {"mount": descriptor.digest, "from": mount_from} if mount_from else None
        url = self._url(repo, "blobs", "uploads/", query)
        response = self.transport.request("POST", url, ok={201, 202}, headers={"Content-Length": "0"})
        response.close()
        if response.status_code == 201 and mount_from:
            return "mounted"
        path = self._readable(descriptor, path)
        location = self._location(response, "POST", url)
        if descriptor.size > self.chunk_size:
            location = self._upload_chunks(location, path, descriptor.size)
            final = self._with_query(location, digest=descriptor.digest)
            response = self.transport.request("PUT", final, ok={201, 204}, headers={"Content-Length": "0"})
        else:
            final = self._with_query(location, digest=descriptor.digest)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(descriptor.size)}
            response = self.transport.request("PUT", final, ok={201, 204}, headers=headers,
                                              body=lambda: open(path, "rb"))  # noqa: SIM115
        response.close()
        self._check_digest(response, descriptor.digest, "PUT", final)
        return "uploaded"

    @staticmethod
    def _readable(descriptor: Descriptor, path: Path | Callable[[], Path]) -> Path:
        """The file of the blob, if it holds ``descriptor.size`` bytes; RegistryError otherwise."""
        path = path() if callable(path) else path
        if not (path.is_file() and path.stat().st_size == descriptor.size):
            raise RegistryError(f"cannot upload blob {descriptor.digest}: {path} is missing or not "
                                f"{descriptor.size} bytes long", hint="rebuild the image; its blob store is incomplete")
        return path

    def _upload_chunks(self, location: str, path: Path, size: int) -> str:
        offset = 0
        while offset < size:
            length = min(self.chunk_size, size - offset)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length),
                       "Content-Range": f"{offset}-{offset + length - 1}"}
            window = functools.partial(_Window, path, offset, length)
            response = self.transport.request("PATCH", location, ok={202}, headers=headers,
                                              body=window)
            response.close()
            location = self._location(response, "PATCH", location)
            offset += length
        return location

    @staticmethod
    def _with_query(url: str, **params: str) -> str:
        parts = urlsplit(url)
        query = "&".join(q for q in (parts.query, urlencode(params)) if q)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))

    def _check_digest(self, response: requests.Response, expected: str, method: str, url: str) -> None:
        said = response.headers.get("Docker-Content-Digest")
        if said and said != expected:
            raise RegistryError(f"registry {self.registry} stored {said} for {method} {display_url(url)}, "
                                f"expected {expected}", hint="the registry or a proxy changed the content")

    def get_blob(self, repo: str, descriptor: Descriptor, store: BlobStore) -> None:
        """Stream a blob into ``store``, refusing it unless its size and sha256 match ``descriptor``."""
        url = self._url(repo, "blobs", descriptor.digest)
        response = self.transport.request("GET", url, ok={200}, headers={"Accept-Encoding": "identity"},
                                          stream=True)
        with response, store.writer() as sink:
            for chunk in response.iter_content(1024 * 1024):
                sink.write(chunk)
                if sink.size > descriptor.size:
                    break
            if sink.size != descriptor.size or sink.digest != descriptor.digest:
                got = f"more than {descriptor.size} bytes" if sink.size > descriptor.size else sink.digest
                raise RegistryError(f"blob from GET {display_url(url)} does not match its descriptor: got {got}, "
                                    f"expected {descriptor.digest} ({descriptor.size} bytes)",
                                    hint="the registry's copy is corrupt or was tampered with")

    # -- manifests -----------------------------------------------------------------------------------------------

    def put_manifest(self, repo: str, reference: str, manifest: ManifestBlob) -> ManifestPut:
        """PUT the exact bytes of ``manifest`` under a tag or its digest; report digest and ``OCI-Subject``."""
        digest = manifest.descriptor.digest
        actual = sha256_digest(manifest.data)
        if actual != digest:
            raise RegistryError(f"manifest bytes hash to {actual}, not to their descriptor's {digest}",
                                hint="a manifest must be pushed as the exact bytes that were digested")
        if reference.startswith("sha256:") and reference != digest:
            raise RegistryError(f"cannot push manifest {digest} under another digest, {reference}")
        url = self._url(repo, "manifests", reference)
        headers = {"Content-Type": manifest.descriptor.media_type}
        response = self.transport.request("PUT", url, ok={200, 201}, headers=headers, body=manifest.data)
        response.close()
        self._check_digest(response, digest, "PUT", url)
        return ManifestPut(digest=digest, oci_subject=response.headers.get("OCI-Subject"))

    def push_manifest(self, repo: str, reference: str, manifest: ManifestBlob) -> str:
        """PUT the exact bytes of ``manifest`` under a tag or its digest; return the digest."""
        return self.put_manifest(repo, reference, manifest).digest

    def find_manifest(self, repo: str, reference: str, accept: Sequence[str] = MANIFEST_ACCEPT
                      ) -> ManifestBlob | None:
        """Like :meth:`get_manifest`, but None when the registry has no such manifest (404)."""
        url = self._url(repo, "manifests", reference)
        response = self.transport.request("GET", url, ok={200, 404}, headers={"Accept": ", ".join(accept)},
                                          stream=True)
        with response:
            if response.status_code == 404:
                return None
            buffer = bytearray()
            for chunk in response.iter_content(65536):
                buffer += chunk
                if len(buffer) > MAX_MANIFEST_BYTES:
                    raise RegistryError(f"manifest at {display_url(url)} is larger than {MAX_MANIFEST_BYTES} bytes")
            data = bytes(buffer)
        digest = sha256_digest(data)
        expected = reference if reference.startswith("sha256:") else response.headers.get("Docker-Content-Digest")
        if expected and expected != digest:
            raise RegistryError(f"manifest from GET {display_url(url)} hashes to {digest}, expected {expected}",
                                hint="the registry's copy is corrupt or was tampered with")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in accept:
            with contextlib.suppress(ValueError, AttributeError):
                media_type = str(json.loads(data).get("mediaType") or media_type)
        if media_type not in accept:
            raise RegistryError(f"manifest at {display_url(url)} has media type {media_type!r}; accepted: "
                                + ", ".join(accept), hint="the image may use an old (schema 1) manifest format")
        return ManifestBlob(Descriptor(media_type, digest, len(data)), data)

    def get_manifest(self, repo: str, reference: str, accept: Sequence[str] = MANIFEST_ACCEPT) -> ManifestBlob:
        """Fetch a manifest or index by tag or digest, checking its bytes against the digest."""
        found = self.find_manifest(repo, reference, accept)
        if found is None:
            raise RegistryError(f"manifest {reference!r} not found in {self.registry}/{repo}",
                                hint="check the repository name, the tag or digest, and the registry",
                                details={"url": display_url(self._url(repo, "manifests", reference)), "status": 404})
        return found

    # -- referrers -----------------------------------------------------------------------------------------------

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[Descriptor]:
        """Manifests whose ``subject`` is ``digest``: the referrers API, else the ``sha256-<hex>`` tag index."""
        query = {"artifactType": artifact_type} if artifact_type else None
        url = self._url(repo, "referrers", digest, query)
        response = self.transport.request("GET", url, ok={200, 404}, headers={"Accept": MEDIA_TYPE_INDEX})
        if response.status_code == 200:
            try:
                manifests = response.json().get("manifests") or []
            except (ValueError, AttributeError) as exc:
                raise RegistryError(f"referrers of {digest} at {display_url(url)} are not an OCI index") from exc
        else:
            index = self.find_manifest(repo, referrers_tag(digest), accept=(MEDIA_TYPE_INDEX,))
            manifests = index.json().get("manifests", []) if index else []
        found = [Descriptor.from_json(m) for m in manifests]
        return [d for d in found if artifact_type is None or d.artifact_type == artifact_type]

