"""The ``envyard`` command line: one entry point, errors rendered in one place.

Commands live in ``envyard.cli.commands`` (one module per command or group) and are registered here, and only
here. Every :class:`envyard.builder.errors.EnvyardError` becomes one line on stderr (followed by its indented
explanation, such as a solver's conflict tree, if it has one) and the error's exit code; a command-line usage error
exits 64 (EX_USAGE); nothing else reaches the user as a traceback. With ``--json`` stdout carries exactly one JSON
document: the command's result, with the error as its ``"error"`` member when the command fails
(:mod:`envyard.cli.output`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from envyard.builder.errors import EXIT_CODES, EnvyardError, UsageError
from envyard.cli.commands.access import access_group
from envyard.cli.commands.admin import deprecate_command, policy_group, quota_group, retention_group, usage_command
from envyard.cli.commands.audit import audit_command
from envyard.cli.commands.build import build_group
from envyard.cli.commands.channel import channel_group
from envyard.cli.commands.ci import ci_command
from envyard.cli.commands.data import data_group
from envyard.cli.commands.dvc import dvc_group
from envyard.cli.commands.env import env_group
from envyard.cli.commands.gc import gc_command
from envyard.cli.commands.image import image_command
from envyard.cli.commands.install import install_command
from envyard.cli.commands.k8s import k8s_group
from envyard.cli.commands.lock import lock_group
from envyard.cli.commands.login import login_command, logout_command
from envyard.cli.commands.manifest import manifest_group
from envyard.cli.commands.namespace import namespace_group
from envyard.cli.commands.pack import pack_command
from envyard.cli.commands.run import run_command
from envyard.cli.commands.serve import serve_command
from envyard.cli.commands.target import target_group
from envyard.cli.commands.token import token_group
from envyard.cli.commands.verify import verify_command
from envyard.cli.commands.why import why_command
from envyard.cli.commands.worker import worker_command
from envyard.cli.context import DEFAULT_API_URL, ServerOptions
from envyard.cli.output import print_error, print_usage_error

__all__ = ["EnvyardCLI", "cli", "main"]


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
            print_usage_error(ctx, err, ctx.meta.get("argv", []))
            raise
        except EnvyardError as err:
            print_error(ctx, err)
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


# Every command of ``envyard`` (``envyard --help`` lists them sorted).
cli.add_command(lock_group)
cli.add_command(why_command)
cli.add_command(channel_group)
cli.add_command(install_command)
cli.add_command(pack_command)
cli.add_command(image_command)
cli.add_command(serve_command)
cli.add_command(worker_command)
cli.add_command(env_group)
cli.add_command(build_group)
cli.add_command(gc_command)
cli.add_command(namespace_group)
cli.add_command(target_group)
cli.add_command(k8s_group)
cli.add_command(data_group)
cli.add_command(manifest_group)
cli.add_command(run_command)
cli.add_command(verify_command)
cli.add_command(dvc_group)
cli.add_command(ci_command)
cli.add_command(audit_command)
cli.add_command(token_group)
cli.add_command(access_group)
cli.add_command(login_command)
cli.add_command(logout_command)
cli.add_command(policy_group)
cli.add_command(quota_group)
cli.add_command(retention_group)
cli.add_command(usage_command)
env_group.add_command(deprecate_command)


def main() -> None:
    """Run the CLI and leave without interpreter finalization.

    py-rattler's native worker threads may still drop Python objects while the
    interpreter finalizes, which aborts the process (``PyGILState_Release ...
    finalizing``) after the work is done. The CLI therefore flushes its output
    and ends the process directly with the command's exit code.
    """
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
