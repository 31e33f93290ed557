"""Revocation, unbinding and expiry hold at once on every replica: two ``envyard serve`` processes on one
PostgreSQL database; each replica's cache is warm with the principal before the change is made on the other."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.service.conftest import Service

SECRET = "replicas-share-this-secret-key-0123456789"


def _make(admin: Any, path: str, **body: Any) -> dict[str, Any]:
    response = admin.post(path, json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_revocation_unbinding_and_expiry_hold_at_once_on_every_replica(start: Any) -> None:
    a: Service = start("--workers", "0", env={"ENVYARD_SECRET_KEY": SECRET}, name="a")
    b: Service = start("--workers", "0", env={"ENVYARD_SECRET_KEY": SECRET}, name="b")
    with a.client() as admin:
        _make(admin, "/api/v1/admin/users", name="dana")
        _make(admin, "/api/v1/namespaces", name="proj")
        binding = _make(admin, "/api/v1/admin/bindings", role="viewer", pattern="proj/*", subject_kind="user",
                        subject="dana")
        revoked = _make(admin, "/api/v1/tokens", name="r", user="dana")
        kept = _make(admin, "/api/v1/tokens", name="k", user="dana")
        short = _make(admin, "/api/v1/tokens", name="s", user="dana", expires_in_seconds=2)
    with b.client(revoked["token"]) as on_b, b.client(kept["token"]) as kept_b, b.client(short["token"]) as short_b:
        for _ in range(3):  # B has them cached now
            assert on_b.get("/api/v1/whoami").status_code == 200
            assert kept_b.get("/api/v1/namespaces/proj").status_code == 200
            assert short_b.get("/api/v1/whoami").status_code == 200
        with a.client() as admin:
            assert admin.delete(f"/api/v1/tokens/{revoked['id']}").status_code == 204
        gone = on_b.get("/api/v1/whoami")
        assert gone.status_code == 401 and "revoked" in gone.json()["detail"]

        with a.client() as admin:
            assert admin.delete(f"/api/v1/admin/bindings/{binding['id']}").status_code == 204
        assert kept_b.get("/api/v1/namespaces/proj").status_code == 404  # no longer bound: as if absent
        assert kept_b.get("/api/v1/whoami").status_code == 200  # the token itself still works

        time.sleep(2.2)
        expired = short_b.get("/api/v1/whoami")
        assert expired.status_code == 401 and "expired at" in expired.json()["detail"]
    with a.client(short["token"]) as short_a:
        assert short_a.get("/api/v1/whoami").status_code == 401
