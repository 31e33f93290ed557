"""``envyard login`` and ``envyard logout``: sign in through the server's identity provider and keep the token it
gives in the user's configuration (mode 600), where every later command finds it for that server.

``envyard login`` uses the provider's device flow (open a URL anywhere, enter a code); ``--browser`` opens the
sign-in in a browser on this machine and receives the token on a loopback port; ``--provider jupyterhub`` signs
in through the JupyterHub the server trusts (browser only).
"""

from __future__ import annotations

import queue
import threading
import time
import webbrowser
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import click

from envyard.builder.errors import AuthenticationError
from envyard.cli.context import api_client, public_client, store_token, stored_token
from envyard.cli.output import emit, json_mode

__all__ = ["login_command", "logout_command"]

BROWSER_WAIT_SECONDS = 300.0


def _receive_token(url_of: Any, open_browser: bool, timeout: float) -> str:
    """Listen on a loopback port, send the user to ``url_of(return_to)``, return the token the server's redirect
    brings back."""
    found: queue.Queue[str] = queue.Queue()

    class Receiver(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            token = parse_qs(urlsplit(self.path).query).get("token", [""])[0]
            self.send_response(200 if token else 400)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.end_headers()
            self.wfile.write(b"envyard: signed in; you may close this page.\n" if token else b"no token\n")
            if token:
                found.put(token)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            return

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = url_of(f"http://127.0.0.1:{server.server_address[1]}/callback")
        click.echo(f"sign in at: {url}", err=True)
        if open_browser:
            webbrowser.open(url)
        try:
            return found.get(timeout=timeout)
        except queue.Empty:
            raise AuthenticationError(f"no sign-in arrived within {timeout:.0f} s",
                                      hint="open the URL above in a browser on this machine") from None
    finally:
        server.shutdown()
        server.server_close()


def _device(ctx: click.Context, timeout: float) -> str:
    client = public_client(ctx)
    started = client.json("POST", "/api/v1/auth/oidc/device")
    where = started.get("verification_uri_complete") or started["verification_uri"]
    click.echo(f"open {where} and enter the code {started['user_code']}", err=True)
    interval = max(1.0, float(started.get("interval") or 5))
    deadline = time.monotonic() + min(timeout, float(started.get("expires_in") or timeout))
    while time.monotonic() < deadline:
        time.sleep(interval)
        response = client.request("POST", "/api/v1/auth/oidc/device/token",
                                  json={"device_code": started["device_code"]})
        if response.status_code == 201:
            return str(response.json()["token"])
        if response.json().get("status") == "slow_down":
            interval += 5
    raise AuthenticationError("the device sign-in was not approved in time", hint="run envyard login again")


@click.command("login")
@click.option("--provider", type=click.Choice(["oidc", "jupyterhub"]), default="oidc", show_default=True)
@click.option("--browser", is_flag=True, help="Sign in with a browser on this machine (loopback redirect) rather "
              "than the device flow.")
@click.option("--no-open", is_flag=True, help="Print the sign-in URL without opening a browser.")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=BROWSER_WAIT_SECONDS, show_default=True,
              help="Seconds to wait for the sign-in.")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def login_command(ctx: click.Context, provider: str, browser: bool, no_open: bool, timeout: float,
                  json_output: bool) -> None:
    """Sign in through the server's identity provider; the token is kept for this server (--api)."""
    json_mode(ctx, json_output)
    api_url = ctx.find_root().obj.api_url
    if browser or provider == "jupyterhub":
        token = _receive_token(lambda return_to: f"{api_url}/api/v1/auth/{provider}/login?"
                               + urlencode({"return_to": return_to}), not no_open, timeout)
    else:
        token = _device(ctx, timeout)
    path = store_token(api_url, token)
    ctx.find_root().obj.token = token
    me = api_client(ctx).json("GET", "/api/v1/whoami")
    if json_output:
        emit({"user": me["user"], "groups": me["groups"], "token_id": me["token_id"], "expires_at": me["expires_at"],
              "credentials": str(path)})
        return
    groups = f" (groups: {', '.join(me['groups'])})" if me["groups"] else ""
    click.echo(f"signed in to {api_url} as {me['user']}{groups}; token kept in {path}")


@click.command("logout")
@click.pass_context
def logout_command(ctx: click.Context) -> None:
    """Revoke the token ``envyard login`` kept for this server and forget it."""
    options = ctx.find_root().obj
    stored = stored_token(options.api_url)
    if stored is None:
        click.echo(f"not signed in to {options.api_url}")
        return
    options.token = stored
    me = api_client(ctx).json("GET", "/api/v1/whoami")
    if me.get("token_id"):
        api_client(ctx).request("DELETE", f"/api/v1/tokens/{me['token_id']}")
    store_token(options.api_url, None)
    click.echo(f"signed out of {options.api_url}")
