"""RegistryClient against real registries (open, htpasswd) and small loopback servers for what they cannot show."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from envyard.builder.errors import RegistryError
from envyard.builder.oci.model import MEDIA_TYPE_LAYER_GZIP, Descriptor, ManifestBlob
from envyard.builder.oci.store import BlobStore
from envyard.registry.client import RegistryClient
from envyard.registry.push import push_image
from envyard.registry.reference import parse_reference
from envyard.registry.transport import Transport
from tests.registry.conftest import PASSWORD, USER
from tests.registry.images import single_image
from tests.servers import free_port


def test_chunked_upload_then_verified_download(registry_host: str, store: BlobStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    blob = store.put_bytes(data, MEDIA_TYPE_LAYER_GZIP)
    with RegistryClient(registry_host, chunk_size=1000) as client:
        assert not client.blob_exists("blobs/chunked", blob.digest)
        assert client.push_blob("blobs/chunked", blob, store.path(blob.digest)) == "uploaded"
        assert client.push_blob("blobs/chunked", blob, store.path(blob.digest)) == "exists"
        assert client.push_blob("blobs/elsewhere", blob, store.path(blob.digest), mount_from="blobs/none") == "uploaded"
        assert client.push_blob("blobs/mounted", blob, store.path(blob.digest), mount_from="blobs/chunked") == "mounted"
        local = BlobStore(tmp_path / "down")
        client.get_blob("blobs/mounted", blob, local)
    assert local.read(blob.digest) == data


def test_a_manifest_whose_bytes_do_not_match_its_descriptor_is_refused(registry_host: str, store: BlobStore) -> None:
    image = single_image(store, [{"a": b"tamper locally"}])
    forged = ManifestBlob(image.root.descriptor, image.root.data.replace(b'"schemaVersion":2', b'"schemaVersion":3'))
    with RegistryClient(registry_host) as client, pytest.raises(RegistryError, match="hash to sha256:"):
        client.push_manifest("tamper/local", "v1", forged)


def test_tampered_registry_content_is_refused(registry_host: str, store: BlobStore, tmp_path: Path,
                                              stored_blob: Callable[[str], Path]) -> None:
    image = single_image(store, [{"a": b"tamper remote"}], annotations={"note": "aaaa"})
    with RegistryClient(registry_host) as client:
        push_image(image, store, parse_reference(f"{registry_host}/tamper/remote:v1"), client)
        manifest_file = stored_blob(image.digest)
        manifest_file.write_bytes(manifest_file.read_bytes().replace(b'"aaaa"', b'"bbbb"'))
        layer = image.root.children()[1]
        layer_file = stored_blob(layer.digest)
        original = layer_file.read_bytes()
        layer_file.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
        for reference in (image.digest, "v1"):
            with pytest.raises(RegistryError, match="tampered") as caught:
                client.get_manifest("tamper/remote", reference)
            assert "hashes to" in caught.value.one_line()
        local = BlobStore(tmp_path / "down")
        with pytest.raises(RegistryError, match="does not match its descriptor"):
            client.get_blob("tamper/remote", layer, local)
    assert not local.has(layer.digest)
    assert not list(local.blob_dir.iterdir())


def test_missing_manifest_is_a_clear_not_found(registry_host: str) -> None:
    with RegistryClient(registry_host) as client:
        assert client.find_manifest("nothing/here", "v1") is None
        with pytest.raises(RegistryError) as caught:
            client.get_manifest("nothing/here", "v1")
    assert caught.value.one_line().startswith(f"manifest 'v1' not found in {registry_host}/nothing/here")
    assert caught.value.details["status"] == 404


def test_connection_refused_is_one_line_and_fast() -> None:
    host = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with RegistryClient(host) as client, pytest.raises(RegistryError) as caught:
        client.blob_exists("x/y", "sha256:" + "0" * 64)
    line = caught.value.one_line()
    assert time.monotonic() - started < 5
    assert f"cannot connect to registry {host}" in line and "connection refused" in line and "\n" not in line
    assert f"http://{host}/v2/x/y/blobs/sha256:" in line


def test_tls_error_hints_insecure(registry_host: str) -> None:
    transport = Transport(registry_host, plain_http=False, credentials=None, timeout=10)
    with pytest.raises(RegistryError, match="TLS error") as caught:
        transport.request("GET", f"{transport.base_url}/v2/", ok={200})
    assert "--insecure" in (caught.value.hint or "")


def test_authentication_required(auth_registry_host: str, store: BlobStore, tmp_path: Path) -> None:
    image = single_image(store, [{"a": b"private"}])
    ref = parse_reference(f"{auth_registry_host}/private/app:1")
    with RegistryClient(auth_registry_host) as anonymous, pytest.raises(RegistryError) as caught:
        push_image(image, store, ref, anonymous)
    line = caught.value.one_line()
    assert line.startswith(f"registry {auth_registry_host} requires authentication; no credentials were sent:")
    assert "401" in line and "--username/--password" in line and f"docker login {auth_registry_host}" in line
    tried = "user 'alice' \\(from --username/--password\\) was tried"
    with (
        RegistryClient(auth_registry_host, username=USER, password="wrong") as wrong,
        pytest.raises(RegistryError, match=tried),
    ):
        wrong.blob_exists("private/app", image.digest)
    with RegistryClient(auth_registry_host, username=USER, password=PASSWORD) as client:
        report = push_image(image, store, ref, client)
    config = tmp_path / "config.json"
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config.write_text(json.dumps({"auths": {f"http://{auth_registry_host}": {"auth": auth}}}))
    with RegistryClient(auth_registry_host, docker_config=config) as from_config:
        assert from_config.get_manifest("private/app", "1").data == image.root.data
    assert report.uploaded_blobs == 2


def test_username_without_password_is_refused() -> None:
    with pytest.raises(RegistryError, match="needs a password"):
        RegistryClient("127.0.0.1:1", username="alice")


# -- small loopback servers for a token service and a failing registry ---------------------------------------------


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class TokenRegistry(BaseHTTPRequestHandler):
    """Blobs exist for any holder of a token scoped to their repository; tokens from ``/token``."""

    tokens_issued: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        scope = parse_qs(url.query).get("scope", [""])[0]
        self.tokens_issued.append(scope)
        self._answer(200, {"Content-Type": "application/json"}, json.dumps({"token": f"tok {scope}"}).encode())

    def do_HEAD(self) -> None:
        repo = self.path.split("/v2/", 1)[1].split("/blobs/", 1)[0]
        scope = f"repository:{repo}:pull"
        if self.headers.get("Authorization") == f"Bearer tok {scope}":
            self._answer(200, {})
            return
        host = self.headers["Host"]
        challenge = f'Bearer realm="http://{host}/token",service="fake",scope="{scope}"'
        self._answer(401, {"WWW-Authenticate": challenge})


class FailingRegistry(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        body = b'{"errors":[{"code":"UNKNOWN","message":"disk full"}]}'
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()


def test_bearer_tokens_come_from_the_challenge_realm_per_scope() -> None:
    digest = "sha256:" + "1" * 64
    TokenRegistry.tokens_issued = []
    with serve(TokenRegistry) as host, RegistryClient(host) as client:
        assert client.blob_exists("team/a", digest)
        assert client.blob_exists("team/b", digest)
        assert client.blob_exists("team/a", digest)
    assert TokenRegistry.tokens_issued == ["repository:team/a:pull", "repository:team/b:pull"]


def test_server_errors_are_mapped_without_retrying() -> None:
    started = time.monotonic()
    with serve(FailingRegistry) as host, RegistryClient(host) as client, pytest.raises(RegistryError) as caught:
        client.blob_exists("x/y", "sha256:" + "2" * 64)
    assert time.monotonic() - started < 5
    assert caught.value.one_line().startswith(f"registry {host} failed: HEAD http://{host}/v2/x/y/blobs/sha256:")
    assert caught.value.details["status"] == 503


def test_descriptor_size_mismatch_is_refused_before_upload(registry_host: str, store: BlobStore) -> None:
    blob = store.put_bytes(b"twelve bytes", MEDIA_TYPE_LAYER_GZIP)
    lying = Descriptor(blob.media_type, blob.digest, blob.size + 1)
    with RegistryClient(registry_host) as client, pytest.raises(RegistryError, match="not 13 bytes long"):
        client.push_blob("blobs/lying", lying, store.path(blob.digest))
