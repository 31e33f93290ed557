"""The OCI distribution endpoint (pull side) over the artifact store: ``/v2/<namespace>/<environment>/...``.

Tags are build ids (``:7``) and ``:latest`` (the environment's current build); manifests and blobs are served by
digest, only within the repository whose builds reference them. A tag is a build id only when spelled in
canonical ASCII digits (:func:`envyard.api.ids.parse_id`: not ``02``, ``²`` or ``２``). The referrers API lists
the manifests of the repository's completed builds whose ``subject`` is a digest (recorded at completion by
:mod:`envyard.api.services.referrers`).

* :mod:`.routes`: the router (``/v2/token``, ``/v2/`` and the repository routes), thin;
* :mod:`.access`: who may pull what (the repository dependency) and the registry tokens of ``/v2/token``;
* :mod:`.references`: names, tags, digests, ranges and token scopes, parsed before any lookup;
* :mod:`.service`: every query of the endpoint.

The OCI error bodies (``{"errors": [...]}``) and the ``WWW-Authenticate`` challenges are rendered by
:mod:`envyard.api.problems`, from the ``oci`` code the typed errors carry in their details.
"""

from __future__ import annotations

from envyard.api.distribution.routes import router

__all__ = ["router"]
