"""OCI registries: references, transport and token auth, pushing images, loading docker archives, and the
``/v2/`` endpoint (:mod:`.server`)."""

# the public names of this package: its modules
__all__ = [
    "client",
    "docker_load",
    "push",
    "reference",
    "server",
    "token_auth",
    "transport",
]
