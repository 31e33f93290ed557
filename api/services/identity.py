"""Users and service accounts (with their groups and personal namespaces), role bindings, API tokens, and the
explained verdict of ``envyard access check``. Every change is recorded in the audit log
(:func:`envyard.api.services.audit.record_audit`), which also moves the access epoch on: every replica drops its
cached principals (:func:`envyard.api.auth.principals.current_epoch`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from sqlmodel import Session, col, select

from envyard.api.auth.bindings import check_pattern
from envyard.api.auth.decision import decide
from envyard.api.auth.principals import Action, Principal, PrincipalSource, principal_of
from envyard.api.auth.tokens import issue_token
from envyard.api.models import ApiToken, GroupMembership, Namespace, NamespaceRole, Role, RoleBinding, User, utcnow
from envyard.api.schemas import AccessVerdict, BindingRead, TokenCreate, TokenCreated, TokenRead, UserRead
from envyard.api.services.audit import record_audit
from envyard.builder.errors import ConflictError, NotFoundError, PermissionDeniedError, SpecError

__all__ = [
    "access_check",
    "binding_view",
    "create_binding",
    "create_token",
    "delete_binding",
    "find_user",
    "list_bindings",
    "list_tokens",
    "list_users",
    "revoke_token",
    "sign_in",
    "token_view",
    "upsert_user",
    "user_view",
]

SAFE = re.compile(r"[^A-Za-z0-9._-]+")
ROLE_ORDER = {Role.READER: 0, Role.USER: 1, Role.WORKER: 1, Role.ADMIN: 2}


def _name(value: str) -> str:
    """A user, group or namespace name from a provider's claim: unsafe characters become '-'."""
    cleaned = SAFE.sub("-", value).strip("-.")[:100]
    if not cleaned:
        raise SpecError(f"'{value}' gives no usable name", field="username",
                        hint="configure ENVYARD_OIDC_USERNAME_CLAIM to a claim with a user name")
    return cleaned


def find_user(session: Session, name: str) -> User:
    user = session.exec(select(User).where(User.name == name)).first()
    if user is None:
        raise NotFoundError(f"user '{name}' does not exist", field="user",
                            hint="users appear at their first sign-in; list them with envyard access users")
    return user


def _groups(session: Session, user: User) -> list[str]:
    return sorted(session.exec(select(GroupMembership.group).where(GroupMembership.user_id == user.id)).all())


def user_view(session: Session, user: User) -> UserRead:
    assert user.id is not None
    return UserRead(id=user.id, name=user.name, kind=user.kind, provider=user.provider, email=user.email,
                    namespace=user.namespace, groups=_groups(session, user), disabled=user.disabled,
                    created_at=user.created_at, last_login_at=user.last_login_at)


def list_users(session: Session) -> list[UserRead]:
    return [user_view(session, u) for u in session.exec(select(User).order_by(col(User.id))).all()]


def _personal_namespace(session: Session, name: str, global_namespace: str) -> str:
    """The user's personal namespace: their name, or ``user-<name>`` when that is taken or curated."""
    for candidate in (name, f"user-{name}"[:100]):
        if candidate == global_namespace:
            continue
        taken = session.exec(select(User.id).where(User.namespace == candidate)).first() is not None
        if taken:
            continue
        existing = session.exec(select(Namespace).where(Namespace.name == candidate)).first()
        if existing is None:
            session.add(Namespace(name=candidate, description=f"personal namespace of {name}"))
            session.flush()
            return candidate
        if candidate != name:
            return candidate  # user-<name> exists already: an earlier account of the same name
    raise ConflictError(f"no personal namespace is free for user '{name}'", hint="rename the namespace in the way")


def upsert_user(session: Session, actor: Principal | None, name: str, *, kind: str = "user",
                provider: str = "local", subject: str | None = None, email: str | None = None,
                groups: Iterable[str] | None = None, global_namespace: str = "global", login: bool = False) -> User:
    """The user ``name`` (found by provider and subject if given), created with a personal namespace if new;
    ``groups`` (if given) replace their groups. Audited: ``user.create``, ``user.groups``."""
    name = _name(name)
    user = None
    if subject is not None:
        user = session.exec(select(User).where(User.provider == provider, User.subject == subject)).first()
    if user is None:
        user = session.exec(select(User).where(User.name == name)).first()
        if user is not None and subject is not None and user.subject not in (None, subject):
            raise ConflictError(f"user '{name}' already exists for another {user.provider} account",
                                hint="ask an admin to rename or remove the other account")
    if user is None:
        user = User(name=name, kind=kind, provider=provider, subject=subject, email=email)
        session.add(user)
        session.flush()
        user.namespace = _personal_namespace(session, name, global_namespace)
        record_audit(session, actor, "user.create", f"{kind} {name}", None,
                     {"provider": provider, "namespace": user.namespace})
    else:
        user.subject = user.subject or subject
        user.email = email or user.email
    if login:
        user.last_login_at = utcnow()
    if groups is not None:
        wanted = sorted({_name(g) for g in groups})
        current = _groups(session, user)
        if wanted != current:
            for row in session.exec(select(GroupMembership).where(GroupMembership.user_id == user.id)).all():
                session.delete(row)
            session.flush()
            assert user.id is not None
            session.add_all(GroupMembership(user_id=user.id, group=g) for g in wanted)
            record_audit(session, actor, "user.groups", f"{user.kind} {user.name}", current, wanted)
    session.flush()
    return user


