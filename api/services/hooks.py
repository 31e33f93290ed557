"""Push webhooks (GitHub, GitLab) and the environment sources they rebuild.

An environment may name its source: a git repository (a local path or an http(s) URL, checked with the server's
:class:`~envyard.builder.url_policy.UrlPolicy`), a branch (None: any) and the spec's path in it. A push event
whose repository is that repository, whose branch matches and whose commits touched the spec path queues a build
of the spec *as of the pushed commit*: the server fetches that one file with ``git`` (in a temporary bare
repository, with a timeout), never trusting file contents from the payload.

Hooks authenticate by signature, not by token (GitHub: ``X-Hub-Signature-256``, the HMAC-SHA256 of the body with
``ServiceSettings.github_hook_secret``; GitLab: ``X-Gitlab-Token`` equal to ``gitlab_hook_token``); a bad or missing
signature is a 401 and nothing is read from the payload. A delivery id seen before (``X-GitHub-Delivery``,
``X-Gitlab-Event-UUID``) is ignored: :class:`~envyard.api.models.HookDelivery` holds each once (a unique
constraint, so two concurrent copies of one delivery cannot both build).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from envyard.api.models import Build, Environment, EnvironmentSource, HookDelivery, Namespace
from envyard.api.services import builds
from envyard.api.services.specs import submission_policy
from envyard.api.settings import ServiceSettings
from envyard.builder.errors import AuthenticationError, EnvyardError, SpecError
from envyard.builder.url_policy import UrlPolicy
from envyard.worker.protocol import BuildOptions

log = logging.getLogger(__name__)

PROVIDERS = ("github", "gitlab")
MAX_SPEC_BYTES = 1024 * 1024
GIT = shutil.which("git") or "/usr/bin/git"


@dataclass(frozen=True, slots=True)
class PushEvent:
    """What a push webhook says, reduced to what envyard uses."""

    provider: str
    repository_urls: tuple[str, ...]
    branch: str | None
    commit: str
    changed: frozenset[str]


@dataclass
class HookOutcome:
    status: str  # "built", "ignored"
    reason: str | None = None
    builds: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"status": self.status, "builds": self.builds}
        if self.reason:
            found["ignored"] = self.reason
        if self.errors:
            found["errors"] = self.errors
        return found


# --- signatures ------------------------------------------------------------------------------------------------------


def _unauthorized(message: str) -> AuthenticationError:
    return AuthenticationError(message, hint="configure the webhook with the server's hook secret "
                                             "(ENVYARD_GITHUB_HOOK_SECRET / ENVYARD_GITLAB_HOOK_TOKEN)")


def github_signature(secret: str, body: bytes) -> str:
    """``sha256=<hex>``: the X-Hub-Signature-256 GitHub sends for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(provider: str, headers: Mapping[str, str], body: bytes, settings: ServiceSettings) -> None:
    """AuthenticationError (401) unless the request carries the right signature (compared in constant time)."""
    if provider == "github":
        if not settings.github_hook_secret:
            raise _unauthorized("GitHub hooks are not enabled on this server")
        given = headers.get("x-hub-signature-256", "")
        if not hmac.compare_digest(given.encode(), github_signature(settings.github_hook_secret, body).encode()):
            raise _unauthorized("bad or missing X-Hub-Signature-256")
        return
    if not settings.gitlab_hook_token:
        raise _unauthorized("GitLab hooks are not enabled on this server")
    if not hmac.compare_digest(headers.get("x-gitlab-token", "").encode(), settings.gitlab_hook_token.encode()):
        raise _unauthorized("bad or missing X-Gitlab-Token")


def delivery_id(provider: str, headers: Mapping[str, str]) -> str | None:
    return headers.get("x-github-delivery" if provider == "github" else "x-gitlab-event-uuid")


def is_push(provider: str, headers: Mapping[str, str]) -> bool:
    if provider == "github":
        return headers.get("x-github-event", "") == "push"
    return headers.get("x-gitlab-event", "") == "Push Hook"


# --- payloads --------------------------------------------------------------------------------------------------------


def normalize_repo(url: str) -> str:
    """A repository URL compared loosely: no scheme case, no credentials, no trailing ``/`` or ``.git``."""
    url = url.strip().rstrip("/")
    url = url.removesuffix(".git")
    if url.startswith("file://"):
        url = url[len("file://"):]
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.hostname:
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname.lower()}{port}{parts.path}"
    return os.path.normpath(url) if url.startswith("/") else url


