"""Registry authentication and namespace access (issue #5): Docker's WWW-Authenticate challenge and bearer-token
flow exercised by skopeo, Basic auth with an envyard token as password, viewer/editor grants, public namespaces
for anonymous pulls, registry tokens that are trimmed, expire, cannot be forged and die with their token, the
implicit editor grant of a namespace's creator, listings filtered to what a token may read, and the
``envyard namespace`` commands."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from envyard.api.auth import CACHE_SECONDS
from envyard.api.auth.registry_tokens import REGISTRY_TOKEN_SECONDS, registry_token_key, sign_registry_token
from tests.commands import ENVYARD
from tests.service.conftest import Service, create_environment, spec_text, start_service

needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory, service_env: dict[str, str]) -> Iterator[tuple[Service, dict]]:
    """A server (SQLite, one worker) with the completed builds lab/reg and other/env."""
    service = start_service(tmp_path_factory.mktemp("registry-auth"), service_env, "--workers", "1")
    try:
        with service.client() as http:
            lab = create_environment(http, "lab", "reg", ["e2e-env"])
            other = create_environment(http, "other", "env", ["e2e-env"])
        builds = {"lab": service.wait_for(lab["id"]), "other": service.wait_for(other["id"])}
        assert {b["status"] for b in builds.values()} == {"completed"}
        yield service, builds
    finally:
        service.stop()


def new_token(service: Service, role: str = "user", grants: dict[str, str] | None = None) -> tuple[int, str]:
    """A new token with ``role`` and ``grants`` (namespace -> viewer/editor); its id and text."""
    with service.client() as http:
        created = http.post("/api/v1/tokens", json={"name": f"{role}-{time.monotonic_ns()}", "role": role}).json()
        for namespace, grant in (grants or {}).items():
            assert http.put(f"/api/v1/namespaces/{namespace}/grants/{created['id']}",
                            json={"role": grant}).status_code == 200
    return created["id"], created["token"]


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)


def host(service: Service) -> str:
    return service.url.removeprefix("http://")


def oci_code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["code"])


def registry_token(service: Service, *scopes: str, auth: tuple[str, str] | None = None) -> dict[str, Any]:
    response = httpx.get(f"{service.url}/v2/token", params=[("service", "envyard")] + [("scope", s) for s in scopes],
                         auth=auth)
    assert response.status_code == 200, response.text
    return dict(response.json())


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def challenge(response: httpx.Response) -> str:
    return response.headers.get("www-authenticate", "")


@needs_skopeo
def test_skopeo_inspect_and_copy_with_a_viewer_token(reg: tuple[Service, dict], tmp_path: Path) -> None:
    service, builds = reg
    _, viewer = new_token(service, "reader", {"lab": "viewer"})
    creds = ("--tls-verify=false", "--creds", f"anyone:{viewer}")
    inspected = skopeo("--debug", "inspect", *creds, "--raw", f"docker://{host(service)}/lab/reg:latest")
    assert inspected.returncode == 0, inspected.stderr
    assert f"sha256:{hashlib.sha256(inspected.stdout.encode()).hexdigest()}" == builds["lab"]["image_digest"]
    assert "/v2/token" in inspected.stderr  # skopeo followed the Bearer challenge to the token endpoint
    copied = skopeo("copy", "--src-tls-verify=false", "--src-creds", f"anyone:{viewer}",
                    f"docker://{host(service)}/lab/reg:{builds['lab']['id']}", f"oci:{tmp_path / 'layout'}:reg")
    assert copied.returncode == 0, copied.stderr
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == builds["lab"]["image_digest"]


def test_the_challenge_names_the_token_endpoint(reg: tuple[Service, dict]) -> None:
    service, builds = reg
    ping = httpx.get(f"{service.url}/v2/")
    assert ping.status_code == 401 and oci_code(ping) == "UNAUTHORIZED"
    assert challenge(ping) == f'Bearer realm="{service.url}/v2/token",service="envyard"'
    manifest = httpx.get(f"{service.url}/v2/lab/reg/manifests/latest")
    assert manifest.status_code == 401 and oci_code(manifest) == "UNAUTHORIZED"
    assert challenge(manifest) == (f'Bearer realm="{service.url}/v2/token",service="envyard",'
                                   'scope="repository:lab/reg:pull"')
    _, viewer = new_token(service, "user", {"lab": "viewer"})
    token = registry_token(service, "repository:lab/reg:pull", auth=("anyone", viewer))["token"]
    assert httpx.get(f"{service.url}/v2/", headers=bearer(token)).status_code == 200
    head = httpx.head(f"{service.url}/v2/lab/reg/manifests/latest", headers=bearer(token))
    assert head.status_code == 200 and head.headers["docker-content-digest"] == builds["lab"]["image_digest"]
    basic = httpx.get(f"{service.url}/v2/lab/reg/tags/list", auth=("whoever", viewer))  # no token endpoint needed
    assert basic.status_code == 200 and "latest" in basic.json()["tags"]
    plain_bearer = httpx.get(f"{service.url}/v2/lab/reg/tags/list", headers=bearer(viewer))
    assert plain_bearer.status_code == 200
    api = httpx.get(f"{service.url}/api/v1/environments/lab/reg", headers=bearer(token))
    assert api.status_code == 401 and "/v2/" in api.json()["detail"]  # registry tokens are for the registry only


@needs_skopeo
def test_anonymous_pull_only_from_a_public_namespace(reg: tuple[Service, dict], tmp_path: Path) -> None:
    service, builds = reg
    reference = f"docker://{host(service)}/lab/reg:latest"
    private = skopeo("inspect", "--tls-verify=false", "--raw", reference)
    assert private.returncode != 0 and "unauthorized" in private.stderr.lower()
    anonymous_token = registry_token(service, "repository:lab/reg:pull")
    assert claims(anonymous_token["token"])["access"] == [] and claims(anonymous_token["token"])["sub"] == "anonymous"
    scoped_out = httpx.get(f"{service.url}/v2/lab/reg/manifests/latest", headers=bearer(anonymous_token["token"]))
    assert scoped_out.status_code == 401 and 'error="insufficient_scope"' in challenge(scoped_out)
    with service.client() as http:
        assert http.patch("/api/v1/namespaces/lab", json={"public": True}).json()["public"] is True
    try:
        inspected = skopeo("inspect", "--tls-verify=false", "--raw", reference)
        assert inspected.returncode == 0, inspected.stderr
        assert f"sha256:{hashlib.sha256(inspected.stdout.encode()).hexdigest()}" == builds["lab"]["image_digest"]
        copied = skopeo("copy", "--src-tls-verify=false", reference, f"oci:{tmp_path / 'layout'}:reg")
        assert copied.returncode == 0, copied.stderr
        token = registry_token(service, "repository:lab/reg:pull", "repository:other/env:pull")["token"]
        assert claims(token)["access"] == [{"type": "repository", "name": "lab/reg", "actions": ["pull"]}]
        assert httpx.get(f"{service.url}/api/v1/environments/lab/reg").status_code == 200
        assert httpx.get(f"{service.url}/api/v1/builds/{builds['lab']['id']}/artifacts").status_code == 200
        other = httpx.get(f"{service.url}/api/v1/builds/{builds['other']['id']}")
        assert other.status_code == 401
        assert httpx.get(f"{service.url}/api/v1/environments").status_code == 401  # listings need a token
        write = httpx.patch(f"{service.url}/api/v1/environments/lab/reg", json={"description": "x"})
        assert write.status_code == 401  # anonymous requests only read
        assert httpx.get(f"{service.url}/v2/other/env/tags/list").status_code == 401
    finally:
        with service.client() as http:
            assert http.patch("/api/v1/namespaces/lab", json={"public": False}).json()["public"] is False
    assert httpx.get(f"{service.url}/v2/lab/reg/manifests/latest").status_code == 401  # private again at once


@needs_skopeo
def test_wrong_credentials_are_401(reg: tuple[Service, dict]) -> None:
    service, _ = reg
    wrong = skopeo("inspect", "--tls-verify=false", "--creds", "x:ey_wrong", f"docker://{host(service)}/lab/reg:latest")
    assert wrong.returncode != 0 and "unauthorized" in wrong.stderr.lower()
    token = httpx.get(f"{service.url}/v2/token", params={"scope": "repository:lab/reg:pull"}, auth=("x", "ey_wrong"))
    assert token.status_code == 401 and oci_code(token) == "UNAUTHORIZED"
    assert challenge(token).startswith("Basic realm=")
    basic = httpx.get(f"{service.url}/v2/lab/reg/manifests/latest", auth=("x", "ey_wrong"))
    assert basic.status_code == 401 and 'error="invalid_token"' in challenge(basic)
    for header in ("Basic !!!", "Basic " + base64.b64encode(b"user-only:").decode(), "Token abc", "Bearer garbage"):
        response = httpx.get(f"{service.url}/v2/lab/reg/tags/list", headers={"Authorization": header})
        assert response.status_code == 401 and oci_code(response) == "UNAUTHORIZED", header
        assert challenge(response).startswith("Bearer realm="), header
    api = httpx.get(f"{service.url}/api/v1/environments", headers=bearer("ey_wrong"))
    assert api.status_code == 401 and challenge(api) == 'Bearer realm="envyard"'


@needs_skopeo
def test_a_viewer_of_another_namespace_is_denied(reg: tuple[Service, dict]) -> None:
    service, builds = reg
    _, viewer = new_token(service, "user", {"other": "viewer"})
    denied = skopeo("inspect", "--tls-verify=false", "--creds", f"anyone:{viewer}",
                    f"docker://{host(service)}/lab/reg:latest")
    assert denied.returncode != 0 and "denied" in denied.stderr.lower(), denied.stderr
    own = skopeo("inspect", "--tls-verify=false", "--raw", "--creds", f"anyone:{viewer}",
                 f"docker://{host(service)}/other/env:latest")
    assert own.returncode == 0, own.stderr
    basic = httpx.get(f"{service.url}/v2/lab/reg/manifests/latest", auth=("anyone", viewer))
    assert basic.status_code == 403 and oci_code(basic) == "DENIED" and "www-authenticate" not in basic.headers
    token = registry_token(service, "repository:lab/reg:pull", "repository:other/env:pull", auth=("anyone", viewer))
    assert [a["name"] for a in claims(token["token"])["access"]] == ["other/env"]
    with_token = httpx.get(f"{service.url}/v2/lab/reg/tags/list", headers=bearer(token["token"]))
    assert with_token.status_code == 403 and oci_code(with_token) == "DENIED"
    with service.client() as http:
        artifacts = {b: http.get(f"/api/v1/builds/{builds[b]['id']}/artifacts").json() for b in ("lab", "other")}
    others = {a["digest"] for a in artifacts["other"]}
    only_lab = [f"/api/v1/blobs/{a['digest']}" for a in artifacts["lab"] if a["digest"] not in others][:1]
    with service.client(viewer) as http:
        for path in ("/api/v1/environments/lab/reg", f"/api/v1/builds/{builds['lab']['id']}",
                     f"/api/v1/builds/{builds['lab']['id']}/logs", f"/api/v1/builds/{builds['lab']['id']}/artifacts",
                     f"/api/v1/builds/{builds['other']['id']}/diff/{builds['lab']['id']}",
                     "/api/v1/namespaces/lab", *only_lab):
            response = http.get(path)  # no read access: answered like something that does not exist
            assert response.status_code == 404 and response.json()["type"].endswith("/not-found"), path
            assert "lab" not in response.text or "lab" in path, path
        assert http.get(f"/api/v1/builds/{builds['other']['id']}").status_code == 200
        assert http.post(f"/api/v1/builds/{builds['other']['id']}/rebuild").status_code == 403  # a viewer
        assert http.get("/api/v1/builds/999999").status_code == 404


def test_the_token_endpoint_grants_only_what_the_caller_may_pull(reg: tuple[Service, dict]) -> None:
    service, _ = reg
    _, viewer = new_token(service, "user", {"lab": "viewer"})
    reply = registry_token(service, "repository:lab/reg:pull,push", "repository:other/env:pull",
                           "repository:lab/reg:push", "registry:catalog:*", "repository:Lab/../x:pull", "junk",
                           "repository:lab/new:pull repository:lab/reg:*", auth=("anyone", viewer))
    assert reply["token"] == reply["access_token"] and reply["expires_in"] == REGISTRY_TOKEN_SECONDS
    granted = claims(reply["token"])
    assert granted["access"] == [{"type": "repository", "name": "lab/new", "actions": ["pull"]},
                                 {"type": "repository", "name": "lab/reg", "actions": ["pull"]}]
    assert granted["exp"] - granted["iat"] == REGISTRY_TOKEN_SECONDS and granted["aud"] == "envyard"
    nothing = registry_token(service, auth=("anyone", viewer))
    assert claims(nothing["token"])["access"] == []
    assert httpx.get(f"{service.url}/v2/", headers=bearer(nothing["token"])).status_code == 200
    out_of_scope = httpx.get(f"{service.url}/v2/lab/reg/tags/list", headers=bearer(nothing["token"]))
    assert out_of_scope.status_code == 401 and 'error="insufficient_scope"' in challenge(out_of_scope)
    assert 'scope="repository:lab/reg:pull"' in challenge(out_of_scope)
    _, admin_like = new_token(service, "worker")  # a remote worker reads every namespace
    everything = registry_token(service, "repository:lab/reg:pull", "repository:other/env:pull",
                                auth=("w", admin_like))
    assert len(claims(everything["token"])["access"]) == 2


def test_forged_expired_and_tampered_tokens_are_invalid(reg: tuple[Service, dict]) -> None:
    service, _ = reg
    token_id, viewer = new_token(service, "user", {"lab": "viewer"})
    issued = registry_token(service, "repository:lab/reg:pull", auth=("anyone", viewer))["token"]
    url = f"{service.url}/v2/lab/reg/tags/list"
    assert httpx.get(url, headers=bearer(issued)).status_code == 200
    key = registry_token_key((service.data_dir / "secret-key").read_bytes().strip())
    iat = claims(issued)["iat"]
    control = sign_registry_token(key, token_id, ["lab/reg"], issued_at=iat)
    assert httpx.get(url, headers=bearer(control)).status_code == 200
    expired = sign_registry_token(key, token_id, ["lab/reg"], issued_at=iat - 2 * REGISTRY_TOKEN_SECONDS)
    forged = sign_registry_token(b"k" * 32, token_id, ["lab/reg"], issued_at=iat)
    header, payload, signature = issued.split(".")
    wider = {**claims(issued), "access": [{"type": "repository", "name": "other/env", "actions": ["pull"]}]}
    tampered_payload = base64.urlsafe_b64encode(json.dumps(wider).encode()).rstrip(b"=").decode()
    tampered = f"{header}.{tampered_payload}.{signature}"
    none_alg = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    unsigned = f"{none_alg}.{payload}.{signature}"
    for name, token in (("expired", expired), ("forged", forged), ("tampered", tampered), ("alg none", unsigned)):
        for target in (url, f"{service.url}/v2/other/env/tags/list"):
            response = httpx.get(target, headers=bearer(token))
            assert response.status_code == 401 and oci_code(response) == "UNAUTHORIZED", name
            assert 'error="invalid_token"' in challenge(response), name


def test_a_revoked_token_and_a_removed_grant_stop_its_registry_tokens(reg: tuple[Service, dict]) -> None:
    service, _ = reg
    token_id, viewer = new_token(service, "user", {"lab": "viewer"})
    issued = registry_token(service, "repository:lab/reg:pull", auth=("anyone", viewer))["token"]
    url = f"{service.url}/v2/lab/reg/tags/list"
    assert httpx.get(url, headers=bearer(issued)).status_code == 200
    with service.client() as http:
        assert http.delete(f"/api/v1/namespaces/lab/grants/{token_id}").status_code == 204
        assert http.delete(f"/api/v1/namespaces/lab/grants/{token_id}").status_code == 404

    def answer_within_cache_time(expected: int) -> httpx.Response:
        deadline = time.monotonic() + CACHE_SECONDS + 5
        while True:
            response = httpx.get(url, headers=bearer(issued))
            if response.status_code == expected or time.monotonic() > deadline:
                return response
            time.sleep(0.2)

    ungranted = answer_within_cache_time(403)
    assert ungranted.status_code == 403 and oci_code(ungranted) == "DENIED"
    with service.client() as http:
        http.put(f"/api/v1/namespaces/lab/grants/{token_id}", json={"role": "viewer"}).raise_for_status()
    assert answer_within_cache_time(200).status_code == 200  # a new grant works at once (denials recheck)
    with service.client() as http:
        assert http.delete(f"/api/v1/tokens/{token_id}").status_code == 204
    revoked = answer_within_cache_time(401)
    assert revoked.status_code == 401 and 'error="invalid_token"' in challenge(revoked)
    assert httpx.get(f"{service.url}/v2/token", auth=("anyone", viewer)).status_code == 401


def test_a_reader_with_an_editor_grant_only_reads(reg: tuple[Service, dict]) -> None:
    service, builds = reg
    _, reader = new_token(service, "reader", {"lab": "editor"})
    with service.client(reader) as http:
        assert http.get("/api/v1/environments/lab/reg").status_code == 200
        assert http.get(f"/api/v1/builds/{builds['lab']['id']}/spec").status_code == 200
        for response in (http.patch("/api/v1/environments/lab/reg", json={"description": "x"}),
                         http.post(f"/api/v1/builds/{builds['lab']['id']}/rebuild"),
                         http.post("/api/v1/environments", json={"namespace": "lab", "name": "n",
                                                                 "spec": spec_text(["e2e-env"])})):
            assert response.status_code == 403 and response.json()["type"].endswith("/forbidden")
    _, editor = new_token(service, "user", {"lab": "editor"})
    with service.client(editor) as http:
        updated = http.patch("/api/v1/environments/lab/reg", json={"description": "edited by an editor"})
        assert updated.status_code == 200
        assert http.patch("/api/v1/environments/other/env", json={"description": "x"}).status_code == 404  # unread
        assert http.patch("/api/v1/namespaces/lab", json={"public": True}).status_code == 403  # admins only
        assert http.get("/api/v1/namespaces/lab/grants").status_code == 403


def test_access_rules_and_listings(start: Any) -> None:
    """Grants, implicit editors and filtered listings, on SQLite and PostgreSQL (builds stay queued)."""
    service: Service = start("--workers", "0")
    spec = spec_text(["e2e-env"])
    with service.client() as admin:
        create_environment(admin, "lab", "one", ["e2e-env"])
        create_environment(admin, "shared", "two", ["e2e-env"])
        alice = admin.post("/api/v1/tokens", json={"name": "alice", "role": "user"}).json()
        bob = admin.post("/api/v1/tokens", json={"name": "bob", "role": "user"}).json()
        assert admin.put(f"/api/v1/namespaces/lab/grants/{bob['id']}", json={"role": "viewer"}).status_code == 200
        assert admin.patch("/api/v1/namespaces/shared", json={"public": True}).status_code == 200
    with service.client(alice["token"]) as http:
        assert http.post("/api/v1/namespaces", json={"name": "mine"}).status_code == 201
        created = http.post("/api/v1/environments", json={"namespace": "implicit", "name": "e", "spec": spec})
        assert created.status_code == 201, created.text
        assert http.post("/api/v1/environments", json={"namespace": "mine", "name": "e", "spec": spec}).status_code \
            == 201  # at once: the new grant is not hidden by the cache
        refused = http.post("/api/v1/environments", json={"namespace": "lab", "name": "x", "spec": spec})
        assert refused.status_code == 403 and "lab" in refused.json()["detail"]
        whoami = http.get("/api/v1/whoami").json()
        assert whoami["grants"] == {"implicit": "editor", "mine": "editor"}
        assert [n["name"] for n in http.get("/api/v1/namespaces").json()] == ["implicit", "mine", "shared"]
        envs = http.get("/api/v1/environments").json()["items"]
        assert sorted(f"{e['namespace']}/{e['name']}" for e in envs) == ["implicit/e", "mine/e", "shared/two"]
        assert http.get("/api/v1/environments", params={"namespace": "lab"}).json()["items"] == []
        found = http.get("/api/v1/environments", params={"package": "e2e-env"}).json()["items"]
        assert all(e["namespace"] != "lab" for e in found)
        listed = {b["environment"] for b in http.get("/api/v1/builds", params={"limit": 100}).json()["items"]}
        assert listed == {"implicit/e", "mine/e", "shared/two"}
    with service.client(bob["token"]) as http:
        assert http.post("/api/v1/environments", json={"namespace": "implicit", "name": "b", "spec": spec}) \
            .status_code == 403
        assert http.delete("/api/v1/namespaces/mine").status_code == 404  # bob may not even read it
        assert [n["name"] for n in http.get("/api/v1/namespaces").json()] == ["lab", "shared"]
        listed = {b["environment"] for b in http.get("/api/v1/builds").json()["items"]}
        assert listed == {"lab/one", "shared/two"}
    with service.client() as admin:
        grants = admin.get("/api/v1/namespaces/implicit/grants").json()
        assert [(g["token_id"], g["role"], g["token_name"]) for g in grants] == [(alice["id"], "editor", "alice")]
        assert len(admin.get("/api/v1/namespaces").json()) == 4
        worker = admin.post("/api/v1/tokens", json={"name": "w", "role": "worker"}).json()
        assert admin.put(f"/api/v1/namespaces/lab/grants/{worker['id']}", json={"role": "viewer"}).status_code == 409
        assert admin.put("/api/v1/namespaces/lab/grants/999999", json={"role": "viewer"}).status_code == 404
        assert admin.put(f"/api/v1/namespaces/lab/grants/{bob['id']}", json={"role": "owner"}).status_code == 422
        assert admin.put(f"/api/v1/namespaces/nope/grants/{bob['id']}", json={"role": "viewer"}).status_code == 404
    with service.client(worker["token"]) as http:
        assert len(http.get("/api/v1/environments").json()["items"]) == 4
        assert http.post("/api/v1/namespaces", json={"name": "w"}).status_code == 403
    with service.client(alice["token"]) as http:
        assert http.delete("/api/v1/environments/mine/e").status_code == 409  # its build is queued
        for build in http.get("/api/v1/builds", params={"environment": "mine/e"}).json()["items"]:
            assert http.post(f"/api/v1/builds/{build['id']}/cancel").status_code == 200
        assert http.delete("/api/v1/environments/mine/e").status_code == 204
        assert http.delete("/api/v1/namespaces/mine").status_code == 204  # an editor deletes it, with its grants
    with service.client() as admin:
        assert admin.post("/api/v1/namespaces", json={"name": "mine"}).status_code == 201
        assert admin.get("/api/v1/namespaces/mine/grants").json() == []
    with service.client(alice["token"]) as http:
        assert http.get("/api/v1/namespaces/mine").status_code == 404  # the old grant went with the namespace


def test_replicas_share_tokens_and_follow_revocation_within_the_cache_time(start: Any, database: str,
                                                                           tmp_path: Path) -> None:
    """Two servers on one database and one secret key: a registry token from one works on the other, and a token
    revoked on one stops working on the other within CACHE_SECONDS."""
    shared = () if database else ("--database", f"sqlite:///{tmp_path / 'shared.db'}")
    env = {"ENVYARD_SECRET_KEY": "s" * 48}
    first: Service = start("--workers", "0", *shared, env=env, name="a")
    second: Service = start("--workers", "0", *shared, env=env, name="b")
    with first.client() as admin:
        create_environment(admin, "lab", "reg", ["e2e-env"])
    token_id, viewer = new_token(first, "user", {"lab": "viewer"})
    issued = registry_token(second, "repository:lab/reg:pull", auth=("anyone", viewer))["token"]
    assert claims(issued)["access"] == [{"type": "repository", "name": "lab/reg", "actions": ["pull"]}]
    for service in (first, second):
        assert httpx.get(f"{service.url}/v2/lab/reg/tags/list", headers=bearer(issued)).status_code == 200
    with first.client() as admin:
        assert admin.delete(f"/api/v1/tokens/{token_id}").status_code == 204
    deadline = time.monotonic() + CACHE_SECONDS + 5
    while (answer := httpx.get(f"{second.url}/v2/lab/reg/tags/list", headers=bearer(issued))).status_code == 200:
        assert time.monotonic() < deadline, "the revoked token still works on the other replica"
        time.sleep(0.2)
    assert answer.status_code == 401 and 'error="invalid_token"' in challenge(answer)


def envyard(service: Service, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in service.env.items() if k not in ("ENVYARD_TOKEN", "ENVYARD_API_URL", "ENVYARD_DATA_DIR")}
    return subprocess.run([*ENVYARD, "--api", service.url, "--token", token or service.token,
                           *args], capture_output=True, text=True, timeout=120, env=env, cwd=service.log_dir)


def test_namespace_commands(reg: tuple[Service, dict]) -> None:
    service, _ = reg
    token_id, viewer = new_token(service, "user")
    granted = envyard(service, "namespace", "grant", "other", str(token_id), "--role", "editor", "--json")
    assert granted.returncode == 0, granted.stderr
    assert json.loads(granted.stdout)["role"] == "editor"
    listed = envyard(service, "namespace", "grants", "other", "--json")
    assert {g["token_id"]: g["role"] for g in json.loads(listed.stdout)}[token_id] == "editor"  # others may hold grants
    table = envyard(service, "namespace", "grants", "other")
    assert table.returncode == 0 and "editor" in table.stdout
    mine = envyard(service, "namespace", "list", "--json", token=viewer)
    assert [n["name"] for n in json.loads(mine.stdout)] == ["other"]
    public = envyard(service, "namespace", "public", "other", "on")
    assert public.returncode == 0 and "public" in public.stdout
    assert httpx.get(f"{service.url}/v2/other/env/tags/list").status_code == 200  # no credentials needed
    assert httpx.get(f"{service.url}/v2/").status_code == 401  # the ping still challenges: clients get a token
    anonymous = registry_token(service, "repository:other/env:pull")["token"]
    assert httpx.get(f"{service.url}/v2/other/env/tags/list", headers=bearer(anonymous)).status_code == 200
    private = envyard(service, "namespace", "public", "other", "off", "--json")
    assert json.loads(private.stdout)["public"] is False
    assert httpx.get(f"{service.url}/v2/other/env/tags/list", headers=bearer(anonymous)).status_code == 401
    revoked = envyard(service, "namespace", "revoke", "other", str(token_id))
    assert revoked.returncode == 0, revoked.stderr
    again = envyard(service, "namespace", "revoke", "other", str(token_id))
    assert again.returncode == 6 and again.stderr.count("\n") == 1 and "has no grant" in again.stderr
    not_admin = envyard(service, "namespace", "public", "other", "on", token=viewer)
    assert not_admin.returncode == 8 and not_admin.stderr.startswith("error: ")
    bad_name = envyard(service, "namespace", "grants", "a/b")
    assert bad_name.returncode != 0 and "namespace name" in bad_name.stderr
