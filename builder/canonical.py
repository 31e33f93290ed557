"""Canonical JSON for content-addressed documents (run manifests, data snapshots).

The serialization of OCI manifests (:func:`envyard.builder.oci.model.canonical_json`: keys sorted, compact
separators, UTF-8), applied to pydantic models with their field aliases (``apiVersion``) and ``null`` kept for unset
optional fields. The digest is the sha256 of those bytes.

>>> class Point(CanonicalModel):
...     y: int
...     x: int
>>> Point(y=2, x=1).canonical_bytes()
b'{"x":1,"y":2}'
>>> Point(y=2, x=1).digest
'sha256:689a8f1db95402580476e38c264278ce7b1e664320cfb4e9ae8d3a908cf09964'
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict

from envyard.builder.errors import EnvyardError
from envyard.builder.oci.model import canonical_json, sha256_digest

__all__ = ["CanonicalModel"]


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
