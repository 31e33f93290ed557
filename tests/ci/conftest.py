"""A real git repository of three environments locked against a real local conda channel that tests can publish
new package versions into (``publish``), for ``envyard ci``, the service's hooks and the scheduled relock."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from envyard.builder.condapkg import PackageFile, index_json, write_conda_package
from tests.commands import ENVYARD
from tests.packages import index_channel

GIT = shutil.which("git")
CHANNEL = "citest"
#: environment -> its package (each spec asks for one package of the channel, and all share ``common``)
ENVIRONMENTS = {"alpha": "alpha-pkg", "beta": "beta-pkg", "gamma": "gamma-pkg"}
TIMESTAMP = 1_717_200_000


def publish(channel_root: Path, name: str, version: str, depends: tuple[str, ...] = ()) -> None:
    """Write ``name-version`` (noarch, one file) into the test channel and index it again."""
    channel = channel_root / CHANNEL
    write_conda_package(channel / "noarch", index_json(name, version, "0", subdir="noarch", noarch="generic",
                                                       depends=list(depends)),
                        [PackageFile(f"share/{name}/VERSION", f"{version}\n".encode())], timestamp=TIMESTAMP)
    index_channel(channel)


def spec_text(name: str, extra: str = "") -> str:
    return f"name: {name}\nchannels:\n  - {CHANNEL}\ndependencies:\n  - {ENVIRONMENTS[name]}\n{extra}"


def git(repo: Path, *args: str) -> str:
    assert GIT, "git is needed for the CI tests"
    env = {"GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.org", "GIT_COMMITTER_NAME": "ci",
           "GIT_COMMITTER_EMAIL": "ci@example.org", "HOME": str(repo), "PATH": os.environ.get("PATH", "/usr/bin")}
    done = subprocess.run([GIT, *args], cwd=repo, capture_output=True, text=True, env=env, check=True)
    return done.stdout


@pytest.fixture()
def channel_root(tmp_path: Path) -> Path:
    """``<root>/citest`` with ``common 1.0`` and one package per environment at 1.0."""
    root = tmp_path / "channels"
    publish(root, "common", "1.0")
    for package in ENVIRONMENTS.values():
        publish(root, package, "1.0", depends=("common",))
    return root


@pytest.fixture()
def ci_env(tmp_path: Path, channel_root: Path) -> dict[str, str]:
    """The environment ``envyard`` runs in: the test channel as alias, a cache of this test."""
    return {**os.environ, "ENVYARD_CHANNEL_ALIAS": channel_root.as_uri() + "/",
            "ENVYARD_CACHE_DIR": str(tmp_path / "cache"), "ENVYARD_OCI_STORE_DIR": str(tmp_path / "oci")}


def run_envyard(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENVYARD, *args], cwd=repo, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture()
def ci_repo(tmp_path: Path, ci_env: dict[str, str]) -> Path:
    """A committed repository: envs/{alpha,beta,gamma}/environment.yml, an envyard.toml listing them, their locks
    (in envs/NAME/locks, made by ``envyard ci`` itself)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    config = []
    for name in ENVIRONMENTS:
        (repo / "envs" / name).mkdir(parents=True)
        (repo / "envs" / name / "environment.yml").write_text(spec_text(name))
        config.append(f'[[environment]]\nname = "{name}"\nspec = "envs/{name}/environment.yml"\n'
                      f'lock_dir = "envs/{name}/locks"\nplatforms = ["linux-64"]\n')
    (repo / "envyard.toml").write_text("\n".join(config))
    made = run_envyard(repo, ci_env, "ci", "--json")
    assert made.returncode == 0, made.stderr
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "three environments and their locks")
    return repo


ChannelPublisher = Callable[[str, str], None]
