"""The ``envyard`` command line: one entry point, errors rendered in one place.

Commands live in small modules (``api/cli_lock.py`` ...) and are attached here.
Every :class:`builder.errors.EnvyardError` becomes one line on stderr (followed by its
indented explanation, such as a solver's conflict tree, if it has one) and the error's
exit code; a command-line usage error exits 64 (EX_USAGE); nothing else reaches the user
as a traceback. With ``--json`` stdout carries exactly one JSON document: the command's
result, with the error as its ``"error"`` member when the command fails.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from envyard.builder.errors import EXIT_CODES, AuthenticationError, EnvyardError, UsageError

DEFAULT_API_URL = "http://127.0.0.1:8080"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class DefaultGroup(click.Group):
    """A group that runs ``default_command`` when the first argument names no subcommand.

    ``envyard lock SPEC`` and ``envyard lock diff OLD NEW`` then share one name.
    """

    def __init__(self, *args: Any, default_command: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default_command = default_command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The default command's usage and options (``envyard lock --help`` shows what ``envyard lock SPEC``
        takes), then the group's text and its other commands."""
        default = self.commands.get(self.default_command)
        if default is None:
            return super().format_help(ctx, formatter)
        as_default = click.Context(default, info_name=ctx.info_name, parent=ctx.parent)
        default.format_usage(as_default, formatter)
        self.format_help_text(ctx, formatter)
        default.format_options(as_default, formatter)
        self.format_commands(ctx, formatter)
        self.format_epilog(ctx, formatter)


NO_WRAP_WIDTH = 10_000


def rich_console(*, stderr: bool = False) -> Any:
    """A rich Console for command output. On a terminal rich's defaults; otherwise (a pipe, a file, CI logs) no
    soft wrapping and no 80-column limit, so paths and names stay whole. A live display on it (a spinner) must be
    stopped before an error is printed: register its stop with ``click.get_current_context().call_on_close``
    (the command's context closes before the root group prints the error)."""
    from rich.console import Console

    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, soft_wrap=True, width=NO_WRAP_WIDTH)


def _exit_code_table() -> str:
    rows = "\n".join(f"  {code:>3}  {meaning.replace('`', '')}" for code, meaning in EXIT_CODES)
    return f"\b\nExit codes:\n{rows}"


class EnvyardCLI(click.Group):
    """The root group: maps typed errors to one line and an exit code, usage errors to 64."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as err:  # an unknown root option
            err.exit_code = UsageError.exit_code
            raise

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["argv"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as err:  # unknown option, missing or extra argument of a command
            err.exit_code = UsageError.exit_code
            if "--json" in ctx.meta.get("argv", ()):
                problem = UsageError(err.format_message()).to_problem()
                click.echo(json.dumps({"error": problem}, indent=2))
            raise
        except EnvyardError as err:
            if ctx.meta.get("json_output"):
                document = {**ctx.meta.get("json_document", {}), "error": err.to_problem()}
                click.echo(json.dumps(document, indent=2))
            click.echo(f"error: {err.one_line()}", err=True)
            for line in err.explanation_lines():
                click.echo(line, err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # a bug in envyard, not bad input: still one line unless debugging
            if os.environ.get("ENVYARD_DEBUG"):
                raise
            click.echo(
                f"error: internal error: {type(exc).__name__}: {exc} "
                "(hint: rerun with ENVYARD_DEBUG=1 for the traceback and report it)",
                err=True,
            )
            sys.exit(70)


TOKEN_FILE_WAIT_SECONDS = 30.0


@dataclass
class ServerOptions:
    """The root options a command that talks to a server uses (``ctx.obj``); the token is resolved lazily."""

    api_url: str = DEFAULT_API_URL
    token: str | None = None
    data_dir: Path | None = None

    def token_files(self) -> list[Path]:
        """Admin-token files of a local server, in the order they are tried (none for a remote server)."""
        if urlsplit(self.api_url).hostname not in LOOPBACK_HOSTS:
            return []
        env_dir = os.environ.get("ENVYARD_DATA_DIR")
        dirs = [self.data_dir] if self.data_dir is not None else [*([Path(env_dir)] if env_dir else []),
                                                                  Path("envyard-data")]
        return [d / "admin-token" for d in dirs]

    def resolve_token(self) -> str:
        """``--token``/``ENVYARD_TOKEN``, else a local server's ``<data-dir>/admin-token``."""
        if self.token:
            return self.token
        # A local server started just before this command creates its token file at startup: wait for it.
        deadline = time.monotonic() + (TOKEN_FILE_WAIT_SECONDS if self.data_dir is not None else 0)
        while True:
            for path in self.token_files():
                if path.is_file() and (token := path.read_text().strip()):
                    return token
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        tried = ", ".join(str(p) for p in self.token_files()) or "none (the server is not on this host)"
        raise AuthenticationError(
            f"no API token for {self.api_url}",
            hint="pass --token T, or set ENVYARD_TOKEN, or (for a local server) --data-dir DIR holding the "
                 f"server's admin-token file; admin-token files tried: {tried}",
        )


@click.group(cls=EnvyardCLI, context_settings={"help_option_names": ["-h", "--help"]}, epilog=_exit_code_table())
@click.version_option(package_name="envyard")
@click.option("--api", "api_url", envvar="ENVYARD_API_URL", default=DEFAULT_API_URL, show_default=True,
              metavar="URL", help="The envyard server [ENVYARD_API_URL].")
@click.option("--token", envvar="ENVYARD_TOKEN", metavar="T",
              help="API token [ENVYARD_TOKEN; for a local server: <data-dir>/admin-token].")
@click.option("--data-dir", type=click.Path(path_type=Path), metavar="DIR",
              help="A local server's data directory, for its admin-token [ENVYARD_DATA_DIR, ./envyard-data].")
@click.pass_context
def cli(ctx: click.Context, api_url: str, token: str | None, data_dir: Path | None) -> None:
    """envyard: solve, lock and build conda environments reproducibly."""
    ctx.obj = ServerOptions(api_url=api_url.rstrip("/"), token=token or None, data_dir=data_dir)
    given = {name: ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
             for name in ("api_url", "token", "data_dir")}
    ctx.default_map = {  # root options given on the command line also reach ``serve`` and ``worker``
        "serve": {"data_dir": data_dir} if given["data_dir"] else {},
        "worker": {key: value for key, value in (("api_url", api_url), ("token", token)) if given[key]},
    }


def _register() -> None:
    from envyard.api import cli_client, cli_image, cli_lock, cli_namespaces, cli_service

    cli_lock.register(cli)
    cli_image.register(cli)
    cli_service.register(cli)
    cli_client.register(cli)
    from envyard.api import cli_gc

    cli_gc.register(cli)
    cli_namespaces.register(cli)
    from envyard.api import cli_targets  # adds ``build publish`` to cli_client's build group

    cli_targets.register(cli)


def main() -> None:
    """Run the CLI and leave without interpreter finalization.

    py-rattler's native worker threads may still drop Python objects while the
    interpreter finalizes, which aborts the process (``PyGILState_Release ...
    finalizing``) after the work is done. The CLI therefore flushes its output
    and ends the process directly with the command's exit code.
    """
    _register()
    code = 0
    try:
        cli(prog_name="envyard", standalone_mode=True)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
