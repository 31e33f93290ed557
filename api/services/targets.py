"""Registry targets of a namespace: where its completed builds are pushed (see :mod:`api.services.publish`).

A target is a registry URL (``http(s)://host[:port]``), a repository template (``{namespace}`` and
``{environment}``, rendered in lower case into a valid OCI repository name) and optional credentials. The password
(or token) is encrypted with Fernet under a key derived from the server's secret key before it reaches the
database; it is never returned or logged. Deleting a target deletes the record of its publications too (what was
pushed stays in the registry).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken
from sqlmodel import Session, col, select

from envyard.api.auth.secret_key import fernet_key
from envyard.api.models import Publication, RegistryTarget
from envyard.api.services.lookups import get_namespace
from envyard.builder.errors import ConflictError, NotFoundError, TargetError

PLACEHOLDERS = frozenset({"namespace", "environment"})
COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"^{COMPONENT}(?:/{COMPONENT})*$")
HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                  r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")




def check_url(url: str) -> str:
    """``http(s)://host[:port]`` without path, query or credentials; returned without a trailing slash."""
    parts = urlsplit(url.strip())
    hint = "write it as https://registry.example.com or http://127.0.0.1:5000"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TargetError(f"registry URL {url!r} is not http(s)://host[:port]", field="url", hint=hint)
    if "@" in parts.netloc:
        raise TargetError("a registry URL must not hold credentials", field="url",
                          hint="pass the username and password (or token) as their own fields")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise TargetError(f"registry URL {url!r} has a path, query or fragment", field="url",
                          hint="put repository path components into the repository template")
    if not HOST.match(parts.netloc):
        raise TargetError(f"registry URL {url!r} does not name a valid host[:port]", field="url", hint=hint)
    return f"{parts.scheme}://{parts.netloc.lower()}"


def render_repository(template: str, namespace: str, environment: str) -> str:
    """The repository ``template`` names for an environment (values in lower case); TargetError if invalid."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as exc:
        raise TargetError(f"repository template {template!r} is malformed: {exc}", field="repository",
                          hint="use {namespace} and {environment}, e.g. team/{namespace}-{environment}") from None
    unknown = sorted({name or "{}" for name, spec, conversion in fields
                      if name not in PLACEHOLDERS or spec or conversion})
    if unknown:
        raise TargetError(f"repository template {template!r} has placeholders other than {{namespace}} and "
                          f"{{environment}}: {', '.join(unknown)}", field="repository",
                          hint="use only {namespace} and {environment}, without format specs")
    if "environment" not in {name for name, _, _ in fields}:
        raise TargetError(f"repository template {template!r} has no {{environment}}", field="repository",
                          hint="each environment needs its own repository (its tags are build ids and latest)")
    rendered = template.format(namespace=namespace.lower(), environment=environment.lower())
    if not REPOSITORY.match(rendered) or len(rendered) > 255:
        raise TargetError(f"repository template {template!r} gives {rendered!r} for {namespace}/{environment}, "
                          "not a valid OCI repository name", field="repository",
                          hint="lowercase letters and digits, components joined by '/', separators '.', '_', '-'")
    return rendered


def _fernet(secret_key: bytes) -> Fernet:
    return Fernet(fernet_key(secret_key, "registry-credentials"))


def create_target(session: Session, secret_key: bytes, namespace: str, *, name: str, url: str,
                  repository: str = "{namespace}/{environment}", username: str | None = None,
                  password: str | None = None, tls_verify: bool = True, enabled: bool = True) -> RegistryTarget:
    """A new target of ``namespace``; the password is encrypted before it reaches the database."""
    found = get_namespace(session, namespace)
    normalized = check_url(url)
    render_repository(repository, found.name, "environment")
    if bool(username) != bool(password):
        raise TargetError("credentials need both a username and a password (or token)",
                          field="password" if username else "username",
                          hint="give both, or neither for a registry that allows anonymous pushes")
    if session.exec(select(RegistryTarget.id).where(RegistryTarget.namespace_id == found.id,
                                                    RegistryTarget.name == name)).first() is not None:
        raise ConflictError(f"namespace '{namespace}' already has a registry target '{name}'", field="name",
                            hint="remove it first to change it, or choose another name")
    assert found.id is not None
    target = RegistryTarget(namespace_id=found.id, name=name, url=normalized, repository=repository,
                            username=username or None, tls_verify=tls_verify, enabled=enabled,
                            secret_ciphertext=_fernet(secret_key).encrypt(password.encode()).decode()
                            if password else None)
    session.add(target)
    session.flush()
    return target


def list_targets(session: Session, namespace: str) -> list[RegistryTarget]:
    found = get_namespace(session, namespace)
    return list(session.exec(select(RegistryTarget).where(RegistryTarget.namespace_id == found.id)
                             .order_by(col(RegistryTarget.name))).all())


def get_target(session: Session, namespace: str, name: str) -> RegistryTarget:
    found = get_namespace(session, namespace)
    target = session.exec(select(RegistryTarget).where(RegistryTarget.namespace_id == found.id,
                                                       RegistryTarget.name == name)).first()
    if target is None:
        raise NotFoundError(f"namespace '{namespace}' has no registry target '{name}'", field="target",
                            hint=f"list them: GET /api/v1/namespaces/{namespace}/registry-targets")
    return target


def delete_target(session: Session, namespace: str, name: str) -> int:
    """Delete a target and its publications (their record goes with it; what was pushed stays pushed).
    A push in progress finds its publication gone and drops its result. Returns the publications deleted."""
    target = get_target(session, namespace, name)
    deleted = _delete_publications(session, col(Publication.target_id) == target.id)
    session.delete(target)
    session.flush()
    return deleted


def delete_targets_of_namespace(session: Session, namespace_id: int | None) -> None:
    """For deleting a namespace: its targets and their publications."""
    ids = list(session.exec(select(RegistryTarget.id).where(RegistryTarget.namespace_id == namespace_id)).all())
    _delete_publications(session, col(Publication.target_id).in_(ids))
    for target in session.exec(select(RegistryTarget).where(col(RegistryTarget.id).in_(ids))).all():
        session.delete(target)
    session.flush()


def delete_publications_of_builds(session: Session, build_ids: Sequence[int | None]) -> None:
    """For deleting builds: their publications."""
    _delete_publications(session, col(Publication.build_id).in_([i for i in build_ids if i is not None]))


def _delete_publications(session: Session, where: Any) -> int:
    rows = session.exec(select(Publication).where(where)).all()
    for row in rows:
        session.delete(row)
    session.flush()
    return len(rows)


def target_password(target: RegistryTarget, secret_key: bytes) -> str | None:
    """The target's password (or token) in clear, for a push; None without credentials."""
    if not target.secret_ciphertext:
        return None
    try:
        return _fernet(secret_key).decrypt(target.secret_ciphertext.encode()).decode()
    except InvalidToken:
        raise TargetError(f"the stored password of target '{target.name}' cannot be decrypted with the server's "
                          "secret key", hint="the secret key changed: remove and add the target again") from None
