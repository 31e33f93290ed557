"""JupyterHub + KubeSpawner: offer the envyard environments each user may read as server profiles.

Add this to your ``jupyterhub_config.py`` (or to ``hub.extraConfig`` of the zero-to-jupyterhub Helm chart). When a
user opens the spawn page, KubeSpawner calls :func:`envyard_profile_list`, which fetches
``GET /api/v1/jupyterhub/profiles`` from envyard: one profile per envyard namespace the user may read, whose
"Environment" option lists its environments, each pinned by digest (``image`` variant: the notebook runs the
environment's image; ``image-volume`` variant: the environment is mounted read-only at its prefix into the hub's
usual notebook image).

Which token fetches the list (see README.md in this folder):

* the user's own envyard token, from the authenticator's ``auth_state`` (``envyard_token``, or the OAuth
  ``access_token`` when the hub logs users in through envyard's identity provider): each user sees exactly the
  namespaces envyard lets them read. Needs ``c.Authenticator.enable_auth_state = True``;
* otherwise the hub's own token, ``ENVYARD_HUB_TOKEN`` (a reader token with viewer grants on the namespaces the hub
  may offer): every user sees the same list. Set ``ENVYARD_REQUIRE_USER_TOKEN=1`` to refuse this fallback.

Settings (environment variables of the hub): ``ENVYARD_URL`` (e.g. https://envyard.example.org),
``ENVYARD_PROFILE_VARIANT`` (``image`` or ``image-volume``), ``ENVYARD_HUB_TOKEN``, ``ENVYARD_REQUIRE_USER_TOKEN``,
``ENVYARD_CA_BUNDLE`` (a CA file for a private envyard certificate).
"""

import json
import os
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

ENVYARD_URL = os.environ.get("ENVYARD_URL", "http://envyard:8000").rstrip("/")
ENVYARD_PROFILE_VARIANT = os.environ.get("ENVYARD_PROFILE_VARIANT", "image")


async def envyard_token(spawner):
    """The token the profiles are fetched with: the user's (auth_state), else the hub's."""
    auth_state = await spawner.user.get_auth_state() or {}
    token = auth_state.get("envyard_token") or auth_state.get("access_token")
    if token:
        return token
    if os.environ.get("ENVYARD_REQUIRE_USER_TOKEN", "") in ("1", "true", "yes"):
        raise RuntimeError(f"user {spawner.user.name} has no envyard token in auth_state: log in again")
    token = os.environ.get("ENVYARD_HUB_TOKEN")
    if not token:
        raise RuntimeError("no envyard token: enable auth_state with an envyard token, or set ENVYARD_HUB_TOKEN")
    return token


async def envyard_profile_list(spawner):
    """KubeSpawner's ``profile_list`` callable: the envyard environments the user may read."""
    query = urlencode({"variant": ENVYARD_PROFILE_VARIANT})
    request = HTTPRequest(f"{ENVYARD_URL}/api/v1/jupyterhub/profiles?{query}",
                          headers={"Authorization": f"Bearer {await envyard_token(spawner)}",
                                   "Accept": "application/json"},
                          request_timeout=30, ca_certs=os.environ.get("ENVYARD_CA_BUNDLE") or None)
    try:
        response = await AsyncHTTPClient().fetch(request)
    except HTTPClientError as err:
        body = err.response.body.decode(errors="replace")[:300] if err.response is not None else ""
        spawner.log.error("envyard profiles for %s: HTTP %s %s", spawner.user.name, err.code, body)
        raise
    profiles = json.loads(response.body)
    spawner.log.info("envyard: %d namespaces of environments for %s", len(profiles), spawner.user.name)
    return profiles


if "get_config" in globals():  # loaded by JupyterHub as its config file
    c = get_config()  # noqa: F821 - JupyterHub's config loader defines it
    c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
    c.KubeSpawner.profile_list = envyard_profile_list
    # The pull Secret envyard's profiles name (envyard-pull-<namespace>) must exist in the hub's namespace:
    #   envyard k8s pull-secret NAMESPACE -n HUB_NAMESPACE --apply
