"""API tokens: random strings shown once; the database keeps a keyed hash of them (HMAC-SHA256 with a key derived
from the server's secret key, ``hash_scheme`` ``hmac-sha256``). Tokens made before that keep their plain sha256
(``sha256``) until their next use, which rehashes them (:func:`upgrade_hash`). ``envyard serve`` keeps an admin
token in ``<data_dir>/admin-token`` (mode 600)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from envyard.api.auth.secret_key import derive_key
from envyard.api.db import session_scope
from envyard.api.models import ApiToken, Role

__all__ = ["HMAC_SCHEME", "LEGACY_SCHEME", "TOKEN_PREFIX", "create_token", "ensure_admin_token", "find_token",
           "hash_token", "issue_token", "new_token", "token_key", "upgrade_hash"]

TOKEN_PREFIX = "ey_"
HMAC_SCHEME = "hmac-sha256"
LEGACY_SCHEME = "sha256"


def token_key(secret: bytes) -> bytes:
    """The key API tokens are hashed with (derived from the server's secret key)."""
    return derive_key(secret, "api-token")


def hash_token(token: str, key: bytes | None = None) -> str:
    """The stored form of ``token``: HMAC-SHA256 with ``key`` (from :func:`token_key`); its plain sha256 without
    (the scheme of tokens made before migration 0007)."""
    if key is None:
        return hashlib.sha256(token.encode()).hexdigest()
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def create_token(session: Session, name: str, role: Role, key: bytes | None = None) -> str:
    """A new token (returned once, in clear) with ``role``, hashed with ``key``."""
    return issue_token(session, name, role, key)[0]


def issue_token(session: Session, name: str, role: Role, key: bytes | None = None, *, user_id: int | None = None,
                 expires_at: datetime | None = None, max_role: str | None = None, read_only: bool = False,
                 namespaces: list[str] | None = None) -> tuple[str, ApiToken]:
    """A new token (returned once, in clear, with its row) with ``role`` and its limits, hashed with ``key``."""
    token = new_token()
    row = ApiToken(name=name, token_sha256=hash_token(token, key), role=role,
                   hash_scheme=HMAC_SCHEME if key is not None else LEGACY_SCHEME, user_id=user_id,
                   expires_at=expires_at, max_role=max_role, read_only=read_only, namespaces=namespaces)
    session.add(row)
    session.flush()
    return token, row


def find_token(session: Session, token: str, key: bytes) -> ApiToken | None:
    """The row of ``token``: by its keyed hash, else (a token older than keyed hashes) by its plain sha256."""
    row = session.exec(select(ApiToken).where(ApiToken.token_sha256 == hash_token(token, key),
                                              ApiToken.hash_scheme == HMAC_SCHEME)).first()
    if row is None:
        row = session.exec(select(ApiToken).where(ApiToken.token_sha256 == hash_token(token),
                                                  ApiToken.hash_scheme == LEGACY_SCHEME)).first()
    return row


def upgrade_hash(engine: Engine, token: str, key: bytes) -> None:
    """Replace the plain sha256 of ``token`` (if it still has one) by its keyed hash."""
    with session_scope(engine) as session:
        row = session.exec(select(ApiToken).where(col(ApiToken.token_sha256) == hash_token(token),
                                                  ApiToken.hash_scheme == LEGACY_SCHEME)).first()
        if row is not None:
            row.token_sha256, row.hash_scheme = hash_token(token, key), HMAC_SCHEME


def ensure_admin_token(engine: Engine, path: Path, key: bytes | None = None) -> str:
    """The admin token in ``path`` (mode 600); a new one is created when the file is absent or not known."""
    if path.exists():
        token = path.read_text().strip()
        with session_scope(engine) as session:
            row = find_token(session, token, key) if key is not None else session.exec(
                select(ApiToken).where(ApiToken.token_sha256 == hash_token(token))).first()
            known = row is not None and not row.revoked and row.role == Role.ADMIN
        if known:
            if key is not None:
                upgrade_hash(engine, token, key)
            return token
    with session_scope(engine) as session:
        token = create_token(session, "admin (created by envyard serve)", Role.ADMIN, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)
    return token
