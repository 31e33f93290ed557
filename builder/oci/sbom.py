"""SBOMs of a locked environment (SPDX 2.3 and CycloneDX 1.6 JSON) and the OCI referrers that carry them.

The documents are functions of the lock and three given values (a name, a seed for
the document's identity, a creation time), written as canonical JSON: the same lock
gives the same bytes, and another ``created`` changes only the timestamp. Every conda
and pip package is listed with its download URL, hashes, purl and, for conda, its
license when that is a valid SPDX expression (``NOASSERTION`` / no license otherwise).
Dependencies between packages are taken from the lock's ``depends`` and
``requires_dist`` where they name another package of the environment.

>>> from datetime import datetime, timezone
>>> zlib = LockedCondaPackage(name="zlib", version="1.3.1", build="hb9d3cd8_2", build_number=2,
...     subdir="linux-64", channel="https://conda.anaconda.org/conda-forge",
...     url="https://conda.anaconda.org/conda-forge/linux-64/zlib-1.3.1-hb9d3cd8_2.conda",
...     sha256="a" * 64, md5=None, license="Zlib")
>>> conda_purl(zlib)
'pkg:conda/zlib@1.3.1?build=hb9d3cd8_2&channel=https://conda.anaconda.org/conda-forge&subdir=linux-64&type=conda'
>>> doc = spdx_document(PlatformLock("linux-64", conda=(zlib,)), name="demo", namespace_seed="s",
...                     created=datetime(2024, 5, 1, tzinfo=timezone.utc))
>>> json.loads(doc)["packages"][1]["licenseDeclared"]
'Zlib'
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from license_expression import get_spdx_licensing
from packageurl import PackageURL
from packaging.requirements import InvalidRequirement, Requirement

from envyard.builder.errors import ImageError
from envyard.builder.model import LockedCondaPackage, LockedPipPackage, PlatformLock, normalize_pypi_name
from envyard.builder.oci.model import (
    EMPTY_JSON,
    MEDIA_TYPE_EMPTY,
    MEDIA_TYPE_MANIFEST,
    Descriptor,
    ManifestBlob,
    canonical_json,
)
from envyard.builder.oci.store import BlobStore

SbomFormat = Literal["spdx", "cyclonedx"]

MEDIA_TYPE_SPDX = "application/spdx+json"
MEDIA_TYPE_CYCLONEDX = "application/vnd.cyclonedx+json"
ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_CREATED = "org.opencontainers.image.created"

#: Per format: artifact (and layer) media type, and the file name a puller gets.
SBOM_FORMATS: Mapping[SbomFormat, tuple[str, str]] = {
    "spdx": (MEDIA_TYPE_SPDX, "sbom.spdx.json"),
    "cyclonedx": (MEDIA_TYPE_CYCLONEDX, "sbom.cdx.json"),
}

NAMESPACE_BASE = "https://envyard.dev/spdx/"
TOOL = "envyard"
NOASSERTION = "NOASSERTION"
ROOT_SPDX_ID = "SPDXRef-environment"
ROOT_BOM_REF = "environment"

_SPDX_ID_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")
# The download location grammar of SPDX 2.3 (§7.7) for plain URLs: a public host name with a TLD.
_DOWNLOAD_URL = re.compile(
    r"(?:https?|s?ftp)://(?:[\w\-.!~*'()%;:&=+$,]+@)?[a-z0-9]+(?:[-.][a-z0-9]+)*\.[a-z]{2,5}(?::[0-9]{1,5})?(?:/.*)?",
    re.IGNORECASE,
)
_CONDA_DEP_NAME = re.compile(r"(?:[^\s:]+::)?([^\s=<>!~\[,|]+)")


@dataclass(frozen=True, slots=True)
class _Entry:
    """One package as both formats list it: identity, links and the packages it depends on."""

    key: tuple[str, str, str, str, str]
    spdx_id: str
    name: str
    version: str
    purl: str
    url: str
    sha256: str | None
    md5: str | None
    license: str | None
    depends: tuple[str, ...]  # purls


def conda_purl(package: LockedCondaPackage) -> str:
    """``pkg:conda/<name>@<version>?build=..&channel=<channel url>&subdir=..&type=<conda|tar.bz2>``.

    ``type`` is the archive format, as the purl spec for conda defines it.
    """
    kind = "tar.bz2" if package.file_name.endswith(".tar.bz2") else "conda"
    qualifiers = {"build": package.build, "channel": package.channel, "subdir": package.subdir, "type": kind}
    return str(PackageURL(type="conda", name=package.name, version=package.version, qualifiers=qualifiers))


def pypi_purl(package: LockedPipPackage) -> str:
    """``pkg:pypi/<PEP 503 normalized name>@<version>``."""
    return str(PackageURL(type="pypi", name=package.normalized_name, version=package.version))


@functools.cache
def _licensing() -> Any:
    """The SPDX license index (built once, on first use: it takes ~15 ms)."""
    return get_spdx_licensing()


@functools.lru_cache(maxsize=4096)
def spdx_license(text: str | None) -> str | None:
    """The license as a normalized SPDX expression, or ``None`` when it is not one.

    >>> spdx_license("mit"), spdx_license("GPL-2.0-or-later AND LGPL-2.1-only"), spdx_license("BSD 3-Clause")
    ('MIT', 'GPL-2.0-or-later AND LGPL-2.1-only', None)
    """
    if not text or not text.strip():
        return None
    info = _licensing().validate(text.strip(), strict=True)
    if info.errors or not info.normalized_expression:
        return None
    return str(info.normalized_expression)


def spdx_document(platform_lock: PlatformLock, *, name: str, namespace_seed: str, created: datetime) -> bytes:
    """SPDX 2.3 JSON of the environment: a root package that CONTAINS every conda and pip package.

    ``documentNamespace`` is ``https://envyard.dev/spdx/<name>-<sha256 of namespace_seed>``;
    ``created`` (UTC; naive times are taken as UTC) is written to the second.
    """
    entries = _entries(platform_lock)
    packages: list[dict[str, Any]] = [
        {
            "SPDXID": ROOT_SPDX_ID,
            "name": name,
            "downloadLocation": NOASSERTION,
            "filesAnalyzed": False,
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": NOASSERTION,
            "copyrightText": NOASSERTION,
            "primaryPackagePurpose": "APPLICATION",
            "comment": f"conda environment for {platform_lock.platform}",
        }
    ]
    relationships = [_relationship("SPDXRef-DOCUMENT", "DESCRIBES", ROOT_SPDX_ID)]
    by_purl = {e.purl: e for e in entries}
    for entry in entries:
        packages.append(_spdx_package(entry))
        relationships.append(_relationship(ROOT_SPDX_ID, "CONTAINS", entry.spdx_id))
        relationships.extend(_relationship(entry.spdx_id, "DEPENDS_ON", by_purl[d].spdx_id) for d in entry.depends)
    document = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": f"{NAMESPACE_BASE}{quote(name, safe='')}-{_sha256(namespace_seed)}",
        "creationInfo": {"created": _timestamp(created), "creators": [f"Tool: {TOOL}"]},
        "packages": packages,
        "relationships": relationships,
    }
    return canonical_json(document)


def cyclonedx_document(platform_lock: PlatformLock, *, name: str, namespace_seed: str, created: datetime) -> bytes:
    """CycloneDX 1.6 JSON of the environment; ``serialNumber`` is a uuid5 of the name and ``namespace_seed``."""
    entries = _entries(platform_lock)
    by_purl = {e.purl: e for e in entries}
    serial = uuid.uuid5(uuid.NAMESPACE_URL, f"{NAMESPACE_BASE}{quote(name, safe='')}-{_sha256(namespace_seed)}")
    root = {
        "type": "application",
        "bom-ref": ROOT_BOM_REF,
        "name": name,
        "properties": [{"name": "envyard:platform", "value": platform_lock.platform}],
    }
    dependencies = [{"ref": ROOT_BOM_REF, "dependsOn": [e.purl for e in entries]}]
    dependencies += [{"ref": e.purl, "dependsOn": sorted(by_purl[d].purl for d in e.depends)} for e in entries]
    document = {
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": serial.urn,
        "version": 1,
        "metadata": {
            "timestamp": _timestamp(created),
            "tools": {"components": [{"type": "application", "name": TOOL}]},
            "component": root,
        },
        "components": [_cyclonedx_component(e) for e in entries],
        "dependencies": dependencies,
    }
    return canonical_json(document)


def sbom_referrer(store: BlobStore, subject: Descriptor, document: bytes, fmt: SbomFormat) -> ManifestBlob:
    """An OCI 1.1 artifact manifest carrying ``document`` as its one layer, with ``subject`` as its subject.

    The empty config (``{}``) and the document go into ``store``; the manifest is returned
    as exact bytes. ``org.opencontainers.image.created`` is the document's own creation time.
    """
    if fmt not in SBOM_FORMATS:
        raise ImageError(f"unknown SBOM format {fmt!r}", hint="use one of: " + ", ".join(SBOM_FORMATS))
    artifact_type, title = SBOM_FORMATS[fmt]
    created = _document_created(document, fmt)
    config = store.put_bytes(EMPTY_JSON, MEDIA_TYPE_EMPTY)
    layer = store.put_bytes(document, artifact_type, annotations={ANNOTATION_TITLE: title})
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "artifactType": artifact_type,
        "config": {**config.to_json(), "data": base64.b64encode(EMPTY_JSON).decode()},
        "layers": [layer.to_json()],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
    }
    if created:
        manifest["annotations"] = {ANNOTATION_CREATED: created}
    return ManifestBlob.of(MEDIA_TYPE_MANIFEST, manifest, artifact_type=artifact_type)


def _entries(platform_lock: PlatformLock) -> list[_Entry]:
    """Every package once, sorted; SPDX ids made unique; dependencies resolved to purls within the lock."""
    conda_purls = {p.name: conda_purl(p) for p in platform_lock.conda}
    pip_purls = {p.normalized_name: pypi_purl(p) for p in platform_lock.pip}
    conda_by_pypi_name = {normalize_pypi_name(n): purl for n, purl in conda_purls.items()}
    raw: list[_Entry] = []
    for c in platform_lock.conda:
        raw.append(_Entry(
            key=("conda", c.name, c.version, c.build, c.url), spdx_id="", name=c.name, version=c.version,
            purl=conda_purls[c.name], url=c.url, sha256=c.sha256, md5=c.md5, license=spdx_license(c.license),
            depends=_resolve(conda_purls, (_conda_dep_name(spec) for spec in c.depends)),
        ))  # fmt: skip
    for p in platform_lock.pip:
        # A pip requirement may be met by a pip package, or by a conda package of the same name.
        wanted = list(_pip_dep_names(p.requires_dist))
        depends = _resolve(pip_purls, wanted) + _resolve(conda_by_pypi_name, (n for n in wanted if n not in pip_purls))
        raw.append(_Entry(
            key=("pypi", p.normalized_name, p.version, "", p.url), spdx_id="", name=p.name, version=p.version,
            purl=pip_purls[p.normalized_name], url=p.url, sha256=p.sha256, md5=None, license=None,
            depends=tuple(sorted(set(depends))),
        ))  # fmt: skip
    entries: list[_Entry] = []
    seen: set[str] = set()
    for e in sorted(raw, key=lambda e: e.key):
        kind, pkg_name, version, build, _ = e.key
        spdx_id = "SPDXRef-" + _SPDX_ID_UNSAFE.sub("-", "-".join(x for x in (kind, pkg_name, version, build) if x))
        if spdx_id in seen:  # e.g. conda-forge's ruamel.yaml and ruamel_yaml differ only in what is replaced
            spdx_id += "-" + _sha256("\0".join(e.key))[:12]
        seen.add(spdx_id)
        entries.append(replace(e, spdx_id=spdx_id))
    return entries


def _resolve(purls: Mapping[str, str], names: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(sorted({purls[n] for n in names if n is not None and n in purls}))


def _conda_dep_name(spec: str) -> str | None:
    match = _CONDA_DEP_NAME.match(spec.strip())
    return match.group(1) if match else None


def _pip_dep_names(requires_dist: Iterable[str]) -> Iterable[str]:
    for text in requires_dist:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if requirement.marker is not None and "extra" in str(requirement.marker):
            continue  # only needed for an extra nobody asked for in the lock
        yield normalize_pypi_name(requirement.name)


def _spdx_package(entry: _Entry) -> dict[str, Any]:
    checksums = [{"algorithm": alg, "checksumValue": value} for alg, value in _hashes(entry, "SHA256", "MD5")]
    package: dict[str, Any] = {
        "SPDXID": entry.spdx_id,
        "name": entry.name,
        "versionInfo": entry.version,
        "downloadLocation": entry.url if _DOWNLOAD_URL.fullmatch(entry.url) else NOASSERTION,
        "filesAnalyzed": False,
        "licenseConcluded": entry.license or NOASSERTION,
        "licenseDeclared": entry.license or NOASSERTION,
        "copyrightText": NOASSERTION,
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                          "referenceLocator": entry.purl}],
        "primaryPackagePurpose": "LIBRARY",
    }
    if checksums:
        package["checksums"] = checksums
    return package


def _cyclonedx_component(entry: _Entry) -> dict[str, Any]:
    component: dict[str, Any] = {
        "type": "library",
        "bom-ref": entry.purl,
        "name": entry.name,
        "version": entry.version,
        "purl": entry.purl,
        "externalReferences": [{"type": "distribution", "url": entry.url}],
    }
    hashes = [{"alg": alg, "content": value} for alg, value in _hashes(entry, "SHA-256", "MD5")]
    if hashes:
        component["hashes"] = hashes
    if entry.license:
        component["licenses"] = [{"expression": entry.license}]
    return component


def _hashes(entry: _Entry, sha256_name: str, md5_name: str) -> list[tuple[str, str]]:
    pairs = [(sha256_name, entry.sha256), (md5_name, entry.md5)]
    return [(alg, value.lower()) for alg, value in pairs if value]


def _relationship(element: str, kind: str, related: str) -> dict[str, str]:
    return {"spdxElementId": element, "relationshipType": kind, "relatedSpdxElement": related}


def _timestamp(created: datetime) -> str:
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


#: Where each format keeps its creation time.
_CREATED_AT: Mapping[SbomFormat, tuple[str, str]] = {
    "spdx": ("creationInfo", "created"),
    "cyclonedx": ("metadata", "timestamp"),
}


def _document_created(document: bytes, fmt: SbomFormat) -> str | None:
    try:
        value: Any = json.loads(document)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        hint = "pass the bytes spdx_document() or cyclonedx_document() returned"
        raise ImageError(f"the {fmt} SBOM is not JSON: {exc}", hint=hint) from exc
    for key in _CREATED_AT[fmt]:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, str) else None
