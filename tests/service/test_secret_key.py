"""The server's secret key: created once with mode 600, stable across restarts, clear errors for bad keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from envyard.api.auth.secret_key import derive_key, load_or_create_secret_key
from envyard.builder.errors import ConfigError


def test_created_once_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secret-key"
    key = load_or_create_secret_key(None, path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret_key(None, path) == key
    assert derive_key(key, "registry-token") != derive_key(key, "registry-credentials")


def test_configured_key_wins_and_must_be_long(tmp_path: Path) -> None:
    path = tmp_path / "secret-key"
    assert load_or_create_secret_key("k" * 40, path) == b"k" * 40
    assert not path.exists()
    with pytest.raises(ConfigError, match="at least 32") as error:
        load_or_create_secret_key("short", path)
    assert error.value.field == "secret_key" and "token_urlsafe" in (error.value.hint or "")


def test_truncated_key_file_is_refused_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "secret-key"
    path.write_text("abc\n")
    with pytest.raises(ConfigError, match="shorter than 32") as error:
        load_or_create_secret_key(None, path)
    assert "backup" in (error.value.hint or "")
    assert path.read_text() == "abc\n"
