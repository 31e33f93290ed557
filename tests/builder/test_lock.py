"""The lock orchestrator: specs from files -> closed, deterministic locks (real repodata, real channels)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from envyard.builder.channels import ChannelOptions, make_gateway
from envyard.builder.errors import LockfileError, MissingVirtualPackageError, PipResolutionError, SpecError, UsageError
from envyard.builder.lock import (
    INHERITABLE,
    LockOptions,
    check_lock,
    content_hash,
    inherit_options,
    lock_environment,
    provenance_of,
    stale_platforms,
    target_platforms,
)
from envyard.builder.model import LockProvenance, PlatformLock
from envyard.builder.records import check_closed
from envyard.builder.spec import parse_environment_yaml, read_spec

REPO = Path(__file__).resolve().parents[2]


def lock(spec_text: str, alias: str, gateway, **options):  # type: ignore[no-untyped-def]
    spec = parse_environment_yaml(spec_text, source="environment.yml")
    return asyncio.run(lock_environment(spec, LockOptions(channels=ChannelOptions(channel_alias=alias), **options),
                                        gateway))


def test_pangeo_ml_notebook_file_locks_with_cuda(shared_data, derived_alias, derived_gateway):
    spec = read_spec(shared_data / "envs" / "pangeo-data__pangeo-docker-images__ml-notebook_environment.yml")
    result = asyncio.run(lock_environment(
        spec, LockOptions(channels=ChannelOptions(channel_alias=derived_alias), cuda="12.4"), derived_gateway))
    plock = result.platforms["linux-64"]
    assert 290 <= len(plock.conda) <= 330
    assert plock.conda_by_name()["python"].version.startswith("3.12.")
    assert "__cuda=12.4=0" in plock.virtual_packages
    assert result.requested["linux-64"] == spec.conda_specs("linux-64")
    assert len(result.content_hash["linux-64"]) == 64
    assert result.channels == ("conda-forge",)


def test_cuda_from_spec_variables_like_conda_store(derived_alias, derived_gateway):
    text = """
channels: [conda-forge]
variables: {CONDA_OVERRIDE_CUDA: "12.4"}
dependencies: ["jaxlib >=0.4.31=cuda12*", "python 3.12.*"]
"""
    result = lock(text, derived_alias, derived_gateway)
    assert result.platforms["linux-64"].conda_by_name()["jaxlib"].build.startswith("cuda12")
    with pytest.raises(MissingVirtualPackageError):
        lock(text.replace("12.4", ""), derived_alias, derived_gateway)


def test_selectors_choose_per_platform(derived_alias, derived_gateway):
    text = """
channels: [conda-forge]
dependencies:
  - python 3.12.*
  - libgcc  # [linux]
  - ucrt  # [win]
