"""The server's secret key: signs registry bearer tokens and encrypts registry credentials at rest.

``ENVYARD_SECRET_KEY`` sets it (every replica of a scaled deployment needs the same one); otherwise it is
created once in ``<data_dir>/secret-key`` (mode 600). Purposes get their own derived keys, so a token
signature can never be replayed as a ciphertext key or the other way round.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from envyard.builder.errors import ConfigError

__all__ = ["MIN_LENGTH", "derive_key", "fernet_key", "load_or_create_secret_key"]

MIN_LENGTH = 32


def load_or_create_secret_key(configured: str | None, path: Path) -> bytes:
    """The configured key, else the one in ``path``, else a new random key written there."""
    if configured:
        if len(configured) < MIN_LENGTH:
            raise ConfigError(f"ENVYARD_SECRET_KEY is {len(configured)} characters; it needs at least {MIN_LENGTH}",
                              field="secret_key", hint="generate one: python -c 'import secrets; "
                              "print(secrets.token_urlsafe(48))'")
        return configured.encode()
    if path.exists():
        key = path.read_bytes().strip()
        if len(key) >= MIN_LENGTH:
            return key
        raise ConfigError(f"{path} holds a secret key shorter than {MIN_LENGTH} bytes", field="secret_key",
                          hint="restore the key from a backup (stored registry credentials need it), or delete "
                          "the file to start with a new key and re-enter the credentials")
    key = secrets.token_urlsafe(48).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key + b"\n")
    return key


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A 32-byte key for one purpose (``registry-token``, ``registry-credentials``)."""
    return hmac.new(secret, f"envyard/{purpose}".encode(), hashlib.sha256).digest()


def fernet_key(secret: bytes, purpose: str) -> bytes:
    """A derived key in the form ``cryptography.fernet.Fernet`` takes."""
    return base64.urlsafe_b64encode(derive_key(secret, purpose))
