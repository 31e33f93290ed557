"""Retention, promotion and deprecation on a real ``envyard serve`` with real builds: the dry run names the builds,
blobs and bytes that go; the real run frees exactly those; current, pinned, promoted (and externally referenced)
builds stay; a promoted build is served by ``/v2/`` under the curated name with the same digest."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from envyard.api.db import make_engine
from envyard.api.models import Namespace
from envyard.api.services.retention import retained_build_ids
from tests.commands import ENVYARD
from tests.service.conftest import create_environment

SPECS = (["busybox"], ["reloc-data"], ["python"], ["pyhello"], ["busybox", "reloc-data"])


@pytest.fixture
def database() -> str:
    return ""  # SQLite: the test also reads the server's database file (retained_build_ids' extension point)


def _blobs(data_dir: Path) -> set[str]:
    return {path.name for path in (data_dir / "artifacts" / "blobs" / "sha256").iterdir()}


def _artifact_digests(http: Any, build_id: int) -> set[str]:
    return {a["digest"].removeprefix("sha256:") for a in http.get(f"/api/v1/builds/{build_id}/artifacts").json()}


def test_retention_keeps_current_pinned_and_promoted_builds_and_frees_what_its_dry_run_said(start: Any) -> None:
    service = start()
    env = {**service.env, "ENVYARD_API_URL": service.url, "ENVYARD_TOKEN": service.token}

    def cli(*args: str) -> Any:
        done = subprocess.run([*ENVYARD, *args, "--json"], capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    with service.client() as http:
        ids = []
        for deps in SPECS:
            build = service.wait_for(create_environment(http, "team", "app", deps)["id"])
            assert build["status"] == "completed", build
            ids.append(build["id"])
        pinned, promoted, old_a, old_b, current = ids
        assert cli("build", "pin", str(pinned))["pinned"] is True
        copy = cli("build", "promote", str(promoted), "curated/app")
        assert copy["environment"] == "curated/app" and copy["current"] is True
        assert copy["image_digest"] == http.get(f"/api/v1/builds/{promoted}").json()["image_digest"]
        quota = http.put("/api/v1/namespaces/team/quota", json={"keep_last": 1})
        assert quota.status_code == 200, quota.text

        # the extension point: builds referenced elsewhere (run manifests) are kept
        engine = make_engine(f"sqlite:///{service.data_dir / 'envyard.db'}")
        with Session(engine) as session:
            team = session.exec(select(Namespace.id).where(Namespace.name == "team")).one()
            plain = retained_build_ids(session, team)
            referenced = retained_build_ids(session, team, external_references=lambda _s, _ns: {old_b})
        engine.dispose()
        assert plain == {pinned, promoted, current}
        assert referenced == {pinned, promoted, current, old_b}

        before = _blobs(service.data_dir)
        dry = cli("retention", "apply", "--namespace", "team", "--dry-run")
        assert dry["dry_run"] is True and [b["id"] for b in dry["builds"]] == [old_a, old_b]
        kept = set().union(*(_artifact_digests(http, i) for i in (pinned, promoted, current, copy["id"])))
        theirs = _artifact_digests(http, old_a) | _artifact_digests(http, old_b)
        assert set(dry["blobs"]) == theirs - kept and dry["blobs"]
        sizes = {a["digest"].removeprefix("sha256:"): a["size"]
                 for i in (old_a, old_b) for a in http.get(f"/api/v1/builds/{i}/artifacts").json()}
        assert dry["bytes"] == sum(sizes[sha] for sha in dry["blobs"])
        assert _blobs(service.data_dir) == before  # a dry run changes nothing

        done = cli("retention", "apply", "--namespace", "team")
        assert [b["id"] for b in done["builds"]] == [old_a, old_b]
        assert done["blobs"] == dry["blobs"] and done["bytes"] == dry["bytes"]
        assert (done["freed_blobs"], done["freed_bytes"]) == (len(dry["blobs"]), dry["bytes"])
        assert _blobs(service.data_dir) == before - set(dry["blobs"])
        assert kept <= _blobs(service.data_dir)
        for collected in (old_a, old_b):
            build = http.get(f"/api/v1/builds/{collected}").json()
            assert build["collected_at"] is not None and build["status"] == "completed"
            assert http.get(f"/api/v1/builds/{collected}/artifacts").json() == []
        assert cli("retention", "apply", "--dry-run")["builds"] == []

        # the curated copy is served under its own name with the source's digest
        manifest = http.get("/v2/curated/app/manifests/latest",
                            headers={"Accept": "application/vnd.oci.image.index.v1+json, "
                                               "application/vnd.oci.image.manifest.v1+json"})
        assert manifest.status_code == 200, manifest.text
        assert manifest.headers["docker-content-digest"] == copy["image_digest"]
        audit = {event["action"] for event in http.get("/api/v1/admin/audit").json()["items"]}
        assert {"build.pin", "build.promote", "quota.update", "retention.apply"} <= audit

        # deprecation shows in listings and env show
        assert cli("env", "deprecate", "team/app", "--successor", "curated/app",
                   "--message", "use the curated one")["successor"] == "curated/app"
        listed = http.get("/api/v1/environments", params={"namespace": "team"}).json()["items"]
        assert listed[0]["deprecated"]["successor"] == "curated/app"
        shown = subprocess.run([*ENVYARD, "env", "show", "team/app"], capture_output=True, text=True, env=env,
                               check=False).stdout
        assert "DEPRECATED since" in shown and "use curated/app instead: use the curated one" in shown
        missing = http.put("/api/v1/environments/team/app/deprecation", json={"successor": "curated/none"})
        assert missing.status_code == 404
        assert http.delete("/api/v1/environments/team/app/deprecation").status_code == 204
        assert http.get("/api/v1/environments/team/app").json()["deprecated"] is None
        # the source environment can be deleted: the curated copy keeps its artifacts
        assert http.delete("/api/v1/environments/team/app").status_code == 204
        assert http.get(f"/api/v1/builds/{copy['id']}/artifacts").json()


def test_promoting_a_build_that_did_not_complete_is_refused(start: Any) -> None:
    service = start("--workers", "0")
    with service.client() as http:
        queued = create_environment(http, "team", "app", ["busybox"])
        response = http.post(f"/api/v1/builds/{queued['id']}/promote", json={"namespace": "curated"})
        assert response.status_code == 409 and "queued" in response.json()["detail"]
