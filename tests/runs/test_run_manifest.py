"""The run manifest model: committed schema equals the generated one; canonical bytes round-trip; secrets refused."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envyard.builder.data import DataPath, DataSnapshot
from envyard.builder.errors import ManifestError
from envyard.builder.run_manifest import (
    CodeRef,
    DataMount,
    EnvironmentRef,
    LockRef,
    OutputFile,
    Resources,
    RunManifest,
    load_manifest,
    manifest_schema,
    schema_text,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMA_FILE = REPO / "specs" / "run-manifest.schema.json"

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
hexes = st.text("0123456789abcdef", min_size=64, max_size=64)
commits = st.text("0123456789abcdef", min_size=40, max_size=40)
names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
rel_paths = st.lists(names, min_size=1, max_size=3).map("/".join)
abs_paths = rel_paths.map(lambda path: "/" + path)
env_names = st.from_regex(r"[A-Z][A-Z0-9_]{0,10}", fullmatch=True).filter(
    lambda name: not any(word in name for word in ("TOKEN", "SECRET", "PASS", "CREDENTIAL", "KEY", "AUTH"))
    and not name.startswith(("AWS", "AZURE", "GCP", "GOOGLE_APPLICATION", "ENVYARD_TOKEN", "DVC_REMOTE")))

data_paths = st.builds(
    DataPath, path=rel_paths, hash_name=st.just("md5"),
    hash=st.text("0123456789abcdef", min_size=32, max_size=32).flatmap(
        lambda value: st.sampled_from([value, value + ".dir"])),
    is_dir=st.booleans(), size=st.none() | st.integers(0, 2**40), nfiles=st.integers(0, 10**6))
snapshots = st.builds(DataSnapshot, repo=text, commit=commits, rev=text,
                      paths=st.lists(data_paths, min_size=1, max_size=3),
                      remote=st.none() | names, remote_url=st.none() | text)
environments = st.builds(
    EnvironmentRef, namespace=st.none() | names, name=st.none() | names,
    build_id=st.none() | st.integers(1, 10**9),
    lock=st.builds(LockRef, sha256=hexes, filename=st.none() | text, format=st.none() | names),
    images=st.dictionaries(names, hexes.map(lambda value: "sha256:" + value), max_size=2),
    image_refs=st.lists(text, max_size=2), prefix=st.none() | abs_paths)
manifests = st.builds(
    RunManifest, environment=environments,
    data=st.lists(st.builds(DataMount, snapshot=snapshots, snapshot_id=st.none() | names, mount=abs_paths),
                  max_size=2),
    code=st.none() | st.builds(CodeRef, repository=text, commit=commits, subdirectory=st.none() | text),
    command=st.lists(text, min_size=1, max_size=4), workdir=abs_paths,
    env=st.dictionaries(env_names, text, max_size=3),
    resources=st.builds(Resources, cpu=st.none() | st.sampled_from(["1", "500m", "2.5"]),
                        memory=st.none() | st.sampled_from(["4Gi", "512M", "1000"]), gpus=st.integers(0, 8)),
    outputs=st.lists(st.builds(OutputFile, path=rel_paths, sha256=hexes, size=st.integers(0, 2**40)),
                     max_size=3),
    parent=st.none() | hexes.map(lambda value: "sha256:" + value))


def test_committed_schema_is_the_generated_one():
    assert SCHEMA_FILE.read_text() == schema_text(), (
        "specs/run-manifest.schema.json is stale: regenerate it with "
        "python -c 'from envyard.builder.run_manifest import schema_text; print(schema_text(), end=\"\")'")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifests)
def test_manifests_round_trip_and_validate_against_the_schema(manifest: RunManifest):
    data = manifest.canonical_bytes()
    again = RunManifest.parse(data)
    assert again == manifest
    assert again.digest == manifest.digest == "sha256:" + __import__("hashlib").sha256(data).hexdigest()
    assert again.canonical_bytes() == data
    document = json.loads(data)
    assert document["apiVersion"] == "envyard.dev/run-manifest/v1" and document["kind"] == "RunManifest"
    jsonschema.validate(document, manifest_schema())
    assert list(document) == sorted(document)


def _minimal() -> RunManifest:
    return RunManifest(environment=EnvironmentRef(lock=LockRef(sha256="a" * 64)), command=["true"])


def test_canonical_bytes_are_compact_sorted_utf8():
    manifest = _minimal().model_copy(update={"env": {"GREETING": "grüß"}})
    data = manifest.canonical_bytes()
    assert data.startswith(b'{"apiVersion":"envyard.dev/run-manifest/v1","code":null,"command":["true"]')
    assert "grüß".encode() in data


@pytest.mark.parametrize("name", ["GITHUB_TOKEN", "AWS_REGION", "DB_PASSWORD", "MY_SECRET", "OPENAI_API_KEY",
                                  "aws_access_key_id"])
def test_secret_looking_variables_are_refused(name: str):
    document = json.loads(_minimal().canonical_bytes())
    document["env"] = {name: "x"}
    with pytest.raises(ManifestError) as caught:
        RunManifest.parse(json.dumps(document), source="run.json")
    assert caught.value.field == f"env.{name}" or caught.value.field == "env"
    assert "secret" in caught.value.message and caught.value.file == "run.json"


def test_invalid_documents_name_the_field(tmp_path: Path):
    document = json.loads(_minimal().canonical_bytes())
    document["environment"]["lock"]["sha256"] = "nothex"
    path = tmp_path / "run.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert caught.value.field == "environment.lock.sha256" and caught.value.file == str(path)
    document = json.loads(_minimal().canonical_bytes())
    document["workdir"] = "relative/dir"
    with pytest.raises(ManifestError, match="absolute"):
        RunManifest.parse(json.dumps(document))
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(tmp_path / "absent.json")


def test_result_points_at_its_input():
    manifest = _minimal()
    result = manifest.result([OutputFile(path="out/a.txt", sha256="b" * 64, size=3)])
    assert result.parent == manifest.digest and result.outputs[0].path == "out/a.txt"
    assert result.digest != manifest.digest and result.environment == manifest.environment
