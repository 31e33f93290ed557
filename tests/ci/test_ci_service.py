"""The service's CI triggers on a real ``envyard serve`` with a worker: signed push webhooks (GitHub, GitLab) from a
real local bare git repository rebuild exactly the environments whose spec changed, and scheduled relocks queue a
build only when the solve changes, with its lock diff and a signed notification to a loopback listener."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ci.conftest import ENVIRONMENTS, git, publish, run_envyard, spec_text
from tests.listener import Listener, recording_listener
from tests.service.conftest import Service, database, postgres_url, start_service

__all__ = ["database", "postgres_url"]  # the service tests' database fixtures: SQLite and PostgreSQL

SECRET = "github-hook-secret"
GITLAB_TOKEN = "gitlab-hook-token"
NOTIFY_SECRET = "notify-secret"
OPTIONS = {"image": False, "archive": False, "sbom": None}


@pytest.fixture()
def listener() -> Iterator[Listener]:
    with recording_listener() as found:
        yield found


@pytest.fixture()
def origin(tmp_path: Path) -> tuple[Path, Path]:
    """(a working clone, its bare origin under <tmp>/git) holding the three specs on main."""
    bare = tmp_path / "git" / "origin.git"
    bare.mkdir(parents=True)
    git(bare, "init", "-q", "--bare", "-b", "main")
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    for name in ENVIRONMENTS:
        (work / "envs" / name).mkdir(parents=True)
        (work / "envs" / name / "environment.yml").write_text(spec_text(name))
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "three environments")
    git(work, "remote", "add", "origin", str(bare))
    git(work, "push", "-q", "origin", "main")
    return work, bare


@pytest.fixture()
def service(tmp_path: Path, channel_root: Path, ci_env: dict[str, str], listener: Listener,
            database: str) -> Iterator[Service]:
    from tests.service.conftest import REPO

    env = {**ci_env, "PYTHONPATH": str(REPO), "ENVYARD_GITHUB_HOOK_SECRET": SECRET,
           "ENVYARD_GITLAB_HOOK_TOKEN": GITLAB_TOKEN, "ENVYARD_RELOCK_INTERVAL_SECONDS": "0",
           "ENVYARD_RELOCK_NOTIFY_SECRET": NOTIFY_SECRET, "ENVYARD_RELOCK_NOTIFY_BACKOFF_SECONDS": "0.1",
           "ENVYARD_ALLOWED_FILE_ROOTS": json.dumps([str(tmp_path / "git")]),
           "ENVYARD_ALLOWED_URL_PREFIXES": json.dumps([listener.url + "/"]),
           "ENVYARD_LEASE_SECONDS": "6", "ENVYARD_HEARTBEAT_SECONDS": "1"}
    started = start_service(tmp_path / "svc", env, "--workers", "1", *(("--database", database) if database else ()))
    try:
        yield started
    finally:
        started.stop()


def _create(service: Service, http: httpx.Client, name: str) -> dict[str, Any]:
    made = http.post("/api/v1/environments", json={"namespace": "ci", "name": name, "spec": spec_text(name),
                                                   "filename": "environment.yml", "options": OPTIONS})
    assert made.status_code == 201, made.text
    return service.wait_for(made.json()["id"])


def _builds(http: httpx.Client) -> list[dict[str, Any]]:
    return list(http.get("/api/v1/builds", params={"limit": 100}).json()["items"])


def _push_payload(bare: Path, commit: str, changed: list[str], gitlab: bool = False) -> bytes:
    if gitlab:
        return json.dumps({"object_kind": "push", "ref": "refs/heads/main", "checkout_sha": commit,
                           "project": {"git_http_url": str(bare)},
                           "commits": [{"id": commit, "modified": changed}]}).encode()
    return json.dumps({"ref": "refs/heads/main", "after": commit, "repository": {"clone_url": str(bare) + "/"},
                       "commits": [{"id": commit, "modified": changed, "added": [], "removed": []}]}).encode()


def _github_headers(body: bytes, delivery: str, secret: str = SECRET) -> dict[str, str]:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": signature,
            "Content-Type": "application/json"}


def _packages(http: httpx.Client, build_id: int) -> dict[str, str]:
    """name -> version of the build's conda-lock.yml (downloaded as its artifact)."""
    import yaml

    found = http.get(f"/api/v1/builds/{build_id}/artifacts/conda-lock.yml")
    assert found.status_code == 200, found.text
    return {p["name"]: str(p["version"]) for p in yaml.safe_load(found.text)["package"]}


