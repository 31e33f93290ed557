"""OCI images without a daemon: layer tars, configs, manifests, indexes and image layouts."""
