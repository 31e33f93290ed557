"""Typed inputs of the Kubernetes generators: the built environment, the session's resources and variant (a run is
a :class:`envyard.builder.run_manifest.RunManifest`).

Nothing here touches the database or HTTP: :mod:`envyard.api.kubernetes.service` fills these from a build's rows
and its image config; the CLI and the API hand them to :mod:`envyard.api.kubernetes.generate`.

>>> image = EnvironmentImage(namespace="team", name="app", build_id=7, registry="envyard.example.org",
...                          repository="team/app", digest="sha256:" + "a" * 64, uid=1000, gid=100)
>>> image.reference
'envyard.example.org/team/app@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from envyard.builder.errors import SpecError

__all__ = ["DEFAULT_UID", "VARIANTS", "Archive", "EnvironmentImage", "Resources", "SessionOptions", "Variant",
           "parse_quantity"]

Variant = Literal["image", "image-volume", "archive"]
VARIANTS: tuple[Variant, ...] = ("image", "image-volume", "archive")
#: The user a session runs as when the image's config says root (0): sessions never run as root.
DEFAULT_UID = 1000
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")


def parse_quantity(value: str | None, field_name: str) -> str | None:
    """A Kubernetes resource quantity (``500m``, ``2``, ``4Gi``) as given, or a clear error.

    >>> parse_quantity("4Gi", "memory")
    '4Gi'
    """
    if value is None or value == "":
        return None
    if not QUANTITY.match(value):
        raise SpecError(f"{field_name} '{value}' is not a Kubernetes quantity", field=field_name,
                        hint="write e.g. 500m or 2 for cpu, 512Mi or 4Gi for memory")
    return value


@dataclass(frozen=True, slots=True)
class Archive:
    """A build's relocatable archive for one platform (the ``archive`` artifact of :mod:`builder.pack`)."""

    platform: str
    url: str
    sha256: str


@dataclass(frozen=True, slots=True)
class EnvironmentImage:
    """A completed build as a session sees it: where its image is and how it runs."""

    namespace: str
    name: str
    build_id: int
    registry: str  # host[:port] of the registry the reference names (envyard's /v2/ or a publication target)
    repository: str
    digest: str  # the image's root digest (an index for several platforms)
    uid: int = 0
    gid: int = 0
    env_prefix: str = "/opt/env"
    cuda: bool = False
    platforms: tuple[str, ...] = ("linux-64",)
    archives: Mapping[str, Archive] = field(default_factory=dict)
    description: str = ""
    from_envyard: bool = True  # the reference is on envyard's own registry (a pull-only token works there)

    @property
    def reference(self) -> str:
        """The image pinned by digest: ``registry/repository@sha256:...``."""
        return f"{self.registry}/{self.repository}@{self.digest}"


@dataclass(frozen=True, slots=True)
class Resources:
    cpu: str | None = None
    memory: str | None = None
    gpu: int = 0


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """How to run: the variant, resources, the pull secret's name, the images the variants need."""

    variant: Variant = "image"
    resources: Resources = field(default_factory=Resources)
    pull_secret: str | None = None  # a kubernetes.io/dockerconfigjson Secret (envyard k8s pull-secret)
    base_image: str = "quay.io/jupyter/minimal-notebook:latest"  # image-volume and archive: the session's image
    tools_image: str = "envyard/envyard:0.1.0"  # runs `envyard data fetch` and `envyard k8s unpack`
    api_url: str = ""  # where the archive init container downloads from
    platform: str = "linux-64"
    kube_namespace: str | None = None
