"""Thin routers: validate, authorize (a resource dependency of api.resources for what the path names, else
api.auth.authorize for the role), call one service function."""

# the public names of this package: its modules
__all__ = [
    "admin",
    "builds",
    "catalog",
    "health",
    "jobs",
    "targets",
    "tokens",
]
