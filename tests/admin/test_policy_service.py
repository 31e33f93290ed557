"""Policies on a real ``envyard serve`` with a real worker and the e2e channel (tests/packages.py): every kind
refused at submission in one 422, a denied package pulled in by a dependency failing the build with its path,
required packages added, floors, the installed-size maximum, the time limit, and ``envyard policy``."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from envyard.api.db import make_engine, migrate
from envyard.api.models import Build, BuildStatus, Environment, Namespace, Spec, utcnow
from envyard.api.services.jobs import LeasePolicy, reap
from tests.commands import ENVYARD
from tests.service.conftest import create_environment, spec_text


@pytest.fixture
def database() -> str:
    return ""  # SQLite: policies are no matter of the database (the quota tests run on both)


def _put(http: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = http.put(path, json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_spec_breaking_every_policy_kind_is_refused_listing_every_violation(start: Any) -> None:
    service = start()
    with service.client() as http:
        create_environment(http, "team", "base", ["busybox"])  # the namespace and environment exist now
        _put(http, "/api/v1/admin/policy", {"allowed_channels": ["e2e"], "allowed_platforms": ["linux-64"],
                                            "channel_alias": service.env["ENVYARD_CHANNEL_ALIAS"]})
        _put(http, "/api/v1/namespaces/team/policy", {
            "deny": [{"name": "reloc-data", "reason": "unmaintained since 2019"}],
            "floors": {"python": "3.12"}})
        _put(http, "/api/v1/namespaces/team/environments/base/policy", {"deny": [{"name": "leftpad", "reason": "x"}]})
        spec = ("channels: [e2e, conda-forge]\ndependencies:\n  - busybox\n  - reloc-data\n  - python 3.11.*\n"
                "  - leftpad\n")
        response = http.post("/api/v1/environments/team/base/builds", json={
            "spec": spec, "platforms": ["linux-64", "osx-arm64"],
            "options": {"channel_alias": "https://conda.anaconda.org/"}})
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["type"].endswith("/policy-violation"), problem
        violations = problem["details"]["violations"]
        assert {(v["field"], v.get("package")) for v in violations} == {
            ("options.channel_alias", None), ("platforms", None), ("channels", None),
            ("dependencies", "reloc-data"), ("dependencies", "python"), ("dependencies", "leftpad")}
        messages = "\n".join(v["message"] for v in violations)
        assert "unmaintained since 2019" in messages and "osx-arm64" in messages and "conda-forge" in messages
        assert all(v["fix"] for v in violations)
        assert "python 3.11.*" in problem["explanation"]
        # the effective policy as the environment sees it
        effective = http.get("/api/v1/namespaces/team/environments/base/policy", params={"effective": "true"}).json()
        assert sorted(d["name"] for d in effective["deny"]) == ["leftpad", "reloc-data"]
        # a new environment in another namespace: only the global level applies
        response = http.post("/api/v1/environments", json={"namespace": "other", "name": "x",
                                                           "spec": spec_text(["reloc-data"], "x")})
        assert response.status_code == 201, response.text
        audit = http.get("/api/v1/admin/audit", params={"action": "policy."}).json()["items"]
        assert {event["target"] for event in audit} >= {"policy global", "policy namespace team",
                                                       "policy environment team/base"}


def test_denied_dependencies_floors_required_packages_and_size_fail_or_shape_real_builds(start: Any) -> None:
    service = start()
    service.start_worker("w1")
    with service.client() as http:
        create_environment(http, "team", "seed", ["busybox"])
        _put(http, "/api/v1/namespaces/team/policy", {"deny": [{"name": "reloc-data", "reason": "unmaintained"}]})
        build = create_environment(http, "team", "full", ["e2e-env"])  # e2e-env needs reloc-data
        failed = service.wait_for(build["id"])
        assert failed["status"] == "failed", failed
        assert failed["error"]["code"] == "policy-violation"
        assert "e2e-env -> reloc-data" in failed["error"]["message"]
        assert "unmaintained" in failed["error"]["message"]

        _put(http, "/api/v1/namespaces/team/policy", {"floors": {"python": "3.12"}})
        failed = service.wait_for(create_environment(http, "team", "hello", ["pyhello"])["id"])
        assert failed["error"]["code"] == "policy-violation"
        assert "pyhello -> python" in failed["error"]["message"] and "3.12" in failed["error"]["message"]

        _put(http, "/api/v1/namespaces/team/policy", {"required": ["pyhello"]})
        done = service.wait_for(create_environment(http, "team", "shell", ["busybox"])["id"])
        assert done["status"] == "completed", http.get(f"/api/v1/builds/{done['id']}/logs").text
        lock = http.get(f"/api/v1/builds/{done['id']}/artifacts/conda-lock.yml").text
        assert "name: pyhello" in lock and "name: busybox" in lock

        _put(http, "/api/v1/namespaces/team/policy", {"max_installed_bytes": 4096})
        failed = service.wait_for(create_environment(http, "team", "big", ["busybox", "reloc-data"])["id"])
        assert failed["error"]["code"] == "policy-violation", failed
        assert failed["error"]["stage"] == "installing"
        assert "over the maximum of 4.0 KiB" in failed["error"]["message"]


def test_the_policy_time_limit_fails_a_build_past_it(tmp_path: Path) -> None:
    """The reaper applies each build's own limit (its policy's, where lower than the server's)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    started = utcnow() - timedelta(seconds=30)
    with Session(engine) as session:
        namespace = Namespace(name="team")
        session.add(namespace)
        session.flush()
        environment = Environment(namespace_id=namespace.id or 0, name="env")
        spec = Spec(sha256="0" * 64, filename="environment.yml", content="dependencies: [busybox]\n")
        session.add_all([environment, spec])
        session.flush()
        running = {"status": BuildStatus.SOLVING, "lease_id": "l", "lease_expires_at": utcnow() + timedelta(hours=1),
                   "started_at": started, "solving_at": started}
        limited = Build(environment_id=environment.id or 0, spec_id=spec.id or 0, policy={
            "build_time_limit_seconds": 10}, **running)
        free = Build(environment_id=environment.id or 0, spec_id=spec.id or 0, **{**running, "lease_id": "m"})
        session.add_all([limited, free])
        session.commit()
        ids = limited.id, free.id
    assert reap(engine, LeasePolicy(lease_seconds=30, time_limit_seconds=3600, max_attempts=3,
                                    backoff_seconds=1)) == 1
    with Session(engine) as session:
        limited_now, free_now = session.get(Build, ids[0]), session.get(Build, ids[1])
        assert limited_now is not None and free_now is not None
        assert (limited_now.status, limited_now.error_code) == ("failed", "build-timeout")
        assert "0.166667 minutes" in (limited_now.error_message or "")
        assert free_now.status == "solving"
    engine.dispose()


