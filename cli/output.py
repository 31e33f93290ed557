"""What a command prints: JSON documents (``--json``: one document per invocation), tables, sizes and times, the
rich console and the stage reporter of local commands, errors as one line, and the logging of long-running commands.

With ``--json`` stdout carries exactly one JSON document: the command's result, with the error as its ``"error"``
member when the command fails. A command states its mode with :func:`json_mode`; a result it wants printed with
the error (``lock --check``) it hands to :func:`error_document`; the root group prints failures through
:func:`print_error` and :func:`print_usage_error`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import click

from envyard.builder.errors import EnvyardError, UsageError
from envyard.builder.progress import Stage, format_size

__all__ = [
    "NO_WRAP_WIDTH",
    "RichReporter",
    "configure_logging",
    "emit",
    "emit_final",
    "error_document",
    "json_mode",
    "print_error",
    "print_usage_error",
    "rich_console",
    "format_size",
    "table",
    "format_when",
]

NO_WRAP_WIDTH = 10_000
#: ``ctx.meta`` keys: whether the command prints JSON, and the result to print with its error
JSON_OUTPUT = "json_output"
JSON_DOCUMENT = "json_document"


def json_mode(ctx: click.Context, json_output: bool) -> bool:
    """Record whether this invocation prints JSON (then an error is printed as the document's ``"error"``)."""
    ctx.meta[JSON_OUTPUT] = json_output
    return json_output


def emit(data: Any, *, indent: int | None = 2) -> None:
    """Print ``data`` as the invocation's JSON document."""
    click.echo(json.dumps(data, indent=indent))


def emit_final(ctx: click.Context, data: Any) -> None:
    """Print ``data`` as the invocation's one JSON document even if the command fails after it (its error is then
    only the stderr line and the exit code)."""
    emit(data)
    ctx.meta[JSON_OUTPUT] = False


def error_document(ctx: click.Context, document: dict[str, Any]) -> None:
    """The result a failing command prints with ``--json``: the root adds the error to it and prints it once."""
    ctx.meta[JSON_DOCUMENT] = document


def print_error(ctx: click.Context, err: EnvyardError) -> None:
    """A typed error: the JSON document (with ``--json``), then one line on stderr and its indented explanation."""
    if ctx.meta.get(JSON_OUTPUT):
        document = {**ctx.meta.get(JSON_DOCUMENT, {}), "error": err.to_problem()}
        emit(document)
    click.echo(f"error: {err.one_line()}", err=True)
    for line in err.explanation_lines():
        click.echo(line, err=True)


def print_usage_error(ctx: click.Context, err: click.UsageError, argv: list[str]) -> None:
    """A command-line usage error: with ``--json`` among the arguments its problem document (click prints the line)."""
    if "--json" in argv:
        emit({"error": UsageError(err.format_message()).to_problem()})


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


def table(*columns: str, rows: list[list[Any]]) -> None:
    """A borderless table on stdout."""
    from rich.table import Table

    found = Table(*columns, box=None, header_style="bold")
    for row in rows:
        found.add_row(*(str(cell) for cell in row))
    rich_console().print(found)


def format_when(value: str | None) -> str:
    """An API timestamp to the second, or ``-``.

    >>> format_when("2025-01-31T12:34:56.789+00:00"), format_when(None)
    ('2025-01-31 12:34:56', '-')
    """
    return value[:19].replace("T", " ") if value else "-"


class RichReporter:
    """Shows the current stage on stderr with a spinner (silent when stderr is not a terminal)."""

    def __init__(self) -> None:
        self.console = rich_console(stderr=True)
        self.status: Any = None
        if (ctx := click.get_current_context(silent=True)) is not None:
            ctx.call_on_close(self.close)  # the spinner stops before an error line is printed

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def stage_started(self, stage: Stage, detail: str = "") -> None:
        if self.console.is_terminal:
            self.status = self.console.status(f"[bold]{stage.value}[/] {detail}")
            self.status.start()

    def stage_finished(self, stage: Stage, detail: str = "", **fields: Any) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None
            extra = " ".join(f"{k}={v}" for k, v in fields.items())
            self.console.print(f"[green]✓[/] {stage.value} {detail} {extra}".rstrip())


def configure_logging(level: str) -> None:
    """Log lines with time, level and logger on stderr (``serve``, ``worker``); HTTP and migration libraries only
    from warnings up."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "httpcore", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
