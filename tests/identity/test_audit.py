"""The audit log: token and grant changes are recorded (who, what, before -> after) and only admins read them,
through ``GET /api/v1/admin/audit`` (filters, pages) and ``envyard audit``. A real ``envyard serve`` on loopback."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.commands import ENVYARD
from tests.service.conftest import Service, start_service

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, service_env: dict[str, str]) -> Iterator[Service]:
    started = start_service(tmp_path_factory.mktemp("audit"), service_env, "--workers", "0")
    yield started
    started.stop()


def _cli(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENVYARD, "--api", service.url, "--token", service.token, *args], capture_output=True,
                          text=True, cwd=REPO, env=service.env, timeout=60)


def test_token_and_grant_changes_are_recorded_and_only_admins_read_them(service: Service) -> None:
    started = datetime.now(UTC) - timedelta(seconds=1)
    with service.client() as admin:
        admin.post("/api/v1/namespaces", json={"name": "audited"}).raise_for_status()
        created = admin.post("/api/v1/tokens", json={"name": "ci", "role": "user"}).json()
        admin.put(f"/api/v1/namespaces/audited/grants/{created['id']}", json={"role": "viewer"}).raise_for_status()
        admin.put(f"/api/v1/namespaces/audited/grants/{created['id']}", json={"role": "editor"}).raise_for_status()
        with service.client(created["token"]) as user:
            assert user.get("/api/v1/admin/audit").status_code == 403
        admin.delete(f"/api/v1/namespaces/audited/grants/{created['id']}").raise_for_status()
        admin.delete(f"/api/v1/tokens/{created['id']}").raise_for_status()

        events = admin.get("/api/v1/admin/audit", params={"since": started.isoformat()}).json()["items"]
        assert [e["action"] for e in events] == ["token.create", "grant.set", "grant.set", "grant.delete",
                                                 "token.revoke"]
        assert {e["actor_name"] for e in events} == {"admin (created by envyard serve)"}
        assert events[0]["before"] is None and events[0]["target"] == f"token {created['id']}"
        assert {k: events[0]["after"][k] for k in ("name", "role", "user", "revoked")} == {
            "name": "ci", "role": "user", "user": None, "revoked": False}
        assert "token" not in events[0]["after"]  # never the secret
        assert events[2]["before"] == {"role": "viewer"} and events[2]["after"]["role"] == "editor"
        assert events[3]["before"] == {"role": "editor"} and events[3]["after"] is None
        assert events[4]["before"]["revoked"] is False and events[4]["after"]["revoked"] is True

        grants = admin.get("/api/v1/admin/audit", params={"action": "grant", "limit": 2}).json()
        assert [e["action"] for e in grants["items"]] == ["grant.set", "grant.set"] and grants["next_cursor"]
        rest = admin.get("/api/v1/admin/audit", params={"action": "grant", "cursor": grants["next_cursor"]}).json()
        assert [e["action"] for e in rest["items"]] == ["grant.delete"] and rest["next_cursor"] is None
        assert admin.get("/api/v1/admin/audit", params={"action": "gran"}).json()["items"] == []  # prefix of a word
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert admin.get("/api/v1/admin/audit", params={"since": future}).json()["items"] == []
        assert admin.get("/api/v1/admin/audit", params={"until": started.isoformat()}).json()["items"] == []
        assert admin.get("/api/v1/admin/audit", params={"actor": "nobody"}).json()["items"] == []
        bad = admin.get("/api/v1/admin/audit", params={"cursor": "bogus"})
        assert bad.status_code == 400 and "cursor" in bad.text
    assert service.client(token="ey_unknown").get("/api/v1/admin/audit").status_code == 401

    listed = _cli(service, "audit", "--action", "token", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [e["action"] for e in json.loads(listed.stdout)] == ["token.create", "token.revoke"]
    shown = _cli(service, "audit", "--action", "grant.delete")
    assert shown.returncode == 0 and "grant.delete" in shown.stdout and "editor" in shown.stdout
