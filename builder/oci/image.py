"""Image stage: an installed prefix becomes layers, a config and a manifest, with no daemon.

Everything that goes into a digest is fixed by the inputs: layer tars come from
:mod:`builder.tarstream` (sorted, fixed mtime and owner, no host paths), gzip
carries no timestamp, JSON is canonical, and ``created`` is ``SOURCE_DATE_EPOCH``
(0 by default). Layer blobs are cached by the package records they hold, so a
rebuild after one package changed only tars the layers that changed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from envyard.builder.errors import ImageError
from envyard.builder.oci.layers import LayerBudget, PlannedLayer, plan_layers, read_units
from envyard.builder.oci.model import (
    DOCKER_LAYER_GZIP,
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_LAYER_TAR,
    MEDIA_TYPE_LAYER_ZSTD,
    MEDIA_TYPE_MANIFEST,
    OCI_PLATFORMS,
    Descriptor,
    ManifestBlob,
    canonical_json,
)
from envyard.builder.oci.store import BlobStore
from envyard.builder.tarstream import Compression, TarSpec, compressed, write_tar

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ENTRYPOINT = ".envyard/entrypoint"
#: containerd's limit on the layers of one image (base layers included).
MAX_TOTAL_LAYERS = 127


@dataclass(frozen=True, slots=True)
class BaseImage:
    """A base image already in the blob store: its platform manifest and parsed config."""

    reference: str
    manifest: ManifestBlob
    config: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ImageOptions:
    env_prefix: str = "/opt/env"
    uid: int = 0
    gid: int = 0
    source_date_epoch: int = 0
    compression: Compression = "gzip"
    budget: LayerBudget = field(default_factory=LayerBudget)
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    workers: int = 0

    def __post_init__(self) -> None:
        if not self.env_prefix.startswith("/") or self.env_prefix.rstrip("/") in ("", "/"):
            raise ImageError(f"--env-prefix must be an absolute path below /, not {self.env_prefix!r}",
                             field="env_prefix", hint="for example /opt/env")

    @property
    def created(self) -> str:
        return datetime.fromtimestamp(self.source_date_epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def settings_key(self, platform: str) -> str:
        return f"{platform}|{self.env_prefix}|{self.uid}:{self.gid}|{self.source_date_epoch}|{self.compression}|v1"


@dataclass(frozen=True, slots=True)
class BuiltLayer:
    name: str
    descriptor: Descriptor
    diff_id: str
    reused: bool


def _layer_media_type(compression: Compression) -> str:
    return {"gzip": MEDIA_TYPE_LAYER_GZIP, "zstd": MEDIA_TYPE_LAYER_ZSTD}.get(compression, MEDIA_TYPE_LAYER_TAR)


def build_layer(prefix: Path, layer: PlannedLayer, options: ImageOptions, store: BlobStore,
                extra: Mapping[str, Path], platform: str) -> BuiltLayer:
    """Tar and compress one planned layer into the store, or reuse the blob cached for the same records."""
    key = layer.cache_key(options.settings_key(platform))
    cache_file = store.root / "layer-cache" / f"{key}.json" if key else None
    if cache_file is not None and cache_file.is_file():
        cached = json.loads(cache_file.read_text())
        descriptor = Descriptor.from_json(cached["descriptor"])
        if store.has(descriptor.digest):
            return BuiltLayer(layer.name, descriptor, cached["diff_id"], True)
    spec = TarSpec(arc_root=options.env_prefix.strip("/"), mtime=options.source_date_epoch,
                   uid=options.uid, gid=options.gid)
    with store.writer() as sink:
        with compressed(sink, options.compression) as out:  # type: ignore[arg-type]
            write_tar(out, prefix, layer.files, spec, sources=extra)  # type: ignore[arg-type]
        diff_id = out.digest
    descriptor = Descriptor(_layer_media_type(options.compression), sink.digest, sink.size,
                            annotations={"dev.envyard.layer": layer.name})
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"descriptor": descriptor.to_json(), "diff_id": diff_id}))
        tmp.replace(cache_file)
    return BuiltLayer(layer.name, descriptor, diff_id, False)


def entrypoint_script(env_prefix: str, shell: str) -> str:
    """A script that activates the environment (``activate.d``) and then runs its arguments."""
    return (f"#!{shell}\n# envyard: activate {env_prefix}, then run the command\n"
            f"export CONDA_PREFIX='{env_prefix}'\n"
            f"for _envyard_script in '{env_prefix}'/etc/conda/activate.d/*.sh; do\n"
            '    [ -e "$_envyard_script" ] && . "$_envyard_script"\n'
            "done\nunset _envyard_script\n"
            'if [ "$#" -eq 0 ]; then set -- ' + shell + "; fi\n"
            'exec "$@"\n')


def _shell(prefix: Path, env_prefix: str, base: BaseImage | None) -> str | None:
    if base is not None:
        return "/bin/sh"
    for candidate in ("bin/sh", "bin/bash"):
        if (prefix / candidate).exists() or (prefix / candidate).is_symlink():
            return f"{env_prefix}/{candidate}"
    return None


def build_platform_image(
    prefix: Path,
    platform: str,
    options: ImageOptions,
    store: BlobStore,
    work_dir: Path,
    base: BaseImage | None = None,
) -> tuple[ManifestBlob, list[BuiltLayer]]:
    """Layers, config and manifest for a prefix installed for ``options.env_prefix``."""
    if platform not in OCI_PLATFORMS:
        raise ImageError(f"images can be built for {', '.join(OCI_PLATFORMS)}, not {platform}",
                         field="platform", hint="pass -p linux-64 or -p linux-aarch64")
    units, unowned = read_units(prefix)
    extra: dict[str, Path] = {}
    shell = _shell(prefix, options.env_prefix, base)
    if shell is not None:
        script = work_dir / f"entrypoint-{platform}"
        script.write_text(entrypoint_script(options.env_prefix, shell))
        script.chmod(0o755)
        extra[ENTRYPOINT] = script
    plan = plan_layers(units, [*unowned, *extra], options.budget)
    base_layers = [] if base is None else base.manifest.children()[1:]
    if len(base_layers) + len(plan) > MAX_TOTAL_LAYERS:
        raise ImageError(f"{len(base_layers)} base layers plus {len(plan)} environment layers exceed "
                         f"the {MAX_TOTAL_LAYERS} layers containerd accepts", hint="lower --max-layers")
    workers = options.workers or max(1, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        built = list(pool.map(lambda layer: build_layer(prefix, layer, options, store, extra, platform), plan))
    config = _config(platform, options, built, base, shell)
    config_descriptor = store.put_bytes(config, MEDIA_TYPE_CONFIG)
    layers = [_oci_layer(d).to_json() for d in base_layers] + [b.descriptor.to_json() for b in built]
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": config_descriptor.to_json(),
        "layers": layers,
        "annotations": _annotations(options, base),
    }
    return ManifestBlob.of(MEDIA_TYPE_MANIFEST, manifest, platform=OCI_PLATFORMS[platform]), built


def _oci_layer(descriptor: Descriptor) -> Descriptor:
    if descriptor.media_type == DOCKER_LAYER_GZIP:
        return Descriptor(MEDIA_TYPE_LAYER_GZIP, descriptor.digest, descriptor.size, descriptor.annotations)
    return descriptor


def _annotations(options: ImageOptions, base: BaseImage | None) -> dict[str, str]:
    annotations = {"org.opencontainers.image.created": options.created, **options.annotations}
    if base is not None:
        annotations["org.opencontainers.image.base.digest"] = base.manifest.descriptor.digest
        annotations["org.opencontainers.image.base.name"] = base.reference
    return annotations


def _config(platform: str, options: ImageOptions, built: Sequence[BuiltLayer], base: BaseImage | None,
            shell: str | None) -> bytes:
    base_config: Mapping[str, Any] = base.config if base is not None else {}
    inherited = dict(base_config.get("config") or {})
    env = [e for e in inherited.get("Env") or [] if not e.startswith(("PATH=", "CONDA_PREFIX="))]
    base_path = next((e[5:] for e in inherited.get("Env") or [] if e.startswith("PATH=")), DEFAULT_PATH)
    env += [f"PATH={options.env_prefix}/bin:{base_path}", f"CONDA_PREFIX={options.env_prefix}"]
    runtime: dict[str, Any] = {
        **inherited,
        "Env": env,
        "Labels": {**(inherited.get("Labels") or {}), **options.labels},
        "User": f"{options.uid}:{options.gid}",
        "WorkingDir": inherited.get("WorkingDir") or "/",
    }
    if shell is not None:
        runtime["Entrypoint"] = [f"{options.env_prefix}/{ENTRYPOINT}"]
        runtime["Cmd"] = inherited.get("Cmd") or [shell]
    base_diff_ids = list((base_config.get("rootfs") or {}).get("diff_ids") or [])
    history = list(base_config.get("history") or [])
    history += [{"created": options.created, "created_by": f"envyard: {b.name}", "comment": "envyard"}
                for b in built]
    config: dict[str, Any] = {
        **OCI_PLATFORMS[platform],
        "created": options.created,
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": base_diff_ids + [b.diff_id for b in built]},
        "history": history,
    }
    return canonical_json(config)


def image_index(manifests: Sequence[ManifestBlob], options: ImageOptions) -> ManifestBlob:
    """An OCI image index over one manifest per platform."""
    value = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": [m.descriptor.to_json() for m in manifests],
        "annotations": {"org.opencontainers.image.created": options.created, **options.annotations},
    }
    return ManifestBlob.of(MEDIA_TYPE_INDEX, value)
