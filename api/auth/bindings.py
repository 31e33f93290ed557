"""Role bindings: a role (viewer, editor, admin) on the environments matching a ``namespace/environment`` glob
(``*/*``, ``team-*/*``, ``global/python-*``), for a user, a group or a token.

A principal carries the bindings that apply to it (:class:`Binding`): its user's, its groups', its token's, its
token's namespace grants (a grant is a binding of its token to ``namespace/*``), and the defaults (a user
administers their personal namespace; every signed-in caller reads the curated ``global`` namespace). The verdict
over them is :func:`envyard.api.auth.policy.decide`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

from envyard.api.models import NamespaceRole
from envyard.builder.errors import SpecError

__all__ = ["GLOB", "RANK", "Binding", "check_pattern", "qualified", "split_qualified", "stronger"]

RANK = {NamespaceRole.VIEWER: 1, NamespaceRole.EDITOR: 2, NamespaceRole.ADMIN: 3}
GLOB = re.compile(r"^[A-Za-z0-9._*?\[\]!-]{1,100}$")


def check_pattern(pattern: str) -> str:
    """``pattern`` if it is ``NAMESPACE_GLOB/ENVIRONMENT_GLOB`` (a bare namespace glob means ``GLOB/*``)."""
    namespace, slash, environment = pattern.partition("/")
    environment = environment if slash else "*"
    if not (GLOB.match(namespace) and GLOB.match(environment)):
        raise SpecError(f"'{pattern}' is not a namespace/environment glob", field="pattern",
                        hint="e.g. '*/*', 'team-*/*', 'global/python-*' (letters, digits, '.', '_', '-', and "
                        "the glob characters '*', '?', '[...]')")
    return f"{namespace}/{environment}"


def qualified(namespace: str, environment: str | None = None) -> str:
    """How a resource is named to the policy: ``namespace`` or ``namespace/environment``."""
    return namespace if environment is None else f"{namespace}/{environment}"


def split_qualified(name: str) -> tuple[str, str | None]:
    namespace, slash, environment = name.partition("/")
    return namespace, (environment if slash else None)


def stronger(a: NamespaceRole | None, b: NamespaceRole | None) -> NamespaceRole | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if RANK[a] >= RANK[b] else b


@dataclass(frozen=True, slots=True)
class Binding:
    """``role`` on ``pattern`` (``namespace-glob/environment-glob``), and where it comes from (``via``:
    ``user alice``, ``group data-science``, ``token 7``, ``grant``, ``default``) for explanations."""

    role: NamespaceRole
    pattern: str
    via: str
    id: int | None = None

    def covers(self, namespace: str, environment: str | None) -> bool:
        """Whether the binding applies to environment ``namespace/environment``, or (``environment`` None) to the
        namespace as a whole (only ``namespace-glob/*`` bindings do)."""
        namespace_glob, _, environment_glob = self.pattern.partition("/")
        if not fnmatchcase(namespace, namespace_glob):
            return False
        return environment_glob == "*" if environment is None else fnmatchcase(environment, environment_glob)

    def touches(self, namespace: str) -> bool:
        """Whether the binding applies to some environment of ``namespace`` (which lets one see the namespace)."""
        return fnmatchcase(namespace, self.pattern.partition("/")[0])

    def describe(self) -> str:
        return f"{self.role} on {self.pattern} ({self.via}{'' if self.id is None else f', binding {self.id}'})"
