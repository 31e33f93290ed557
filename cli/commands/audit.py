"""``envyard audit``: the audit log of access, policy, quota, token, promotion and deletion changes (admin token)."""

from __future__ import annotations

import json
from typing import Any

import click

from envyard.cli.context import api_client
from envyard.cli.output import emit, format_when, json_mode, table

__all__ = ["audit_command"]


def _state(value: Any) -> str:
    return "-" if value is None else json.dumps(value, sort_keys=True)


@click.command("audit")
@click.option("--actor", metavar="NAME", help="Only changes made by NAME (a token, user or service account).")
@click.option("--action", metavar="PREFIX", help="Only actions starting with PREFIX (token, binding.delete, ...).")
@click.option("--since", metavar="TIME", help="From TIME on (ISO 8601, e.g. 2026-01-31 or 2026-01-31T12:00Z).")
@click.option("--until", metavar="TIME", help="Before TIME (ISO 8601).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="At most this many events.")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def audit_command(ctx: click.Context, actor: str | None, action: str | None, since: str | None, until: str | None,
                  limit: int, json_output: bool) -> None:
    """Who changed which permission, policy, quota, token or binding, when, from what to what (oldest first)."""
    json_mode(ctx, json_output)
    client = api_client(ctx)
    params: dict[str, Any] = {k: v for k, v in
                              {"actor": actor, "action": action, "since": since, "until": until}.items() if v}
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(events) < limit:
        page = client.json("GET", "/api/v1/admin/audit",
                           params={**params, "limit": min(500, limit - len(events)),
                                   **({"cursor": cursor} if cursor else {})})
        events.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    if json_output:
        emit(events)
        return
    table("id", "when", "actor", "action", "target", "before", "after", rows=[
        [e["id"], format_when(e["at"]), f"{e['actor_name']} ({e['actor_kind']})", e["action"], e["target"],
         _state(e["before"]), _state(e["after"])] for e in events])
