"""builder.pip_resolve against a real uv subprocess and wheels built by the tests.

Nothing here talks to a public index: resolutions use ``--no-index --find-links`` on a
folder of tiny wheels, or a PEP 691 simple index served on 127.0.0.1 by this module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from envyard.builder.errors import LockfileError, PipResolutionError
from envyard.builder.model import LockedPipPackage
from envyard.builder.pip_resolve import (
    PipTarget,
    locked_pip_to_requirement_line,
    resolve_pip_requirements,
    uv_python_platform,
)
from tests.wheelhouse import (
    LINUX_X86_64_311,
    LINUX_X86_64_312,
    MACOS_ARM64_312,
    PURE,
    build_wheel,
    dist_name,
    sha256_file,
)

LINUX = PipTarget("linux-64", "3.12.13")
MAC = PipTarget("osx-arm64", "3.12.13", glibc_version=None, macos_version="11.0")
WIN = PipTarget("win-64", "3.12.13", glibc_version=None)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("wheelhouse")
    build_wheel(d, "a", "1.0", requires=["b>=1", "c"])
    build_wheel(d, "b", "1.0")
    build_wheel(d, "b", "2.0")
    build_wheel(d, "c", "1.0", tag=LINUX_X86_64_312)
    build_wheel(d, "c", "1.0", tag=MACOS_ARM64_312)
    build_wheel(d, "newpy", "1.0", requires_python=">=3.8")
    build_wheel(d, "newpy", "2.0", requires_python=">=3.13")
    build_wheel(d, "abi-pkg", "1.0", tag=LINUX_X86_64_312)
    build_wheel(d, "abi-pkg", "2.0", tag=LINUX_X86_64_311)
    build_wheel(d, "glibc-pkg", "1.0", tag="cp312-cp312-manylinux_2_17_x86_64")
    build_wheel(d, "glibc-pkg", "2.0", tag="cp312-cp312-manylinux_2_34_x86_64")
    build_wheel(d, "mac-pkg", "1.0", tag="cp312-cp312-macosx_11_0_arm64")
    build_wheel(d, "mac-pkg", "2.0", tag="cp312-cp312-macosx_14_0_arm64")
    build_wheel(d, "numpy", "1.26.4", tag=LINUX_X86_64_312)
    build_wheel(d, "numpy", "2.1.0", tag=LINUX_X86_64_312)
    build_wheel(d, "needs-old-numpy", "1.0", requires=["numpy<2"])
    build_wheel(d, "Uses_Numpy", "1.0", requires=["numpy>=1.20", "b"])
    return d


@pytest.fixture(scope="module")
def uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uv-cache")


@pytest.fixture
def resolve(wheelhouse: Path, uv_cache: Path) -> Any:
    def run(requirements: list[str], target: PipTarget = LINUX, **kw: Any) -> tuple[LockedPipPackage, ...]:
        kw.setdefault("find_links", [str(wheelhouse)])
        kw.setdefault("cache_dir", uv_cache)
        return resolve_pip_requirements(requirements, target, no_index=True, **kw)

    return run


def by_name(pkgs: tuple[LockedPipPackage, ...]) -> dict[str, LockedPipPackage]:
    return {p.normalized_name: p for p in pkgs}


def file_of(p: LockedPipPackage) -> Path:
    assert p.url.startswith("file://")
    return Path(p.url.removeprefix("file://"))


# --- platforms, tags and Python versions ------------------------------------------------------


def test_graph_resolves_per_platform_with_real_hashes(resolve: Any) -> None:
    linux, mac = resolve(["a"], LINUX), resolve(["a"], MAC)
    assert [(p.name, p.version) for p in linux] == [("a", "1.0"), ("b", "2.0"), ("c", "1.0")]
    assert [(p.name, p.version) for p in mac] == [("a", "1.0"), ("b", "2.0"), ("c", "1.0")]
    assert by_name(linux)["c"].url.endswith("manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
    assert by_name(mac)["c"].url.endswith("macosx_11_0_arm64.whl")
    assert by_name(linux)["a"].url == by_name(mac)["a"].url
    for p in linux + mac:
        assert p.sha256 == sha256_file(file_of(p))
    assert by_name(linux)["a"].requires_dist == ("b>=1", "c")


def test_platform_without_wheel_fails_naming_the_package(resolve: Any) -> None:
    with pytest.raises(PipResolutionError) as info:
        resolve(["a"], WIN)
    err = info.value
    assert "win-64" in err.message and "c==1.0" in err.message and "win_amd64" in err.message
    assert "c" in err.details["packages"]
    assert err.hint and "win-64" in err.hint
    assert "warning" not in err.one_line() and "Traceback" not in err.one_line()


def test_requires_python_respected(resolve: Any) -> None:
    assert by_name(resolve(["newpy"], LINUX))["newpy"].version == "1.0"
    assert by_name(resolve(["newpy"], PipTarget("linux-64", "3.13.1")))["newpy"].version == "2.0"
    assert by_name(resolve(["newpy"], LINUX))["newpy"].requires_python == ">=3.8"


def test_python_abi_respected(resolve: Any) -> None:
    assert by_name(resolve(["abi-pkg"], LINUX))["abi-pkg"].version == "1.0"
    assert by_name(resolve(["abi-pkg"], PipTarget("linux-64", "3.11.9")))["abi-pkg"].version == "2.0"


def test_glibc_caps_manylinux_tag(resolve: Any) -> None:
    assert by_name(resolve(["glibc-pkg"], LINUX))["glibc-pkg"].version == "1.0"
    newer = PipTarget("linux-64", "3.12.13", glibc_version="2.35")
    assert by_name(resolve(["glibc-pkg"], newer))["glibc-pkg"].version == "2.0"


def test_macos_version_caps_macosx_tag(resolve: Any) -> None:
    assert by_name(resolve(["mac-pkg"], MAC))["mac-pkg"].version == "1.0"
    newer = PipTarget("osx-arm64", "3.12.13", macos_version="14.0")
    assert by_name(resolve(["mac-pkg"], newer))["mac-pkg"].version == "2.0"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (PipTarget("linux-64", "3.12", glibc_version="2.28"), "x86_64-manylinux_2_28"),
        (PipTarget("linux-64", "3.12", glibc_version="2.30"), "x86_64-manylinux_2_28"),
        (PipTarget("linux-aarch64", "3.12", glibc_version="2.17"), "aarch64-manylinux_2_17"),
        (PipTarget("linux-64", "3.12", glibc_version="2.99"), "x86_64-manylinux_2_40"),
        (PipTarget("linux-64", "3.12", glibc_version=None), "x86_64-manylinux_2_17"),
        (PipTarget("osx-64", "3.12"), "x86_64-apple-darwin"),
        (PipTarget("osx-arm64", "3.12"), "aarch64-apple-darwin"),
        (PipTarget("win-64", "3.12"), "x86_64-pc-windows-msvc"),
    ],
)
def test_uv_python_platform(target: PipTarget, expected: str) -> None:
    assert uv_python_platform(target) == expected


@pytest.mark.parametrize(
    "target", [PipTarget("linux-ppc64le", "3.12"), PipTarget("linux-64", "3.12", glibc_version="2.12")]
)
def test_unsupported_targets_raise(target: PipTarget, resolve: Any) -> None:
    with pytest.raises(PipResolutionError):
        resolve(["b"], target)


# --- packages the conda solve provides ---------------------------------------------------------


def test_conda_provided_requested_directly_is_not_emitted(resolve: Any) -> None:
    assert resolve(["numpy", "b"], conda_provided={"numpy": "2.1.0"}) == resolve(["b"])
    assert resolve(["numpy>=2"], conda_provided={"NumPy": "2.1.0"}) == ()
    assert resolve(["numpy>=2"], conda_provided={"numpy": "2.1.0-1"}) == ()  # PEP 440 "2.1.0.post1"


def test_conda_provided_transitive_is_not_emitted(resolve: Any) -> None:
    pkgs = resolve(["uses-numpy"], conda_provided={"numpy": "2.1.0", "pip": "24.0"})
    assert [p.normalized_name for p in pkgs] == ["b", "uses-numpy"]
    assert by_name(pkgs)["uses-numpy"].name == "uses-numpy"


def test_conda_provided_version_conflicts_instead_of_being_replaced(resolve: Any) -> None:
    # the wheelhouse has numpy 1.26.4, which pip would happily pick without the conda pin
    assert by_name(resolve(["needs-old-numpy"]))["numpy"].version == "1.26.4"
    with pytest.raises(PipResolutionError) as info:
        resolve(["needs-old-numpy"], conda_provided={"numpy": "2.1.0"})
    err = info.value
    assert "needs-old-numpy" in err.message and "numpy<2" in err.message
    assert err.hint and "numpy 2.1.0" in err.hint and "conda" in err.hint
    with pytest.raises(PipResolutionError):
        resolve(["numpy<2"], conda_provided={"numpy": "2.1.0"})


def test_conda_provided_works_offline_without_the_package_anywhere(tmp_path: Path, uv_cache: Path) -> None:
    build_wheel(tmp_path, "uses-numpy", "1.0", requires=["numpy>=1.20"])
    pkgs = resolve_pip_requirements(["uses-numpy"], LINUX, conda_provided={"numpy": "2.1.0"},
                                    no_index=True, find_links=[str(tmp_path)], cache_dir=uv_cache)
    assert [p.name for p in pkgs] == ["uses-numpy"]
    with pytest.raises(PipResolutionError, match="numpy"):  # and without the conda entry it is missing
        resolve_pip_requirements(["uses-numpy"], LINUX, no_index=True, find_links=[str(tmp_path)],
                                 cache_dir=uv_cache)


def test_conda_version_not_pep440_is_excluded(resolve: Any) -> None:
    pkgs = resolve(["uses-numpy", "numpy"], conda_provided={"numpy": "2.1.0_custom", "_libgcc_mutex": "0.1"})
    assert [p.normalized_name for p in pkgs] == ["b", "uses-numpy"]


# --- errors --------------------------------------------------------------------------------------


def test_unresolvable_message(resolve: Any) -> None:
    with pytest.raises(PipResolutionError) as info:
        resolve(["a", "b<1"])
    err = info.value
    assert err.message.startswith("pip requirements cannot be resolved for linux-64 (Python 3.12.13): ")
    assert "b<1" in err.message and "unsatisfiable" in err.message
    assert "b" in err.details["packages"]
    assert err.details["requirements"] == ["a", "b<1"]
    assert err.to_problem()["type"].endswith("pip-unresolvable")
    with pytest.raises(PipResolutionError, match="not-there"):
        resolve(["not-there"])


def test_unreachable_git_clone_is_a_network_failure_naming_url_and_host(resolve: Any) -> None:
    """A clone that cannot connect is not a conflict: the error names the URL and host, not 'loosen'."""
    from tests.servers import free_port

    url = f"https://127.0.0.1:{free_port()}/team/tool.git"  # nothing listens: refused at once
    with pytest.raises(PipResolutionError) as info:
        resolve([f"tool @ git+{url}"])
    err = info.value
    assert err.message.startswith(f"pip requirements for linux-64: cannot fetch {url}: 127.0.0.1 could not be "
                                  "reached ("), err.message
    assert "could not be resolved" not in err.message and "loosen" not in (err.hint or "")
    assert err.hint and "network failure, not a conflict" in err.hint and "127.0.0.1" in err.hint
    assert (err.details["url"], err.details["host"]) == (url, "127.0.0.1")


def test_invalid_requirement_line(resolve: Any) -> None:
    with pytest.raises(PipResolutionError, match="invalid pip requirement"):
        resolve(["-r /etc/passwd"])


def test_empty_requirements_do_not_run_uv() -> None:
    assert resolve_pip_requirements([], LINUX, uv_executable="/nonexistent/uv") == ()


def test_uv_missing(resolve: Any) -> None:
    with pytest.raises(PipResolutionError) as info:
        resolve(["b"], uv_executable="/nonexistent/uv")
    assert info.value.hint and "uv" in info.value.hint


def test_timeout(resolve: Any, tmp_path: Path) -> None:
    fake = tmp_path / "slow-uv"
    fake.write_text("#!/bin/sh\nsleep 30\n")
    fake.chmod(0o755)
    with pytest.raises(PipResolutionError, match="did not finish within 0.5 seconds"):
        resolve(["b"], uv_executable=str(fake), timeout=0.5)


def test_host_uv_settings_do_not_leak(resolve: Any, tmp_path: Path) -> None:
    env = dict(os.environ, UV_RESOLUTION="lowest", UV_EXTRA_INDEX_URL="http://127.0.0.1:9/simple")
    assert by_name(resolve(["b"], environ=env))["b"].version == "2.0"


# --- determinism and install lines --------------------------------------------------------------


def test_deterministic(resolve: Any, tmp_path: Path) -> None:
    first = resolve(["a", "uses-numpy"], conda_provided={"numpy": "2.1.0"})
    second = resolve(["uses-numpy", "a"], conda_provided={"numpy": "2.1.0"}, cache_dir=tmp_path / "fresh")
    assert first == second


def test_requirement_line_installs_with_require_hashes(resolve: Any, tmp_path: Path) -> None:
    import uv

    pkgs = resolve(["b"])
    req = tmp_path / "req.txt"
    req.write_text("".join(locked_pip_to_requirement_line(p) + "\n" for p in pkgs))

    def install(target: str) -> subprocess.CompletedProcess[str]:
        cmd = [uv.find_uv_bin(), "pip", "install", "--no-deps", "--require-hashes", "--no-index", "--no-config",
               "--target", str(tmp_path / target), "--python", sys.executable, "--cache-dir", str(tmp_path / "c"),
               "-r", str(req)]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)

    assert install("good").returncode == 0
    assert (tmp_path / "good" / "b" / "__init__.py").read_text() == '__version__ = "2.0"\n'
    bad = [LockedPipPackage(p.name, p.version, p.url, "0" * 64) for p in pkgs]
    req.write_text("".join(locked_pip_to_requirement_line(p) + "\n" for p in bad))
    result = install("bad")
    assert result.returncode != 0 and "hash" in result.stderr.lower()
    with pytest.raises(LockfileError):
        locked_pip_to_requirement_line(LockedPipPackage("b", "2.0", pkgs[0].url, None))


# --- a local PEP 691 index: upload times, index URLs, what gets fetched -------------------------

UPLOADED = {("b", "1.0"): "2023-03-01T00:00:00Z", ("b", "2.0"): "2024-06-01T00:00:00Z",
            ("uses-numpy", "1.0"): "2023-01-01T00:00:00Z", ("numpy", "1.26.4"): "2023-01-01T00:00:00Z",
            ("numpy", "2.1.0"): "2024-08-01T00:00:00Z"}


@pytest.fixture(scope="module")
def simple_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    files = tmp_path_factory.mktemp("index-files")
    for (name, version) in UPLOADED:
        build_wheel(files, name, version, requires=["numpy>=1.20"] if name == "uses-numpy" else ())
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            requests.append(f"{self.command} {self.path}")
            parts = self.path.strip("/").split("/")
            if parts[0] == "simple" and len(parts) == 2:
                entries = [
                    {"filename": f.name, "url": f"/files/{f.name}", "hashes": {"sha256": sha256_file(f)},
                     "upload-time": UPLOADED[(n, v)]}
                    for (n, v) in UPLOADED if n == parts[1]
                    for f in files.glob(f"{dist_name(n)}-{v}-*.whl")
                ]
                if entries:
                    body = json.dumps({"meta": {"api-version": "1.1"}, "name": parts[1], "files": entries})
                    return self.reply(body.encode(), "application/vnd.pypi.simple.v1+json")
            elif parts[0] == "files" and len(parts) == 2 and (files / parts[1]).is_file():
                return self.reply((files / parts[1]).read_bytes(), "application/octet-stream")
            self.send_error(404)

        def do_HEAD(self) -> None:  # noqa: N802 - uv probes for range requests; answer without a body
            self.head_only = True
            self.do_GET()

        def reply(self, body: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not getattr(self, "head_only", False):
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def index_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return env | {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def test_index_urls_hashes_and_exclude_newer(simple_index: tuple[str, list[str]], tmp_path: Path) -> None:
    base, _ = simple_index
    kw: dict[str, Any] = {"index_url": f"{base}/simple", "cache_dir": tmp_path, "environ": index_env()}
    latest = by_name(resolve_pip_requirements(["b"], LINUX, **kw))["b"]
    assert latest.version == "2.0" and latest.url == f"{base}/files/b-2.0-{PURE}.whl"
    assert len(latest.sha256 or "") == 64
    old = resolve_pip_requirements(["b"], LINUX, exclude_newer=datetime(2024, 1, 1, tzinfo=UTC), **kw)
    assert [(p.name, p.version) for p in old] == [("b", "1.0")]
    naive = resolve_pip_requirements(["b"], LINUX, exclude_newer=datetime(2024, 1, 1), **kw)
    assert naive == old


def test_conda_provided_is_never_requested_from_the_index(
    simple_index: tuple[str, list[str]], tmp_path: Path
) -> None:
    base, requests = simple_index
    requests.clear()
    pkgs = resolve_pip_requirements(["uses-numpy", "numpy"], LINUX, conda_provided={"numpy": "2.1.0"},
                                    index_url=f"{base}/simple", cache_dir=tmp_path, environ=index_env())
    assert [p.name for p in pkgs] == ["uses-numpy"]
    assert "GET /simple/uses-numpy/" in requests
    assert not [r for r in requests if "numpy" in r and "uses" not in r], requests


# --- source distributions: wheels only unless allowed ---------------------------------------------


def test_sdist_only_package_is_refused_and_its_backend_never_runs(tmp_path: Path, uv_cache: Path) -> None:
    from envyard.builder.errors import SdistNotAllowedError
    from tests.sdists import build_sdist

    marker = tmp_path / "backend-ran"
    links = tmp_path / "links"
    build_sdist(links, "Only-Source", "1.0", hook=f"open({str(marker)!r}, 'a').write('ran\\n')")
    build_wheel(links, "b", "1.0")
    kw: dict[str, Any] = {"find_links": [str(links)], "no_index": True, "cache_dir": uv_cache}
    with pytest.raises(SdistNotAllowedError) as caught:
        resolve_pip_requirements(["b", "only-source"], LINUX, **kw)
    err = caught.value
    assert err.details["packages"] == ["only-source"] and "only-source" in err.message
    assert "admin" in (err.hint or "") and "sdists" in (err.hint or "")
    assert err.code == "sdist-not-allowed" and isinstance(err, PipResolutionError)
    assert not marker.exists()  # uv never ran the backend

    locked = resolve_pip_requirements(["only-source"], LINUX, allow_sdists=True, **kw)
    assert [(p.name, p.url.endswith("only_source-1.0.tar.gz")) for p in locked] == [("only-source", True)]
    assert marker.exists()


def test_install_refuses_a_locked_sdist_unless_allowed(tmp_path: Path) -> None:
    from envyard.builder.errors import SdistNotAllowedError
    from envyard.builder.install import InstallOptions, _install_pip
    from envyard.builder.model import PlatformLock

    stage = tmp_path / "env"
    (stage / "bin").mkdir(parents=True)
    (stage / "bin" / "python").symlink_to(sys.executable)
    lock = PlatformLock("linux-64", conda=(), pip=(LockedPipPackage("evil", "1.0", "https://x/evil-1.0.tar.gz",
                                                                    "a" * 64),))
    with pytest.raises(SdistNotAllowedError, match="evil is locked as a source distribution"):
        _install_pip(lock, stage, str(stage), InstallOptions(cache_layers=[]))
