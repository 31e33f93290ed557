"""Service functions: one per route, taking a session and typed arguments, raising EnvyardError subclasses."""

# the public names of this package: its modules
__all__ = [
    "audit",
    "builds",
    "catalog",
    "curation",
    "gc",
    "hooks",
    "identity",
    "jobs",
    "logs",
    "lookups",
    "manifests",
    "pagination",
    "policies",
    "publish",
    "quotas",
    "referrers",
    "relock",
    "retention",
    "secrets",
    "snapshots",
    "specs",
    "targets",
    "usage",
]
