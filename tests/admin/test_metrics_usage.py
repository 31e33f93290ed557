"""``/metrics`` and ``/api/v1/usage`` after a scripted set of real builds, pulls and downloads on a real
``envyard serve`` (SQLite and PostgreSQL): every figure equals what the database holds."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from collections import Counter
from datetime import datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from tests.commands import ENVYARD
from tests.service.conftest import create_environment

METRICS_TOKEN = "metrics-secret-for-tests"
ACCEPT = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"


def _when(value: datetime | str) -> datetime:
    """A timestamp as the database driver returns it (SQLite: text)."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _database_figures(url: str) -> dict[str, Any]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as connection:
        def rows(sql: str) -> list[Any]:
            return list(connection.execute(text(sql)).all())

        figures = {
            "states": dict(rows("SELECT status, count(*) FROM build GROUP BY status")),
            "failures": dict(rows("SELECT error_code, count(*) FROM build WHERE status = 'failed' "
                                  "GROUP BY error_code")),
            "storage": dict(rows(
                "SELECT ns, sum(size) FROM (SELECT DISTINCT n.name AS ns, a.sha256, a.size FROM buildartifact a "
                "JOIN build b ON b.id = a.build_id JOIN environment e ON e.id = b.environment_id "
                "JOIN namespace n ON n.id = e.namespace_id) AS blobs GROUP BY ns")),
            "pulls": dict(rows("SELECT kind, count(*) FROM usageevent GROUP BY kind")),
            "pulls_by_user": sorted(tuple(r) for r in rows(
                "SELECT n.name || '/' || e.name, u.principal, u.kind, count(*), sum(u.bytes) FROM usageevent u "
                "JOIN environment e ON e.id = u.environment_id JOIN namespace n ON n.id = e.namespace_id "
                "GROUP BY n.name, e.name, u.principal, u.kind")),
            "finished": rows("SELECT solving_at, installing_at, imaging_at, pushing_at, finished_at, started_at "
                             "FROM build WHERE finished_at IS NOT NULL"),
            "builds": rows("SELECT count(*) FROM build")[0][0],
        }
    engine.dispose()
    return figures


