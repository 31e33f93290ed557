"""Service functions: one per route, taking a session and typed arguments, raising EnvyardError subclasses."""

# the public names of this package: its modules
__all__ = [
    "audit",
    "builds",
    "catalog",
    "curation",
    "gc",
    "jobs",
    "logs",
    "lookups",
    "pagination",
    "policies",
    "publish",
    "quotas",
    "referrers",
    "retention",
    "specs",
    "targets",
    "usage",
]