# --- role bindings -----------------------------------------------------------------------------------------------


def binding_view(row: RoleBinding) -> BindingRead:
    assert row.id is not None
    return BindingRead(id=row.id, role=row.role, pattern=row.pattern, subject_kind=row.subject_kind,
                       subject=row.subject, created_at=row.created_at, created_by=row.created_by)


def create_binding(session: Session, actor: Principal, role: str, pattern: str, subject_kind: str,
                   subject: str) -> RoleBinding:
    """``role`` on ``pattern`` for the subject (a user or token must exist; a group need not have members yet)."""
    pattern = check_pattern(pattern)
    if subject_kind == "user":
        find_user(session, subject)
    elif subject_kind == "token":
        if not subject.isdigit() or session.get(ApiToken, int(subject)) is None:
            raise NotFoundError(f"token '{subject}' does not exist", field="subject", hint="list tokens: envyard "
                                "token list")
    elif not subject:
        raise SpecError("a group binding needs a group name", field="subject")
    if session.exec(select(RoleBinding.id).where(RoleBinding.subject_kind == subject_kind,
                                                 RoleBinding.subject == subject,
                                                 RoleBinding.pattern == pattern)).first() is not None:
        raise ConflictError(f"{subject_kind} '{subject}' is bound on '{pattern}' already", field="pattern",
                            hint="unbind it first to change its role: envyard access unbind ID")
    row = RoleBinding(role=NamespaceRole(role), pattern=pattern, subject_kind=subject_kind, subject=subject,
                      created_by=actor.user or actor.name)
    session.add(row)
    session.flush()
    record_audit(session, actor, "binding.create", f"binding {row.id}", None, binding_view(row))
    return row


def delete_binding(session: Session, actor: Principal, binding: RoleBinding) -> None:
    row = session.get(RoleBinding, binding.id)
    if row is None:
        raise NotFoundError(f"binding {binding.id} does not exist", hint="list them: envyard access list")
    record_audit(session, actor, "binding.delete", f"binding {row.id}", binding_view(row), None)
    session.delete(row)
    session.flush()


def list_bindings(session: Session, subject_kind: str | None = None, subject: str | None = None) -> Sequence[
        RoleBinding]:
    query = select(RoleBinding).order_by(col(RoleBinding.id))
    if subject_kind:
        query = query.where(RoleBinding.subject_kind == subject_kind)
    if subject:
        query = query.where(RoleBinding.subject == subject)
    return session.exec(query).all()


# --- tokens --------------------------------------------------------------------------------------------------------


def token_view(session: Session, row: ApiToken) -> TokenRead:
    assert row.id is not None
    user = session.get(User, row.user_id) if row.user_id is not None else None
    return TokenRead(id=row.id, name=row.name, role=row.role, user=user.name if user else None, revoked=row.revoked,
                     created_at=row.created_at, expires_at=row.expires_at, max_role=row.max_role,
                     read_only=row.read_only, namespaces=row.namespaces)


def create_token(session: Session, actor: Principal, key: bytes, body: TokenCreate) -> TokenCreated:
    """A token for ``body.user`` (admins), else for the caller's own user. Non-admins keep their own role at
    most, and a token of a user may not outlive or widen the token that made it."""
    role = Role(body.role)
    owner: User | None = None
    if body.user is not None:
        owner = find_user(session, body.user)
    elif actor.user_id is not None:
        owner = session.get(User, actor.user_id)
    if actor.restricted:
        if owner is None or owner.id != actor.user_id:
            raise PermissionDeniedError(f"token '{actor.name}' may create tokens only for its own user",
                                        hint="sign in (envyard login) to get a token of your user; admins create "
                                        "tokens for anybody")
        assert actor.role is not None
        if ROLE_ORDER[role] > ROLE_ORDER[actor.role] or role == Role.WORKER:
            raise PermissionDeniedError(f"a {actor.role} token may not create a {role} token", field="role",
                                        hint="ask an admin")
    for glob in body.namespaces or ():
        check_pattern(glob)  # namespace globs have the shape of a pattern's first part
        if "/" in glob:
            raise SpecError(f"'{glob}' is not a namespace glob", field="namespaces", hint="e.g. team-a, team-*")
    expires_at = None
    if body.expires_in_seconds is not None:
        expires_at = datetime.now(UTC) + timedelta(seconds=body.expires_in_seconds)
    if actor.restricted and actor.expires_at is not None and (expires_at is None or expires_at > actor.expires_at):
        expires_at = actor.expires_at
    max_role = body.max_role
    if actor.restricted and actor.max_role is not None and (max_role is None or _rank(max_role) > _rank(
            actor.max_role)):
        max_role = actor.max_role
    token, row = issue_token(session, body.name, role, key, user_id=owner.id if owner else None,
                             expires_at=expires_at, max_role=max_role,
                             read_only=body.read_only or (actor.restricted and actor.read_only),
                             namespaces=body.namespaces if body.namespaces is not None else (
                                 list(actor.scope) if actor.restricted and actor.scope is not None else None))
    assert row.id is not None
    view = token_view(session, row)
    record_audit(session, actor, "token.create", f"token {row.id}", None, view)
    return TokenCreated(id=row.id, name=row.name, role=row.role, token=token, user=view.user,
                        expires_at=row.expires_at)


