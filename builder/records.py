"""Conversions between envyard's lock model and py-rattler's records, and lock consistency checks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import rattler

from envyard.builder.errors import LockfileError
from envyard.builder.model import LockedCondaPackage, PlatformLock

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _noarch(value: str | None) -> rattler.NoArchType | None:
    if value is None:
        return None
    return rattler.NoArchType(value)  # type: ignore[arg-type]


def to_repodata_record(package: LockedCondaPackage) -> rattler.RepoDataRecord:
    """A :class:`rattler.RepoDataRecord` for a locked package (for pixi.lock, installs and checks)."""
    try:
        build = rattler.BuildString(package.build)
    except ValueError:
        build = rattler.BuildString.new_unchecked(package.build)
    record = rattler.PackageRecord(
        package.name,
        package.version,
        build,
        package.build_number,
        package.subdir,
        noarch=_noarch(package.noarch),
        depends=list(package.depends),
        constrains=list(package.constrains),
        sha256=bytes.fromhex(package.sha256) if package.sha256 else None,
        md5=bytes.fromhex(package.md5) if package.md5 else None,
        size=package.size,
        license=package.license,
    )
    if package.timestamp is not None:
        record.timestamp = _EPOCH + timedelta(milliseconds=package.timestamp)
    if package.track_features:
        record.track_features = list(package.track_features)
    return rattler.RepoDataRecord(record, package.file_name, package.url, package.channel + "/")


def to_repodata_records(packages: Iterable[LockedCondaPackage]) -> list[rattler.RepoDataRecord]:
    return [to_repodata_record(p) for p in packages]


def check_records(
    records: Sequence[rattler.RepoDataRecord],
    requested: Sequence[str],
    *,
    platform: str,
    what: str = "the lock",
    hint: str = "re-lock the environment; do not edit lockfiles by hand",
) -> None:
    """Raise :class:`LockfileError` unless every dependency and every requested spec is met by ``records``.

    Virtual packages (``__glibc`` ...) are not checked: they belong to the target machine.
    """
    try:
        rattler.PackageRecord.validate(list(records))
    except Exception as exc:
        raise LockfileError(f"{platform}: {what} is not consistent: {exc}", hint=hint) from None
    unmet = unmet_specs(records, requested)
    if unmet:
        raise LockfileError(f"{platform}: {what} does not satisfy {', '.join(unmet)}", hint=hint)


def check_closed(platform_lock: PlatformLock, requested: Sequence[str] = ()) -> None:
    """:func:`check_records` for a lock read from a file (its records are rebuilt first)."""
    check_records(to_repodata_records(platform_lock.conda), requested, platform=platform_lock.platform)


def unmet_specs(records: Sequence[rattler.RepoDataRecord], specs: Sequence[str]) -> list[str]:
    """The specs (``channel::`` prefixes ignored) that no record matches."""
    by_name: Mapping[str, rattler.RepoDataRecord] = {r.name.normalized: r for r in records}
    unmet = []
    for spec in specs:
        match_spec = rattler.MatchSpec(spec.rsplit("::", 1)[-1], strict=False)
        name = match_spec.name.normalized if match_spec.name is not None else None
        if name is None or name.startswith("__"):
            continue
        record = by_name.get(name)
        if record is None or not match_spec.matches(record):
            unmet.append(spec)
    return unmet
