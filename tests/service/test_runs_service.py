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
    """A git repository holding a DVC project whose default remote is ``s3://bucket/dvc`` on ``endpoint`` (MinIO
    style; the credentials only in the uncommitted config.local): ``data/`` committed in two versions,
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
        conf["remote"]["store"] = {"url": f"s3://{bucket}/dvc", "endpointurl": endpoint}
        conf["core"]["remote"] = "store"
    with dvc.config.edit("local") as conf:
        conf["remote"]["store"] = {"access_key_id": KEY_ID, "secret_access_key": SECRET_VALUE}
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
    with service.client() as http:  # an empty namespace goes with its secrets
        assert http.put("/api/v1/namespaces/team/secrets/x", json={"value": SECRET_VALUE}).status_code == 200
        assert http.delete("/api/v1/namespaces/team").status_code == 204
        _namespace(http, "team")
        assert http.get("/api/v1/namespaces/team/secrets").json() == []


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


MANIFEST_TYPE = "application/vnd.envyard.run-manifest.v1+json"


def _built(service: Service, http: httpx.Client, namespace: str, name: str,
           deps: tuple[str, ...] = ("e2e-env",)) -> dict[str, Any]:
    submitted = create_environment(http, namespace, name, list(deps))
    build = service.wait_for(submitted["id"], timeout=300)
    assert build["status"] == "completed" and build["image_digest"], build
    return build


def test_manifests_are_stored_by_digest_attached_as_referrers_and_keep_their_build(
        start: Any, tmp_path: Path, database: str, project: tuple[Path, str, str], s3_endpoint: str) -> None:
    from envyard.builder.run_manifest import OutputFile, RunManifest

    repo, v1, _ = project
    service = start("--workers", "1", "--allow-url", f"{s3_endpoint}/",
                    env={"ENVYARD_ALLOWED_FILE_ROOTS": json.dumps([str(tmp_path / "repos")])})
    with service.client() as http:
        _namespace(http, "team")
        build = _built(service, http, "team", "app")
        _remote_secret(http, "team", s3_endpoint)
        snapshot = http.post("/api/v1/namespaces/team/data-snapshots", json={
            "repo": repo.as_uri(), "rev": "v1", "paths": ["data"], "remote_secret": "minio"}).json()
        body = {"build": "team/app", "data": [{"snapshot_id": snapshot["id"], "mount": "/data/in"}],
                "command": ["python", "-c", "print(1)"], "workdir": "/work", "env": {"OMP_NUM_THREADS": "1"},
                "resources": {"cpu": "1", "memory": "1Gi"}}

        unknown = http.post("/api/v1/namespaces/team/manifests",
                            json={**body, "data": [{"snapshot_id": 424242, "mount": "/data/in"}]})
        assert unknown.status_code == 404 and "data snapshot 424242 does not exist" in unknown.json()["detail"]
        assert http.get("/api/v1/namespaces/team/manifests").json() == []

        created = http.post("/api/v1/namespaces/team/manifests", json=body)
        assert created.status_code == 201, created.text
        record = created.json()
        assert record["build_id"] == build["id"] and record["referrer"]
        fetched = http.get(f"/api/v1/namespaces/team/manifests/{record['digest']}")
        assert fetched.status_code == 200 and fetched.headers["content-type"] == MANIFEST_TYPE
        assert "sha256:" + __import__("hashlib").sha256(fetched.content).hexdigest() == record["digest"]
        manifest = RunManifest.parse(fetched.content)
        assert manifest.digest == record["digest"] and manifest.canonical_bytes() == fetched.content
        artifacts = {a["name"]: a for a in http.get(f"/api/v1/builds/{build['id']}/artifacts").json()}
        environment = manifest.environment
        assert (environment.namespace, environment.name, environment.build_id) == ("team", "app", build["id"])
        assert "sha256:" + environment.lock.sha256 == artifacts["conda-lock.yml"]["digest"]
        assert set(environment.images) == set(build["platforms"]) and environment.prefix
        assert environment.image_refs == [f"{service.url.removeprefix('http://')}/team/app@{build['image_digest']}"]
        assert manifest.data[0].snapshot.commit == v1 and manifest.data[0].mount == "/data/in"
        again = http.post("/api/v1/namespaces/team/manifests", json=body)  # the same manifest: the same record
        assert again.status_code == 201 and again.json() == record
        assert [m["digest"] for m in http.get("/api/v1/namespaces/team/manifests").json()] == [record["digest"]]

        # an OCI referrer of the image, next to the SBOMs
        listed = http.get(f"/v2/team/app/referrers/{build['image_digest']}").json()["manifests"]
        ours = [m for m in listed if m.get("artifactType") == MANIFEST_TYPE]
        assert [m["digest"] for m in ours] == [record["referrer"]] and len(listed) > 1
        filtered = http.get(f"/v2/team/app/referrers/{build['image_digest']}", params={"artifactType": MANIFEST_TYPE})
        assert filtered.json()["manifests"] == ours
        host = service.url.removeprefix("http://")
        inspected = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", "--creds",
                                    f"anyone:{service.token}", f"docker://{host}/team/app@{record['referrer']}"],
                                   capture_output=True, text=True, timeout=120)
        assert inspected.returncode == 0, inspected.stderr
        referrer = json.loads(inspected.stdout)
        assert referrer["subject"]["digest"] == build["image_digest"]
        assert referrer["artifactType"] == MANIFEST_TYPE
        (layer,) = referrer["layers"]
        assert layer["digest"] == record["digest"] and layer["mediaType"] == MANIFEST_TYPE
        assert http.get(f"/v2/team/app/blobs/{layer['digest']}").content == fetched.content

        # a complete document: a run's result with outputs, checked and stored as it is
        result = manifest.result([OutputFile(path="out/a.txt", sha256="0" * 64, size=1)])
        document = json.loads(result.canonical_bytes())
        stored = http.post("/api/v1/namespaces/team/manifests", json={"manifest": document, "digest": result.digest})
        assert stored.status_code == 201 and stored.json()["digest"] == result.digest, stored.text
        wrong = http.post("/api/v1/namespaces/team/manifests", json={"manifest": document, "digest": record["digest"]})
        assert wrong.status_code == 422 and "not " + record["digest"] in wrong.json()["detail"]
        foreign = json.loads(result.canonical_bytes())
        foreign["environment"]["build_id"] = 999999
        missing = http.post("/api/v1/namespaces/team/manifests", json={"manifest": foreign})
        assert missing.status_code == 404 and "build 999999 does not exist" in missing.json()["detail"]
        relocked = json.loads(result.canonical_bytes())
        relocked["environment"]["lock"]["sha256"] = "1" * 64
        assert http.post("/api/v1/namespaces/team/manifests", json={"manifest": relocked}).status_code == 422
        padded = {**document, "extra": 1}
        assert http.post("/api/v1/namespaces/team/manifests", json={"manifest": padded}).status_code == 422
        assert http.get("/api/v1/namespaces/team/manifests/sha256:" + "0" * 64).status_code == 404
        assert http.get("/api/v1/namespaces/other/manifests/" + record["digest"]).status_code == 404

        # the build stays: its environment cannot be deleted; replacing its current build and collecting keeps it
        refused = http.delete("/api/v1/environments/team/app")
        assert refused.status_code == 409 and "run manifests name builds" in refused.json()["detail"]
        newer = http.post("/api/v1/environments/team/app/builds", json={"spec": "name: app\nchannels:\n  - e2e\n"
                          "dependencies:\n  - e2e-env\n  - busybox\n"})
        assert newer.status_code in (200, 201, 202), newer.text
        assert service.wait_for(newer.json()["id"], timeout=300)["status"] == "completed"
        report = http.post("/api/v1/admin/gc", json={"grace_seconds": 0}).json()
        assert report["referenced"] > 0
        assert http.get(f"/api/v1/namespaces/team/manifests/{record['digest']}").content == fetched.content
        assert http.get(f"/v2/team/app/manifests/{record['referrer']}").status_code == 200
        assert http.get(f"/v2/team/app/manifests/{build['image_digest']}").status_code == 200
        for blob in ("conda-lock.yml",):
            assert http.get(f"/api/v1/blobs/{artifacts[blob]['digest']}").status_code == 200


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_collection_keeps_the_manifest_of_a_build_without_an_image(start: Any, tmp_path: Path) -> None:
    """Without an image the manifest is no artifact of its build: the collector's mark counts the manifest row."""
    service = start("--workers", "1")
    with service.client() as http:
        response = http.post("/api/v1/environments", json={
            "namespace": "team", "name": "plain", "spec": "name: plain\nchannels:\n  - e2e\ndependencies:\n"
            "  - e2e-env\n", "options": {"image": False, "archive": False, "sbom": None}})
        assert response.status_code == 201, response.text
        build = service.wait_for(response.json()["id"], timeout=300)
        assert build["status"] == "completed" and not build["image_digest"]
        created = http.post("/api/v1/namespaces/team/manifests", json={"build": build["id"], "command": ["true"]})
        assert created.status_code == 201, created.text
        record = created.json()
        assert record["referrer"] is None
        names = [a["name"] for a in http.get(f"/api/v1/builds/{build['id']}/artifacts").json()]
        assert not [n for n in names if n.startswith("run-manifests/")]
        from envyard.api.storage import open_artifact_store

        store = open_artifact_store((service.data_dir / "artifacts").as_uri(), s3_endpoint=None, s3_access_key=None,
                                    s3_secret_key=None)
        orphan = store.put_bytes(b"nobody references this blob")
        report = http.post("/api/v1/admin/gc", json={"grace_seconds": 0}).json()
        assert report["deleted"] >= 1 and not store.exists(orphan.sha256)  # the collection did collect
        assert store.exists(record["digest"].removeprefix("sha256:"))
        fetched = http.get(f"/api/v1/namespaces/team/manifests/{record['digest']}")
        assert fetched.status_code == 200, fetched.text
        assert "sha256:" + __import__("hashlib").sha256(fetched.content).hexdigest() == record["digest"]


