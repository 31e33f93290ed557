"""API tokens: random strings shown once; the database keeps their sha256. ``envyard serve`` keeps an admin
token in ``<data_dir>/admin-token`` (mode 600)."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, select

from envyard.api.db import session_scope
from envyard.api.models import ApiToken, Role

__all__ = ["TOKEN_PREFIX", "create_token", "ensure_admin_token", "hash_token", "new_token"]

TOKEN_PREFIX = "ey_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def create_token(session: Session, name: str, role: Role) -> str:
    """A new token (returned once, in clear) with ``role``."""
    token = new_token()
    session.add(ApiToken(name=name, token_sha256=hash_token(token), role=role))
    session.flush()
    return token


def ensure_admin_token(engine: Engine, path: Path) -> str:
    """The admin token in ``path`` (mode 600); a new one is created when the file is absent or not known."""
    if path.exists():
        token = path.read_text().strip()
        with session_scope(engine) as session:
            row = session.exec(select(ApiToken).where(ApiToken.token_sha256 == hash_token(token))).first()
            if row is not None and not row.revoked and row.role == Role.ADMIN:
                return token
    with session_scope(engine) as session:
        token = create_token(session, "admin (created by envyard serve)", Role.ADMIN)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)
    return token
