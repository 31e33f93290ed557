"""SBOMs of a lock: SPDX checked by spdx-tools, CycloneDX by its JSON schema, and the OCI referrer that carries them."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from envyard.builder.errors import ImageError
from envyard.builder.model import LockedCondaPackage, LockedPipPackage, PlatformLock
from envyard.builder.oci.model import EMPTY_JSON, MEDIA_TYPE_EMPTY, MEDIA_TYPE_MANIFEST, Descriptor, sha256_digest
from envyard.builder.oci.sbom import cyclonedx_document, sbom_referrer, spdx_document
from envyard.builder.oci.store import BlobStore

CF = "https://conda.anaconda.org/conda-forge"
CREATED = datetime(2024, 5, 1, 12, 30, 5, tzinfo=UTC)


def conda(name: str, version: str, build: str, *, ext: str = ".conda", channel: str = CF, **extra: Any):
    return LockedCondaPackage(
        name=name, version=version, build=build, build_number=0, subdir=extra.pop("subdir", "linux-64"),
        channel=channel, url=f"{channel}/linux-64/{name}-{version}-{build}{ext}",
        sha256=extra.pop("sha256", name.encode().hex().ljust(64, "0")[:64]),
        md5=extra.pop("md5", "0123456789abcdef0123456789abcdef"), **extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def lock() -> PlatformLock:
    return PlatformLock(
        "linux-64",
        conda=(
            conda("libzlib", "1.3.1", "hb9d3cd8_2", license="Zlib"),
            conda("numpy", "2.0.1", "py312h1103770_0", license="BSD-3-Clause",
                  depends=("python >=3.12,<3.13.0a0", "libzlib", "__glibc >=2.17")),
            conda("python", "3.12.4", "h194c7f8_0_cpython", license="Python-2.0", depends=("libzlib >=1.3.1,<2.0a0",)),
            conda("readline", "8.2", "h8228510_1", ext=".tar.bz2", license="GPL-3 or later", md5=None),
            conda("tk", "8.6.13", "noxft_h4845f30_101", license="TCL"),
            conda("ca-certificates", "2024.7.4", "hbcca054_0", license="ISC AND MPL-2.0", subdir="noarch"),
            conda("ruamel.yaml", "0.18.6", "py312h66e93f0_0", license="MIT"),
            conda("ruamel_yaml", "0.18.6", "py312h66e93f0_0", license="mit"),
            conda("localpkg", "1.0", "0", channel="http://127.0.0.1:8080/demo", license=None, sha256=None, md5=None),
        ),
        pip=(
            LockedPipPackage(
                name="Typing_Extensions", version="4.12.2",
                url="https://files.pythonhosted.org/packages/typing_extensions-4.12.2-py3-none-any.whl",
                sha256="04e5ca0351e0f3f85c6853954072df659d0d13fac324d0072316b67d7794700d",
            ),
            LockedPipPackage(
                name="envyard_demo", version="0.1.0+local", url="https://example.org/envyard_demo-0.1.0-py3-none-any.whl",
                sha256="ab" * 32,
                requires_dist=("typing-extensions>=4", "numpy>=1.26", "pytest; extra == 'test'", "not a requirement !"),
            ),
        ),
    )  # fmt: skip


def spdx(lock: PlatformLock, **kw: Any) -> bytes:
    args: dict[str, Any] = {"name": "demo-linux-64", "namespace_seed": "seed-1", "created": CREATED} | kw
    return spdx_document(lock, **args)


def cdx(lock: PlatformLock, **kw: Any) -> bytes:
    args: dict[str, Any] = {"name": "demo-linux-64", "namespace_seed": "seed-1", "created": CREATED} | kw
    return cyclonedx_document(lock, **args)


def spdx_packages(document: bytes) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in json.loads(document)["packages"]}


def purl_of(package: dict[str, Any]) -> str:
    (ref,) = [r for r in package["externalRefs"] if r["referenceType"] == "purl"]
    return str(ref["referenceLocator"])


# --- SPDX ---------------------------------------------------------------------------------------------------------


def test_spdx_document_passes_the_spdx_tools_validator(lock: PlatformLock, tmp_path: Path) -> None:
    from spdx_tools.spdx.parser.json.json_parser import parse_from_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    path = tmp_path / "sbom.spdx.json"
    path.write_bytes(spdx(lock))
    document = parse_from_file(str(path))
    messages = validate_full_spdx_document(document, spdx_version="SPDX-2.3")
    assert [m.validation_message for m in messages] == []
    assert len(document.packages) == 1 + len(lock.conda) + len(lock.pip)


def test_spdx_document_header(lock: PlatformLock) -> None:
    value = json.loads(spdx(lock))
    assert value["spdxVersion"] == "SPDX-2.3"
    assert value["dataLicense"] == "CC0-1.0"
    assert value["creationInfo"] == {"created": "2024-05-01T12:30:05Z", "creators": ["Tool: envyard"]}
    assert value["documentNamespace"].startswith("https://envyard.dev/spdx/demo-linux-64-")
    assert len(value["documentNamespace"].rsplit("-", 1)[1]) == 64


def test_spdx_conda_package_fields(lock: PlatformLock) -> None:
    numpy = spdx_packages(spdx(lock))["numpy"]
    assert numpy["SPDXID"] == "SPDXRef-conda-numpy-2.0.1-py312h1103770-0"
    assert numpy["versionInfo"] == "2.0.1"
    assert numpy["downloadLocation"] == f"{CF}/linux-64/numpy-2.0.1-py312h1103770_0.conda"
    assert numpy["licenseDeclared"] == numpy["licenseConcluded"] == "BSD-3-Clause"
    assert {c["algorithm"] for c in numpy["checksums"]} == {"SHA256", "MD5"}
    assert purl_of(numpy) == (
        "pkg:conda/numpy@2.0.1?build=py312h1103770_0&channel=https://conda.anaconda.org/conda-forge"
        "&subdir=linux-64&type=conda"
    )


def test_spdx_licenses_are_spdx_expressions_or_noassertion(lock: PlatformLock) -> None:
    packages = spdx_packages(spdx(lock))
    assert packages["ca-certificates"]["licenseDeclared"] == "ISC AND MPL-2.0"
    assert packages["ruamel_yaml"]["licenseDeclared"] == "MIT"  # "mit", normalized
    assert packages["tk"]["licenseDeclared"] == "TCL"
    assert packages["readline"]["licenseDeclared"] == "NOASSERTION"  # "GPL-3 or later" is no SPDX expression
    assert packages["localpkg"]["licenseConcluded"] == "NOASSERTION"
    assert packages["Typing_Extensions"]["licenseDeclared"] == "NOASSERTION"


def test_spdx_tar_bz2_purl_and_md5_only_when_known(lock: PlatformLock) -> None:
    readline = spdx_packages(spdx(lock))["readline"]
    assert purl_of(readline).endswith("&subdir=linux-64&type=tar.bz2")
    assert [c["algorithm"] for c in readline["checksums"]] == ["SHA256"]


def test_spdx_pip_purl_is_normalized(lock: PlatformLock) -> None:
    packages = spdx_packages(spdx(lock))
    assert purl_of(packages["Typing_Extensions"]) == "pkg:pypi/typing-extensions@4.12.2"
    assert purl_of(packages["envyard_demo"]) == "pkg:pypi/envyard-demo@0.1.0%2Blocal"
    assert packages["Typing_Extensions"]["SPDXID"] == "SPDXRef-pypi-typing-extensions-4.12.2"


def test_spdx_non_public_download_location_is_noassertion(lock: PlatformLock) -> None:
    package = spdx_packages(spdx(lock))["localpkg"]
    assert package["downloadLocation"] == "NOASSERTION"
    assert "checksums" not in package
    assert "channel=http://127.0.0.1:8080/demo" in purl_of(package)


def test_spdx_ids_are_unique_after_sanitizing(lock: PlatformLock) -> None:
    packages = spdx_packages(spdx(lock))
    ids = [p["SPDXID"] for p in packages.values()]
    assert len(ids) == len(set(ids))
    assert packages["ruamel.yaml"]["SPDXID"] == "SPDXRef-conda-ruamel.yaml-0.18.6-py312h66e93f0-0"
    assert packages["ruamel_yaml"]["SPDXID"].startswith("SPDXRef-conda-ruamel-yaml-0.18.6-py312h66e93f0-0")


def test_spdx_relationships(lock: PlatformLock) -> None:
    value = json.loads(spdx(lock))
    ids = {p["name"]: p["SPDXID"] for p in value["packages"]}
    relations = {(r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"]) for r in value["relationships"]}
    root = ids["demo-linux-64"]
    assert ("SPDXRef-DOCUMENT", "DESCRIBES", root) in relations
    assert {(root, "CONTAINS", i) for n, i in ids.items() if i != root} <= relations
    depends = {(a, b) for a, kind, b in relations if kind == "DEPENDS_ON"}
    assert depends == {
        (ids["numpy"], ids["python"]),
        (ids["numpy"], ids["libzlib"]),  # __glibc is not a package of the environment
        (ids["python"], ids["libzlib"]),
        (ids["envyard_demo"], ids["Typing_Extensions"]),
        (ids["envyard_demo"], ids["numpy"]),  # a pip requirement met by the conda package
    }


def test_spdx_packages_are_sorted_whatever_the_lock_order(lock: PlatformLock) -> None:
    shuffled = PlatformLock(lock.platform, conda=tuple(reversed(lock.conda)), pip=tuple(reversed(lock.pip)))
    assert spdx(shuffled) == spdx(lock)
    names = [p["name"] for p in json.loads(spdx(lock))["packages"][1:]]
    assert names[: len(lock.conda)] == sorted(p.name for p in lock.conda)


# --- CycloneDX ----------------------------------------------------------------------------------------------------


def test_cyclonedx_document_passes_the_schema(lock: PlatformLock) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(cdx(lock).decode())
    assert error is None, error


def test_cyclonedx_schema_validator_is_not_vacuous(lock: PlatformLock) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    broken = json.loads(cdx(lock))
    broken["components"][0]["hashes"] = [{"alg": "SHA-256", "content": "not hex"}]
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(broken)) is not None


def test_cyclonedx_components(lock: PlatformLock) -> None:
    value = json.loads(cdx(lock))
    assert value["bomFormat"] == "CycloneDX" and value["specVersion"] == "1.6"
    assert value["serialNumber"].startswith("urn:uuid:")
    assert value["metadata"]["timestamp"] == "2024-05-01T12:30:05Z"
    assert value["metadata"]["component"]["name"] == "demo-linux-64"
    components = {c["name"]: c for c in value["components"]}
    assert len(components) == len(lock.conda) + len(lock.pip)
    zlib = components["libzlib"]
    assert zlib["purl"] == zlib["bom-ref"]
    assert zlib["purl"].startswith("pkg:conda/libzlib@1.3.1?build=hb9d3cd8_2&channel=https://conda.anaconda.org/")
    assert zlib["licenses"] == [{"expression": "Zlib"}]
    assert {h["alg"] for h in zlib["hashes"]} == {"SHA-256", "MD5"}
    assert zlib["externalReferences"] == [
        {"type": "distribution", "url": f"{CF}/linux-64/libzlib-1.3.1-hb9d3cd8_2.conda"}
    ]
    assert "licenses" not in components["readline"]
    assert components["Typing_Extensions"]["purl"] == "pkg:pypi/typing-extensions@4.12.2"


def test_cyclonedx_dependencies(lock: PlatformLock) -> None:
    value = json.loads(cdx(lock))
    purls = {c["name"]: c["purl"] for c in value["components"]}
    graph = {d["ref"]: set(d["dependsOn"]) for d in value["dependencies"]}
    assert graph["environment"] == set(purls.values())
    assert graph[purls["numpy"]] == {purls["python"], purls["libzlib"]}
    assert graph[purls["envyard_demo"]] == {purls["numpy"], purls["Typing_Extensions"]}
    assert graph[purls["libzlib"]] == set()


# --- determinism --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("render", [spdx, cdx], ids=["spdx", "cyclonedx"])
def test_same_input_gives_same_bytes(lock: PlatformLock, render: Any) -> None:
    assert render(lock) == render(lock)


@pytest.mark.parametrize("render", [spdx, cdx], ids=["spdx", "cyclonedx"])
def test_another_created_time_changes_only_the_timestamp(lock: PlatformLock, render: Any) -> None:
    first = render(lock)
    later = render(lock, created=datetime(2025, 1, 2, 3, 4, 5, 999, tzinfo=UTC))
    assert first != later
    assert first.replace(b"2024-05-01T12:30:05Z", b"2025-01-02T03:04:05Z") == later


def test_naive_and_offset_times_are_written_in_utc(lock: PlatformLock) -> None:
    from datetime import timedelta, timezone

    plus_two = datetime(2024, 5, 1, 14, 30, 5, tzinfo=timezone(timedelta(hours=2)))
    assert spdx(lock, created=plus_two) == spdx(lock) == spdx(lock, created=CREATED.replace(tzinfo=None))


def test_seed_sets_namespace_and_serial(lock: PlatformLock) -> None:
    one, two = json.loads(spdx(lock)), json.loads(spdx(lock, namespace_seed="seed-2"))
    assert one["documentNamespace"] != two["documentNamespace"]
    assert json.loads(cdx(lock))["serialNumber"] != json.loads(cdx(lock, namespace_seed="seed-2"))["serialNumber"]
    assert json.loads(cdx(lock))["serialNumber"] == json.loads(cdx(lock, created=datetime(2030, 1, 1)))["serialNumber"]


def test_empty_environment(tmp_path: Path) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    empty = PlatformLock("linux-64")
    assert [p["SPDXID"] for p in json.loads(spdx(empty))["packages"]] == ["SPDXRef-environment"]
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(cdx(empty).decode()) is None


# --- referrer -----------------------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "store")


SUBJECT = Descriptor(MEDIA_TYPE_MANIFEST, "sha256:" + "1" * 64, 1234, annotations={"x": "y"},
                     platform={"os": "linux", "architecture": "amd64"})


@pytest.mark.parametrize(
    ("fmt", "artifact_type", "title"),
    [("spdx", "application/spdx+json", "sbom.spdx.json"), ("cyclonedx", "application/vnd.cyclonedx+json",
                                                             "sbom.cdx.json")],
)
def test_referrer_manifest_shape(lock: PlatformLock, store: BlobStore, fmt: Any, artifact_type: str,
                                 title: str) -> None:
    document = spdx(lock) if fmt == "spdx" else cdx(lock)
    referrer = sbom_referrer(store, SUBJECT, document, fmt)
    value = referrer.json()
    assert value["schemaVersion"] == 2
    assert value["mediaType"] == MEDIA_TYPE_MANIFEST
    assert value["artifactType"] == artifact_type
    assert value["config"] == {
        "mediaType": MEDIA_TYPE_EMPTY,
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        "size": 2,
        "data": base64.b64encode(EMPTY_JSON).decode(),
    }
    (layer,) = value["layers"]
    assert layer == {"mediaType": artifact_type, "digest": sha256_digest(document), "size": len(document),
                     "annotations": {"org.opencontainers.image.title": title}}
    assert value["subject"] == {"mediaType": MEDIA_TYPE_MANIFEST, "digest": SUBJECT.digest, "size": 1234}
    assert value["annotations"] == {"org.opencontainers.image.created": "2024-05-01T12:30:05Z"}
    assert store.read(layer["digest"]) == document
    assert store.read(value["config"]["digest"]) == b"{}"
    assert referrer.descriptor.media_type == MEDIA_TYPE_MANIFEST
    assert referrer.descriptor.artifact_type == artifact_type
    assert referrer.descriptor.digest == sha256_digest(referrer.data)
    assert [c.digest for c in referrer.children()] == [value["config"]["digest"], layer["digest"]]


def test_referrer_is_deterministic(lock: PlatformLock, tmp_path: Path) -> None:
    document = spdx(lock)
    one = sbom_referrer(BlobStore(tmp_path / "a"), SUBJECT, document, "spdx")
    two = sbom_referrer(BlobStore(tmp_path / "b"), SUBJECT, document, "spdx")
    assert one == two


def test_referrer_rejects_unknown_format_and_non_json(store: BlobStore) -> None:
    with pytest.raises(ImageError, match="unknown SBOM format"):
        sbom_referrer(store, SUBJECT, b"{}", "syft")  # type: ignore[arg-type]
    with pytest.raises(ImageError, match="not JSON"):
        sbom_referrer(store, SUBJECT, b"\x00not json", "spdx")
