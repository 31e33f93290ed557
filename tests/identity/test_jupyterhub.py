"""Sign-in through JupyterHub's OAuth2 provider: a real ``jupyterhub`` on loopback (dummy authenticator, no
proxy: the hub's own server answers /hub/...), envyard registered as a hub service with an OAuth client. A hub
user signs in to envyard without another account; their hub groups become envyard groups."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import urljoin

import httpx
import pytest

from tests.servers import free_port, stop_process, wait_for_port
from tests.service.conftest import Service, start_service

HUB_SECRET = "envyard-hub-service-secret-0123456789"
CONFIG = '''
from jupyterhub.proxy import Proxy


class NoProxy(Proxy):
    """The tests talk to the hub's own server: no proxy process."""

    should_start = False

    async def add_route(self, routespec, target, data):
        pass

    async def delete_route(self, routespec):
        pass

    async def get_all_routes(self):
        return {{}}


c = get_config()  # noqa: F821
c.JupyterHub.proxy_class = NoProxy
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.bind_url = c.JupyterHub.hub_bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.db_url = "sqlite:///hub.sqlite"
c.JupyterHub.cookie_secret_file = "cookie_secret"
c.JupyterHub.pid_file = "hub.pid"
c.JupyterHub.load_groups = {{"hub-data-science": {{"users": ["hubuser"]}}}}
c.JupyterHub.load_roles = [{{"name": "user", "scopes": ["self", "access:services!service=envyard"]}}]
c.JupyterHub.services = [{{
    "name": "envyard", "oauth_client_id": "service-envyard", "api_token": "{secret}",
    "oauth_redirect_uri": "{callback}", "oauth_no_confirm": True,
    "oauth_client_allowed_scopes": ["read:users:groups!user"],
}}]
'''


@pytest.fixture(scope="module")
def hub_and_service(tmp_path_factory: pytest.TempPathFactory,
                    service_env: dict[str, str]) -> Iterator[tuple[str, Service]]:
    tmp = tmp_path_factory.mktemp("jupyterhub")
    hub_port, port = free_port(), free_port()
    callback = f"http://127.0.0.1:{port}/api/v1/auth/jupyterhub/callback"
    (tmp / "jupyterhub_config.py").write_text(CONFIG.format(port=hub_port, secret=HUB_SECRET, callback=callback))
    log = (tmp / "hub.log").open("ab")
    hub = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", "jupyterhub_config.py"], cwd=tmp,
                           stdout=log, stderr=log)
    try:
        wait_for_port(hub_port, timeout=60)
        hub_url = f"http://127.0.0.1:{hub_port}"
        env = {**service_env, "ENVYARD_JUPYTERHUB_URL": hub_url, "ENVYARD_JUPYTERHUB_CLIENT_ID": "service-envyard",
               "ENVYARD_JUPYTERHUB_CLIENT_SECRET": HUB_SECRET}
        service = start_service(tmp / "service", env, "--workers", "0", port=port)
        try:
            yield hub_url, service
        finally:
            service.stop()
    finally:
        stop_process(hub)  # type: ignore[arg-type]


def _follow(browser: httpx.Client, response: httpx.Response, until: str) -> httpx.Response:
    while response.status_code in (301, 302, 303):
        location = urljoin(str(response.url), response.headers["location"])
        if location.startswith(until):
            return response
        response = browser.get(location)
    return response


def test_a_hub_user_signs_in_with_their_hub_groups(hub_and_service: tuple[str, Service]) -> None:
    hub_url, service = hub_and_service
    callback = f"{service.url}/api/v1/auth/jupyterhub/callback"
    with httpx.Client() as browser:
        start = browser.get(f"{service.url}/api/v1/auth/jupyterhub/login")
        assert start.status_code == 303 and start.headers["location"].startswith(f"{hub_url}/hub/api/oauth2/authorize")
        login_page = _follow(browser, start, callback)
        assert login_page.status_code == 200 and "/hub/login" in str(login_page.url)
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', login_page.text)
        assert xsrf is not None
        signed = browser.post(str(login_page.url), data={"username": "hubuser", "password": "any",
                                                         "_xsrf": xsrf.group(1)})
        back = _follow(browser, signed, callback)
        assert back.status_code in (302, 303), back.text[:300]
        done = browser.get(urljoin(str(back.url), back.headers["location"]))
    assert done.status_code == 200, done.text
    created = done.json()
    assert created["user"] == "hubuser"
    with service.client(created["token"]) as http:
        me = http.get("/api/v1/whoami").json()
        assert me["user"] == "hubuser" and me["groups"] == ["hub-data-science"]
        assert http.get("/api/v1/namespaces/hubuser").status_code == 200  # the personal namespace
    with service.client() as admin:
        users = {u["name"]: u for u in admin.get("/api/v1/admin/users").json()}
        assert users["hubuser"]["provider"] == "jupyterhub"

    forged = httpx.get(callback, params={"code": "not-a-code", "state": "x"})
    assert forged.status_code == 401 and "cookie" in forged.json()["detail"]
    with httpx.Client() as browser:  # a real state, a code the hub never issued
        start = browser.get(f"{service.url}/api/v1/auth/jupyterhub/login")
        state = re.search(r"state=([^&]+)", start.headers["location"])
        assert state is not None
        refused = browser.get(callback, params={"code": "not-a-code", "state": state.group(1)})
        assert refused.status_code == 401 and "JupyterHub refused the sign-in" in refused.json()["detail"]
