"""envyard's HTTP service: the FastAPI application (:mod:`.app`), its routes (:mod:`.routers`), service functions
(:mod:`.services`), database models (:mod:`.models`, :mod:`.db`), artifact storage (:mod:`.storage`), auth and
settings."""

# the public names of this package: its modules
__all__ = [
    "app",
    "auth",
    "db",
    "deps",
    "distribution",
    "files",
    "ids",
    "limits",
    "metrics",
    "models",
    "openapi",
    "problems",
    "resources",
    "routers",
    "schemas",
    "services",
    "settings",
    "storage",
]
