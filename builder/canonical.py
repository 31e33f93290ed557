"""Canonical JSON for content-addressed documents (run manifests, data snapshots).

One rule, written once: keys sorted, compact separators, UTF-8 (no ``\\u`` escapes), field aliases
(``apiVersion``), ``null`` kept for unset optional fields. The digest is the sha256 of those bytes.

>>> class Point(CanonicalModel):
...     y: int
...     x: int
>>> Point(y=2, x=1).canonical_bytes()
b'{"x":1,"y":2}'
>>> Point(y=2, x=1).digest
'sha256:689a8f1db95402580476e38c264278ce7b1e664320cfb4e9ae8d3a908cf09964'
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Self

from pydantic import BaseModel, ConfigDict

from envyard.builder.errors import EnvyardError

__all__ = ["CanonicalModel", "canonical_json", "sha256_digest"]


def canonical_json(value: Any) -> bytes:
    """``value`` (JSON-compatible) as canonical bytes: sorted keys, ``,``/``:`` separators, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``.

    >>> sha256_digest(b"")
    'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
    """
    return "sha256:" + hashlib.sha256(data).hexdigest()


class CanonicalModel(BaseModel):
    """A frozen pydantic model with canonical bytes and a content digest; unknown fields are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def canonical_bytes(self) -> bytes:
        """The document as canonical JSON bytes (what :attr:`digest` hashes)."""
        return canonical_json(self.model_dump(mode="json", by_alias=True))

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of :meth:`canonical_bytes`."""
        return sha256_digest(self.canonical_bytes())

    @classmethod
    def parse(cls, data: bytes | str, *, source: str | None = None,
              error: type[EnvyardError] = EnvyardError) -> Self:
        """Validate JSON ``data``; a problem becomes ``error`` naming ``source`` and the first bad field."""
        from pydantic import ValidationError

        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or None
            raise error(f"{first['msg']} ({len(exc.errors())} problem(s) in all)", file=source, field=where,
                        hint=f"fix the {cls.__name__} document; its schema is in specs/") from None
