"""builder.policy on its own: the merge of three levels, every kind of violation of a spec, a lock's denied and
floored packages with their dependency paths, and policy files that cannot be read."""

from __future__ import annotations

import pytest

from envyard.builder.errors import SpecError
from envyard.builder.model import EnvironmentLock, LockedCondaPackage, PlatformLock
from envyard.builder.policy import (
    Denied,
    Policy,
    PolicyViolationError,
    check_installed_size,
    check_lock,
    evaluate,
    merge,
    parse_policy,
    with_required,
)
from envyard.builder.spec import parse_environment_yaml


def test_nearer_levels_only_narrow_what_farther_ones_allow() -> None:
    global_ = Policy(allowed_channels=["e2e", "https://mirror.example/*"], channel_alias="https://mirror.example/",
                     allowed_platforms=["linux-64", "linux-aarch64"], max_installed_bytes=1000,
                     deny=[Denied(name="telnet", reason="cleartext")], floors={"openssl": "3.0"})
    namespace = Policy(allowed_channels=["e2e", "conda-forge"], channel_alias="https://other.example/",
                       allowed_platforms=["linux-64", "win-64"], max_installed_bytes=5000,
                       build_time_limit_seconds=60, floors={"openssl": "3.2", "zlib": "1.3"},
                       deny=[Denied(name="telnet", reason="ignored: the global reason stays")])
    environment = Policy(required=["ipykernel"], build_time_limit_seconds=600, max_installed_bytes=500)
    merged = merge([global_, namespace, environment])
    assert merged.allowed_channels == ["e2e"]  # conda-forge is not allowed globally
    assert merged.channel_alias == "https://mirror.example/"  # the admin's forced mirror stays
    assert merged.allowed_platforms == ["linux-64"]
    assert merged.max_installed_bytes == 500 and merged.build_time_limit_seconds == 60
    assert merged.floors == {"openssl": "3.2", "zlib": "1.3"}
    assert merged.denied() == {"telnet": "cleartext"}
    assert merged.required == ["ipykernel"]
    assert merge([]) == Policy()


def test_every_violation_of_a_spec_is_listed_with_a_fix() -> None:
    spec = parse_environment_yaml(
        "channels: [conda-forge, e2e]\n"
        "dependencies:\n  - telnet\n  - openssl 1.1.1\n  - zlib >=1.2,<1.3\n  - numpy >=1\n"
        "  - pip:\n    - Bad_Package==1.0\n", source="environment.yml")
    policy = Policy(allowed_channels=["e2e"], allowed_platforms=["linux-64"],
                    deny=[Denied(name="telnet", reason="cleartext"), Denied(name="bad-package", reason="malware")],
                    floors={"openssl": "3.0", "zlib": "1.3", "numpy": "1.0"})
    found = evaluate(spec, ["linux-64", "osx-arm64"], policy)
    assert [(v.field, v.package) for v in found] == [
        ("platforms", None), ("channels", None), ("dependencies", "telnet"), ("dependencies", "openssl"),
        ("dependencies", "zlib"), ("pip", "bad-package")]
    assert "cleartext" in found[2].message and "line 3" in found[2].message
    assert found[3].fix == "ask for openssl >=3.0"
    assert all(v.fix for v in found)
    error = PolicyViolationError(found, file="environment.yml")
    assert error.status == 422 and error.code == "policy-violation"
    assert len(error.to_problem()["details"]["violations"]) == 6
    assert "and 5 more" in error.message


@pytest.mark.parametrize(("spec", "below"), [
    ("openssl 1.1.1", True), ("openssl ==2.9", True), ("openssl >=1,<3", True), ("openssl <=2.9", True),
    ("openssl 2.*", True), ("openssl", False), ("openssl >=1", False), ("openssl 3.*", False),
    ("openssl >=1,<4", False), ("openssl 3.0", False), ("openssl <2|>=3", False),
])
def test_version_floors_refuse_only_specs_that_exclude_the_floor(spec: str, below: bool) -> None:
    parsed = parse_environment_yaml(f"channels: [e2e]\ndependencies: ['{spec}']\n")
    assert bool(evaluate(parsed, ["linux-64"], Policy(floors={"openssl": "3.0"}))) is below


def _pkg(name: str, version: str, *depends: str) -> LockedCondaPackage:
    return LockedCondaPackage(name, version, "0", 0, "linux-64", "e2e", f"e2e/{name}.conda", None, None, depends)


def test_a_denied_package_pulled_in_by_a_dependency_names_the_path() -> None:
    lock = EnvironmentLock({"linux-64": PlatformLock("linux-64", conda=(
        _pkg("e2e-env", "1.0", "reloc-data 1.0", "pyhello"), _pkg("pyhello", "0.1", "python >=3.11"),
        _pkg("python", "3.11.7"), _pkg("reloc-data", "1.0")))}, requested={"linux-64": ("e2e-env",)})
    found = check_lock(lock, Policy(deny=[Denied(name="reloc-data", reason="unmaintained")],
                                    floors={"python": "3.12"}))
    assert [v.path for v in found] == [["e2e-env", "pyhello", "python"], ["e2e-env", "reloc-data"]]
    assert "e2e-env -> reloc-data" in found[1].message and "unmaintained" in found[1].message
    assert found[0].fix == "add 'python >=3.12' to the spec"
    assert check_lock(lock, Policy()) == []


def test_required_packages_are_added_to_specs_with_channels_only() -> None:
    policy = Policy(required=["ipykernel", "python >= 3.11"])
    spec = parse_environment_yaml("channels: [e2e]\ndependencies: [python 3.11.*]\n")
    assert with_required(spec, policy).conda_specs("linux-64") == ("python 3.11.*", "ipykernel")
    pip_only = parse_environment_yaml("dependencies:\n  - pip:\n    - requests\n")
    assert with_required(pip_only, policy) is pip_only


def test_installed_size_over_the_maximum() -> None:
    assert check_installed_size("linux-64", 10, Policy(max_installed_bytes=10)) == []
    [violation] = check_installed_size("linux-64", 2048, Policy(max_installed_bytes=1024))
    assert violation.field == "max_installed_bytes" and "2.0 KiB" in violation.message


@pytest.mark.parametrize(("text", "field", "line"), [
    ("deny: [{name: x, reasn: y}]\n", "deny.0.reasn", None),
    ("floors: {openssl: 'not a version!'}\n", "floors", None),
    ("required: ['numpy >=>1']\n", "required", None),
    ("max_installed_bytes: -5\n", "max_installed_bytes", None),
    ("allowed_channel: [e2e]\n", "allowed_channel", None),
    ("deny: [\n", None, 2),
    ("- a list\n", None, None),
])
def test_bad_policy_files_name_the_file_and_field(text: str, field: str | None, line: int | None) -> None:
    with pytest.raises(SpecError) as caught:
        parse_policy(text, "team.yaml")
    assert caught.value.file == "team.yaml"
    assert caught.value.field == field
    if line is not None:
        assert caught.value.line == line
