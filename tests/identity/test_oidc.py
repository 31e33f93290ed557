"""OpenID Connect sign-in against a real OpenID provider (node-oidc-provider) on loopback: the browser's
authorization-code flow with PKCE, users and groups from the ID token's claims, the token it yields, ``envyard
login --browser``; and ID tokens that are expired, for another audience, or tampered with, each refused with a
clear error."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.commands import ENVYARD
from tests.identity.oidc_provider import SECRET, Provider, oidc_provider
from tests.servers import free_port
from tests.service.conftest import Service, start_service

REPO = Path(__file__).resolve().parents[2]
USERS = {"alice": {"groups": ["data-science", "admins-of-nothing"], "email": "alice@example.test"},
         "bob": {"groups": []}, "eve": {"groups": ["data-science"]}}


@dataclass
class World:
    service: Service
    provider: Provider


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, service_env: dict[str, str]) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("oidc")
    port = free_port()
    callback = f"http://127.0.0.1:{port}/api/v1/auth/oidc/callback"
    with oidc_provider(tmp / "provider", USERS, [callback], expiring=["eve"]) as provider:
        env = {**service_env, "ENVYARD_OIDC_ISSUER": provider.issuer, "ENVYARD_OIDC_CLIENT_ID": "envyard",
               "ENVYARD_OIDC_CLIENT_SECRET": SECRET, "ENVYARD_OIDC_LEEWAY_SECONDS": "0"}
        service = start_service(tmp / "service", env, "--workers", "0", port=port)
        try:
            with service.client() as admin:
                admin.post("/api/v1/namespaces", json={"name": "team-a"}).raise_for_status()
                admin.post("/api/v1/admin/bindings", json={"role": "editor", "pattern": "team-*/*",
                                                           "subject_kind": "group", "subject": "data-science"}
                           ).raise_for_status()
            yield World(service, provider)
        finally:
            service.stop()


def browser_sign_in(world: World, user: str) -> httpx.Response:
    """The browser's part: envyard's login URL, the provider's pages, back to envyard's callback."""
    with httpx.Client() as browser:
        start = browser.get(f"{world.service.url}/api/v1/auth/oidc/login")
        assert start.status_code == 303 and start.headers["location"].startswith(world.provider.issuer)
        query = parse_qs(urlsplit(start.headers["location"]).query)
        assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"]
        back = world.provider.sign_in(browser, start, user, f"{world.service.url}/api/v1/auth/oidc/callback")
        return browser.get(back.headers["location"])


def test_browser_sign_in_upserts_the_user_and_groups_from_claims(world: World) -> None:
    done = browser_sign_in(world, "alice")
    assert done.status_code == 200, done.text
    created = done.json()
    assert created["user"] == "alice" and created["token"].startswith("ey_") and created["expires_at"]
    with world.service.client(created["token"]) as http:
        me = http.get("/api/v1/whoami").json()
        assert me["user"] == "alice" and me["groups"] == ["admins-of-nothing", "data-science"]
        assert http.post("/api/v1/environments", json={"namespace": "team-a", "name": "e", "spec": "x"}
                         ).status_code not in (401, 403, 404)  # editor through the group from the claims
        assert http.get("/api/v1/namespaces/alice").status_code == 200  # the personal namespace
    again = browser_sign_in(world, "alice").json()  # a second sign-in: the same user, another token
    assert again["user"] == "alice" and again["id"] != created["id"]
    with world.service.client() as admin:
        users = {u["name"]: u for u in admin.get("/api/v1/admin/users").json()}
        assert users["alice"]["provider"] == "oidc" and users["alice"]["email"] == "alice@example.test"
        logins = admin.get("/api/v1/admin/audit", params={"action": "user.login"}).json()["items"]
        assert [e["target"] for e in logins][-2:] == ["user alice", "user alice"]


def test_forged_or_stale_callbacks_are_refused(world: World) -> None:
    url = f"{world.service.url}/api/v1/auth/oidc/callback"
    missing = httpx.get(url, params={"code": "x", "state": "y"})
    assert missing.status_code == 401 and "sign-in cookie is missing" in missing.json()["detail"]
    with httpx.Client() as browser:
        browser.get(f"{world.service.url}/api/v1/auth/oidc/login")
        forged = browser.get(url, params={"code": "x", "state": "not-the-state"})
        assert forged.status_code == 401 and "state does not match" in forged.json()["detail"]
    refused = httpx.get(url, params={"error": "access_denied", "error_description": "the user said no"})
    assert refused.status_code == 401 and "the user said no" in refused.json()["detail"]
    outside = httpx.get(f"{world.service.url}/api/v1/auth/oidc/login", params={"return_to": "https://evil.test/"})
    assert outside.status_code == 422 and "loopback" in outside.json()["detail"]


def exchange(world: World, id_token: str) -> httpx.Response:
    return httpx.post(f"{world.service.url}/api/v1/auth/oidc/token", json={"id_token": id_token})


def test_id_tokens_are_verified(world: World) -> None:
    good = world.provider.id_token("bob")
    accepted = exchange(world, good)
    assert accepted.status_code == 201 and accepted.json()["user"] == "bob"

    other = exchange(world, world.provider.id_token("bob", client_id="other"))
    assert other.status_code == 401
    assert other.json()["detail"] == "the ID token's 'aud' is 'other', not 'envyard'"

    header, payload, signature = good.split(".")
    flipped = signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")
    tampered = exchange(world, f"{header}.{payload}.{flipped}")
    assert tampered.status_code == 401 and "signature does not verify" in tampered.json()["detail"]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["groups"] = ["admins"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    widened = exchange(world, f"{header}.{forged}.{signature}")
    assert widened.status_code == 401 and "signature does not verify" in widened.json()["detail"]
    unsigned = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
    none = exchange(world, f"{unsigned}.{payload}.")
    assert none.status_code == 401 and none.json()["detail"].startswith("the ID token")

    expiring = world.provider.id_token("eve")  # the provider gives eve one-second ID tokens
    time.sleep(2.1)
    expired = exchange(world, expiring)
    assert expired.status_code == 401 and expired.json()["detail"].startswith("the ID token expired at ")
    assert "sign in again" in expired.json()["hint"]


def test_envyard_login_with_a_browser_keeps_the_token_mode_600(world: World, tmp_path: Path) -> None:
    env = {**world.service.env, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    env.pop("ENVYARD_TOKEN", None)
    login = subprocess.Popen([*ENVYARD, "--api", world.service.url, "login", "--browser", "--no-open", "--json",
                              "--timeout", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, cwd=REPO)
    assert login.stderr is not None
    line = login.stderr.readline()
    assert line.startswith("sign in at: "), line
    with httpx.Client() as browser:
        start = browser.get(line.removeprefix("sign in at: ").strip())
        back = world.provider.sign_in(browser, start, "alice", f"{world.service.url}/api/v1/auth/oidc/callback")
        to_cli = browser.get(back.headers["location"])
        assert to_cli.status_code == 303 and to_cli.headers["location"].startswith("http://127.0.0.1:")
        assert browser.get(to_cli.headers["location"]).status_code == 200
    out, err = login.communicate(timeout=60)
    assert login.returncode == 0, err
    signed = json.loads(out)
    assert signed["user"] == "alice" and "data-science" in signed["groups"]
    credentials = Path(signed["credentials"])
    assert credentials == tmp_path / "config" / "envyard" / "credentials.json"
    assert stat.S_IMODE(os.stat(credentials).st_mode) == 0o600
    kept = json.loads(credentials.read_text())[world.service.url]
    whoami = subprocess.run([*ENVYARD, "--api", world.service.url, "token", "list", "--json"], capture_output=True,
                            text=True, env=env, cwd=REPO, timeout=60)  # later commands use the kept token
    assert whoami.returncode == 0, whoami.stderr
    assert {t["user"] for t in json.loads(whoami.stdout)} == {"alice"}
    logout = subprocess.run([*ENVYARD, "--api", world.service.url, "logout"], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=60)
    assert logout.returncode == 0, logout.stderr
    assert json.loads(credentials.read_text()) == {}
    revoked = httpx.get(f"{world.service.url}/api/v1/whoami", headers={"Authorization": f"Bearer {kept}"})
    assert revoked.status_code == 401 and "revoked" in revoked.text


def test_envyard_login_with_the_device_flow(world: World, tmp_path: Path) -> None:
    env = {**world.service.env, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    env.pop("ENVYARD_TOKEN", None)
    login = subprocess.Popen([*ENVYARD, "--api", world.service.url, "login", "--json", "--timeout", "90"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    assert login.stderr is not None
    line = login.stderr.readline()
    found = re.match(r"open (\S+) and enter the code (\S+)", line)
    assert found is not None, line
    assert found.group(2) in found.group(1)  # the complete URI carries the code
    world.provider.approve_device(found.group(1), "bob")
    out, err = login.communicate(timeout=90)
    assert login.returncode == 0, err
    signed = json.loads(out)
    assert signed["user"] == "bob" and signed["groups"] == []
    kept = json.loads(Path(signed["credentials"]).read_text())[world.service.url]
    assert httpx.get(f"{world.service.url}/api/v1/whoami",
                     headers={"Authorization": f"Bearer {kept}"}).json()["user"] == "bob"
    pending = httpx.post(f"{world.service.url}/api/v1/auth/oidc/device/token", json={"device_code": "unknown"})
    assert pending.status_code == 401 and "the device sign-in ended: invalid_grant" in pending.json()["detail"]
