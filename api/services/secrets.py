"""Secrets of a namespace: named values (DVC remote credentials, ...) the server uses on the namespace's behalf.

A value is encrypted exactly like a registry target's password (:mod:`api.services.targets`): Fernet under a key
derived from the server's secret key (:func:`envyard.api.auth.secret_key.fernet_key`, purpose
``namespace-secrets``), before it reaches the database. It is never returned, listed or logged; only the
services that use it (:mod:`api.services.snapshots`) decrypt it, in memory.
"""

from __future__ import annotations

import json
import re
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlmodel import Session, col, select

from envyard.api.auth.secret_key import fernet_key
from envyard.api.models import NamespaceSecret, utcnow
from envyard.api.services.lookups import get_namespace
from envyard.builder.errors import ConfigError, NotFoundError, SpecError

__all__ = ["MAX_VALUE_BYTES", "NAME", "decrypt", "delete_secret", "delete_secrets_of_namespace", "get_secret",
           "json_secret", "list_secrets", "set_secret"]

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_VALUE_BYTES = 64 * 1024
PURPOSE = "namespace-secrets"


def _fernet(secret_key: bytes) -> Fernet:
    return Fernet(fernet_key(secret_key, PURPOSE))


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise SpecError(f"'{name[:120]}' is not a secret name", field="name",
                        hint="letters, digits, '.', '_' and '-' (at most 100), e.g. dvc-minio")
    return name


def set_secret(session: Session, secret_key: bytes, namespace: str, name: str, value: str) -> tuple[NamespaceSecret,
                                                                                                      bool]:
    """Create or replace secret ``name`` of ``namespace``; (the row, whether it is new). The value is encrypted
    before it reaches the database."""
    check_name(name)
    if not value:
        raise SpecError("the secret's value is empty", field="value", hint="give the value to store")
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise SpecError(f"the secret's value is {len(value.encode())} bytes; at most {MAX_VALUE_BYTES} are stored",
                        field="value", hint="store credentials, not data")
    found = get_namespace(session, namespace)
    assert found.id is not None
    ciphertext = _fernet(secret_key).encrypt(value.encode()).decode()
    row = session.exec(select(NamespaceSecret).where(NamespaceSecret.namespace_id == found.id,
                                                     NamespaceSecret.name == name)).first()
    created = row is None
    if row is None:
        row = NamespaceSecret(namespace_id=found.id, name=name, ciphertext=ciphertext)
        session.add(row)
    else:
        row.ciphertext = ciphertext
        row.updated_at = utcnow()
    session.flush()
    return row, created


def list_secrets(session: Session, namespace: str) -> list[NamespaceSecret]:
    found = get_namespace(session, namespace)
    return list(session.exec(select(NamespaceSecret).where(NamespaceSecret.namespace_id == found.id)
                             .order_by(col(NamespaceSecret.name))).all())


def get_secret(session: Session, namespace: str, name: str) -> NamespaceSecret:
    found = get_namespace(session, namespace)
    row = session.exec(select(NamespaceSecret).where(NamespaceSecret.namespace_id == found.id,
                                                     NamespaceSecret.name == name)).first()
    if row is None:
        raise NotFoundError(f"namespace '{namespace}' has no secret '{name}'", field="secret",
                            hint=f"list them: envyard namespace secret list {namespace}; set one: envyard namespace "
                            f"secret set {namespace} {name} --value-stdin")
    return row


def delete_secret(session: Session, namespace: str, name: str) -> None:
    session.delete(get_secret(session, namespace, name))
    session.flush()


def delete_secrets_of_namespace(session: Session, namespace_id: int | None) -> None:
    """For deleting a namespace."""
    for row in session.exec(select(NamespaceSecret).where(NamespaceSecret.namespace_id == namespace_id)).all():
        session.delete(row)
    session.flush()


def decrypt(row: NamespaceSecret, secret_key: bytes) -> str:
    """The secret's value in clear (keep it in memory only)."""
    try:
        return _fernet(secret_key).decrypt(row.ciphertext.encode()).decode()
    except InvalidToken:
        raise ConfigError(f"secret '{row.name}' cannot be decrypted with the server's secret key", field="secret",
                          hint="the secret key changed: set the secret again") from None


def json_secret(session: Session, secret_key: bytes, namespace: str, name: str) -> dict[str, Any]:
    """A secret holding a JSON object (e.g. DVC remote options), decrypted and parsed; SpecError naming the secret
    (never its value) when it is not one."""
    value = decrypt(get_secret(session, namespace, name), secret_key)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise SpecError(f"secret '{name}' is not JSON (line {exc.lineno}, column {exc.colno})", field="remote_secret",
                        hint='store a JSON object, e.g. {"access_key_id": "...", "secret_access_key": "...", '
                        '"endpointurl": "https://minio.example.com"}') from None
    if not isinstance(parsed, dict) or not all(isinstance(v, str | bool | int) for v in parsed.values()):
        raise SpecError(f"secret '{name}' is not a JSON object of strings", field="remote_secret",
                        hint='store e.g. {"access_key_id": "...", "secret_access_key": "..."}')
    return parsed
