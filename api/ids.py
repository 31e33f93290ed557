"""The one id type of the API: strict, canonical, bounded integers.

Every id in a path, a query or a body (build ids, token ids, cursors' ids, SSE event ids) is a canonical ASCII
decimal: no sign, no leading zero, no decimal point, no underscores or blanks, no other Unicode digits
(``2.0``, ``02``, ``+2``, ``²``, ``２`` are not ids). Python's ``int()`` and pydantic's lax mode accept most
of these, so a route would read ``2.0`` as build 2 while anything else parsing the text differently would
not: one parser, used everywhere, prevents that.

Declare them as ``build_id: Id`` or ``Annotated[Id, Header()]`` (the ``= Header(...)`` default form drops the
validator). Ids are bounded by :data:`MAX_ID`, the largest value of the id columns (``INTEGER``: 32 bits on PostgreSQL),
so no lookup can overflow the database; larger numbers are invalid (422), never a 500.
"""

from __future__ import annotations

import re
from typing import Annotated

from annotated_types import Ge, Le
from pydantic import BeforeValidator

__all__ = ["MAX_ID", "MAX_SIZE", "EventId", "Id", "parse_id"]

MAX_ID = 2**31 - 1  # the id columns are INTEGER (32-bit on PostgreSQL)
MAX_SIZE = 2**63 - 1  # sizes are BIGINT
_CANONICAL = re.compile(r"0|[1-9][0-9]{0,18}")  # [0-9] is ASCII only (unlike \d)
ID_RULE = "ids are decimal integers from 1 to 2147483647 without sign, leading zeros or other characters"


def parse_id(text: str, minimum: int = 1) -> int | None:
    """The id ``text`` spells canonically (within ``minimum``..:data:`MAX_ID`), or None."""
    if not _CANONICAL.fullmatch(text):
        return None
    value = int(text)
    return value if minimum <= value <= MAX_ID else None


def _canonical(value: object) -> object:
    """Before pydantic's own int checks: only JSON integers (not booleans) and canonical decimal strings."""
    if isinstance(value, str):
        if not _CANONICAL.fullmatch(value):
            raise ValueError(ID_RULE)
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(ID_RULE)
    return value


Id = Annotated[int, Ge(1), Le(MAX_ID), BeforeValidator(_canonical)]  # (bounds first: the schema shows them)
"""A database id (path, query or body): 1..MAX_ID, canonical decimal; anything else is a 422."""

EventId = Annotated[int, Ge(0), Le(MAX_ID), BeforeValidator(_canonical)]
"""An id that may be 0 ("none yet"), like the ``Last-Event-ID`` of a log stream."""
