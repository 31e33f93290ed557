"""Authentication and authorization: who asks (:mod:`.principals`), which namespaces a request concerns
(:mod:`.scope`), and the verdict (:mod:`.policy`, deciding with :mod:`.decision` over the role bindings of
:mod:`.bindings`), with the API tokens (:mod:`.tokens`), the registry tokens of Docker's token auth
(:mod:`.registry_tokens`), the build-scoped worker tokens of build Jobs (:mod:`.build_tokens`), sign-in through
identity providers (:mod:`.oidc`) and the server's secret key (:mod:`.secret_key`) beside them.

The FastAPI dependencies that authenticate a request and authorize it on a route (``current_principal``,
``authorize``, and the ``Reader``/``Editor``/``Admin``/``Worker`` aliases) are in :mod:`envyard.api.deps`, the one
module that reads the application's state; the resource dependencies are in :mod:`envyard.api.resources`.
"""

from envyard.api.auth.policy import ALLOWED, allows, check, may, permit, require
from envyard.api.auth.principals import (
    ANONYMOUS,
    BEARER_ERROR,
    CACHE_SECONDS,
    Action,
    Principal,
    PrincipalSource,
    TokenCache,
    authenticate,
    is_registry_path,
    public_namespaces,
)
from envyard.api.auth.registry_tokens import REGISTRY_SERVICE, REGISTRY_TOKEN_SECONDS, sign_registry_token
from envyard.api.auth.scope import readable_namespaces
from envyard.api.auth.secret_key import load_or_create_secret_key
from envyard.api.auth.tokens import create_token, ensure_admin_token, hash_token

__all__ = [
    "ALLOWED",
    "ANONYMOUS",
    "BEARER_ERROR",
    "CACHE_SECONDS",
    "REGISTRY_SERVICE",
    "REGISTRY_TOKEN_SECONDS",
    "Action",
    "Principal",
    "PrincipalSource",
    "TokenCache",
    "allows",
    "authenticate",
    "check",
    "create_token",
    "ensure_admin_token",
    "hash_token",
    "is_registry_path",
    "load_or_create_secret_key",
    "may",
    "permit",
    "public_namespaces",
    "readable_namespaces",
    "require",
    "sign_registry_token",
]
