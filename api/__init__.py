"""envyard's HTTP service: the FastAPI application (:mod:`.app`), its routes (:mod:`.routers`), service functions
(:mod:`.services`), database models (:mod:`.models`, :mod:`.db`), artifact storage (:mod:`.storage`), auth and
settings."""

# the public names of this package: its modules
__all__ = [
    "app",
    "auth",
    "cli",
    "cli_client",
    "cli_gc",
    "cli_image",
    "cli_lock",
    "cli_namespaces",
    "cli_progress",
    "cli_service",
    "cli_targets",
    "db",
    "deps",
    "files",
    "ids",
    "limits",
    "models",
    "openapi",
    "problems",
    "registry_tokens",
    "resources",
    "routers",
    "schemas",
    "secret_key",
    "server",
    "services",
    "settings",
    "storage",
    "tokens",
]
