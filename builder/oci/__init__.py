"""OCI images without a daemon: layer tars, configs, manifests, indexes and image layouts."""

# the public names of this package: its modules
__all__ = [
    "image",
    "layers",
    "layout",
    "model",
    "sbom",
    "store",
    "unpack",
]
