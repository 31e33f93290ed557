"""What a service build may fetch (builder.url_policy), and the worker-side checks right before rattler and uv:
a loopback listener named as a channel or pip index records no request unless its prefix is allowed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from envyard.builder.channels import ChannelOptions, make_gateway
from envyard.builder.errors import ForbiddenUrlError, PipResolutionError
from envyard.builder.lock import LockOptions, lock_environment
from envyard.builder.pip_resolve import PipTarget, resolve_pip_requirements
from envyard.builder.settings import Settings
from envyard.builder.spec import parse_environment_yaml
from envyard.builder.url_policy import UrlPolicy, forbidden_address
from tests.listener import recording_listener
from tests.packages import build_e2e_channel


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"), ("127.8.9.10", "a loopback address"), ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"), ("::127.0.0.1", "a loopback address"),
        ("64:ff9b::7f00:1", "a loopback address"), ("2002:7f00:1::", "a loopback address"),
        ("169.254.169.254", "a link-local address"), ("::ffff:169.254.169.254", "a link-local address"),
        ("fe80::1%eth0", "a link-local address"), ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"), ("192.168.1.1", "a private address"), ("fd00::1", "a private address"),
        ("0.0.0.0", "an unspecified address"), ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast address"), ("ff02::1", "a multicast address"),
        ("240.0.0.1", "a private address"), ("100.64.0.1", "not a public address"),
        ("8.8.8.8", None), ("2606:4700:4700::1111", None), ("151.101.0.223", None),
    ],
)
def test_address_classification(address: str, reason: str | None) -> None:
    assert forbidden_address(address) == reason


def public(host: str) -> list[str]:
    return {"pypi.example.org": ["151.101.0.223"], "mixed.example.org": ["151.101.0.223", "10.0.0.5"],
            "rebind.example.org": ["::ffff:127.0.0.1"]}.get(host, [])


def test_prefixes_file_roots_and_public_https(tmp_path: Path) -> None:
    allowed_dir = tmp_path / "channels"
    (allowed_dir / "main").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    (allowed_dir / "escape").symlink_to(tmp_path / "data")
    policy = UrlPolicy(allowed_prefixes=("http://127.0.0.1:8000/conda/", "s3://envs/"),
                       allowed_file_roots=(allowed_dir,), resolver=public)
    ok = ["http://127.0.0.1:8000/conda", "http://127.0.0.1:8000/conda/main", "HTTP://127.0.0.1:8000/conda/x/",
          "http://user:pw@127.0.0.1:8000/conda/x", "s3://envs/conda-forge", allowed_dir.as_uri(),
          (allowed_dir / "main").as_uri(), "https://pypi.example.org/simple", "https://151.101.0.223/x"]
    for url in ok:
        assert policy.violation(url) is None, url
    refused = {
        "http://127.0.0.1:8000/condax": "http:// URLs are only fetched under an allowed prefix",
        "http://127.0.0.1:8001/conda/main": "http:// URLs are only fetched under an allowed prefix",
        "http://127.0.0.1:8000/conda/../admin": "http:// URLs are only fetched under an allowed prefix",
        "http://127.0.0.1:8000/conda/%2e%2e/admin": "http:// URLs are only fetched under an allowed prefix",
        "http://127.0.0.1:8000@evil.example.org/conda/": "http:// URLs are only fetched under an allowed prefix",
        "https://127.0.0.1:8000/conda/main": "127.0.0.1 is a loopback address",
        "https://169.254.169.254/latest/meta-data/": "169.254.169.254 is a link-local address",
        "https://[::ffff:127.0.0.1]:8000/conda": "::ffff:127.0.0.1 is a loopback address",
        "https://mixed.example.org/simple": "the host mixed.example.org resolves to 10.0.0.5, a private address",
        "https://rebind.example.org/simple": "resolves to ::ffff:127.0.0.1, a loopback address",
        "https://nowhere.example.org/simple": "the host nowhere.example.org does not resolve",
        "s3://other-bucket/x": "s3:// URLs are only fetched under an allowed prefix",
        "oci://ghcr.io/channels/x": "oci:// URLs are only fetched under an allowed prefix",
        (tmp_path / "data").as_uri(): "file:// URLs are only read under an allowed file root",
        (allowed_dir / "escape").as_uri(): "file:// URLs are only read under an allowed file root",
        (allowed_dir / ".." / "data").as_uri(): "file:// URLs may not contain '..'",
        "file://server/share/channel": "file:// URLs may not name a host",
        "conda-forge": "it is not a URL",
    }
    for url, reason in refused.items():
        found = policy.violation(url)
        assert found is not None and reason in found, (url, found)
    strict = UrlPolicy(allow_public_https=False, resolver=public)
    assert strict.violation("https://pypi.example.org/simple") == "only the allowed prefixes are fetched"


def test_localhost_is_resolved_by_the_system_resolver() -> None:
    reason = UrlPolicy().violation("https://localhost:8443/conda-forge")
    assert reason is not None and reason.startswith("the host localhost resolves to ") and "loopback" in reason


def test_policy_from_settings_trusts_the_servers_own_alias_mirrors_and_index(tmp_path: Path) -> None:
    settings = Settings(channel_alias=(tmp_path / "alias").as_uri() + "/", _env_file=None,  # type: ignore[call-arg]
                        mirrors={"https://conda.anaconda.org/conda-forge": ["http://10.0.0.2/mirror/cf"]},
                        pip_index_url="http://10.0.0.3/simple", allowed_url_prefixes=["http://127.0.0.1:9/x/"],
                        allowed_file_roots=[tmp_path / "local"])
    policy = UrlPolicy.from_settings(settings, resolver=public)
    for url in [(tmp_path / "alias" / "e2e").as_uri(), (tmp_path / "local" / "c").as_uri(),
                "http://10.0.0.2/mirror/cf/noarch", "https://conda.anaconda.org/conda-forge",
                "http://10.0.0.3/simple/numpy/", "http://127.0.0.1:9/x/y"]:
        assert policy.violation(url) is None, url
    assert policy.violation("http://10.0.0.2/other") is not None
    assert policy.violation((tmp_path / "elsewhere").as_uri()) is not None


def test_error_names_the_url_as_written_and_the_setting() -> None:
    with pytest.raises(ForbiddenUrlError) as info:
        UrlPolicy().check("http://user:secret@127.0.0.1:1/simple", what="pip index",
                          shown="http://127.0.0.1:1/simple", file="env.yml", line=7, field="pip")
    err = info.value
    assert (err.code, err.status, err.file, err.line, err.field) == ("forbidden-url", 422, "env.yml", 7, "pip")
    assert "secret" not in err.one_line() and "allowed_url_prefixes" in (err.hint or "")


# --- fetch-time checks on the worker side -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def channel_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ssrf-channels")
    build_e2e_channel(root)
    return root


def _lock(spec_text: str, policy: UrlPolicy, cache: Path) -> object:
    spec = parse_environment_yaml(spec_text, source="environment.yml")
    options = LockOptions(platforms=("linux-64",), channels=ChannelOptions(channel_alias="https://conda.anaconda.org/"),
                          url_policy=policy)
    return asyncio.run(lock_environment(spec, options, make_gateway(cache, options.channels)))


def test_solve_refuses_a_loopback_channel_before_rattler_fetches(channel_root: Path, tmp_path: Path) -> None:
    with recording_listener(channel_root) as listener:
        spec = f"channels: [{listener.url}/e2e]\ndependencies: [e2e-env]\n"
        with pytest.raises(ForbiddenUrlError) as info:
            _lock(spec, UrlPolicy(), tmp_path / "cache")
        assert "a loopback address" not in info.value.message  # http: refused for its scheme already
        with pytest.raises(ForbiddenUrlError):
            _lock(f"channels: [conda-forge]\ndependencies: ['{listener.url}/e2e::e2e-env']\n", UrlPolicy(),
                  tmp_path / "cache")
        assert listener.requests == []
        lock = _lock(spec, UrlPolicy(allowed_prefixes=(f"{listener.url}/e2e",)), tmp_path / "cache")
        assert any(path.endswith("repodata.json") for path in listener.requests)
        assert "e2e-env" in {p.name for p in lock.platforms["linux-64"].conda}  # type: ignore[attr-defined]


@pytest.mark.parametrize("option", ["index_url", "extra_index_urls", "find_links", "direct"])
def test_pip_resolution_refuses_loopback_indexes_before_uv_runs(option: str) -> None:
    with recording_listener() as listener:
        requirements = ["requests"]
        kwargs: dict[str, object] = {}
        if option == "index_url":
            kwargs["index_url"] = f"{listener.url}/simple"
        elif option == "extra_index_urls":
            kwargs["extra_index_urls"] = [f"{listener.url}/simple"]
        elif option == "find_links":
            kwargs["find_links"] = [f"{listener.url}/links/"]
        else:
            requirements = [f"requests @ {listener.url}/requests-2.32.3-py3-none-any.whl"]
        with pytest.raises(ForbiddenUrlError) as info:
            resolve_pip_requirements(requirements, PipTarget("linux-64", "3.12.0"), url_policy=UrlPolicy(),
                                     **kwargs)  # type: ignore[arg-type]
        assert info.value.field == "pip" and listener.requests == []
        if option == "extra_index_urls":  # keep uv off PyPI (no network in tests): the listener is every index
            kwargs["index_url"] = f"{listener.url}/other"
        allowed = UrlPolicy(allowed_prefixes=(listener.url,))
        with pytest.raises(PipResolutionError):  # allowed: uv asks the listener, which has nothing
            resolve_pip_requirements(requirements, PipTarget("linux-64", "3.12.0"), url_policy=allowed, timeout=60,
                                     no_index=option == "find_links", **kwargs)  # type: ignore[arg-type]
    assert listener.requests, "with the prefix allowed, uv fetches from the listener"


def test_lock_options_without_a_policy_stay_unchecked(channel_root: Path, tmp_path: Path) -> None:
    """The local CLI (no policy) may use any channel, including a loopback one."""
    with recording_listener(channel_root) as listener:
        spec = parse_environment_yaml(f"channels: [{listener.url}/e2e]\ndependencies: [e2e-env]\n")
        options = LockOptions(platforms=("linux-64",))
        lock = asyncio.run(lock_environment(spec, options, make_gateway(tmp_path / "c", options.channels)))
        assert listener.requests and "e2e-env" in {p.name for p in lock.platforms["linux-64"].conda}
