"""How the CLI shows things: ``lock --help``, long paths in a pipe, the spinner and the error after it, missing
spec files. Real processes; a pseudo-terminal where a terminal matters."""

from __future__ import annotations

import os
import pty
import select
import subprocess
from pathlib import Path

from tests.commands import ENVYARD
from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]


def envyard(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENVYARD, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300,
                          stdin=subprocess.DEVNULL)


def test_lock_help_shows_the_lock_options_and_the_other_commands() -> None:
    shown = envyard("lock", "--help")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("Usage: envyard lock [OPTIONS] SPEC\n")
    for option in ("--platform", "--check", "--cuda", "--exclude-newer", "--json", "--help"):
        assert f" {option}" in shown.stdout, option
    commands = shown.stdout.split("\nCommands:\n", 1)[1]
    assert "  diff " in commands
    assert envyard("lock", "-h").stdout == shown.stdout
    assert envyard("lock", "diff", "--help").stdout.startswith("Usage: envyard lock diff [OPTIONS] OLD NEW")


def test_output_to_a_pipe_keeps_long_paths_on_one_line(demo_channel_root: Path, tmp_path: Path) -> None:
    out = tmp_path / ("a-directory-with-a-rather-long-name-" * 3) / "locks"
    assert len(str(out)) > 100
    result = envyard("lock", REPO / "specs/examples/demo.yml", "--channel-alias", demo_channel_root.as_uri() + "/",
                     "-o", out)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out / 'conda-lock.yml'}\n" in result.stdout
    assert f"locked {REPO / 'specs/examples/demo.yml'}" in result.stdout  # the table title, whole


def test_spinner_is_cleared_before_the_error_line(tmp_path: Path) -> None:
    """On a terminal the solve spinner runs; when the solve fails it is stopped and erased before the error."""
    spec = tmp_path / "environment.yml"
    spec.write_text(f"channels:\n  - http://127.0.0.1:{free_port()}/conda/team\ndependencies:\n  - zlib\n")
    leader, follower = pty.openpty()
    process = subprocess.Popen([*ENVYARD, "lock", str(spec), "-o", str(tmp_path / "out")],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower, cwd=tmp_path,
                               env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200",
                                    "ENVYARD_CACHE_DIR": str(tmp_path / "cache")})
    os.close(follower)
    shown = b""
    while select.select([leader], [], [], 120)[0]:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert process.wait(timeout=60) == 1
    before, sep, after = shown.partition(b"error: ")
    assert sep and b"cannot load repodata" in after, shown
    assert "⠋".encode() in before or b"solve" in before, shown  # the spinner did run
    assert before.endswith((b"\x1b[2K", b"\n")), before[-200:]  # its line erased, not run into
    assert b"solve" not in after, after  # and never drawn again


def test_a_missing_spec_file_names_the_directory_it_was_resolved_against(tmp_path: Path) -> None:
    locked = envyard("lock", "specs/missing.yml", cwd=tmp_path)
    assert locked.returncode == 1
    assert f"file not found: specs/missing.yml (hint: check the path: a relative path is resolved against the " \
           f"current directory, {tmp_path})" in locked.stderr
    submitted = envyard("--token", "x", "env", "create", "team/app", "-f", "specs/missing.yml", cwd=tmp_path)
    assert submitted.returncode == 1
    assert submitted.stderr.strip() == (f"error: specs/missing.yml: spec file not found: specs/missing.yml (hint: a "
                                        f"relative path is resolved against the current directory, {tmp_path})")