def test_push_hooks_rebuild_exactly_the_changed_environments(service: Service, origin: tuple[Path, Path],
                                                             channel_root: Path):
    work, bare = origin
    with service.client() as http:
        for name in ENVIRONMENTS:
            assert _create(service, http, name)["status"] == "completed"
            set_source = run_envyard(work, service.env, "--api", service.url, "--token", service.token, "env",
                                     "source", f"ci/{name}", "--repo", str(bare), "--path",
                                     f"envs/{name}/environment.yml", "--branch", "main")
            assert set_source.returncode == 0, set_source.stderr
            assert set_source.stdout.strip() == f"ci/{name} follows envs/{name}/environment.yml in {bare} (branch main)"
        assert http.get("/api/v1/environments/ci/beta/source").json()["path"] == "envs/beta/environment.yml"
        before = len(_builds(http))

        publish(channel_root, "alpha-pkg", "1.5", depends=("common",))
        spec = work / "envs" / "alpha" / "environment.yml"
        spec.write_text(spec.read_text().replace("alpha-pkg", "alpha-pkg >=1.5"))
        git(work, "commit", "-qam", "alpha 1.5")
        git(work, "push", "-q", "origin", "main")
        commit = git(work, "rev-parse", "HEAD").strip()
        body = _push_payload(bare, commit, ["envs/alpha/environment.yml", "README.md"])

        anonymous = httpx.Client(base_url=service.url, timeout=60)  # hooks take no token
        bad = anonymous.post("/api/v1/hooks/github", content=body,
                             headers=_github_headers(body, str(uuid.uuid4()), secret="wrong"))
        assert bad.status_code == 401 and "X-Hub-Signature-256" in bad.json()["detail"]
        unsigned = anonymous.post("/api/v1/hooks/github", content=body,
                                  headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": "x"})
        assert unsigned.status_code == 401
        assert len(_builds(http)) == before  # nothing built

        delivery = str(uuid.uuid4())
        good = anonymous.post("/api/v1/hooks/github", content=body, headers=_github_headers(body, delivery))
        assert good.status_code == 200, good.text
        outcome = good.json()
        assert [b["environment"] for b in outcome["builds"]] == ["ci/alpha"] and outcome["status"] == "built"
        replay = anonymous.post("/api/v1/hooks/github", content=body, headers=_github_headers(body, delivery))
        assert replay.status_code == 200 and replay.json()["ignored"] == "replay"
        assert len(_builds(http)) == before + 1
        built = service.wait_for(outcome["builds"][0]["build_id"])
        assert built["status"] == "completed", built
        assert _packages(http, built["id"])["alpha-pkg"] == "1.5"

        # GitLab: the token header; the beta spec changed on the pushed commit only
        publish(channel_root, "beta-pkg", "2.0", depends=("common",))
        spec = work / "envs" / "beta" / "environment.yml"
        spec.write_text(spec.read_text().replace("beta-pkg", "beta-pkg >=2"))
        git(work, "commit", "-qam", "beta 2")
        git(work, "push", "-q", "origin", "main")
        commit = git(work, "rev-parse", "HEAD").strip()
        body = _push_payload(bare, commit, ["envs/beta/environment.yml"], gitlab=True)
        headers = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": str(uuid.uuid4())}
        wrong = anonymous.post("/api/v1/hooks/gitlab", content=body, headers={**headers, "X-Gitlab-Token": "nope"})
        assert wrong.status_code == 401
        right = anonymous.post("/api/v1/hooks/gitlab", content=body, headers={**headers,
                                                                              "X-Gitlab-Token": GITLAB_TOKEN})
        assert right.status_code == 200, right.text
        assert [b["environment"] for b in right.json()["builds"]] == ["ci/beta"]
        built = service.wait_for(right.json()["builds"][0]["build_id"])
        assert built["status"] == "completed" and _packages(http, built["id"])["beta-pkg"] == "2.0"
        # a push that touches no environment's spec builds nothing
        body = _push_payload(bare, commit, ["README.md"])
        other = anonymous.post("/api/v1/hooks/github", content=body, headers=_github_headers(body, "d-3"))
        assert other.json()["ignored"] == "no environment's spec changed"
        ping = anonymous.post("/api/v1/hooks/github", content=b'{"zen": "hi"}',
                              headers={**_github_headers(b'{"zen": "hi"}', "ping-1"), "X-GitHub-Event": "ping"})
        assert ping.status_code == 200 and ping.json()["ignored"] == "not a push event"
        garbage = anonymous.post("/api/v1/hooks/github", content=b"[1]", headers=_github_headers(b"[1]", "bad-1"))
        assert garbage.status_code == 422 and "not a JSON object" in garbage.json()["detail"]
        # one delivery sent five times at once: the unique constraint lets exactly one through
        from concurrent.futures import ThreadPoolExecutor

        headers = _github_headers(body, "concurrent-delivery")
        with ThreadPoolExecutor(5) as pool:
            answers = list(pool.map(lambda _: anonymous.post("/api/v1/hooks/github", content=body, headers=headers),
                                    range(5)))
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        assert sorted(a.json()["ignored"] for a in answers) == ["no environment's spec changed"] + ["replay"] * 4
        assert len(_builds(http)) == before + 2
        # a source outside the allowed file roots is refused when set
        outside = http.put("/api/v1/environments/ci/gamma/source", json={"repo_url": "/etc", "path": "x.yml"})
        assert outside.status_code == 422 and "repository" in outside.json()["detail"]


def test_scheduled_relock_builds_only_on_change_with_diff_and_signed_notification(
        service: Service, channel_root: Path, listener: Listener, tmp_path: Path):
    with service.client() as http:
        current = _create(service, http, "gamma")
        bad = http.put("/api/v1/environments/ci/gamma/schedule", json={"cron": "every monday"})
        assert bad.status_code == 422 and bad.json()["field"] == "cron"
        schedule = run_envyard(tmp_path, service.env, "--api", service.url, "--token", service.token, "env",
                               "schedule", "ci/gamma", "--cron", "0 6 * * 1", "--notify-url", listener.url + "/hook",
                               "--json")
        assert schedule.returncode == 0, schedule.stderr
        assert json.loads(schedule.stdout)["cron"] == "0 6 * * 1"
        before = len(_builds(http))
        not_due = http.post("/api/v1/admin/relocks/run", json={})
        assert not_due.json() == {"relocks": []}  # next Monday 06:00 is not now

        same = http.post("/api/v1/admin/relocks/run", json={"force": True}).json()["relocks"]
        assert [r["result"] for r in same] == ["unchanged"], same
        assert len(_builds(http)) == before and listener.posts == []

        publish(channel_root, "common", "2.0")  # upstream: a new version of a dependency
        changed = http.post("/api/v1/admin/relocks/run", json={"force": True}).json()["relocks"]
        assert [r["result"] for r in changed] == ["changed"], changed
        build_id = changed[0]["build_id"]
        assert len(_builds(http)) == before + 1
        diff = http.get(f"/api/v1/builds/{build_id}/lock-diff").json()
        assert diff["previous_build_id"] == current["id"]
        assert diff["diff"]["linux-64"]["changed"] == [
            {"name": "common", "manager": "conda", "old": "1.0=0", "new": "2.0=0"}]
        assert http.get(f"/api/v1/builds/{current['id']}/lock-diff").status_code == 404
        assert service.wait_for(build_id)["status"] == "completed"
        assert _packages(http, build_id)["common"] == "2.0"

        deadline = time.monotonic() + 20
        while not listener.posts and time.monotonic() < deadline:
            time.sleep(0.1)
        path, headers, body = listener.posts[0]
        assert path == "/hook" and len(listener.posts) == 1
        expected = "sha256=" + hmac.new(NOTIFY_SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-envyard-signature-256"] == expected
        note = json.loads(body)
        assert note["environment"] == "ci/gamma" and note["build_id"] == build_id
        assert note["diff"] == diff["diff"]
        again = http.post("/api/v1/admin/relocks/run", json={"force": True}).json()["relocks"]
        assert [r["result"] for r in again] == ["unchanged"]  # compared with the new current build now
        shown = http.get("/api/v1/environments/ci/gamma/schedule").json()
        assert shown["last_result"] == "unchanged" and shown["next_run_at"]


def test_envyard_ci_with_api_builds_on_the_workers(service: Service, ci_repo: Path, ci_env: dict[str, str],
                                                  channel_root: Path):
    publish(channel_root, "alpha-pkg", "1.5", depends=("common",))
    spec = ci_repo / "envs" / "alpha" / "environment.yml"
    spec.write_text(spec.read_text().replace("alpha-pkg", "alpha-pkg >=1.5"))
    git(ci_repo, "commit", "-qam", "alpha 1.5")
    done = run_envyard(ci_repo, ci_env, "--token", service.token, "ci", "--api", service.url, "--build", "--json",
                       "--markdown", "report.md")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    by_name = {e["name"]: e for e in doc["environments"]}
    assert doc["counts"] == {"fresh": 2, "rebuilt": 1}
    alpha = by_name["alpha"]
    assert alpha["build_id"] and alpha["image_digest"].startswith("sha256:")
    assert alpha["changes"]["linux-64"]["changed"] == [
        {"name": "alpha-pkg", "manager": "conda", "old": "1.0=0", "new": "1.5=0"}]
    with service.client() as http:
        builds = _builds(http)
        assert [b["environment"] for b in builds] == ["ci/alpha"]  # only the changed one reached the server
    assert f"| alpha | rebuilt | alpha-pkg 1.0=0 → 1.5=0 | `{alpha['image_digest']}`" in \
        (ci_repo / "report.md").read_text()
    # the lock files the build made are now the repository's: fresh
    fresh = run_envyard(ci_repo, ci_env, "ci", "--check", "--json")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
