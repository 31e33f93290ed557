"""Reproducible runs through the service: namespace secrets, DVC data snapshots and run manifests on a real
``envyard serve`` (SQLite and PostgreSQL), a real git + DVC project with an S3 remote on moto_server addressed as
MinIO (``endpointurl``, path-style), manifests attached to the build's image as OCI referrers, and garbage
collection that keeps what manifests reference."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.conftest import Service, create_environment

SECRET_VALUE = "s3cr3t-Value-that-must-never-leak-7f3a9c"
KEY_ID = "AKIAENVYARDTEST0001"


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout.strip()


def make_dvc_project(root: Path, endpoint: str, bucket: str) -> tuple[Path, str, str]:
    """A git repository holding a DVC project whose default remote is ``s3://bucket/dvc`` (its endpoint is only in
    the uncommitted config.local, as a server would get it from a secret): ``data/`` committed in two versions,
    tag ``v1`` on the first and ``v2`` on the second, both pushed to the remote. (repo, commit v1, commit v2)."""
    import boto3
    from dvc.repo import Repo

    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET_VALUE,
                 region_name="us-east-1").create_bucket(Bucket=bucket)
    repo = root / "project"
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    dvc = Repo.init(str(repo))
    with dvc.config.edit() as conf:
        conf["remote"]["store"] = {"url": f"s3://{bucket}/dvc"}
        conf["core"]["remote"] = "store"
    with dvc.config.edit("local") as conf:
        conf["remote"]["store"] = {"endpointurl": endpoint, "access_key_id": KEY_ID,
                                   "secret_access_key": SECRET_VALUE}
    commits = []
    for version in ("v1", "v2"):
        data = repo / "data"
        data.mkdir(exist_ok=True)
        (data / "numbers.txt").write_text("".join(f"{i}\n" for i in range(10 if version == "v1" else 20)))
        (data / "version.txt").write_text(version + "\n")
        dvc.add(str(data))
        dvc.push(remote="store")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", f"data {version}")
        _git(repo, "tag", version)
        commits.append(_git(repo, "rev-parse", "HEAD"))
    dvc.close()
    return repo, commits[0], commits[1]


def _service(start: Any, tmp_path: Path, *, e2e: bool = False) -> Service:
    env = {"ENVYARD_ALLOWED_FILE_ROOTS": json.dumps([str(tmp_path / "repos")])}
    return start("--workers", "1" if e2e else "0", env=env)


def _namespace(http: httpx.Client, name: str) -> None:
    response = http.post("/api/v1/namespaces", json={"name": name})
    assert response.status_code == 201, response.text


def _database_text(service: Service, database: str) -> bytes:
    """Every byte of the database: the SQLite files, or every row of every table (PostgreSQL)."""
    if not database:
        return b"".join(p.read_bytes() for p in service.data_dir.glob("envyard.db*"))
    import psycopg

    with psycopg.connect(database.replace("postgresql+psycopg://", "postgresql://")) as connection:
        tables = [r[0] for r in connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()]
        return "".join(str(connection.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables).encode()


def test_secret_values_never_leave_the_server(start: Any, tmp_path: Path, database: str) -> None:
    service = _service(start, tmp_path)
    with service.client() as http:
        _namespace(http, "team")
        answers = [http.put("/api/v1/namespaces/team/secrets/dvc-minio", json={"value": SECRET_VALUE})]
        assert answers[0].status_code == 200, answers[0].text
        assert set(answers[0].json()) == {"namespace", "name", "created_at", "updated_at"}
        answers.append(http.put("/api/v1/namespaces/team/secrets/dvc-minio", json={"value": SECRET_VALUE + "2"}))
        listed = http.get("/api/v1/namespaces/team/secrets")
        answers.append(listed)
        assert [s["name"] for s in listed.json()] == ["dvc-minio"]
        assert listed.json()[0]["updated_at"] >= listed.json()[0]["created_at"]
        answers.append(http.put("/api/v1/namespaces/team/secrets/bad%20name", json={"value": "x"}))
        assert answers[-1].status_code == 422 and "not a secret name" in answers[-1].json()["detail"]
        answers.append(http.get("/openapi.json"))
        database_bytes = _database_text(service, database)
        assert SECRET_VALUE.encode() not in database_bytes
        assert b"dvc-minio" in database_bytes  # (the scan does see the table)
        answers.append(http.delete("/api/v1/namespaces/team/secrets/dvc-minio"))
        assert answers[-1].status_code == 204
        answers.append(http.delete("/api/v1/namespaces/team/secrets/dvc-minio"))
        assert answers[-1].status_code == 404 and "has no secret 'dvc-minio'" in answers[-1].json()["detail"]
        assert http.get("/api/v1/namespaces/team/secrets").json() == []
    for answer in answers:
        assert SECRET_VALUE not in answer.text
    logs = b"".join(p.read_bytes() for p in service.log_dir.rglob("*") if p.is_file())
    assert SECRET_VALUE.encode() not in logs


def test_secrets_need_an_editor(start: Any, tmp_path: Path, database: str) -> None:
    service = _service(start, tmp_path)
    with service.client() as http:
        _namespace(http, "team")
        token = http.post("/api/v1/tokens", json={"name": "viewer", "role": "user"}).json()
        http.put(f"/api/v1/namespaces/team/grants/{token['id']}", json={"role": "viewer"})
    with service.client(token["token"]) as viewer:
        refused = viewer.put("/api/v1/namespaces/team/secrets/x", json={"value": SECRET_VALUE})
        assert refused.status_code == 403, refused.text
        assert viewer.get("/api/v1/namespaces/team/secrets").status_code == 403
    with httpx.Client(base_url=service.url) as anonymous:
        assert anonymous.get("/api/v1/namespaces/team/secrets").status_code == 401


@pytest.fixture
def project(tmp_path: Path, s3_endpoint: str) -> tuple[Path, str, str]:
    return make_dvc_project(tmp_path / "repos", s3_endpoint, f"dvc-{os.getpid()}-{abs(hash(str(tmp_path))) % 10**8}")


def _remote_secret(http: httpx.Client, namespace: str, endpoint: str) -> None:
    value = json.dumps({"access_key_id": KEY_ID, "secret_access_key": SECRET_VALUE, "endpointurl": endpoint})
    assert http.put(f"/api/v1/namespaces/{namespace}/secrets/minio", json={"value": value}).status_code == 200


def test_snapshots_pin_a_revision_with_credentials_from_a_secret(start: Any, tmp_path: Path, database: str,
                                                                 project: tuple[Path, str, str],
                                                                 s3_endpoint: str) -> None:
    repo, v1, v2 = project
    service = start("--workers", "0", "--allow-url", f"{s3_endpoint}/",
                    env={"ENVYARD_ALLOWED_FILE_ROOTS": json.dumps([str(tmp_path / "repos")])})
    with service.client() as http:
        _namespace(http, "team")
        _remote_secret(http, "team", s3_endpoint)
        body = {"repo": repo.as_uri(), "rev": "v1", "paths": ["data"], "remote_secret": "minio"}
        created = http.post("/api/v1/namespaces/team/data-snapshots", json=body)
        assert created.status_code == 201, created.text
        snapshot = created.json()
        assert snapshot["commit"] == v1 and snapshot["rev"] == "v1" and snapshot["remote"] is None
        (entry,) = snapshot["snapshot"]["paths"]
        assert entry["path"] == "data" and entry["hash"].endswith(".dir") and entry["nfiles"] == 2
        assert snapshot["snapshot"]["remote"] == "store" and snapshot["snapshot"]["remote_url"].startswith("s3://dvc-")
        assert SECRET_VALUE not in created.text and KEY_ID not in created.text

        _git(repo, "tag", "-f", "v1", v2)  # a moved tag does not change a stored snapshot
        again = http.get(f"/api/v1/namespaces/team/data-snapshots/{snapshot['id']}")
        assert again.status_code == 200 and again.json() == snapshot
        moved = http.post("/api/v1/namespaces/team/data-snapshots", json=body).json()
        assert moved["commit"] == v2 and moved["snapshot"]["paths"][0]["hash"] != entry["hash"]
        assert [s["id"] for s in http.get("/api/v1/namespaces/team/data-snapshots").json()] == [snapshot["id"],
                                                                                                moved["id"]]

        unknown = http.get("/api/v1/namespaces/team/data-snapshots/999999")
        assert unknown.status_code == 404 and "data snapshot 999999 does not exist" in unknown.json()["detail"]
        assert http.get("/api/v1/namespaces/team/data-snapshots/01").status_code == 422
        no_secret = http.post("/api/v1/namespaces/team/data-snapshots", json={**body, "remote_secret": "nope"})
        assert no_secret.status_code == 404 and "has no secret 'nope'" in no_secret.json()["detail"]
        bad_rev = http.post("/api/v1/namespaces/team/data-snapshots", json={**body, "rev": "v9"})
        assert bad_rev.status_code == 404 and "'v9'" in bad_rev.json()["detail"], bad_rev.text
        assert SECRET_VALUE not in no_secret.text + bad_rev.text
    logs = b"".join(p.read_bytes() for p in service.log_dir.rglob("*") if p.is_file())
    assert SECRET_VALUE.encode() not in logs
    assert SECRET_VALUE.encode() not in _database_text(service, database)


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_snapshot_repositories_and_endpoints_pass_the_url_policy(start: Any, tmp_path: Path) -> None:
    service = start("--workers", "0", env={"ENVYARD_ALLOWED_FILE_ROOTS": json.dumps([str(tmp_path / "repos")])})
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with service.client() as http:
        _namespace(http, "team")
        http.put("/api/v1/namespaces/team/secrets/meta", json={"value": json.dumps(
            {"endpointurl": "http://169.254.169.254/latest"})})
        cases = [({"repo": str(outside)}, "file:// URLs are only read under an allowed file root"),
                 ({"repo": outside.as_uri()}, "file:// URLs are only read under an allowed file root"),
                 ({"repo": "http://127.0.0.1:9/repo.git"}, "only fetched under an allowed prefix"),
                 ({"repo": "https://169.254.169.254/repo.git"}, "link-local"),
                 ({"repo": "git@example.org:team/repo.git"}, "scp-like"),
                 ({"repo": (tmp_path / "repos" / "x").as_uri(), "remote_secret": "meta"}, "remote endpointurl")]
        for extra, reason in cases:
            answer = http.post("/api/v1/namespaces/team/data-snapshots",
                               json={"repo": "", "rev": "main", "paths": ["data"], **extra})
            assert answer.status_code == 422, answer.text
            assert reason in answer.json()["detail"], (extra, answer.text)
