"""``envyard policy``, ``envyard quota``, ``envyard retention``, ``envyard usage`` and ``envyard env deprecate``:
what admins set and see (docs/admin.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from envyard.builder.errors import UsageError
from envyard.builder.policy import parse_policy
from envyard.cli.context import api_client, environment_name
from envyard.cli.output import emit, format_size, format_when, json_mode, table

__all__ = ["deprecate_command", "policy_group", "quota_group", "retention_group", "usage_command"]

SCOPE_HELP = "global, NAMESPACE or NAMESPACE/NAME"


def policy_path(scope: str) -> str:
    """The API path of a policy level: ``global``, ``NAMESPACE`` or ``NAMESPACE/NAME``."""
    if scope == "global":
        return "/api/v1/admin/policy"
    namespace, _, name = scope.partition("/")
    if not namespace or "/" in name:
        raise UsageError(f"invalid policy scope '{scope}'", hint=f"give {SCOPE_HELP}")
    if name:
        return f"/api/v1/namespaces/{namespace}/environments/{name}/policy"
    return f"/api/v1/namespaces/{namespace}/policy"


@click.group("policy")
def policy_group() -> None:
    """Admins' policies: channels, denied and required packages, version floors, platforms, size and time."""


@policy_group.command("show")
@click.argument("scope", metavar="SCOPE")
@click.option("--effective", is_flag=True, help="The merged policy builds there are held to.")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def policy_show(ctx: click.Context, scope: str, effective: bool, json_output: bool) -> None:
    """The policy of SCOPE (global, NAMESPACE or NAMESPACE/NAME)."""
    json_mode(ctx, json_output)
    params = {"effective": "true"} if effective and scope != "global" else None
    policy = api_client(ctx).json("GET", policy_path(scope), params=params)
    if json_output:
        emit(policy)
        return
    _print_policy(policy)


def _print_policy(policy: dict[str, Any]) -> None:
    rows = []
    for key, value in policy.items():
        if value in (None, [], {}):
            continue
        if key == "deny":
            value = ", ".join(f"{d['name']} ({d['reason']})" for d in value)
        elif key == "floors":
            value = ", ".join(f"{name} >={version}" for name, version in value.items())
        elif key == "max_installed_bytes":
            value = format_size(value)
        elif isinstance(value, list):
            value = ", ".join(value)
        rows.append([key, value])
    if not rows:
        click.echo("no policy set")
        return
    table("setting", "value", rows=rows)


@policy_group.command("set")
@click.argument("scope", metavar="SCOPE")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE.yaml")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def policy_set(ctx: click.Context, scope: str, file: Path, json_output: bool) -> None:
    """Replace the policy of SCOPE with FILE.yaml (checked here first: errors name the file and field)."""
    json_mode(ctx, json_output)
    policy = parse_policy(file.read_text(encoding="utf-8"), str(file))
    stored = api_client(ctx).json("PUT", policy_path(scope), json=policy.model_dump(mode="json"))
    if json_output:
        emit(stored)
        return
    click.echo(f"policy of {scope} set")
    _print_policy(stored)


@click.group("quota")
def quota_group() -> None:
    """Namespace quotas (storage, builds queued or running, submissions per user and minute) and retention."""


def _print_quota(quota: dict[str, Any]) -> None:
    def shown(value: Any, size: bool = False) -> str:
        return "unlimited" if value is None else format_size(value) if size else str(value)

    table("quota", "value", rows=[
        ["storage", f"{format_size(quota['storage_used'])} used of {shown(quota['storage_bytes'], True)}"],
        ["builds queued or running", shown(quota["concurrent_builds"])],
        ["submissions per user and minute", shown(quota["submissions_per_minute"])],
        ["retention: keep last", "all" if quota["keep_last"] is None else quota["keep_last"]],
        ["retention: keep younger than (days)", "-" if quota["keep_days"] is None else quota["keep_days"]],
    ])


@quota_group.command("show")
@click.argument("namespace")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def quota_show(ctx: click.Context, namespace: str, json_output: bool) -> None:
    """NAMESPACE's quotas, retention and storage use."""
    json_mode(ctx, json_output)
    quota = api_client(ctx).json("GET", f"/api/v1/namespaces/{namespace}/quota")
    if json_output:
        emit(quota)
        return
    _print_quota(quota)


