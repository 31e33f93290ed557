"""Thin routers: validate, authorize (a resource dependency of envyard.api.resources for what the path names, else
the ``Reader``/``Editor``/``Admin``/``Worker`` principal of envyard.api.deps for the role), call service functions,
commit. Everything a route needs comes as a parameter from envyard.api.deps (``SessionDep``, ``StoreDep``, ...)."""

# the public names of this package: its modules
__all__ = [
    "access",
    "admin",
    "audit",
    "auth",
    "builds",
    "catalog",
    "ci",
    "curation",
    "health",
    "jobs",
    "policies",
    "runs",
    "targets",
    "tokens",
    "usage",
]