def test_metrics_and_usage_match_the_database_after_real_builds(start: Any, database: str) -> None:
    service = start(env={"ENVYARD_METRICS_TOKEN": METRICS_TOKEN})
    with service.client() as http:
        done = [service.wait_for(create_environment(http, "team", name, deps)["id"])
                for name, deps in (("a", ["busybox"]), ("b", ["reloc-data"]))]
        assert [b["status"] for b in done] == ["completed", "completed"]
        missing = service.wait_for(create_environment(http, "team", "c", ["no-such-package"])["id"])
        create_environment(http, "other", "seed", ["busybox"])
        assert http.put("/api/v1/namespaces/other/policy", json={"deny": [{"name": "reloc-data"}]}).status_code == 200
        denied = service.wait_for(create_environment(http, "other", "d", ["e2e-env"])["id"])
        assert (missing["status"], denied["error"]["code"]) == ("failed", "policy-violation")

        # pulls and downloads: the admin, and a reader of team
        reader = http.post("/api/v1/tokens", json={"name": "ana", "role": "user"}).json()
        assert http.put(f"/api/v1/namespaces/team/grants/{reader['id']}", json={"role": "viewer"}).status_code == 200
        manifest = http.get("/v2/team/a/manifests/latest", headers={"Accept": ACCEPT})
        assert manifest.status_code == 200
        layer = next(a for a in http.get(f"/api/v1/builds/{done[0]['id']}/artifacts").json() if a["kind"] == "oci-blob")
        assert http.get(f"/v2/team/a/blobs/{layer['digest']}").status_code == 200
        assert http.head(f"/v2/team/a/blobs/{layer['digest']}").status_code == 200  # a HEAD is no pull
        with service.client(reader["token"]) as ana:
            assert ana.get(f"/api/v1/builds/{done[1]['id']}/artifacts/conda-lock.yml").status_code == 200
            assert ana.get("/v2/team/b/manifests/latest", headers={"Accept": ACCEPT}).status_code == 200
            assert ana.get("/metrics").status_code == 403  # not an admin, no metrics token
        with service.client("wrong") as stranger:
            assert stranger.get("/metrics").status_code == 401
        scraped = http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert scraped.status_code == 200, scraped.text
        assert http.get("/metrics").status_code == 200  # an admin token
        usage = http.get("/api/v1/usage").json()
        usage_csv = http.get("/api/v1/usage", params={"format": "csv"}).text

    url = database or f"sqlite:///{service.data_dir / 'envyard.db'}"
    db = _database_figures(url)
    families = {f.name: f for f in text_string_to_metric_families(scraped.text)}
    samples = {(f.name, s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("envyard_queue_depth", "envyard_queue_depth", ())] == db["states"].get("queued", 0)
    for state in ("queued", "completed", "failed", "canceled"):
        assert samples[("envyard_builds", "envyard_builds", (("state", state),))] == db["states"].get(state, 0)
    assert db["failures"] == {"policy-violation": 1, "unsatisfiable": 1}
    for code, count in db["failures"].items():
        assert samples[("envyard_build_failures", "envyard_build_failures_total", (("code", code),))] == count
    assert db["storage"]["team"] > 0
    for namespace, size in db["storage"].items():
        assert samples[("envyard_storage_bytes", "envyard_storage_bytes", (("namespace", namespace),))] == size
    assert db["pulls"] == {"manifest": 2, "blob": 1, "artifact": 1}
    for kind, count in db["pulls"].items():
        assert samples[("envyard_registry_pulls", "envyard_registry_pulls_total", (("kind", kind),))] == count
    solving = sum(1 for row in db["finished"] if row[0] is not None and any(v is not None for v in row[1:5]))
    assert samples[("envyard_build_stage_duration_seconds", "envyard_build_stage_duration_seconds_count",
                    (("stage", "solving"),))] == solving == 5

    assert usage["builds"]["submitted"] == db["builds"] == 5
    assert usage["failures"] == db["failures"]
    assert usage["storage"]["namespaces"] == {k: int(v) for k, v in db["storage"].items()}
    minutes = sum((_when(row[4]) - _when(row[5])).total_seconds() / 60 for row in db["finished"]
                  if row[5] is not None)
    assert abs(usage["build_minutes"]["total"] - minutes) < 0.001
    pulls = sorted((p["environment"], p["user"], p["kind"], p["count"], p["bytes"]) for p in usage["pulls"])
    assert pulls == [tuple(row) for row in db["pulls_by_user"]]
    assert len({p[1] for p in pulls}) == 2  # the admin token's name and ana
    table = list(csv.DictReader(io.StringIO(usage_csv)))
    failures = {row["key"]: int(row["value"]) for row in table if row["section"] == "failures"}
    assert failures == db["failures"]
    csv_pulls = Counter((row["environment"], row["user"], row["key"]) for row in table if row["section"] == "pulls")
    assert set(csv_pulls) == {(p[0], p[1], p[2]) for p in pulls}
    assert {row["environment"]: int(row["value"]) for row in table
            if row["section"] == "storage" and row["key"] == "namespace_bytes"} == usage["storage"]["namespaces"]


def test_metrics_from_an_allowed_network_need_no_token(start: Any) -> None:
    service = start("--workers", "0", env={"ENVYARD_METRICS_ALLOWED_NETWORKS": '["127.0.0.0/8"]'})
    with service.client("no-token-needed") as anyone:
        response = anyone.get("/metrics")
    assert response.status_code == 200 and "envyard_queue_depth 0.0" in response.text
    with service.client() as http:
        usage = http.get("/api/v1/usage", params={"since": "2030-01-02", "until": "2030-01-01"})
        assert usage.status_code == 400 and usage.json()["field"] == "since"
        assert http.get("/api/v1/usage", params={"until": "1700000000"}).status_code == 422  # no epoch numbers
        assert http.post("/api/v1/namespaces", json={"name": "team"}).status_code == 201
    env = {**service.env, "ENVYARD_API_URL": service.url, "ENVYARD_TOKEN": service.token}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ENVYARD, *args], capture_output=True, text=True, env=env, check=False)

    done = cli("quota", "set", "team", "--storage-bytes", "1000000", "--concurrent-builds", "3", "--keep-last", "2")
    assert done.returncode == 0, done.stderr
    assert "0 B used of 976.6 KiB" in done.stdout
    shown = json.loads(cli("quota", "show", "team", "--json").stdout)
    assert (shown["storage_bytes"], shown["concurrent_builds"], shown["keep_last"]) == (1000000, 3, 2)
    cleared = cli("quota", "set", "team", "--concurrent-builds", "-1", "--json")
    assert json.loads(cleared.stdout)["concurrent_builds"] is None
    assert cli("quota", "set", "team").returncode == 64  # nothing to set
    table = cli("usage", "--csv").stdout.splitlines()
    assert table[0] == "section,environment,user,key,value" and "builds,,,submitted,0" in table
