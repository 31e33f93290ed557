"""Build-scoped worker tokens against a real server: they claim, heartbeat and finish their own build attempt
only; any other build, attempt, route, key or an expired token is refused. And ``envyard worker --once`` exit
codes."""

from __future__ import annotations

import subprocess
import time

import httpx

from envyard.api.auth.build_tokens import build_token_key, sign_build_token
from envyard.api.auth.registry_tokens import registry_token_key, sign_registry_token
from envyard.api.auth.secret_key import load_or_create_secret_key
from tests.commands import ENVYARD
from tests.service.conftest import REPO, Service, create_environment


def _key(service: Service) -> bytes:
    return build_token_key(load_or_create_secret_key(None, service.data_dir / "secret-key"))


def _claim(service: Service, token: str) -> httpx.Response:
    return httpx.post(f"{service.url}/api/v1/jobs/claim", json={"worker": "scoped", "wait_seconds": 0},
                      headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_a_build_token_works_on_its_own_build_attempt_only(service: Service) -> None:
    key = _key(service)
    with service.client() as http:
        first = create_environment(http, "tok", "first", ["pyhello"])["id"]
        second = create_environment(http, "tok", "second", ["pyhello"])["id"]
    for_second = sign_build_token(key, second, 1)
    assert _claim(service, sign_build_token(key, second, 2)).status_code == 204  # not the attempt it is for
    claimed = _claim(service, for_second)
    assert claimed.status_code == 200, claimed.text
    job = claimed.json()
    assert job["build_id"] == second and job["attempt"] == 1  # not the older queued build `first`
    auth = {"Authorization": f"Bearer {for_second}"}
    lease = {"lease_id": job["lease_id"]}
    with httpx.Client(base_url=service.url, headers=auth, timeout=30) as scoped:
        assert scoped.post(f"/api/v1/jobs/{second}/heartbeat", json=lease).status_code == 200
        refused = scoped.post(f"/api/v1/jobs/{first}/heartbeat", json=lease)
        assert refused.status_code == 403 and f"scoped to build {second}" in refused.json()["detail"]
        assert scoped.post(f"/api/v1/jobs/{first}/fail", json={**lease, "code": "x", "message": "m"}
                           ).status_code == 403
        assert scoped.get(f"/api/v1/builds/{second}").status_code == 401  # only the worker protocol takes it
        assert scoped.post(f"/api/v1/jobs/{second}/canceled", json=lease).status_code != 403
    assert _claim(service, for_second).status_code == 204  # its attempt is taken: nothing more to claim
    expired = sign_build_token(key, first, 1, issued_at=int(time.time()) - 100, seconds=10)
    assert _claim(service, expired).status_code == 401
    assert _claim(service, sign_build_token(build_token_key(b"another server" * 3), first, 1)).status_code == 401
    registry = sign_registry_token(registry_token_key(load_or_create_secret_key(
        None, service.data_dir / "secret-key")), None, ["tok/first"])
    assert _claim(service, registry).status_code == 401  # a registry token is no build token


def test_worker_once_exit_codes(service: Service) -> None:
    """75 when there is nothing to claim; 0 after completing the one build it claimed; 75 for a refused token."""
    key = _key(service)

    def once(token: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ENVYARD, "worker", "--once", "--claim-timeout", "1", "--api", service.url,
                               "--token", token, "--work-dir", str(service.log_dir / "work")],
                              env=service.env, cwd=REPO, capture_output=True, text=True, timeout=240)

    assert once(service.token).returncode == 75
    with service.client() as http:
        build = create_environment(http, "once", "one", ["pyhello"])["id"]
    assert once(sign_build_token(key, build + 1, 1)).returncode == 75  # another build's token claims nothing
    run = once(sign_build_token(key, build, 1))
    assert run.returncode == 0, run.stderr
    assert service.wait_for(build, timeout=5)["status"] == "completed"
    assert once(sign_build_token(b"x" * 32, build, 1)).returncode == 75
