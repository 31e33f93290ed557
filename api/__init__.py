"""envyard's HTTP service: the FastAPI application (:mod:`.app`), its routes (:mod:`.routers`), service functions
(:mod:`.services`), database models (:mod:`.models`, :mod:`.db`), artifact storage (:mod:`.storage`), auth and
settings."""

# the public names of this package: its modules
__all__ = [
    "app",
    "auth",
    "build_backends",
    "db",
    "deps",
    "distribution",
    "files",
    "ids",
    "kubernetes",
    "limits",
    "metrics",
    "models",
    "openapi",
    "problems",
    "resources",
    "routers",
    "run_schemas",
    "schemas",
    "services",
    "settings",
    "storage",
]