platforms: [linux-64, win-64]
"""
    result = lock(text, derived_alias, derived_gateway)
    assert target_platforms(parse_environment_yaml(text), LockOptions()) == ("linux-64", "win-64")
    assert "libgcc" in result.platforms["linux-64"].conda_by_name()
    assert "ucrt" in result.platforms["win-64"].conda_by_name()
    assert "libgcc" not in result.platforms["win-64"].conda_by_name()


def test_lock_is_independent_of_cache_directory_and_mtimes(shared_data, tmp_path: Path):
    import os
    import shutil

    copy = tmp_path / "mirror" / "conda-forge"
    shutil.copytree(shared_data / "repodata" / "derived-from-lockfiles" / "conda-forge", copy)
    text = "channels: [conda-forge]\ndependencies: [pandas, python 3.12.*]\nplatforms: [linux-64, osx-arm64]\n"
    first = lock(text, (tmp_path / "mirror").as_uri() + "/", make_gateway(tmp_path / "c1", ChannelOptions()))
    for f in copy.rglob("repodata.json"):
        os.utime(f, (1_000_000_000, 1_000_000_000))
    second = lock(text, (tmp_path / "mirror").as_uri() + "/", make_gateway(tmp_path / "c2", ChannelOptions()))
    assert first == second


def test_content_hash_tracks_inputs_and_check_needs_no_solve(derived_alias, derived_gateway):
    text = "channels: [conda-forge]\ndependencies: [numpy, python 3.12.*]\n"
    spec = parse_environment_yaml(text)
    result = lock(text, derived_alias, derived_gateway)
    options = LockOptions(channels=ChannelOptions(channel_alias="file:///nonexistent/"))
    assert stale_platforms(spec, options, result) == []
    changed = parse_environment_yaml(text.replace("numpy", "numpy >=2"))
    assert stale_platforms(changed, options, result) == ["linux-64"]
    assert stale_platforms(spec, LockOptions(cuda="12.4"), result) == ["linux-64"]
    assert stale_platforms(spec, LockOptions(platforms=("linux-64", "osx-arm64")), result) == ["osx-arm64"]
    assert content_hash(spec, "linux-64", LockOptions()) == content_hash(spec, "linux-64", options)


def test_every_lock_is_closed_and_meets_the_request(derived_alias, derived_gateway):
    result = lock("channels: [conda-forge]\ndependencies: [scikit-learn, python 3.12.*]\n", derived_alias,
                  derived_gateway)
    plock = result.platforms["linux-64"]
    check_closed(plock, result.requested["linux-64"])
    without_numpy = PlatformLock("linux-64", tuple(p for p in plock.conda if p.name != "numpy"))
    with pytest.raises(LockfileError, match="numpy"):
        check_closed(without_numpy)
    with pytest.raises(LockfileError, match="scikit-learn >=99"):
        check_closed(plock, ["scikit-learn >=99"])


def test_spec_without_channels_is_refused(derived_alias, derived_gateway):
    with pytest.raises(SpecError, match="no channel") as info:
        lock("dependencies: [numpy]\n", derived_alias, derived_gateway)
    assert info.value.field == "channels"


def test_unknown_platform_is_refused(derived_alias, derived_gateway):
    with pytest.raises(SpecError, match="unknown platform"):
        lock("channels: [conda-forge]\ndependencies: [numpy]\n", derived_alias, derived_gateway,
             platforms=("linux-65",))


def test_pip_section_resolves_in_the_same_lock(derived_alias, derived_gateway, tmp_path: Path):
    from tests.wheelhouse import build_wheel

    wheels = tmp_path / "wheels"
    build_wheel(wheels, "tinyplot", "1.0", requires=["numpy>=1.20"])
    build_wheel(wheels, "tinyplot", "2.0", requires=["numpy>=1.20", "smallutil"])
    build_wheel(wheels, "smallutil", "0.3")
    text = """
channels: [conda-forge]
dependencies:
  - python 3.12.*
  - numpy
  - pip
  - pip:
    - tinyplot
    - numpy