def _rank(role: str) -> int:
    return {"viewer": 1, "editor": 2, "admin": 3}[role]


def list_tokens(session: Session, actor: Principal) -> list[TokenRead]:
    """Every token (admins), else the tokens of the caller's user (or the caller itself)."""
    query = select(ApiToken).order_by(col(ApiToken.id))
    if actor.restricted:
        if actor.user_id is not None:
            query = query.where(ApiToken.user_id == actor.user_id)
        else:
            query = query.where(ApiToken.id == (actor.token_id or -1))
    return [token_view(session, row) for row in session.exec(query).all()]


def revoke_token(session: Session, actor: Principal, token: ApiToken) -> None:
    row = session.get(ApiToken, token.id)
    if row is None:  # deleted meanwhile
        raise NotFoundError(f"token {token.id} does not exist")
    before = token_view(session, row)
    row.revoked = True
    session.flush()
    record_audit(session, actor, "token.revoke", f"token {row.id}", before, token_view(session, row))


# --- access check --------------------------------------------------------------------------------------------------


def access_check(session: Session, source: PrincipalSource, subject: str, action: Action,
                 resource: str) -> AccessVerdict:
    """The verdict on ``action`` on ``resource`` (``namespace`` or ``namespace/environment``) for ``subject``: a
    user or service account name, or ``token:ID``, and why."""
    namespace, slash, environment = resource.partition("/")
    if not namespace or (slash and not environment):
        raise SpecError(f"'{resource}' is not NAMESPACE or NAMESPACE/ENVIRONMENT", field="resource")
    principal = _subject_principal(session, source, subject)
    public = frozenset(session.exec(select(Namespace.name).where(col(Namespace.public))).all())
    verdict = decide(principal, action, resource, public, source.global_namespace)
    return AccessVerdict(subject=subject, action=action, resource=resource, allowed=verdict.allowed,
                         role=verdict.role if verdict.role else (
                             "admin" if verdict.allowed and not principal.restricted else None),
                         binding=verdict.binding.describe() if verdict.binding else None,
                         reasons=list(verdict.reasons), bindings=[b.describe() for b in principal.bindings])


def _subject_principal(session: Session, source: PrincipalSource, subject: str) -> Principal:
    kind, _, value = subject.partition(":")
    if kind == "token" and value:
        row = session.get(ApiToken, int(value)) if value.isdigit() else None
        if row is None:
            raise NotFoundError(f"token '{value}' does not exist", field="subject", hint="envyard token list")
        user = session.get(User, row.user_id) if row.user_id is not None else None
        principal = principal_of(session, row, user, source)
        if row.revoked or principal.expired:
            return _nobody(principal, "the token is revoked" if row.revoked else "the token expired")
        return principal
    return principal_of(session, None, find_user(session, subject), source)


def _nobody(principal: Principal, why: str) -> Principal:
    return Principal(principal.token_id, f"{principal.name} ({why})", None, source=principal.source)



# --- sign-in -------------------------------------------------------------------------------------------------------


def sign_in(session: Session, key: bytes, provider: str, subject: str, username: str, email: str | None,
            groups: Iterable[str], global_namespace: str, hours: float) -> TokenCreated:
    """The user of a sign-in (created with a personal namespace at their first; groups replaced by the
    provider's) and a new API token of theirs, valid for ``hours``. Audited: ``user.login`` (and
    ``user.create``, ``user.groups``, ``token.create``)."""
    user = upsert_user(session, None, username, provider=provider, subject=subject, email=email, groups=groups,
                       global_namespace=global_namespace, login=True)
    if user.disabled:
        raise PermissionDeniedError(f"user '{user.name}' is disabled", hint="ask an admin")
    token, row = issue_token(session, f"sign-in through {provider}", Role.USER, key, user_id=user.id,
                             expires_at=datetime.now(UTC) + timedelta(hours=hours))
    assert row.id is not None
    record_audit(session, None, "user.login", f"{user.kind} {user.name}", None,
                 {"provider": provider, "token": row.id, "groups": _groups(session, user)})
    return TokenCreated(id=row.id, name=row.name, role=row.role, token=token, user=user.name,
                        expires_at=row.expires_at)
