"""The built-in /v2/ endpoint: a built environment pulled by tag and digest with skopeo, raw protocol checks
(HEAD, Range, tags pagination, OCI error codes) and Docker-style authentication (the rest of it, with the bearer
token flow and namespace access, is in test_registry_auth.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.conftest import Service, create_environment


@pytest.fixture
def built(start: Any, database: str) -> tuple[Service, dict[str, Any]]:
    if database:
        pytest.skip("the endpoint reads the same tables on PostgreSQL; one database is enough here")
    service: Service = start("--workers", "1")
    with service.client() as http:
        submitted = create_environment(http, "lab", "reg", ["e2e-env"])
    build = service.wait_for(submitted["id"])
    assert build["status"] == "completed"
    return service, build


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)


def test_skopeo_inspect_and_copy_keep_the_digest(built: tuple[Service, dict[str, Any]], tmp_path: Path) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    service, build = built
    host = service.url.removeprefix("http://")
    creds = ("--tls-verify=false", "--creds", f"anyone:{service.token}")
    for reference in ("latest", str(build["id"]), build["image_digest"]):
        sep = "@" if reference.startswith("sha256:") else ":"
        inspected = skopeo("inspect", *creds, "--raw", f"docker://{host}/lab/reg{sep}{reference}")
        assert inspected.returncode == 0, inspected.stderr
        assert f"sha256:{hashlib.sha256(inspected.stdout.encode()).hexdigest()}" == build["image_digest"]
    copied = skopeo("copy", "--src-tls-verify=false", "--src-creds", f"anyone:{service.token}",
                    f"docker://{host}/lab/reg:latest", f"oci:{tmp_path / 'layout'}:reg")
    assert copied.returncode == 0, copied.stderr
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == build["image_digest"]
    anonymous = skopeo("inspect", "--tls-verify=false", f"docker://{host}/lab/reg:latest")
    assert anonymous.returncode != 0 and "unauthorized" in anonymous.stderr.lower()
    wrong = skopeo("inspect", "--tls-verify=false", "--creds", "x:ey_wrong", f"docker://{host}/lab/reg:latest")
    assert wrong.returncode != 0 and "unauthorized" in wrong.stderr.lower()


def test_protocol_details(built: tuple[Service, dict[str, Any]]) -> None:
    service, build = built
    with service.client() as http:
        assert http.get("/v2/").status_code == 200
        head = http.head("/v2/lab/reg/manifests/latest")
        assert head.status_code == 200 and head.headers["docker-content-digest"] == build["image_digest"]
        index = http.get(f"/v2/lab/reg/manifests/{build['image_digest']}")
        assert index.headers["content-type"] == json.loads(index.content)["mediaType"]
        layer = next(a for a in http.get(f"/api/v1/builds/{build['id']}/artifacts").json()
                     if a["kind"] == "oci-blob" and "layer" in a["media_type"])
        whole = http.get(f"/v2/lab/reg/blobs/{layer['digest']}")
        assert whole.status_code == 200 and hashlib.sha256(whole.content).hexdigest() == layer["digest"][7:]
        part = http.get(f"/v2/lab/reg/blobs/{layer['digest']}", headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == whole.content[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{layer['size']}"
        bad_range = http.get(f"/v2/lab/reg/blobs/{layer['digest']}", headers={"Range": f"bytes={layer['size']}-"})
        assert bad_range.status_code == 416
        tags = http.get("/v2/lab/reg/tags/list").json()
        assert tags == {"name": "lab/reg", "tags": sorted([str(build["id"]), "latest"])}
        first = http.get("/v2/lab/reg/tags/list", params={"n": 1})
        assert len(first.json()["tags"]) == 1 and 'rel="next"' in first.headers["link"]

        def code(response: httpx.Response) -> str:
            return str(response.json()["errors"][0]["code"])

        assert code(http.get("/v2/lab/reg/manifests/sha256:" + "0" * 64)) == "MANIFEST_UNKNOWN"
        assert code(http.get("/v2/lab/reg/manifests/999")) == "MANIFEST_UNKNOWN"
        assert code(http.get("/v2/lab/reg/manifests/" + "9" * 40)) == "MANIFEST_UNKNOWN"  # past any build id
        assert code(http.get("/v2/lab/reg/blobs/sha256:" + "0" * 64)) == "BLOB_UNKNOWN"
        assert code(http.get("/v2/lab/nope/tags/list")) == "NAME_UNKNOWN"
        assert code(http.get("/v2/Lab/../reg/tags/list")) == "NAME_INVALID"
    anonymous = httpx.get(f"{service.url}/v2/lab/reg/manifests/latest")
    assert anonymous.status_code == 401 and anonymous.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert anonymous.headers["www-authenticate"] == (f'Bearer realm="{service.url}/v2/token",service="envyard",'
                                                     'scope="repository:lab/reg:pull"')
    basic = httpx.get(f"{service.url}/v2/lab/reg/tags/list", auth=("whoever", service.token))
    assert basic.status_code == 200