"""
    result = lock(text, derived_alias, derived_gateway, pip_find_links=(str(wheels),), pip_no_index=True)
    pip = {p.normalized_name: p for p in result.platforms["linux-64"].pip}
    assert set(pip) == {"tinyplot", "smallutil"}
    assert pip["tinyplot"].version == "2.0"
    assert all(p.sha256 and p.url.startswith("file://") for p in pip.values())
    assert result.requested_pip["linux-64"] == ("tinyplot", "numpy")


def test_pip_section_without_python_is_a_clear_error(derived_alias, derived_gateway):
    with pytest.raises(PipResolutionError, match="no python"):
        lock("channels: [conda-forge]\ndependencies: [zlib, {pip: [requests]}]\n", derived_alias, derived_gateway)


# --- locks remember how they were made; relocks change as little as possible ------------------------------


def test_relock_keeps_versions_that_still_fit_and_update_frees_them(derived_alias, derived_gateway):
    """Adding pandas does not move numpy 2.2.6 (rattler's locked_packages); --update numpy / --update-all do."""
    options = LockOptions(channels=ChannelOptions(channel_alias=derived_alias))
    first = lock("channels: [conda-forge]\ndependencies: [python 3.12.*, numpy 2.2.*]\n", derived_alias,
                 derived_gateway)
    assert first.platforms["linux-64"].conda_by_name()["numpy"].version == "2.2.6"
    grown = parse_environment_yaml("channels: [conda-forge]\ndependencies: [python 3.12.*, numpy, pandas]\n")
    kept = asyncio.run(lock_environment(grown, options, derived_gateway, previous=first)).platforms["linux-64"]
    before = first.platforms["linux-64"].conda_by_name()
    assert kept.conda_by_name()["numpy"].version == "2.2.6"
    assert {n: p.version for n, p in kept.conda_by_name().items() if n in before} == {
        n: p.version for n, p in before.items()}  # nothing already locked moved
    freed = asyncio.run(lock_environment(grown, replace(options, update=("numpy",)), derived_gateway,
                                         previous=first)).platforms["linux-64"].conda_by_name()
    fresh = asyncio.run(lock_environment(grown, options, derived_gateway)).platforms["linux-64"].conda_by_name()
    assert freed["numpy"].version == fresh["numpy"].version != "2.2.6"
    everything = asyncio.run(lock_environment(grown, replace(options, update_all=True), derived_gateway,
                                              previous=first)).platforms["linux-64"].conda_by_name()
    assert {n: p.url for n, p in everything.items()} == {n: p.url for n, p in fresh.items()}


def test_update_of_an_unknown_name_and_update_with_update_all_are_usage_errors(derived_alias, derived_gateway):
    first = lock("channels: [conda-forge]\ndependencies: [python 3.12.*]\n", derived_alias, derived_gateway)
    spec = parse_environment_yaml("channels: [conda-forge]\ndependencies: [python 3.12.*]\n")
    options = LockOptions(channels=ChannelOptions(channel_alias=derived_alias))
    with pytest.raises(UsageError, match="nunpy") as info:
        asyncio.run(lock_environment(spec, replace(options, update=("nunpy",)), derived_gateway, previous=first))
    assert info.value.exit_code == 64
    with pytest.raises(UsageError, match="exclude each other"):
        asyncio.run(lock_environment(spec, replace(options, update=("python",), update_all=True), derived_gateway,
                                     previous=first))


def test_lock_records_its_options_and_every_format_keeps_them(derived_alias, derived_gateway, tmp_path: Path):
    from envyard.builder.lockfiles import read_lockfile, write_lock_files

    result = lock("channels: [conda-forge]\ndependencies: [python 3.12.*]\n", derived_alias, derived_gateway,
                  platforms=("linux-64", "osx-arm64"), cuda="12.4", virtual_packages={"__glibc": "2.34"},
                  exclude_newer=datetime(2026, 3, 1, tzinfo=UTC), strategy="lowest-direct",
                  channel_priority="disabled")
    made = result.provenance
    assert made == LockProvenance(
        platforms=("linux-64", "osx-arm64"), channel_alias=derived_alias, cuda="12.4",
        virtual_packages={"__glibc": "2.34"}, exclude_newer="2026-03-01T00:00:00+00:00", strategy="lowest-direct",
        channel_priority="disabled")
    write_lock_files(result, tmp_path)
    assert read_lockfile(tmp_path / "conda-lock.yml").provenance == made
    assert read_lockfile(tmp_path / "conda-osx-arm64.lock").provenance == made
    assert "# envyard.option.cuda: 12.4" in (tmp_path / "conda-linux-64.lock").read_text()
    assert "envyard.option.platforms: '[\"linux-64\",\"osx-arm64\"]'" in (tmp_path / "conda-lock.yml").read_text()


def test_check_and_relock_inherit_recorded_options_unless_given(derived_alias, derived_gateway):
    text = "channels: [conda-forge]\ndependencies: [python 3.12.*]\n"
    spec = parse_environment_yaml(text)
    made = lock(text, derived_alias, derived_gateway, platforms=("linux-64", "osx-arm64"), cuda="12.4")
    plain = LockOptions(inherit=INHERITABLE)  # nothing given on the command line
    assert check_lock(spec, plain, made).status == "stale"  # without the record: osx-arm64 extra, cuda differs
    inherited = inherit_options(plain, made.provenance)
    assert (inherited.platforms, inherited.cuda) == (("linux-64", "osx-arm64"), "12.4")
    assert inherited.channels.channel_alias == derived_alias
    assert check_lock(spec, inherited, made).status == "fresh"
    given = inherit_options(replace(plain, cuda="12.6", inherit=INHERITABLE - {"cuda"}), made.provenance)
    assert given.cuda == "12.6" and check_lock(spec, given, made).stale == ("linux-64",)  # no __cuda on macOS
    one = inherit_options(replace(plain, platforms=("linux-64",), inherit=INHERITABLE - {"platforms"}),
                          made.provenance)
    assert check_lock(spec, one, made).extra == ("osx-arm64",)
    missing = check_lock(spec, inherited, None)
    assert missing.status == "missing" and missing.missing == ("linux-64", "osx-arm64")
    assert inherit_options(LockOptions(), made.provenance) == LockOptions()  # worker/bench: nothing inherited


def test_credentials_are_never_recorded():
    options = LockOptions(
        channels=ChannelOptions(channel_alias="https://user:secret@mirror.example.org/conda/",
                                mirrors={"https://conda.anaconda.org/": ["https://mirror.example.org/t/tok-123/"]}),
        pip_index_url="https://__token__:pypi-abc@pypi.example.org/simple")
    made = provenance_of(options)
    assert made.channel_alias is None and made.mirrors == {} and made.pip_index_url is None
    assert "secret" not in repr(made.to_metadata()) and "tok-123" not in repr(made.to_metadata())


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO.parent / "shared" / "data" / "locks" / "conda-lock")
                                        .glob("*.y*ml")) or ["absent"])
