"""``envyard gc``: garbage-collect a server's artifact store (admin token), or see what would go (``--dry-run``)."""

from __future__ import annotations

from typing import Any

import click

from envyard.builder.errors import ServiceError
from envyard.cli.context import api_client
from envyard.cli.output import emit, format_size, json_mode, table

__all__ = ["gc_command"]

GC_PATH = "/api/v1/admin/gc"


def _collect(ctx: click.Context, body: dict[str, Any]) -> dict[str, Any]:
    """POST /api/v1/admin/gc once (it is not retried: a collection may take long, and a second one is refused);
    problem details come back as their typed error."""
    import httpx

    from envyard.worker.client import error_from_problem

    client = api_client(ctx)
    try:
        response = client.http.post(GC_PATH, json=body, timeout=httpx.Timeout(None, connect=5.0))
    except httpx.TransportError as exc:
        raise ServiceError(f"POST {client.api_url}{GC_PATH} failed: {type(exc).__name__}: {exc}",
                           hint=f"is the envyard server running at {client.api_url}? (choose it with --api URL or "
                                "ENVYARD_API_URL)") from None
    if response.status_code >= 400:
        raise error_from_problem(response)
    return dict(response.json())


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="Report what would be deleted; delete nothing.")
@click.option("--grace-seconds", type=click.FloatRange(min=0), metavar="S",
              help="Keep unreferenced blobs written in the last S seconds [default: the server's "
                   "ENVYARD_GC_GRACE_SECONDS].")
@click.option("--json", "json_output", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def gc_command(ctx: click.Context, dry_run: bool, grace_seconds: float | None, json_output: bool) -> None:
    """Delete the blobs no retained build references and no running build holds (needs an admin token)."""
    json_mode(ctx, json_output)
    body: dict[str, Any] = {"dry_run": dry_run}
    if grace_seconds is not None:
        body["grace_seconds"] = grace_seconds
    report = _collect(ctx, body)
    if json_output:
        emit(report)
        return
    r = report
    click.echo(f"garbage collection{' (dry run)' if r['dry_run'] else ''}: {r['blobs']} blobs "
               f"({format_size(r['bytes'])}) stored, {r['referenced']} referenced, {r['unreferenced']} unreferenced")
    verb = "would delete" if r["dry_run"] else "deleted"
    table("unreferenced", "blobs", rows=[
        ["held by running builds", r["kept_held"]],
        [f"written within the grace period ({r['grace_seconds']:g} s)", r["kept_recent"]],
        ["taken by a build while collecting", r["kept_racing"]],
        [verb, f"{r['deletable' if r['dry_run'] else 'deleted']} "
               f"({format_size(r['deletable_bytes' if r['dry_run'] else 'deleted_bytes'])})"],
    ])
    removed = "would remove" if r["dry_run"] else "removed"
    click.echo(f"{removed} {r['holds_released']} holds of finished builds, {r['stale_tombstones']} stale "
               f"tombstones, {r['stale_uploads']} abandoned uploads ({format_size(r['stale_upload_bytes'])}); "
               f"took {r['seconds']:g} s")
