"""Specs checked at submission: a bad spec is a 422 naming the line, not a failed build minutes later.

A submitted spec is the text of one document: it may not include files of the server (pip ``-r``),
it stays within the parser's limits, and every URL a build of it would fetch (channels, the
build's ``channel_alias``, pip indexes, find-links, direct URLs, a lockfile's package URLs) must
pass the server's :class:`~builder.url_policy.UrlPolicy`. The worker checks the same again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from envyard.builder.channels import ChannelOptions
from envyard.builder.errors import SpecError
from envyard.builder.lock import DEFAULT_PLATFORMS
from envyard.builder.model import SUPPORTED_PLATFORMS
from envyard.builder.policy import Policy, PolicyViolationError, Violation, check_lock, evaluate
from envyard.builder.settings import Settings
from envyard.builder.spec import detect_input_kind, parse_environment_yaml, parse_requirements_txt
from envyard.builder.spec_yaml import check_size, check_yaml_limits
from envyard.builder.url_policy import UrlPolicy, lock_urls, spec_urls

__all__ = ["SubmissionPolicy", "resolve_platforms", "submission_policy"]


class _AnyVariable(Mapping[str, str]):
    """Every ``${VAR}`` counts as set: workers expand them from their own environment at build time."""

    def __getitem__(self, key: str) -> str:
        return "variable"

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __bool__(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class SubmissionPolicy:
    """What the server accepts in a submitted spec: the URL policy, and the channel alias names resolve against."""

    urls: UrlPolicy
    channel_alias: str
    mirrors: Mapping[str, Sequence[str]]


def submission_policy(settings: Settings) -> SubmissionPolicy:
    return SubmissionPolicy(UrlPolicy.from_settings(settings), settings.channel_alias, settings.mirrors)


def _line_finder(text: str) -> Callable[[str], int | None]:
    lines = text.splitlines()

    def find(shown: str) -> int | None:
        return next((number for number, line in enumerate(lines, 1) if shown in line), None)

    return find


def resolve_platforms(filename: str, text: str, platforms: Sequence[str], *, policy: SubmissionPolicy,
                      channel_alias: str | None = None, rules: Policy | None = None) -> list[str]:
    """Parse the spec (or lockfile), check what a build of it would fetch, and return its platforms, validated.

    ``rules``: the admins' policy (:mod:`builder.policy`) the build is held to: PolicyViolationError (422) listing
    every violation. A channel alias the policy forces replaces the submitted one."""
    check_size(text, filename)
    violations: list[Violation] = []
    if rules is not None and rules.channel_alias:
        if channel_alias is not None and channel_alias.rstrip("/") != rules.channel_alias.rstrip("/"):
            violations.append(Violation(field="options.channel_alias",
                                        message=f"the channel alias is fixed to {rules.channel_alias} by policy",
                                        fix="leave options.channel_alias unset"))
        channel_alias = rules.channel_alias
    urls = policy.urls.cached()
    if channel_alias is not None:
        urls.check(channel_alias, what="channel_alias", field="options.channel_alias")
    kind = detect_input_kind(filename, text)
    if kind in ("environment", "requirements"):
        parse = parse_environment_yaml if kind == "environment" else parse_requirements_txt
        spec = parse(text, source=filename, environ=_AnyVariable(), allow_includes=False)
        channels = ChannelOptions(channel_alias=channel_alias or policy.channel_alias, mirrors=policy.mirrors)
        urls.check_all(spec_urls(spec, channels), file=filename, lines=_line_finder(text))
        chosen = list(platforms) or list(spec.platforms) or list(DEFAULT_PLATFORMS)
        if rules is not None:
            violations += evaluate(spec, sorted(set(chosen)), rules)
    else:
        from envyard.builder.lockfiles import parse_lockfile

        if kind != "explicit":
            check_yaml_limits(text, filename)
        lock = parse_lockfile(text, source=filename)
        urls.check_all(lock_urls(lock), file=filename, lines=_line_finder(text))
        locked = set(lock.platforms)
        missing = [p for p in platforms if p not in locked]
        if missing:
            raise SpecError(f"the lockfile has no {', '.join(missing)} section", file=filename, field="platforms",
                            hint=f"it locks {', '.join(sorted(locked))}; relock for the other platforms")
        chosen = list(platforms) or sorted(locked)
        if rules is not None:
            violations += evaluate_lock_platforms(chosen, rules) + check_lock(lock, rules)
    for platform in chosen:
        if platform not in SUPPORTED_PLATFORMS:
            raise SpecError(f"unknown platform '{platform}'", file=filename, field="platforms",
                            hint="use one of: " + ", ".join(SUPPORTED_PLATFORMS))
    if violations:
        raise PolicyViolationError(violations, file=filename)
    return sorted(set(chosen))


def evaluate_lock_platforms(platforms: Sequence[str], rules: Policy) -> list[Violation]:
    """A submitted lockfile's platforms the policy does not allow."""
    if rules.allowed_platforms is None:
        return []
    return [Violation(field="platforms", message=f"platform {p} is not allowed",
                      fix="build for " + (", ".join(rules.allowed_platforms) or "no platform"))
            for p in sorted(set(platforms)) if p not in rules.allowed_platforms]
