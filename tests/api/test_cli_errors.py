"""The CLI's one error pipeline: typed errors and bugs alike become one line and an exit code."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from api.cli import EnvyardCLI
from builder.errors import StaleLockError


def make_cli(exc: BaseException) -> click.Group:
    @click.group(cls=EnvyardCLI)
    def cli() -> None: ...

    @cli.command()
    @click.option("--json", "json_output", is_flag=True)
    @click.pass_context
    def boom(ctx: click.Context, json_output: bool) -> None:
        ctx.meta["json_output"] = json_output
        raise exc

    return cli


def test_typed_error_is_one_line_with_its_exit_code():
    result = CliRunner().invoke(make_cli(StaleLockError("lock is stale", file="env.yml", hint="re-lock")), ["boom"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: env.yml: lock is stale (hint: re-lock)"


def test_typed_error_as_problem_json():
    result = CliRunner().invoke(make_cli(StaleLockError("lock is stale", field="platforms")), ["boom", "--json"])
    problem = json.loads(result.stdout)["error"]
    assert problem == {"type": "https://envyard.dev/problems/stale-lock", "title": "Lock is out of date",
                       "status": 409, "detail": "lock is stale", "field": "platforms"}


def test_unexpected_exception_is_one_line_unless_debugging(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("ENVYARD_DEBUG", raising=False)
    result = CliRunner().invoke(make_cli(RuntimeError("kaboom")), ["boom"])
    assert result.exit_code == 70
    assert result.stderr.startswith("error: internal error: RuntimeError: kaboom")
    assert "Traceback" not in result.stderr
    monkeypatch.setenv("ENVYARD_DEBUG", "1")
    result = CliRunner().invoke(make_cli(RuntimeError("kaboom")), ["boom"])
    assert isinstance(result.exception, RuntimeError)