def parse_push(provider: str, body: bytes) -> PushEvent:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"the webhook body is not JSON: {exc}", hint="send the push event as application/json")\
            from None
    if not isinstance(payload, dict):
        raise SpecError("the webhook body is not a JSON object", hint="send the push event's payload")
    repo = payload.get("repository") or payload.get("project") or {}
    keys = ("clone_url", "html_url", "git_url", "ssh_url", "url") if provider == "github" else \
        ("git_http_url", "http_url", "web_url", "git_ssh_url", "url", "homepage")
    urls = tuple(str(repo[k]) for k in keys if isinstance(repo, dict) and isinstance(repo.get(k), str))
    ref = str(payload.get("ref") or "")
    commit = str(payload.get("after") or payload.get("checkout_sha") or "")
    changed: set[str] = set()
    for commit_info in payload.get("commits") or []:
        if isinstance(commit_info, dict):
            for kind in ("added", "modified", "removed"):
                changed.update(str(p) for p in commit_info.get(kind) or [])
    if not commit or not urls:
        raise SpecError("the push event names no repository or commit",
                        hint="send a push event (repository and after/checkout_sha)")
    return PushEvent(provider, urls, ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None,
                     commit, frozenset(changed))


# --- fetching a spec -------------------------------------------------------------------------------------------------


def check_repo_url(url: str, policy: UrlPolicy) -> None:
    """ForbiddenUrlError unless the server may fetch ``url`` (a local path is checked as its file:// URL)."""
    if url.startswith("/"):
        policy.check(Path(url).as_uri(), what="repository", shown=url, field="repo_url")
    elif url.startswith(("https://", "http://", "file://")):
        policy.check(url, what="repository", field="repo_url")
    else:
        raise SpecError(f"repository {url!r} is neither an absolute path nor an http(s) URL", field="repo_url",
                        hint="give /path/to/repo.git or https://host/owner/repo.git")


