"""``envyard lock`` as a CI job runs it: a git repository with a spec and its locks, edited and checked.

Real processes, real ``git``, the real conda-forge records of ../shared/data. Every ``--json`` output is
parsed whole with ``json.loads`` (one document per invocation), and every exit code is the documented one.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_cli_lock import envyard

GIT = shutil.which("git")
SPEC = "channels: [conda-forge]\ndependencies:\n  - python 3.12.*\n  - numpy 2.2.*\n"


def git(repo: Path, *args: str) -> str:
    assert GIT, "git is needed for the CI scenario"
    env = {"GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.org", "GIT_COMMITTER_NAME": "ci",
           "GIT_COMMITTER_EMAIL": "ci@example.org", "HOME": str(repo), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([GIT, *args], cwd=repo, capture_output=True, text=True, env=env, check=True)
    return done.stdout


def run(repo: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:  # type: ignore[type-arg]
    """``envyard ARGS --json`` in ``repo``: the process and its stdout parsed as one JSON document."""
    result = envyard(*args, "--json", cwd=repo, env={"ENVYARD_CACHE_DIR": str(repo.parent / "cache")})
    return result, json.loads(result.stdout)


@pytest.fixture()
def repo(tmp_path: Path, derived_alias: str) -> Path:
    """A repository whose env.yml is locked for linux-64 and osx-arm64 with --cuda 12.4, and committed."""
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "env.yml").write_text(SPEC)
    made, summary = run(root, "lock", "env.yml", "-p", "linux-64", "-p", "osx-arm64", "--cuda", "12.4",
                        "--channel-alias", derived_alias, "-o", "locks")
    assert made.returncode == 0, made.stderr
    assert set(summary["platforms"]) == {"linux-64", "osx-arm64"}
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "lock")
    return root


def test_ci_check_edit_fix_and_relock(repo: Path):
    # fresh without repeating -p/--cuda/--channel-alias: the lock remembers them
    fresh, doc = run(repo, "lock", "env.yml", "-o", "locks", "--check")
    assert fresh.returncode == 0, fresh.stderr
    assert doc["status"] == "fresh" and doc["fresh"] is True and "error" not in doc
    # an option given again overrides the recorded one (`--cuda none` drops it): stale where __cuda counts
    dropped, doc = run(repo, "lock", "env.yml", "-o", "locks", "--check", "--cuda", "none")
    assert dropped.returncode == 2 and doc["stale_platforms"] == ["linux-64"] and "--cuda none" in doc["fix"]

    # the spec grows: stale (exit 2), naming the spec, one JSON document with the error inside
    (repo / "env.yml").write_text(SPEC.replace("numpy 2.2.*", "numpy") + "  - pandas\n")
    git(repo, "commit", "-q", "-am", "add pandas")
    stale, doc = run(repo, "lock", "env.yml", "-o", "locks", "--check")
    assert stale.returncode == 2
    assert doc["status"] == "stale" and doc["stale_platforms"] == ["linux-64", "osx-arm64"]
    assert doc["error"]["type"].endswith("/stale-lock") and "env.yml" in doc["error"]["detail"]
    assert stale.stderr.startswith("error: env.yml: the lock in locks is stale for env.yml")
    fix = shlex.split(doc["fix"])
    assert fix[:6] == ["envyard", "lock", "env.yml", "-o", "locks", "-p"] and "--cuda" in fix
    assert fix[fix.index("--cuda") + 1] == "12.4" and fix.count("-p") == 2

    # the suggested command, verbatim, makes the lock fresh again, every per-platform file included
    fixed = envyard(*fix[1:], cwd=repo, env={"ENVYARD_CACHE_DIR": str(repo.parent / "cache")})
    assert fixed.returncode == 0, fixed.stderr
    again, doc = run(repo, "lock", "env.yml", "-o", "locks", "--check")
    assert again.returncode == 0 and doc["status"] == "fresh", again.stdout
    lock_text = (repo / "locks" / "conda-lock.yml").read_text()
    assert "envyard.option.cuda: '12.4'" in lock_text
    for platform in ("linux-64", "osx-arm64"):
        header = (repo / "locks" / f"conda-{platform}.lock").read_text()
        assert "# envyard.option.cuda: 12.4" in header
        digest = header.split("# input_hash: ")[1].split()[0]
        assert f"{platform}: {digest}" in lock_text

    # the relock kept every version that still fits: the diff only adds what pandas needs
    (repo / "old.yml").write_text(git(repo, "show", "HEAD:locks/conda-lock.yml"))
    diff, changes = run(repo, "lock", "diff", "old.yml", "locks/conda-lock.yml", "--exit-code")
    assert diff.returncode == 1
    for platform in ("linux-64", "osx-arm64"):
        assert changes[platform]["removed"] == [] and changes[platform]["changed"] == []
        assert "pandas" in {c["name"] for c in changes[platform]["added"]}
    same, _ = run(repo, "lock", "diff", "locks/conda-lock.yml", "locks/pixi.lock", "--exit-code")
    assert same.returncode == 0

    # --update numpy frees numpy (only what must move with it changes)
    updated, _ = run(repo, "lock", "env.yml", "-o", "locks", "--update", "numpy")
    assert updated.returncode == 0, updated.stderr
    moved, changes = run(repo, "lock", "diff", "old.yml", "locks/conda-lock.yml")
    assert [c["name"] for c in changes["linux-64"]["changed"]] == ["numpy"]

    # relocking one platform removes the other's file; the lock now remembers one platform
    one, summary = run(repo, "lock", "env.yml", "-o", "locks", "-p", "linux-64")
    assert one.returncode == 0, one.stderr
    assert summary["removed"] == ["locks/conda-osx-arm64.lock"]
    assert " D locks/conda-osx-arm64.lock" in git(repo, "status", "--porcelain").splitlines()
    assert run(repo, "lock", "env.yml", "-o", "locks", "--check")[0].returncode == 0
    git(repo, "checkout", "--", "locks/conda-osx-arm64.lock")  # a stale leftover comes back from git
    leftover, doc = run(repo, "lock", "env.yml", "-o", "locks", "--check")
    assert leftover.returncode == 2 and doc["extra_platforms"] == ["osx-arm64"]
    assert "conda-osx-arm64.lock is left from an earlier lock" in leftover.stderr


def test_ci_missing_lock_usage_errors_and_unsolvable_specs(repo: Path, derived_alias: str):
    missing, doc = run(repo, "lock", "env.yml", "-o", "not-locked-yet", "--check")
    assert missing.returncode == 2
    assert doc["status"] == "missing" and doc["error"]["type"].endswith("/missing-lock")
    assert "missing" in missing.stderr and "stale" not in missing.stderr

    for args, needle in ((("lock", "env.yml", "other.yml"), "unexpected extra argument"),
                         (("lock", "env.yml", "--no-such-option"), "No such option"),
                         (("lock", "env.yml", "-o", "locks", "--check", "--update", "numpy"), "--check"),
                         (("lock", "env.yml", "-o", "locks", "--update", "nunpy"), "nunpy"),
                         (("lock", "diff", "locks/conda-lock.yml"), "Missing argument")):
        usage, doc = run(repo, *args)
        assert usage.returncode == 64, (args, usage.stderr)
        assert doc["error"]["type"].endswith("/usage") and needle in doc["error"]["detail"], doc

    (repo / "broken.yml").write_text(
        "channels: [conda-forge]\ndependencies: [python 3.12.*, numpy ==1.19, pandsa, nosuchpkg]\n")
    failed, doc = run(repo, "lock", "broken.yml", "-o", "broken", "-p", "linux-64", "-p", "osx-arm64",
                      "--channel-alias", derived_alias)
    assert failed.returncode == 1
    assert set(doc["error"]["details"]["platforms"]) == {"linux-64", "osx-arm64"}
    assert doc["error"]["details"]["platforms"]["linux-64"]["details"]["specs"] == [
        "numpy ==1.19", "pandsa", "nosuchpkg"]
    lines = failed.stderr.splitlines()
    assert lines[0].startswith("error: 2 of 2 platforms cannot be solved")
    assert lines[1].startswith("  linux-64: no solution for 'numpy ==1.19', 'pandsa', 'nosuchpkg': no candidates in")
    assert any("did you mean pandas?" in line for line in lines)
    assert not (repo / "broken").exists()


def test_fix_command_names_what_differs_from_the_record():
    """The suggested command overrides every recorded option the check overrode, so a relock cannot reuse it."""
    from envyard.builder.lock import LockOptions
    from envyard.builder.model import LockProvenance
    from envyard.cli.commands.lock import fix_command

    recorded = LockProvenance(platforms=("linux-64",), cuda="12.4", strategy="lowest", channel_priority="disabled",
                              exclude_newer="2026-01-01T00:00:00+00:00")
    command = fix_command(Path("env.yml"), Path("locks"), LockOptions(platforms=("linux-64",)), recorded)
    assert shlex.split(command) == ["envyard", "lock", "env.yml", "-o", "locks", "-p", "linux-64", "--cuda", "none",
                                    "--exclude-newer", "none", "--strategy", "highest", "--channel-priority", "strict"]
    assert fix_command(Path("env.yml"), Path("locks"), LockOptions()) == "envyard lock env.yml -o locks"