def _cli(service: Service, *args: str, env: dict[str, str] | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    from tests.commands import ENVYARD

    return subprocess.run([*ENVYARD, "--api", service.url, "--token", service.token, *args], capture_output=True,
                          text=True, timeout=600, env={**service.env, **(env or {})}, cwd=cwd)


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_snapshot_manifest_and_run_through_the_cli_and_the_service(start: Any, tmp_path: Path,
                                                                  project: tuple[Path, str, str],
                                                                  s3_endpoint: str) -> None:
    from envyard.builder.errors import RunIntegrityError
    from envyard.builder.install import host_platform
    from envyard.builder.run import RunOptions, run_manifest
    from envyard.builder.run_manifest import RunManifest
    from envyard.registry.client import RegistryClient
    from envyard.registry.layout import pull_to_layout
    from envyard.registry.reference import parse_reference

    repo, v1, v2 = project
    service = start("--workers", "1", "--allow-url", f"{s3_endpoint}/",
                    env={"ENVYARD_ALLOWED_FILE_ROOTS": json.dumps([str(tmp_path / "repos")])})
    client_env = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_VALUE,  # the runner's own credentials
                  "AWS_DEFAULT_REGION": "us-east-1"}
    with service.client() as http:
        _namespace(http, "team")
        build = _built(service, http, "team", "app")
    secret = _cli(service, "namespace", "secret", "set", "team", "minio", "--from-env", "MINIO_OPTIONS",
                  env={"MINIO_OPTIONS": json.dumps({"access_key_id": KEY_ID, "secret_access_key": SECRET_VALUE})})
    assert secret.returncode == 0 and SECRET_VALUE not in secret.stdout + secret.stderr, secret.stderr
    listed = _cli(service, "namespace", "secret", "list", "team", "--json")
    assert [s["name"] for s in json.loads(listed.stdout)] == ["minio"]

    made = _cli(service, "data", "snapshot", repo.as_uri(), "--rev", "v1", "--path", "data", "--namespace", "team",
                "--remote-secret", "minio", "--json")
    assert made.returncode == 0, made.stderr
    snapshot = json.loads(made.stdout)
    assert snapshot["commit"] == v1
    assert str(snapshot["id"]) in _cli(service, "data", "list", "--namespace", "team").stdout
    _git(repo, "tag", "-f", "v1", v2)  # the manifest stays on the commit it was made at

    command = ["sh", "-c", "mkdir -p out && wc -l < data/data/numbers.txt > out/count.txt && "
               "cp data/data/version.txt out/version.txt"]
    unknown = _cli(service, "manifest", "create", "--build", "team/app", "--data", "424242:/work/data", "--json",
                   "--", *command)
    assert unknown.returncode != 0 and "data snapshot 424242 does not exist" in unknown.stderr + unknown.stdout
    created = _cli(service, "manifest", "create", "--build", f"team/app@{build['id']}", "--data",
                   f"{snapshot['id']}:/work/data", "--workdir", "/work", "--env", "LC_ALL=C", "--cpu", "1",
                   "-o", str(tmp_path / "run.json"), "--json", "--", *command)
    assert created.returncode == 0, created.stderr
    digest = json.loads(created.stdout)["digest"]
    manifest = RunManifest.parse((tmp_path / "run.json").read_bytes())
    assert manifest.digest == digest and manifest.data[0].snapshot.commit == v1
    assert digest in _cli(service, "manifest", "list", "--namespace", "team").stdout
    shown = _cli(service, "manifest", "show", digest, "--namespace", "team")
    assert shown.stdout.strip().encode() == manifest.canonical_bytes()

    results = {}
    for runtime in ("runc", "bwrap", "prefix"):
        work = tmp_path / f"work-{runtime}"
        ran = _cli(service, "run", digest, "--namespace", "team", "--runtime", runtime, "--workdir", str(work),
                   "--outputs", "out", "--fetch-dir", str(tmp_path / f"fetch-{runtime}"), "--json", env=client_env)
        assert ran.returncode == 0, ran.stderr
        report = json.loads(ran.stdout)
        assert report["parent"] == digest
        assert ("environment.lock.sha256" if runtime == "prefix" else "environment.layers") in report["verified"]
        assert "data[0].data" in report["verified"]
        assert (work / "out" / "version.txt").read_text() == "v1\n"
        assert (work / "out" / "count.txt").read_text().strip() == "10"
        results[runtime] = report
    assert results["runc"]["outputs"] == results["bwrap"]["outputs"] == results["prefix"]["outputs"]
    assert results["runc"]["digest"] == results["bwrap"]["digest"] == results["prefix"]["digest"]  # one result
    stored = {m["digest"] for m in json.loads(_cli(service, "manifest", "list", "--namespace", "team",
                                                   "--json").stdout)}
    assert stored == {digest, results["runc"]["digest"]}  # the run recorded its result on the server
    layout = tmp_path / "fetch-runc" / "layout"
    assert json.loads((layout / "index.json").read_text())["manifests"][0]["digest"] == \
        manifest.environment.images[host_platform()]

    # the image rebuilt locally from the build's lock has the digest the service's worker built
    fetched = tmp_path / "fetch-runc"
    verified = _cli(service, "verify", str(fetched / "manifest.json"), "--lock", str(fetched / "conda-lock.yml"),
                    "--image-layout", str(fetched / "layout"), "--rebuild", "--name", "team/app", "--json",
                    env=client_env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["ok"] is True

    # an image that does not match the manifest's digest fails before anything runs
    with service.client() as http:
        other = _built(service, http, "team", "other", ("e2e-env", "pyhello"))
    other_ref = parse_reference(f"{service.url.removeprefix('http://')}/team/other@{other['image_digest']}")
    swapped = tmp_path / "swapped"
    with RegistryClient(other_ref.registry, username="anyone", password=service.token) as registry:
        pull_to_layout(other_ref, registry, swapped, host_platform())
    with pytest.raises(RunIntegrityError, match="the manifest pins"):
        run_manifest(manifest, RunOptions(workdir=tmp_path / "work-swapped", runtime="runc", image_layout=swapped,
                                          outputs=["out"]))
    assert not (tmp_path / "work-swapped" / "out").exists()
    bad = _cli(service, "run", "sha256:" + "0" * 64, "--namespace", "team", "--runtime", "runc", "--workdir",
               str(tmp_path / "work-missing"))
    assert bad.returncode != 0 and "does not exist in namespace 'team'" in bad.stderr
    assert not (tmp_path / "work-missing" / "out").exists()


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_snapshot_past_the_timeout_is_a_503_and_stores_nothing(start: Any, tmp_path: Path,
                                                                 project: tuple[Path, str, str]) -> None:
    service = start("--workers", "0", env={"ENVYARD_ALLOWED_FILE_ROOTS": json.dumps([str(tmp_path / "repos")]),
                                           "ENVYARD_SNAPSHOT_TIMEOUT_SECONDS": "0.001"})
    with service.client() as http:
        _namespace(http, "team")
        answer = http.post("/api/v1/namespaces/team/data-snapshots",
                           json={"repo": project[0].as_uri(), "rev": "v1", "paths": ["data"]})
        assert answer.status_code == 503, answer.text
        assert "took more than 0.001 s" in answer.json()["detail"]
        assert "ENVYARD_SNAPSHOT_TIMEOUT_SECONDS" in answer.json()["hint"]
        assert http.get("/api/v1/namespaces/team/data-snapshots").json() == []
