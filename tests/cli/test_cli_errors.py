"""The CLI's one error pipeline: typed errors and bugs alike become one line and an exit code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from envyard.builder import errors
from envyard.builder.errors import StaleLockError
from envyard.builder.policy import PolicyViolationError, Violation
from envyard.cli import EnvyardCLI

REPO = Path(__file__).resolve().parents[2]


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


# --- one table of exit codes, each code produced by the errors that carry it ----------------------------------


def _error_classes() -> list[type[errors.EnvyardError]]:
    """Every typed error class, including those the CLI's modules define."""
    import envyard.api.distribution.references  # noqa: F401
    import envyard.api.services.gc  # noqa: F401
    import envyard.builder.policy  # noqa: F401
    import envyard.builder.why  # noqa: F401
    import envyard.cli.follow  # noqa: F401  (build failed / canceled)

    found, todo = [], [errors.EnvyardError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


#: a code -> how the CLI gets there, for the codes no typed error carries
BY_CLI = {0: None, 64: "usage", 70: RuntimeError("kaboom"), 130: KeyboardInterrupt()}


@pytest.mark.parametrize("code", [code for code, _ in errors.EXIT_CODES])
def test_each_exit_code_of_the_table(code: int):
    carriers = [cls for cls in _error_classes() if cls.exit_code == code]
    runner = CliRunner()
    if code in BY_CLI:
        cause = BY_CLI[code]
        if cause is None:
            result = runner.invoke(make_cli(StaleLockError("unused")), ["--help"])
        elif cause == "usage":
            result = runner.invoke(make_cli(StaleLockError("unused")), ["boom", "--no-such-option"])
        else:
            assert isinstance(cause, BaseException)
            result = runner.invoke(make_cli(cause), ["boom"])
        assert result.exit_code == code, result.output
        return
    assert carriers, f"no error class exits {code}"
    for cls in carriers:
        result = runner.invoke(make_cli(_instance(cls)), ["boom"])
        assert result.exit_code == code, cls
        first = result.stderr.strip().splitlines()[0]
        if issubclass(cls, PolicyViolationError):  # names the field; every violation follows on its own line
            assert first == "error: dependencies: it failed (hint: do this)", result.stderr
        else:
            assert first == "error: it failed (hint: do this)" == result.stderr.strip()


def _instance(cls: type[errors.EnvyardError]) -> errors.EnvyardError:
    """An error of ``cls`` saying "it failed" with the hint "do this" (a policy violation is made of violations)."""
    if issubclass(cls, PolicyViolationError):
        return cls([Violation(field="dependencies", message="it failed", fix="do this")])
    return cls("it failed", hint="do this")


def test_every_exit_code_an_error_carries_is_in_the_table():
    listed = {code for code, _ in errors.EXIT_CODES}
    loaded = {cls.exit_code for cls in _error_classes()}  # only the errors of modules imported here
    assert loaded <= listed
    assert errors.StaleLockError.exit_code == errors.MissingLockError.exit_code == 2
    assert len({errors.StaleLockError.exit_code, errors.UsageError.exit_code, errors.ConfigError.exit_code}) == 3


def test_help_and_readme_list_the_same_exit_codes():
    from envyard.cli import cli

    help_text = CliRunner().invoke(cli, ["--help"]).output
    readme = (REPO / "README.md").read_text()
    for code, meaning in errors.EXIT_CODES:
        assert re.search(rf"^\s+{code}\s+{re.escape(meaning.replace('`', ''))}$", help_text, re.MULTILINE), code
        assert f"| {code} | {meaning} |" in readme


def test_usage_error_exits_64_and_with_json_is_one_document():
    result = CliRunner().invoke(make_cli(StaleLockError("unused")), ["boom", "--json", "--bogus"])
    assert result.exit_code == 64
    assert "No such option" in result.stderr
    problem = json.loads(result.stdout)["error"]
    assert problem["type"] == "https://envyard.dev/problems/usage" and "--bogus" in problem["detail"]
    root = CliRunner().invoke(make_cli(StaleLockError("unused")), ["--bogus"])
    assert root.exit_code == 64 and root.stdout == ""


def test_a_failing_command_prints_its_result_and_error_as_one_document():
    @click.group(cls=EnvyardCLI)
    def cli() -> None: ...

    @cli.command()
    @click.option("--json", "json_output", is_flag=True)
    @click.pass_context
    def check(ctx: click.Context, json_output: bool) -> None:
        ctx.meta["json_output"] = json_output
        ctx.meta["json_document"] = {"status": "stale"}
        raise StaleLockError("stale", explanation="first\nsecond")

    result = CliRunner().invoke(cli, ["check", "--json"])
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert document["status"] == "stale" and document["error"]["explanation"] == "first\nsecond"
    assert result.stderr.splitlines() == ["error: stale", "  first", "  second"]
