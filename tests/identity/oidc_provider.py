"""A real OpenID provider on loopback for the tests: node-oidc-provider (tests/oidc/provider.js, installed by
``npm ci --prefix tests/oidc``), and the browser's part of a sign-in driven with httpx."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

from tests.servers import free_port, stop_process, wait_for_port

OIDC_DIR = Path(__file__).resolve().parents[1] / "oidc"
SECRET = "envyard-test-secret"
FORM = re.compile(r'<form[^>]*method="post"[^>]*action="([^"]+)"[^>]*>(.*?)</form>', re.S)
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


@dataclass
class Provider:
    issuer: str

    def metadata(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.issuer}/.well-known/openid-configuration").json())

    def sign_in(self, http: httpx.Client, response: httpx.Response, user: str, until: str) -> httpx.Response:
        """Follow ``response``'s redirects through the provider, signing in as ``user``, up to the first redirect
        to a URL starting with ``until`` (returned, not followed)."""
        while response.status_code in (302, 303):
            location = urljoin(str(response.url), response.headers["location"])
            if location.startswith(until):
                return response
            path = urlsplit(location).path
            if path.startswith("/interaction/") and not path.endswith("/login"):
                location = f"{location}/login?user={user}"
            response = http.get(location)
        raise AssertionError(f"the sign-in stopped at {response.url}: {response.status_code} {response.text[:300]}")

    def approve_device(self, url: str, user: str) -> None:
        """The user's part of a device sign-in: open ``url`` (the verification URI with the code), submit the
        provider's forms (the code, its confirmation), sign in as ``user``."""
        with httpx.Client() as http:
            response = http.get(url)
            for _ in range(12):
                if response.status_code in (302, 303):
                    location = urljoin(str(response.url), response.headers["location"])
                    if "/interaction/" in location and not location.endswith("/login"):
                        location = f"{location}/login?user={user}"
                    response = http.get(location)
                    continue
                form = FORM.search(response.text)
                if form is None:
                    break
                fields = dict(HIDDEN.findall(form.group(2)))
                if 'name="confirm"' in form.group(2):
                    fields["confirm"] = "yes"
                response = http.post(urljoin(str(response.url), form.group(1)), data=fields)
            assert "Sign-in Success" in response.text, response.text[:500]

    def id_token(self, user: str, client_id: str = "envyard", redirect_uri: str = "http://127.0.0.1:9/cb",
                 nonce: str = "n") -> str:
        """An ID token for ``user`` issued to ``client_id`` through the code flow (as a client would get it)."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        metadata = self.metadata()
        with httpx.Client() as http:
            start = http.get(metadata["authorization_endpoint"], params={
                "client_id": client_id, "response_type": "code", "redirect_uri": redirect_uri, "nonce": nonce,
                "scope": "openid profile email groups", "state": "s", "code_challenge": challenge,
                "code_challenge_method": "S256"})
            back = self.sign_in(http, start, user, redirect_uri)
            code = parse_qs(urlsplit(back.headers["location"]).query)["code"][0]
            token = http.post(metadata["token_endpoint"], auth=(client_id, SECRET), data={
                "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": verifier})
            token.raise_for_status()
            return str(token.json()["id_token"])


def npm_provider_installed() -> bool:
    return shutil.which("node") is not None and (OIDC_DIR / "node_modules" / "oidc-provider").is_dir()


@contextmanager
def oidc_provider(log_dir: Path, users: dict[str, dict[str, Any]], redirect_uris: list[str],
                  expiring: list[str] = ()) -> Iterator[Provider]:  # type: ignore[assignment]
    """node-oidc-provider with clients ``envyard`` and ``other`` (both with secret :data:`SECRET`)."""
    if not npm_provider_installed():
        raise AssertionError(f"node-oidc-provider is not installed: run npm ci --prefix {OIDC_DIR} (.ci/run does)")
    port = free_port()
    clients = [{"client_id": name, "client_secret": SECRET, "redirect_uris": [*redirect_uris, "http://127.0.0.1:9/cb"]}
               for name in ("envyard", "other")]
    config = {"clients": clients, "users": users, "expiring": list(expiring)}
    log_dir.mkdir(parents=True, exist_ok=True)
    log = (log_dir / "oidc-provider.log").open("ab")
    process = subprocess.Popen(["node", str(OIDC_DIR / "provider.js"), str(port), json.dumps(config)],
                               stdout=log, stderr=log)
    try:
        wait_for_port(port, timeout=30)
        yield Provider(f"http://127.0.0.1:{port}")
    finally:
        stop_process(process)  # type: ignore[arg-type]
