"""The solve stage against real conda-forge repodata (../shared/data/repodata)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from envyard.builder.channels import ChannelOptions, channel_url, make_gateway, qualify_spec
from envyard.builder.errors import ChannelError, MissingPackagesError, MissingVirtualPackageError, SolveError
from envyard.builder.model import LockedCondaPackage
from envyard.builder.solve import SolveRequest, solve_platform, solve_platforms, to_locked_package
from envyard.builder.virtual_packages import virtual_packages_for

ML_NOTEBOOK = (
    "cuda-version>=12.6",
    "flax>=0.10.2",
    "jax",
    "jaxlib>=0.4.31=cuda12*",
    "jupyterlab-nvdashboard",
    "keras-cv",
    "tensorflow>=2.17.0=cuda12*",
)
DATA_SCIENCE = ("python 3.12.*", "numpy", "pandas", "scipy", "scikit-learn", "matplotlib")


def request(alias: str, specs: tuple[str, ...], platform: str = "linux-64", **kw: object) -> SolveRequest:
    options = ChannelOptions(channel_alias=alias)
    cuda = kw.pop("cuda", None)
    return SolveRequest(
        platform=platform,
        specs=tuple(qualify_spec(s, options) for s in specs),
        channels=(channel_url("conda-forge", options),),
        virtual_packages=virtual_packages_for(platform, cuda=cuda),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def test_ml_notebook_with_cuda_gives_about_310_packages_with_python_312(derived_alias, derived_gateway):
    packages = asyncio.run(solve_platform(request(derived_alias, ML_NOTEBOOK, cuda="12.4"), derived_gateway))
    by_name = {p.name: p for p in packages}
    assert 290 <= len(packages) <= 330
    assert by_name["python"].version.startswith("3.12.")
    assert by_name["jaxlib"].build.startswith("cuda12")
    assert by_name["tensorflow"].build.startswith("cuda12")
    assert [p.name for p in packages] == sorted(p.name for p in packages)
    assert all(p.sha256 and len(p.sha256) == 64 for p in packages)
    assert all(p.url.endswith((".conda", ".tar.bz2")) for p in packages)


def test_ml_notebook_without_cuda_names_the_virtual_package_and_the_flag(derived_alias, derived_gateway):
    with pytest.raises(MissingVirtualPackageError) as info:
        asyncio.run(solve_platform(request(derived_alias, ML_NOTEBOOK), derived_gateway))
    err = info.value
    assert "__cuda" in err.message
    assert "--cuda" in (err.hint or "") and "CONDA_OVERRIDE_CUDA" in (err.hint or "")
    assert err.details["virtual_package"] == "__cuda"
    assert any("tensorflow" in s or "jaxlib" in s for s in err.details["specs"])


def test_missing_archspec_is_reported_as_virtual_package(derived_alias, derived_gateway):
    req = request(derived_alias, ("tensorflow>=2.17.0=cuda12*",), cuda="12.4")
    req = SolveRequest(**{**{f: getattr(req, f) for f in req.__slots__},  # type: ignore[attr-defined]
                          "virtual_packages": tuple(v for v in req.virtual_packages if v.name != "__archspec")})
    with pytest.raises(MissingVirtualPackageError) as info:
        asyncio.run(solve_platform(req, derived_gateway))
    assert info.value.details["virtual_package"] == "__archspec"


def test_nonexistent_package_is_one_clear_error(derived_alias, derived_gateway):
    with pytest.raises(SolveError) as info:
        asyncio.run(solve_platform(
            request(derived_alias, ("python 3.12.*", "invalidpackagenamefaasdfagksdjfhgaskdf ==3.1")), derived_gateway))
    err = info.value
    assert not isinstance(err, MissingVirtualPackageError)
    assert "invalidpackagenamefaasdfagksdjfhgaskdf" in err.message
    assert err.details["specs"] == ["invalidpackagenamefaasdfagksdjfhgaskdf ==3.1"]
    assert err.exit_code == 1 and "\n" not in err.one_line()


def test_conflicting_pins_name_the_users_specs(derived_alias, derived_gateway):
    with pytest.raises(SolveError) as info:
        asyncio.run(solve_platform(request(derived_alias, ("python 3.10.*", "numpy >=2.3")), derived_gateway))
    assert set(info.value.details["specs"]) == {"python 3.10.*", "numpy >=2.3"}
    assert "python" in info.value.message and "numpy" in info.value.message


def test_sudoku_known_unsolvable_specs_fail(shared_data: Path, tmp_path: Path):
    specs = tuple(
        s.replace("==", " ==") for s in
        (shared_data / "repodata" / "sudoku" / "KNOWN_UNSOLVABLE_SPECS.txt").read_text().strip().split(",")
    )
    gateway = make_gateway(tmp_path, ChannelOptions())
    req = SolveRequest("linux-64", specs, ((shared_data / "repodata" / "sudoku").as_uri(),), ())
    with pytest.raises(SolveError):
        asyncio.run(solve_platform(req, gateway))


def test_four_platforms_solve_concurrently_with_their_own_virtual_packages(derived_alias, derived_gateway):
    platforms = ("linux-64", "linux-aarch64", "osx-arm64", "win-64")
    solved = asyncio.run(solve_platforms([request(derived_alias, DATA_SCIENCE, p) for p in platforms], derived_gateway))
    assert list(solved) == list(platforms)
    for platform, packages in solved.items():
        names = {p.name for p in packages}
        assert {"python", "numpy", "pandas", "scipy", "scikit-learn", "matplotlib"} <= names
        assert {p.subdir for p in packages} <= {platform, "noarch"}
    assert "libgcc" in {p.name for p in solved["linux-64"]}
    assert "ucrt" in {p.name for p in solved["win-64"]} or "vc" in {p.name for p in solved["win-64"]}


def test_exclude_newer_solves_as_of_a_date(derived_alias, derived_gateway):
    latest = asyncio.run(solve_platform(request(derived_alias, ("numpy",)), derived_gateway))
    older = asyncio.run(solve_platform(
        request(derived_alias, ("numpy",), exclude_newer=datetime(2026, 3, 1, tzinfo=UTC)), derived_gateway))
    version = {p.name: p.version for p in latest}["numpy"]
    old_version = {p.name: p.version for p in older}["numpy"]
    assert tuple(map(int, old_version.split(".")[:2])) < tuple(map(int, version.split(".")[:2]))
    assert all(p.timestamp is None or p.timestamp <= 1772323200000 for p in older)


def test_lowest_strategy_picks_lowest_versions(derived_alias, derived_gateway):
    high = asyncio.run(solve_platform(request(derived_alias, ("python >=3.10",)), derived_gateway))
    low = asyncio.run(solve_platform(request(derived_alias, ("python >=3.10",), strategy="lowest"), derived_gateway))
    assert {p.name: p.version for p in low}["python"].startswith("3.10.")
    assert not {p.name: p.version for p in high}["python"].startswith("3.10.")


def test_channel_qualified_spec_resolves_against_the_alias(derived_alias, derived_gateway):
    packages = asyncio.run(solve_platform(request(derived_alias, ("conda-forge::numpy", "python 3.12.*")),
                                          derived_gateway))
    numpy = {p.name: p for p in packages}["numpy"]
    assert numpy.channel == derived_alias + "conda-forge"


def test_glibc_too_old_names_glibc(derived_alias, derived_gateway):
    req = request(derived_alias, ("python 3.12.*",))
    vps = virtual_packages_for("linux-64", overrides={"__glibc": "2.12"})
    req = SolveRequest(req.platform, req.specs, req.channels, vps)
    with pytest.raises(MissingVirtualPackageError) as info:
        asyncio.run(solve_platform(req, derived_gateway))
    assert info.value.details["virtual_package"] == "__glibc"
    assert "__glibc" in (info.value.hint or "")


def test_missing_channel_is_a_channel_error(tmp_path: Path):
    gateway = make_gateway(tmp_path / "cache", ChannelOptions())
    req = SolveRequest("linux-64", ("python",), ((tmp_path / "nowhere").as_uri(),), ())
    with pytest.raises(ChannelError) as info:
        asyncio.run(solve_platform(req, gateway))
    assert "repodata" in info.value.message and info.value.hint


def test_unreachable_channel_names_the_url_that_failed(tmp_path: Path):
    from tests.servers import free_port

    channel = f"http://127.0.0.1:{free_port()}/conda/team"  # nothing listens there
    gateway = make_gateway(tmp_path / "cache", ChannelOptions())
    req = SolveRequest("linux-64", ("python",), (channel,), ())
    with pytest.raises(ChannelError) as info:
        asyncio.run(solve_platform(req, gateway))
    err = info.value
    assert err.message.startswith(f"linux-64: cannot load repodata from {channel}/"), err.message
    assert err.details["url"].startswith(f"{channel}/") and "refused" in err.message.lower()


def test_channel_names_and_urls():
    options = ChannelOptions(channel_alias="https://mirror.internal/conda/")
    assert channel_url("conda-forge", options) == "https://mirror.internal/conda/conda-forge"
    assert channel_url("nvidia/label/cuda-12.4.0", options) == "https://mirror.internal/conda/nvidia/label/cuda-12.4.0"
    assert channel_url("s3://bucket/channel/", options) == "s3://bucket/channel"
    assert channel_url("/srv/channel", options) == "file:///srv/channel"
    with pytest.raises(ChannelError):
        channel_url("not a channel!", options)


# --- every problem at once ------------------------------------------------------------------------------


def test_every_spec_without_candidates_is_reported_in_one_run(derived_alias, derived_gateway):
    specs = ("python 3.12.*", "numpy ==1.19", "nosuchpkg", "pandsa", "scipy >=99")
    with pytest.raises(MissingPackagesError) as info:
        asyncio.run(solve_platform(request(derived_alias, specs), derived_gateway))
    err = info.value
    assert err.details["specs"] == ["numpy ==1.19", "nosuchpkg", "pandsa", "scipy >=99"]
    assert err.details["channels"] == [derived_alias + "conda-forge"]
    assert derived_alias + "conda-forge" in err.message
    missing = {m["spec"]: m for m in err.details["missing"]}
    assert missing["numpy ==1.19"]["available"][0] == "1.24.4"
    assert all(v.startswith(("1.", "2.")) for v in missing["scipy >=99"]["available"])
    assert missing["pandsa"]["did_you_mean"] == ["pandas"]
    assert missing["nosuchpkg"]["did_you_mean"] == []
    lines = err.explanation_lines()
    assert len(lines) == 4 and "nearest available: 1.24.4" in lines[0] and "did you mean pandas?" in lines[2]
    assert "relax the pins" in (err.hint or "")


def test_missing_names_without_pins_get_no_pin_hint(derived_alias, derived_gateway):
    with pytest.raises(MissingPackagesError) as info:
        asyncio.run(solve_platform(request(derived_alias, ("python 3.12.*", "nosuchpkg")), derived_gateway))
    assert "pin" not in (info.value.hint or "")
    assert info.value.explanation is None  # nothing to add to the one line


def test_conflict_is_the_solvers_tree_and_the_pin_hint_only_with_pins(derived_alias, derived_gateway, tmp_path):
    with pytest.raises(SolveError) as info:
        asyncio.run(solve_platform(request(derived_alias, ("python 3.10.*", "numpy >=2.3")), derived_gateway))
    err = info.value
    lines = err.explanation_lines()
    assert len(lines) > 5 and lines[0].strip() == "The following packages are incompatible"
    assert any(line.lstrip().startswith(("├─", "└─")) for line in lines)
    assert "\n" not in err.one_line() and "relax or remove one of the pins" in (err.hint or "")
    assert err.to_problem()["explanation"].startswith("The following packages are incompatible\n")

    channel = tmp_path / "clash"  # a and b need different c; neither is pinned by the user
    records = {"a": ("1.0", ["c <2"]), "b": ("1.0", ["c >=2"]), "c": ("1.0", []), "c2": ("2.0", [])}
    packages = {}
    for key, (version, depends) in records.items():
        name = "c" if key.startswith("c") else key
        packages[f"{name}-{version}-0.tar.bz2"] = {"name": name, "version": version, "build": "0", "build_number": 0,
                                                   "depends": depends, "subdir": "noarch"}
    for subdir, content in (("noarch", packages), ("linux-64", {})):
        (channel / subdir).mkdir(parents=True)
        (channel / subdir / "repodata.json").write_text(json.dumps({"info": {"subdir": subdir},
                                                                    "packages": content}))
    req = SolveRequest("linux-64", ("a", "b"), (channel.as_uri(),), ())
    with pytest.raises(SolveError) as info:
        asyncio.run(solve_platform(req, make_gateway(tmp_path / "cache", ChannelOptions())))
    assert "pin" not in (info.value.hint or "")
    assert "cannot be installed together" in (info.value.hint or "")
    assert info.value.details["specs"] == ["a", "b"]


def test_every_failing_platform_is_reported(derived_alias, derived_gateway):
    platforms = ("osx-arm64", "win-64", "linux-64")
    specs = ("python 3.12.*", "ucrt", "numpy ==1.19")
    with pytest.raises(MissingPackagesError) as info:
        asyncio.run(solve_platforms([request(derived_alias, specs, p) for p in platforms], derived_gateway))
    err = info.value
    assert err.message.startswith("3 of 3 platforms cannot be solved: osx-arm64, win-64, linux-64")
    assert set(err.details["platforms"]) == set(platforms)
    assert err.details["platforms"]["win-64"]["details"]["specs"] == ["numpy ==1.19"]  # ucrt exists there
    text = "\n".join(err.explanation_lines())
    assert text.count("'ucrt': no package of that name") == 2 and text.count("'numpy ==1.19'") == 5
    # one platform failing of several: that platform's own error, the others solved
    with pytest.raises(MissingPackagesError) as one:
        asyncio.run(solve_platforms([request(derived_alias, ("python 3.12.*", "ucrt"), p)
                                     for p in ("win-64", "linux-64")], derived_gateway))
    assert one.value.message.startswith("linux-64: no solution for 'ucrt': no candidates in ")
    assert one.value.message.endswith("(linux-64, noarch); no package of that name")


def _by_attributes(record) -> LockedCondaPackage:  # type: ignore[no-untyped-def]
    """The conversion field by field through py-rattler's attributes (the reference for the JSON one)."""
    noarch, stamp = record.noarch, record.timestamp
    return LockedCondaPackage(
        name=record.name.source, version=str(record.version), build=str(record.build),
        build_number=int(record.build_number), subdir=str(record.subdir), channel=str(record.channel).rstrip("/"),
        url=str(record.url), sha256=record.sha256.hex() if record.sha256 else None,
        md5=record.md5.hex() if record.md5 else None, depends=tuple(record.depends),
        constrains=tuple(record.constrains), size=record.size,
        timestamp=None if stamp is None else int(stamp.timestamp() * 1000),
        noarch=None if not noarch or noarch.none else ("python" if noarch.python else "generic"),
        license=record.license, track_features=tuple(record.track_features))


@pytest.mark.parametrize("channel", ["derived-from-lockfiles/conda-forge", "conda-tests-index4"])
def test_record_conversion_equals_reading_every_attribute(shared_data: Path, tmp_path: Path, channel: str):
    """Every record of a modern (timestamps in ms) and a 2018 channel (in seconds) converts identically."""
    url = (shared_data / "repodata" / channel).as_uri()
    gateway = make_gateway(tmp_path, ChannelOptions())

    async def records() -> list:  # type: ignore[type-arg]
        subdirs = ["linux-64", "noarch"]
        names = [n.normalized for n in await gateway.names([url], subdirs)]
        return [r for rs in await gateway.query([url], subdirs, names, recursive=False) for r in rs]

    converted = asyncio.run(records())
    assert len(converted) > 3000
    assert [to_locked_package(r) for r in converted] == [_by_attributes(r) for r in converted]
