"""Users, service accounts, role bindings on namespace/environment globs, tokens with limits, and the explained
verdict, on a real ``envyard serve`` (loopback, SQLite) driven over HTTP and through the CLI."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from envyard.api.auth.tokens import hash_token, new_token
from tests.commands import ENVYARD
from tests.service.conftest import Service, create_environment, start_service

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, service_env: dict[str, str]) -> Iterator[Service]:
    started = start_service(tmp_path_factory.mktemp("access"), service_env, "--workers", "0")
    yield started
    started.stop()


def cli(service: Service, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENVYARD, "--api", service.url, "--token", token or service.token, *args],
                          capture_output=True, text=True, cwd=REPO, env=service.env, timeout=60)


def cli_json(service: Service, *args: str, token: str | None = None) -> Any:
    done = cli(service, *args, "--json", token=token)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def user_token(service: Service, user: str, *extra: str) -> tuple[int, str]:
    created = cli_json(service, "token", "create", "--name", f"{user}-token", "--user", user, *extra)
    assert created["user"] == user
    return created["id"], created["token"]


def test_bindings_groups_personal_and_global_namespaces(service: Service) -> None:
    alice = cli_json(service, "access", "add-user", "alice", "--group", "data-science")
    assert alice["namespace"] == "alice" and alice["groups"] == ["data-science"]
    cli_json(service, "access", "add-user", "bob")
    with service.client() as admin:
        for name in ("team-a", "team-b", "global", "secret"):
            admin.post("/api/v1/namespaces", json={"name": name}).raise_for_status()
        create_environment(admin, "global", "python-3", ["e2e-base"])
        create_environment(admin, "global", "r-4", ["e2e-base"])
        create_environment(admin, "team-a", "env", ["e2e-base"])
    group = cli_json(service, "access", "bind", "editor", "team-*/*", "--group", "data-science")
    own = cli_json(service, "access", "bind", "editor", "global/python-*", "--user", "bob")
    _, alice_token = user_token(service, "alice")
    _, bob_token = user_token(service, "bob")

    with service.client(alice_token) as http:
        assert sorted(n["name"] for n in http.get("/api/v1/namespaces").json()) == [
            "alice", "global", "team-a", "team-b"]  # personal, curated (every user), and the group's globs
        create_environment(http, "team-b", "fresh", ["e2e-base"])  # editor through the group
        create_environment(http, "alice", "mine", ["e2e-base"])  # the personal namespace
        assert http.patch("/api/v1/namespaces/alice", json={"description": "mine"}).status_code == 200  # admin
        assert http.patch("/api/v1/namespaces/team-a", json={"description": "x"}).status_code == 403  # editor only
        assert http.patch("/api/v1/namespaces/alice", json={"allow_sdists": True}).status_code == 403
        assert http.get("/api/v1/environments/global/r-4").status_code == 200  # global: readable by all
        refused = http.post("/api/v1/environments/global/r-4/builds", json={"spec": "x"})
        assert refused.status_code == 403 and "may read but not write" in refused.text
        assert http.get("/api/v1/namespaces/secret").status_code == 404  # not yours: as if absent
        assert http.get("/api/v1/admin/bindings").status_code == 403
    with service.client(bob_token) as http:
        assert http.get("/api/v1/environments/global/python-3").status_code == 200
        assert http.post("/api/v1/environments/global/python-3/builds",
                         json={"spec": "name: x\ndependencies: [e2e-base]\n"}).status_code != 403
        assert http.post("/api/v1/environments/global/r-4/builds", json={"spec": "x"}).status_code == 403
        assert http.get("/api/v1/environments/team-a/env").status_code == 404

    verdict = cli_json(service, "access", "check", "alice", "write", "team-a/env")
    assert verdict["allowed"] and "group data-science" in verdict["binding"]
    assert f"binding {group['id']}" in verdict["binding"]
    denied = cli_json(service, "access", "check", "bob", "write", "team-a/env")
    assert not denied["allowed"] and denied["reasons"][0].startswith("no binding of user 'bob' covers team-a/env")
    shown = cli(service, "access", "check", "bob", "read", "global/r-4")
    assert shown.returncode == 0 and shown.stdout.startswith("allowed") and "curated" in shown.stdout
    partial = cli_json(service, "access", "check", "bob", "write", "global/r-4")
    assert not partial["allowed"] and "gives viewer; write needs editor" in partial["reasons"][0]
    assert cli_json(service, "access", "check", "bob", "write", "global/python-3")["allowed"]
    assert cli_json(service, "access", "check", "alice", "admin", "alice")["allowed"]

    listed = cli_json(service, "access", "list", "--user", "bob")
    assert [b["id"] for b in listed] == [own["id"]]
    assert cli(service, "access", "unbind", str(own["id"])).returncode == 0
    with service.client(bob_token) as http:  # at once
        assert http.get("/api/v1/environments/global/python-3").status_code == 200  # still global
        assert http.post("/api/v1/environments/global/python-3/builds", json={"spec": "x"}).status_code == 403
    again = cli(service, "access", "unbind", str(own["id"]))
    assert again.returncode == 6 and "does not exist" in again.stderr
    bad = cli(service, "access", "bind", "viewer", "a/b/c", "--user", "bob")
    assert bad.returncode != 0 and "namespace/environment glob" in bad.stderr
    nobody = cli(service, "access", "bind", "viewer", "*/*", "--user", "nobody")
    assert nobody.returncode == 6 and "user 'nobody' does not exist" in nobody.stderr

    actions = [e["action"] for e in cli_json(service, "audit", "--action", "binding")]
    assert actions == ["binding.create", "binding.create", "binding.delete"]

    # a binding on some environments of a namespace lists those environments (and their builds) only
    cli_json(service, "access", "add-user", "dana")
    cli_json(service, "access", "bind", "viewer", "team-a/env", "--user", "dana")
    with service.client() as admin:
        create_environment(admin, "team-a", "other", ["e2e-base"])
    _, dana_token = user_token(service, "dana")
    with service.client(dana_token) as http:
        assert "team-a" in [n["name"] for n in http.get("/api/v1/namespaces").json()]
        listed = http.get("/api/v1/environments", params={"namespace": "team-a"}).json()["items"]
        assert [e["name"] for e in listed] == ["env"]
        builds = http.get("/api/v1/builds").json()["items"]
        assert builds and {b["environment"] for b in builds} <= {"team-a/env", "global/python-3", "global/r-4"}
        assert http.get("/api/v1/environments/team-a/other").status_code == 404


def test_tokens_are_owned_limited_and_expire(service: Service) -> None:
    cli_json(service, "access", "add-user", "carol")
    cli_json(service, "access", "add-user", "ci", "--service")
    with service.client() as admin:
        admin.post("/api/v1/namespaces", json={"name": "proj"}).raise_for_status()
    cli_json(service, "access", "bind", "editor", "proj/*", "--user", "carol")
    carol_id, carol = user_token(service, "carol")
    ci_id, ci = user_token(service, "ci", "--namespace", "proj")

    # a user makes tokens for themself only, never wider than their own
    mine = cli_json(service, "token", "create", "--name", "laptop", "--role", "viewer", "--expires", "1h",
                    token=carol)
    assert mine["user"] == "carol" and mine["expires_at"]
    refused = cli(service, "token", "create", "--name", "x", "--role", "admin", token=carol)
    assert refused.returncode == 8 and "may not create a admin token" in refused.stderr
    other = cli(service, "token", "create", "--name", "x", "--user", "ci", token=carol)
    assert other.returncode == 8 and "only for its own user" in other.stderr
    listed = cli_json(service, "token", "list", token=carol)
    assert {t["id"] for t in listed} == {carol_id, mine["id"]} and all("token" not in t for t in listed)
    assert len(cli_json(service, "token", "list")) > 3  # an admin lists everybody's

    with service.client(mine["token"]) as http:  # viewer: reads, never builds
        assert http.get("/api/v1/namespaces/proj").status_code == 200
        assert http.post("/api/v1/environments", json={"namespace": "proj", "name": "e",
                                                       "spec": "dependencies: [e2e-base]"}).status_code == 403
    with service.client(ci) as http:  # limited to proj: its personal namespace is out of reach
        assert http.get("/api/v1/namespaces/ci").status_code == 404
        assert [n["name"] for n in http.get("/api/v1/namespaces").json()] == []  # bound nowhere else yet
    verdict = cli_json(service, "access", "check", f"token:{ci_id}", "read", "ci")
    assert not verdict["allowed"] and "limited to namespaces proj" in " ".join(verdict["reasons"])
    limited = cli_json(service, "access", "check", f"token:{mine['id']}", "write", "proj")
    assert not limited["allowed"] and "highest role is viewer" in " ".join(limited["reasons"])

    # the owner revokes; another user's token is as absent as an unknown one
    assert cli(service, "token", "revoke", str(ci_id), token=carol).returncode == 6
    assert cli(service, "token", "revoke", str(mine["id"]), token=carol).returncode == 0
    gone = httpx.get(f"{service.url}/api/v1/whoami", headers={"Authorization": f"Bearer {mine['token']}"})
    assert gone.status_code == 401 and "revoked" in gone.text

    short = cli_json(service, "token", "create", "--name", "short", "--expires", "2s", token=carol)
    with service.client(short["token"]) as http:
        assert http.get("/api/v1/whoami").json()["user"] == "carol"
        time.sleep(2.2)
        expired = http.get("/api/v1/whoami")
        assert expired.status_code == 401 and "expired at" in expired.json()["detail"]
    assert cli(service, "token", "create", "--name", "x", "--expires", "soon").returncode != 0
    whoami = httpx.get(f"{service.url}/api/v1/whoami", headers={"Authorization": f"Bearer {carol}"}).json()
    assert whoami["user"] == "carol" and "editor on proj/* (user carol" in " ".join(whoami["bindings"])


def test_tokens_are_stored_keyed_and_old_plain_hashes_are_rehashed(service: Service) -> None:
    database = service.data_dir / "envyard.db"
    token = new_token()
    with sqlite3.connect(database) as connection:  # a token as a server before migration 0007 stored it
        connection.execute("INSERT INTO apitoken (name, token_sha256, role, revoked, created_at, hash_scheme, "
                           "read_only) VALUES ('old', ?, 'reader', 0, '2025-01-01 00:00:00', 'sha256', 0)",
                           (hash_token(token),))
    assert httpx.get(f"{service.url}/api/v1/whoami",
                     headers={"Authorization": f"Bearer {token}"}).json()["name"] == "old"
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT token_sha256, hash_scheme FROM apitoken").fetchall()
    assert rows and {scheme for _, scheme in rows} == {"hmac-sha256"}  # the admin's and the old one: rehashed
    assert hash_token(token) not in {digest for digest, _ in rows}
    assert httpx.get(f"{service.url}/api/v1/whoami",
                     headers={"Authorization": f"Bearer {token}"}).json()["name"] == "old"