@quota_group.command("set")
@click.argument("namespace")
@click.option("--storage-bytes", type=int, help="Storage quota in bytes (-1: unlimited).")
@click.option("--concurrent-builds", type=int, help="Builds queued or running at once (-1: unlimited).")
@click.option("--submissions-per-minute", type=int, help="Builds one user may submit per minute (-1: unlimited).")
@click.option("--keep-last", type=int, help="Retention: builds kept per environment (-1: all).")
@click.option("--keep-days", type=int, help="Retention: builds younger than this are kept (-1: unset).")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def quota_set(ctx: click.Context, namespace: str, json_output: bool, **values: int | None) -> None:
    """Set NAMESPACE's quotas and retention (admin token); options left out are kept."""
    json_mode(ctx, json_output)
    body = {key: (None if value < 0 else value) for key, value in values.items() if value is not None}
    if not body:
        raise UsageError("nothing to set", hint="give at least one option, e.g. --storage-bytes 10000000000")
    quota = api_client(ctx).json("PUT", f"/api/v1/namespaces/{namespace}/quota", json=body)
    if json_output:
        emit(quota)
        return
    _print_quota(quota)


@click.group("retention")
def retention_group() -> None:
    """Collect the builds namespace retention does not keep."""


@retention_group.command("apply")
@click.option("--namespace", help="Only this namespace [default: every namespace with a retention].")
@click.option("--dry-run", is_flag=True, help="Report the builds and bytes that would go; change nothing.")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def retention_apply(ctx: click.Context, namespace: str | None, dry_run: bool, json_output: bool) -> None:
    """Remove the builds retention does not keep (artifacts and blobs no other build uses); needs an admin token."""
    json_mode(ctx, json_output)
    report = api_client(ctx).json("POST", "/api/v1/admin/retention",
                                  json={"namespace": namespace, "dry_run": dry_run})
    if json_output:
        emit(report)
        return
    verb = "would collect" if report["dry_run"] else "collected"
    click.echo(f"retention {verb} {len(report['builds'])} builds, {len(report['blobs'])} blobs "
               f"({format_size(report['bytes'])})" + ("" if report["dry_run"] else
                                                      f"; freed {format_size(report['freed_bytes'])}"))
    if report["builds"]:
        table("build", "environment", "status", "created", rows=[
            [b["id"], b["environment"], b["status"], format_when(b["created_at"])] for b in report["builds"]])


@click.command("usage")
@click.option("--since", help="Start (ISO date or time) [default: 30 days ago].")
@click.option("--until", help="End (ISO date or time) [default: now].")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def usage_command(ctx: click.Context, since: str | None, until: str | None, as_csv: bool, json_output: bool) -> None:
    """Builds, build minutes, failures, storage, pulls and downloads over a time range (admin token)."""
    json_mode(ctx, json_output)
    params = {key: value for key, value in (("since", since), ("until", until)) if value}
    client = api_client(ctx)
    if as_csv:
        click.echo(client.request("GET", "/api/v1/usage", params={**params, "format": "csv"}).text, nl=False)
        return
    report = client.json("GET", "/api/v1/usage", params=params)
    if json_output:
        emit(report)
        return
    click.echo(f"{report['since']} .. {report['until']}: {report['builds']['submitted']} builds submitted, "
               f"{report['builds']['finished']} finished, {report['build_minutes']['total']:.1f} build minutes")
    if report["failures"]:
        table("failure", "builds", rows=[[code, count] for code, count in report["failures"].items()])
    table("environment", "storage", rows=[[env, format_size(size)]
                                          for env, size in report["storage"]["environments"].items()])
    if report["pulls"]:
        table("environment", "user", "kind", "count", rows=[
            [p["environment"] or "-", p["user"] or "-", p["kind"], p["count"]] for p in report["pulls"]])


@click.command("deprecate")
@click.argument("environment", metavar="NAMESPACE/NAME")
@click.option("--successor", metavar="NAMESPACE/NAME", help="The environment to use instead.")
@click.option("--message", default="", help="Why, shown in listings and env show.")
@click.option("--undo", is_flag=True, help="Lift the deprecation.")
@click.option("--json", "json_output", is_flag=True)
@click.pass_context
def deprecate_command(ctx: click.Context, environment: str, successor: str | None, message: str, undo: bool,
                      json_output: bool) -> None:
    """Deprecate a curated environment, naming its successor."""
    json_mode(ctx, json_output)
    namespace, name = environment_name(environment)
    path = f"/api/v1/environments/{namespace}/{name}/deprecation"
    client = api_client(ctx)
    if undo:
        client.request("DELETE", path)
        if json_output:
            emit({"environment": f"{namespace}/{name}", "deprecated": None})
        else:
            click.echo(f"{namespace}/{name} is no longer deprecated")
        return
    row = client.json("PUT", path, json={"successor": successor, "message": message})
    if json_output:
        emit(row)
        return
    click.echo(f"{namespace}/{name} deprecated" + (f"; successor {successor}" if successor else ""))
