"""Lookups several services share, kept below them so that they import no service of each other's."""

from __future__ import annotations

from sqlmodel import Session, select

from envyard.api.models import Namespace
from envyard.builder.errors import NotFoundError

__all__ = ["get_namespace"]


def get_namespace(session: Session, name: str) -> Namespace:
    """The namespace called ``name``; NotFoundError if there is none."""
    namespace = session.exec(select(Namespace).where(Namespace.name == name)).first()
    if namespace is None:
        raise NotFoundError(f"namespace '{name}' does not exist", hint="create it with POST /api/v1/namespaces")
    return namespace