def test_metadata_only_read_agrees_with_the_whole_file(shared_data: Path, name: str):
    """``--check`` reads a conda-lock.yml's head only: same platforms, hashes and channels as a full read."""
    from envyard.builder.lockfiles import read_lockfile
    from envyard.builder.pipeline import read_lock_head

    path = shared_data / "locks" / "conda-lock" / name
    head, whole = read_lock_head(path), read_lockfile(path)
    assert head.platform_names == whole.platform_names
    assert (head.content_hash, head.channels, head.provenance) == (whole.content_hash, whole.channels,
                                                                  whole.provenance)


def test_relock_over_an_unreadable_lock_warns_and_replaces_it(derived_alias, derived_gateway, tmp_path: Path):
    from envyard.builder.pipeline import lock_to_directory

    spec = tmp_path / "environment.yml"
    spec.write_text("channels: [conda-forge]\ndependencies: [python 3.12.*]\n")
    out = tmp_path / "locks"
    out.mkdir()
    (out / "conda-lock.yml").write_text("version: 1\nmetadata: [not, a, mapping\n")
    (out / "conda-win-64.lock").write_text("# Generated by envyard.\n# platform: win-64\n@EXPLICIT\n")
    (out / "conda-osx-64.lock").write_text("# written by hand\n@EXPLICIT\n")
    result = lock_to_directory(spec, out, LockOptions(channels=ChannelOptions(channel_alias=derived_alias)),
                               cache_dir=tmp_path, gateway=derived_gateway)
    assert len(result.warnings) == 1 and "cannot be read" in result.warnings[0]
    assert result.removed == (out / "conda-win-64.lock",)  # envyard's leftover goes, a hand-written file stays
    assert (out / "conda-osx-64.lock").exists()
    assert "python" in result.lock.platforms["linux-64"].conda_by_name()


def _channel(root: Path, packages: dict[str, tuple[str, list[str]]]) -> None:
    """A noarch channel (repodata only) of ``file name -> (version, depends)``."""
    records = {fn: {"name": fn.rsplit("-", 2)[0], "version": version, "build": "0", "build_number": 0,
                    "depends": depends, "subdir": "noarch", "md5": "0" * 32, "sha256": "1" * 64}
               for fn, (version, depends) in packages.items()}
    for subdir, content in (("noarch", records), ("linux-64", {})):
        (root / subdir).mkdir(parents=True, exist_ok=True)
        (root / subdir / "repodata.json").write_text(json.dumps({"info": {"subdir": subdir}, "packages": content}))


def test_relock_of_an_unchanged_spec_keeps_the_lock_until_the_channel_invalidates_it(tmp_path: Path):
    """Unchanged inputs: the previous solution stands (a newer c appears and is not taken); once a locked record
    is gone, or its channel's record now needs something else, the spec is solved again."""
    from envyard.builder.lockfiles import read_lockfile
    from envyard.builder.pipeline import lock_to_directory

    channel = tmp_path / "chan"
    spec = tmp_path / "environment.yml"
    spec.write_text(f"channels: [{channel.as_uri()}]\ndependencies: [a]\n")

    def relock() -> dict[str, str]:
        gateway = make_gateway(tmp_path / f"cache{len(list(tmp_path.glob('cache*')))}", ChannelOptions())
        result = lock_to_directory(spec, tmp_path / "out", LockOptions(), cache_dir=tmp_path, gateway=gateway)
        written = read_lockfile(tmp_path / "out" / "conda-lock.yml").platforms["linux-64"].conda
        assert [(p.name, p.version) for p in written] == [(p.name, p.version) for p in
                                                           result.lock.platforms["linux-64"].conda]
        return {p.name: p.version for p in result.lock.platforms["linux-64"].conda}

    _channel(channel, {"a-1.0-0.tar.bz2": ("1.0", ["c"]), "c-1.0-0.tar.bz2": ("1.0", [])})
    assert relock() == {"a": "1.0", "c": "1.0"}
    _channel(channel, {"a-1.0-0.tar.bz2": ("1.0", ["c"]), "c-1.0-0.tar.bz2": ("1.0", []),
                       "c-1.1-0.tar.bz2": ("1.1", [])})
    assert relock() == {"a": "1.0", "c": "1.0"}  # nothing asked for c 1.1
    _channel(channel, {"a-1.0-0.tar.bz2": ("1.0", ["c >=1.1"]), "c-1.0-0.tar.bz2": ("1.0", []),
                       "c-1.1-0.tar.bz2": ("1.1", [])})
    assert relock() == {"a": "1.0", "c": "1.1"}  # a's record was patched: the old solution no longer holds
    _channel(channel, {"a-1.0-0.tar.bz2": ("1.0", ["c"]), "c-1.2-0.tar.bz2": ("1.2", [])})
    assert relock() == {"a": "1.0", "c": "1.2"}  # the locked c is gone from the channel
