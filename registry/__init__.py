"""The OCI client: image references (:mod:`.reference`), HTTP transport and registry auth (:mod:`.transport`),
the distribution API client (:mod:`.client`), push and pull of images (:mod:`.push`), pulls into OCI layouts
(:mod:`.layout`) and loading an image into a Docker daemon (:mod:`.docker_load`). It depends on
:mod:`envyard.builder` only; the server side, ``/v2/``, lives in the API (``api/distribution/``)."""

__all__ = ["client", "docker_load", "layout", "push", "reference", "transport"]