def test_policy_cli_sets_shows_and_names_bad_files(start: Any, tmp_path: Path) -> None:
    service = start()
    env = {**service.env, "ENVYARD_API_URL": service.url, "ENVYARD_TOKEN": service.token}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ENVYARD, *args], capture_output=True, text=True, env=env, check=False)

    policy = tmp_path / "policy.yaml"
    policy.write_text("deny:\n  - {name: reloc-data, reason: unmaintained}\nallowed_platforms: [linux-64]\n"
                      "max_installed_bytes: 1000000\n")
    done = run("policy", "set", "global", str(policy), "--json")
    assert done.returncode == 0, done.stderr
    shown = run("policy", "show", "global", "--json")
    assert json.loads(shown.stdout)["deny"] == [{"name": "reloc-data", "reason": "unmaintained"}]
    text = run("policy", "show", "global").stdout
    assert "reloc-data (unmaintained)" in text and "976.6 KiB" in text
    policy.write_text("deny:\n  - {name: reloc-data, reasn: typo}\n")
    bad = run("policy", "set", "global", str(policy))
    assert bad.returncode == 1
    assert f"{policy}: deny.0.reasn:" in bad.stderr
    unknown = run("policy", "show", "no-such-namespace")
    assert unknown.returncode == 6, unknown.stderr
