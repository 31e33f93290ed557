"""Opaque cursors for id-ordered listings."""

from __future__ import annotations

import base64

from envyard.api.ids import parse_id
from envyard.builder.errors import EnvyardError

MAX_LIMIT = 500


class InvalidCursorError(EnvyardError):
    code = "invalid-cursor"
    title = "Invalid cursor"
    status = 400


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The id after which the next page starts (0 for the first page)."""
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = text.partition(":")
        last_id = parse_id(value) if prefix == "id" else None
        if last_id is None:  # also ids past the id column: PostgreSQL would fail comparing with them
            raise ValueError(text)
        return last_id
    except (ValueError, UnicodeDecodeError):
        raise InvalidCursorError(
            f"cursor '{cursor}' was not issued by this server", field="cursor", hint="pass next_cursor from a listing"
        ) from None


def clamp_limit(limit: int) -> int:
    return max(1, min(limit, MAX_LIMIT))