def fetch_spec(repo_url: str, commit: str, path: str, branch: str | None, timeout: float) -> str:
    """The text of ``path`` at ``commit`` in the repository at ``repo_url``, fetched with ``git`` into a temporary
    bare repository (never a checkout: no hooks, no filters run)."""
    env = {"PATH": os.defpath, "GIT_TERMINAL_PROMPT": "0", "HOME": "/nonexistent",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_ALLOW_PROTOCOL": "file:http:https"}
    with tempfile.TemporaryDirectory(prefix="envyard-hook-") as tmp:
        def git(*args: str) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run([GIT, "-C", tmp, *args], capture_output=True, timeout=timeout, env=env,
                                  check=False)

        try:
            git("init", "-q", "--bare")
            want = f"refs/heads/{branch}" if branch else commit
            fetched = git("fetch", "-q", "--depth=50", "--no-tags", repo_url, want)
            if fetched.returncode != 0 and want != commit:
                fetched = git("fetch", "-q", "--depth=50", "--no-tags", repo_url, commit)
            if fetched.returncode != 0:
                raise SpecError(f"cannot fetch {commit[:12]} from {repo_url}: "
                                f"{fetched.stderr.decode(errors='replace').strip()[:300]}", field="repo_url",
                                hint="check the environment's source repository and that the commit was pushed")
            shown = git("show", f"{commit}:{path}")
        except subprocess.TimeoutExpired:
            raise SpecError(f"fetching {repo_url} took longer than {timeout:g} s", field="repo_url",
                            hint="raise ENVYARD_HOOK_GIT_TIMEOUT_SECONDS or use a closer mirror") from None
        if shown.returncode != 0:
            raise SpecError(f"{path} does not exist at {commit[:12]} in {repo_url}", file=path,
                            hint="update the environment's source path: envyard env source NS/NAME --path PATH")
        if len(shown.stdout) > MAX_SPEC_BYTES:
            raise SpecError(f"{path} at {commit[:12]} is larger than {MAX_SPEC_BYTES} bytes", file=path,
                            hint="a spec is a small text file")
        try:
            return shown.stdout.decode("utf-8")
        except UnicodeDecodeError:
            raise SpecError(f"{path} at {commit[:12]} is not UTF-8 text", file=path, hint="save it as UTF-8") \
                from None


# --- sources ---------------------------------------------------------------------------------------------------------


def set_source(session: Session, environment: Environment, repo_url: str, spec_path: str, branch: str | None,
               policy: UrlPolicy) -> EnvironmentSource:
    """Create or replace ``environment``'s source."""
    check_repo_url(repo_url, policy)
    clean = PurePosixPath(spec_path)
    if clean.is_absolute() or ".." in clean.parts or not spec_path.strip():
        raise SpecError(f"spec path {spec_path!r} must be relative to the repository root, without '..'",
                        field="path", hint="for example envs/web/environment.yml")
    assert environment.id is not None
    source = session.exec(select(EnvironmentSource).where(EnvironmentSource.environment_id == environment.id)).first()
    if source is None:
        source = EnvironmentSource(environment_id=environment.id, repo_url=repo_url, spec_path=str(clean),
                                   branch=branch)
    else:
        source.repo_url, source.spec_path, source.branch = repo_url, str(clean), branch
    session.add(source)
    session.flush()
    return source


def get_source(session: Session, environment: Environment) -> EnvironmentSource | None:
    return session.exec(select(EnvironmentSource).where(EnvironmentSource.environment_id == environment.id)).first()


def _record_delivery(session: Session, provider: str, delivery: str) -> bool:
    """Store the delivery id; False when it was stored before (a replay), decided by the unique constraint."""
    try:
        with session.begin_nested():  # a savepoint: a replay rolls back only its own insert
            session.add(HookDelivery(provider=provider, delivery_id=delivery[:200]))
            session.flush()
    except IntegrityError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class _Target:
    """An environment a push concerns, copied out of the database before any git fetch."""

    namespace: str
    name: str
    repo_url: str
    spec_path: str
    branch: str | None
    platforms: list[str]
    options: dict[str, Any] | None

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"


def _matching(session: Session, event: PushEvent) -> list[_Target]:
    wanted = {normalize_repo(u) for u in event.repository_urls}
    rows = session.exec(
        select(EnvironmentSource, Environment, Namespace)
        .join(Environment, col(Environment.id) == EnvironmentSource.environment_id)
        .join(Namespace, col(Namespace.id) == Environment.namespace_id)
        .order_by(col(EnvironmentSource.id))
    ).all()
    found = []
    for source, env, ns in rows:
        if (normalize_repo(source.repo_url) in wanted and (source.branch is None or source.branch == event.branch)
                and source.spec_path in event.changed):
            current = session.get(Build, env.current_build_id) if env.current_build_id else None
            found.append(_Target(ns.name, env.name, source.repo_url, source.spec_path, source.branch,
                                 list(current.platforms) if current else [],
                                 dict(current.options) if current else None))
    return found


def _seen(session: Session, provider: str, delivery: str) -> bool:
    return session.exec(select(HookDelivery.id).where(HookDelivery.provider == provider,
                                                      HookDelivery.delivery_id == delivery[:200])).first() is not None


def handle_push(session: Session, provider: str, headers: Mapping[str, str], body: bytes,
                settings: ServiceSettings) -> HookOutcome:
    """Verify, de-duplicate and act on one webhook delivery (the caller commits).

    The specs are fetched while no database transaction is open (a slow repository holds no lock); the delivery
    id is then recorded, and a concurrent copy of the same delivery that recorded it first makes this one a
    replay (the unique constraint decides), before any build is queued.
    """
    verify(provider, headers, body, settings)
    delivery = delivery_id(provider, headers)
    if not delivery:
        raise SpecError("the webhook carries no delivery id", hint="send X-GitHub-Delivery / X-Gitlab-Event-UUID")
    if _seen(session, provider, delivery):
        return HookOutcome("ignored", "replay")
    event = parse_push(provider, body) if is_push(provider, headers) else None
    targets = _matching(session, event) if event is not None else []
    session.rollback()  # end the read transaction: the fetches below hold none
    outcome = HookOutcome("built")
    policy = UrlPolicy.from_settings(settings)
    fetched: list[tuple[_Target, Any]] = []
    for target in targets:
        assert event is not None
        try:
            check_repo_url(target.repo_url, policy)
            text = fetch_spec(target.repo_url, event.commit, target.spec_path, target.branch,
                              settings.hook_git_timeout_seconds)
            fetched.append((target, builds.check_submission(PurePosixPath(target.spec_path).name, text,
                                                            target.platforms, submission_policy(settings))))
        except EnvyardError as err:
            log.warning("%s hook: %s not rebuilt: %s", provider, target.label, err.one_line())
            outcome.errors.append({"environment": target.label, "error": err.one_line()})
    if not _record_delivery(session, provider, delivery):
        return HookOutcome("ignored", "replay")
    if event is None:
        return HookOutcome("ignored", "not a push event")
    for target, spec in fetched:
        try:
            options = BuildOptions(**target.options) if target.options is not None else BuildOptions()
            submitted = builds.submit_build(session, target.namespace, target.name, spec=spec, options=options,
                                            requested_by=f"hook:{provider}")
        except EnvyardError as err:
            outcome.errors.append({"environment": target.label, "error": err.one_line()})
            continue
        outcome.builds.append({"environment": target.label, "build_id": submitted.build.id,
                               "reused": submitted.reused, "commit": event.commit})
    if not outcome.builds and not outcome.errors:
        return HookOutcome("ignored", "no environment's spec changed")
    return outcome
