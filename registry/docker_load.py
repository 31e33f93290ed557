"""``--load``: an image handed to a local Docker-API daemon (Docker, or Podman's ``system service``).

The image goes over as a ``docker save`` archive written from the blob store:
``manifest.json`` (``Config``, ``RepoTags``, ``Layers``) naming blobs under
``blobs/sha256/``, which is also where an OCI image layout keeps them. That is the
layout Docker 25 and later write; older Docker and Podman read it too, since they
follow the paths in ``manifest.json``. Layers stay as they are in the store
(gzip'd): ``docker load`` and Podman decompress them and check ``rootfs.diff_ids``.

``index.json`` and ``oci-layout`` (which would make the tar an OCI archive as well, as
Docker 25 writes it) are left out on purpose: ``podman load`` (4.3) tries an archive as
OCI before Docker, and on that path an image with several tags keeps only the first.

The archive is byte-for-byte reproducible: entries sorted, mtime 0, owner root.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, BinaryIO

from envyard.builder.errors import ImageError, RegistryError
from envyard.builder.oci.model import (
    DOCKER_LAYER_GZIP,
    MANIFEST_MEDIA_TYPES,
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_LAYER_TAR,
    MEDIA_TYPE_LAYER_ZSTD,
    Descriptor,
    ManifestBlob,
)
from envyard.builder.oci.store import BlobStore

#: Layer media types a daemon decompresses on load (zstd only where the daemon reads it).
LOADABLE_LAYER_TYPES = frozenset(
    {MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR, MEDIA_TYPE_LAYER_ZSTD, DOCKER_LAYER_GZIP}
)

DAEMON_HINT = "set DOCKER_HOST or start Docker/Podman"
REFUSED_HINT = "the daemon's message says why it rejected the archive; rebuild the image if a digest does not match"

_TAG = re.compile(r"[\w][\w.-]{0,127}")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:]+\])(?::[0-9]{{1,5}})?")


def normalize_tag(reference: str) -> str:
    """A ``name:tag`` reference as ``docker load`` wants it in ``RepoTags``; ``:latest`` when no tag is given.

    >>> normalize_tag("envyard/demo")
    'envyard/demo:latest'
    >>> normalize_tag("localhost:5000/demo:1.0")
    'localhost:5000/demo:1.0'
    """
    if "@" in reference:
        raise ImageError(f"cannot load an image under a digest reference: {reference!r}",
                         hint="give a name with a tag, e.g. myenv:1.0")
    name, tag = reference, "latest"
    last = reference.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = reference.rsplit(":", 1)
    parts = name.split("/")
    domain_ok = len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost")
    path = parts[1:] if domain_ok else parts
    if (
        not _TAG.fullmatch(tag)
        or (domain_ok and not _DOMAIN.fullmatch(parts[0]))
        or not path
        or not all(_PATH_COMPONENT.fullmatch(p) for p in path)
    ):
        raise ImageError(f"not a valid image reference: {reference!r}",
                         hint="use lowercase name components and an optional :tag, e.g. registry.example/team/env:1.0")
    return f"{name}:{tag}"


def write_docker_archive(image_manifest: ManifestBlob, store: BlobStore, tags: Sequence[str], out: BinaryIO) -> None:
    """Write ``image_manifest`` with its config and layers from ``store`` as a ``docker save`` tar to ``out``.

    ``tags`` become ``RepoTags`` (``:latest`` added where no tag is given). Raises
    :class:`ImageError` for an index (pick one platform first), a layer type no daemon
    loads, a blob missing from the store, or a config whose ``diff_ids`` do not match the layers.
    """
    config, layers = _loadable_parts(image_manifest, store)
    repo_tags = sorted(dict.fromkeys(normalize_tag(t) for t in tags))
    blobs = {d.hex: d for d in [config, *layers]}
    manifest_json = [
        {
            "Config": f"blobs/sha256/{config.hex}",
            "RepoTags": repo_tags,
            "Layers": [f"blobs/sha256/{d.hex}" for d in layers],
        }
    ]
    files: dict[str, bytes | Descriptor] = {f"blobs/sha256/{h}": d for h, d in blobs.items()}
    files["manifest.json"] = json.dumps(manifest_json, separators=(",", ":")).encode()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("blobs", "blobs/sha256"):
            tar.addfile(_tar_info(directory, 0, tarfile.DIRTYPE))
        for name in sorted(files):
            content = files[name]
            if isinstance(content, bytes):
                tar.addfile(_tar_info(name, len(content)), io.BytesIO(content))
            else:
                with store.path(content.digest).open("rb") as blob:
                    tar.addfile(_tar_info(name, content.size), blob)


def load_into_daemon(
    image_manifest: ManifestBlob, store: BlobStore, tags: Sequence[str], *, docker_host: str | None
) -> list[str]:
    """Load the image into the Docker-API daemon at ``docker_host`` (``None``: the default socket).

    Returns what the daemon reports as loaded: tags (``envyard-test:1``) and/or image IDs
    (``sha256:...``). A daemon that cannot be reached or refuses the archive raises
    :class:`RegistryError`.
    """
    import docker  # imported here: only --load needs the SDK
    import docker.errors
    import requests.exceptions

    where = docker_host or "the default Docker socket"
    with tempfile.TemporaryFile() as archive:
        write_docker_archive(image_manifest, store, tags, archive)
        archive.seek(0)
        try:
            client = docker.DockerClient(base_url=docker_host)
        except docker.errors.DockerException as exc:
            raise RegistryError(f"cannot reach a Docker daemon at {where}: {exc}", hint=DAEMON_HINT) from exc
        try:
            return _loaded_names(client.api.load_image(archive, quiet=True), where)
        except docker.errors.APIError as exc:
            raise RegistryError(f"the daemon at {where} refused the image: {exc.explanation or exc}",
                                hint=REFUSED_HINT) from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise RegistryError(f"lost the Docker daemon at {where}: {exc}", hint=DAEMON_HINT) from exc
        finally:
            client.close()


def _loaded_names(chunks: Iterable[Mapping[str, Any]], where: str) -> list[str]:
    """Names from ``Loaded image: a,b`` / ``Loaded image ID: sha256:...`` lines (Podman joins several with commas)."""
    loaded: list[str] = []
    for chunk in chunks:
        if chunk.get("error") or chunk.get("errorDetail"):
            message = chunk.get("error") or chunk["errorDetail"].get("message", "")
            raise RegistryError(f"the daemon at {where} could not load the image: {message}",
                                hint=REFUSED_HINT)
        for line in str(chunk.get("stream", "")).splitlines():
            match = re.match(r"Loaded image(?: ID)?: (.+)$", line.strip())
            if match:
                loaded.extend(n.strip() for n in match.group(1).split(",") if n.strip())
    return list(dict.fromkeys(loaded))


def _loadable_parts(image_manifest: ManifestBlob, store: BlobStore) -> tuple[Descriptor, list[Descriptor]]:
    if image_manifest.descriptor.media_type not in MANIFEST_MEDIA_TYPES:
        raise ImageError(f"--load needs one image manifest, not {image_manifest.descriptor.media_type}",
                         hint="build or pick a single platform to load into a local daemon")
    value = image_manifest.json()
    config = Descriptor.from_json(value["config"])
    layers = [Descriptor.from_json(x) for x in value.get("layers", [])]
    for descriptor in [config, *layers]:
        if not store.has(descriptor.digest):
            raise ImageError(f"blob {descriptor.digest} of the image is not in the store at {store.root}",
                             hint="rebuild the image; the blob store was cleaned or is another one")
    for layer in layers:
        if layer.media_type not in LOADABLE_LAYER_TYPES:
            raise ImageError(f"a local daemon cannot load layers of type {layer.media_type}",
                             hint="build the image with gzip layers for --load")
    diff_ids = json.loads(store.read(config.digest)).get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(layers):
        raise ImageError(f"the image config lists {len(diff_ids)} diff_ids for {len(layers)} layers",
                         hint="the image is inconsistent; rebuild it")
    return config, layers


def _tar_info(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size if kind == tarfile.REGTYPE else 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
