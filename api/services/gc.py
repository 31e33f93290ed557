"""Garbage collection of the artifact store: mark and sweep, safe while builds run.

What is kept. A blob is *referenced* when an artifact (:class:`~api.models.BuildArtifact`) of a build in the
database names it: every build in the database is retained, and deleting an environment removes its builds'
records. A blob is *held* when a :class:`~api.models.BlobHold` of a build that is not finished (queued after a
lost lease, or running) names it: a build holds each blob it uploads or finds already stored, and each blob its
completion references. Garbage is a stored blob neither referenced nor held and written before the grace period.

The protocol. Uploads (``PUT /jobs/{id}/blobs/...``, ``POST /jobs/{id}/uploads`` and ``/uploads/finish``) and
completion (:func:`api.services.jobs.complete_build`) call :func:`hold_blobs` first, which

  U1. commits a hold (sha256, build) for each blob, then
  U2. waits until no :class:`~api.models.BlobTombstone` names them (a tombstone older than
      ``STALE_TOMBSTONE_SECONDS`` was left by a collector that died and is removed instead),

and only then (U3) stats or stores the blob; completion stats every artifact (C1) and commits the artifact rows,
the completed status and the release of its holds in one transaction (C2). A collection

  G1. lists the stored blobs with the time each was written; G2. marks the referenced and the held ones;
  G3. commits a tombstone for each unmarked blob older than the grace period (a batch at a time);
  G4. checks again, in a new transaction, which of them are referenced or held now, and keeps those;
  G5. deletes the rest from the store; G6. removes its tombstones, also when G4 or G5 fails.

Why a blob a build needs is never deleted. Take a build B that holds blob ``b`` (its U1 committed) and any
collection that tombstones b. If that collection's G4 read after U1 committed, it saw b held, or referenced once
B completed (C2 swaps the hold for the reference in one transaction), and kept b. Otherwise G4 read before U1
committed; G3 committed before G4 read, so before U1, so before U2 read: U2 saw the tombstone (or it was gone
already) and waited for G6, which follows G5. So every deletion of b is refused or over before B's U3, and B's
stat or upload (U3) and its completion's stat (C1) see b as the last deletion left it: B stores it again, or its
completion is refused as "not stored"; after C2 b is referenced and never a candidate again. Both sides commit
their row, then read the other's in a later statement (the store-then-load pattern): under read committed
(PostgreSQL's default) and under SQLite's serialized writes, at least one of the two reads sees the other's row.
Holds cover blobs a build found already stored just as well as those it uploaded: their age does not matter.

What the grace period is for. Holds protect everything that goes through the worker protocol; the grace period
(``ENVYARD_GC_GRACE_SECONDS``) gives anything else written to the store (an operator's copy, a writer that
takes no hold) that long to become referenced. Abandoned presigned staging objects are removed only when older
than ``max(grace, STAGING_MIN_AGE_SECONDS)``: presigned URLs live an hour. Abandoned spool files (an upload whose
process died) are removed when no live upload holds their lock and they are older than the grace (at least
``SPOOL_MIN_AGE_SECONDS``): an upload in progress locks and keeps writing its spool file.

One collector at a time. A tombstone row under ``LOCK_KEY`` (never a digest, so no upload waits for it) is the
lock; several API replicas may race for it, one wins and the others get a ConflictError. The winner renews it
before each batch and stops if it was taken over; a lock not renewed for ``LOCK_SECONDS`` belonged to a collector
that died and is taken over. A batch stops deleting after ``BATCH_SECONDS``, so a live collector's tombstones
never look stale (``STALE_TOMBSTONE_SECONDS``) to an upload. A collector process frozen for longer than that,
between its last check and a deletion, is the one case these bounds do not cover.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine, delete, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, select

from envyard.api.db import session_scope
from envyard.api.models import TERMINAL, BlobHold, BlobTombstone, Build, BuildArtifact, RunManifestRecord, utcnow
from envyard.api.schemas import GcReport
from envyard.api.storage import ArtifactStore, ListedBlob
from envyard.builder.errors import ConflictError, StorageError

log = logging.getLogger(__name__)

LOCK_KEY = "gc-lock"
LOCK_SECONDS = 300.0
STALE_TOMBSTONE_SECONDS = 600.0
BATCH_SECONDS = 120.0
BATCH = 100
TOMBSTONE_WAIT_SECONDS = 30.0
STAGING_MIN_AGE_SECONDS = 3600.0
SPOOL_MIN_AGE_SECONDS = 60.0  # a spool file no upload locks any more may still be between close and rename
IN_CHUNK = 500  # digests per IN (...) list
TERMINAL_VALUES = tuple(s.value for s in TERMINAL)

T = TypeVar("T")


class GcRunningError(ConflictError):
    """Another garbage collection holds the lock (rendered as the ``conflict`` problem)."""


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _insert_new(session: Session, model: type[SQLModel], rows: list[dict[str, Any]]) -> int:
    """Insert ``rows``, skipping those whose unique key is taken; the number inserted. Does not commit."""
    if not rows:
        return 0
    table: Any = model.__table__  # type: ignore[attr-defined]
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):  # rowcount of an INSERT is not reliable: count what RETURNING gives
        insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
        key = next(iter(table.primary_key.columns))
        return len(session.execute(insert_(table).values(rows).on_conflict_do_nothing().returning(key)).all())
    inserted = 0
    for row in rows:
        try:
            with session.begin_nested():
                session.execute(insert(table).values(row))
            inserted += 1
        except IntegrityError:
            pass
    return inserted


# --- the upload side ------------------------------------------------------------------------------------------------


def hold_blobs(engine: Engine, build_id: int, sha256s: Iterable[str], *,
               wait_seconds: float = TOMBSTONE_WAIT_SECONDS) -> None:
    """Hold ``sha256s`` for build ``build_id`` (committed), then wait until garbage collection is deleting none of
    them. Call before checking or storing a blob for a build, and before a build's completion references blobs.
    StorageError (503, retried by workers) when a deletion is still under way after ``wait_seconds``."""
    wanted = sorted(set(sha256s))
    for chunk in _chunks(wanted, IN_CHUNK):
        with session_scope(engine) as session:
            present = set(session.exec(select(BlobHold.sha256).where(BlobHold.build_id == build_id,
                                                                       col(BlobHold.sha256).in_(chunk))).all())
            now = utcnow()
            _insert_new(session, BlobHold, [{"sha256": sha, "build_id": build_id, "created_at": now}
                                            for sha in chunk if sha not in present])
    wait_for_tombstones(engine, wanted, wait_seconds)


def release_holds(session: Session, build_id: int) -> None:
    """Drop a build's holds, in the transaction that commits its artifact rows (which reference the blobs then)."""
    session.execute(delete(BlobHold).where(col(BlobHold.build_id) == build_id))


def wait_for_tombstones(engine: Engine, sha256s: Sequence[str], wait_seconds: float) -> None:
    """Return once no tombstone names any of ``sha256s``; stale tombstones (a dead collector's) are removed."""
    deadline = time.monotonic() + wait_seconds
    delay = 0.02
    while True:
        found: list[tuple[str, datetime]] = []
        with session_scope(engine) as session:  # no transaction stays open while waiting
            for chunk in _chunks(sha256s, IN_CHUNK):
                found += session.exec(select(BlobTombstone.sha256, BlobTombstone.created_at)
                                      .where(col(BlobTombstone.sha256).in_(chunk))).all()
        if not found:
            return
        cutoff = utcnow() - timedelta(seconds=STALE_TOMBSTONE_SECONDS)
        stale = [sha for sha, created in found if created < cutoff]
        if stale:
            with session_scope(engine) as session:
                removed = _remove_stale_tombstones(session, stale, cutoff)
            log.warning("removed %d tombstones a garbage collection left %g s or more ago", removed,
                        STALE_TOMBSTONE_SECONDS)
            continue
        if time.monotonic() >= deadline:
            raise StorageError(
                f"blob sha256:{found[0][0]} is being deleted by garbage collection and still was after "
                f"{wait_seconds:g} s",
                hint="retry in a few seconds: the blob is stored again once the deletion has finished",
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _remove_stale_tombstones(session: Session, sha256s: Sequence[str] | None, cutoff: datetime) -> int:
    """Delete tombstones created before ``cutoff`` (of ``sha256s``, or all but the lock); the number removed. The
    caller commits."""
    query = delete(BlobTombstone).where(col(BlobTombstone.created_at) < cutoff,
                                        col(BlobTombstone.sha256) != LOCK_KEY)
    if sha256s is not None:
        query = query.where(col(BlobTombstone.sha256).in_(sha256s))
    result: Any = session.execute(query)
    return int(result.rowcount or 0)


# --- the lock -------------------------------------------------------------------------------------------------------


class GcLock:
    """The one-collector-at-a-time lock: the tombstone row ``LOCK_KEY``, whose time is its holder's token."""

    def __init__(self, engine: Engine, token: datetime, lock_seconds: float) -> None:
        self.engine = engine
        self.token = token
        self.lock_seconds = lock_seconds

    @classmethod
    def acquire(cls, engine: Engine, lock_seconds: float = LOCK_SECONDS) -> GcLock:
        """The lock, or GcRunningError when another collector renewed it within ``lock_seconds``."""
        for _attempt in range(3):
            now = utcnow()
            with session_scope(engine) as session:
                won = _insert_new(session, BlobTombstone, [{"sha256": LOCK_KEY, "created_at": now}])
            if won:
                return cls(engine, now, lock_seconds)
            with session_scope(engine) as session:
                held = session.exec(select(BlobTombstone.created_at).where(BlobTombstone.sha256 == LOCK_KEY)).first()
            if held is None:
                continue  # released meanwhile: try again
            if held > now - timedelta(seconds=lock_seconds):
                raise GcRunningError(
                    f"garbage collection is already running (lock renewed at {held:%H:%M:%S} UTC)",
                    hint=f"wait for it to finish (a dead collection's lock expires after {lock_seconds:g} s)",
                )
            with session_scope(engine) as session:
                taken: Any = session.execute(
                    update(BlobTombstone).where(col(BlobTombstone.sha256) == LOCK_KEY,
                                                col(BlobTombstone.created_at) == held).values(created_at=now))
            if taken.rowcount:
                log.warning("took over the garbage collection lock last renewed at %s (its collector stopped)",
                            held.isoformat())
                return cls(engine, now, lock_seconds)
        raise GcRunningError("another garbage collection took the lock at the same time",
                             hint="wait for it to finish")

    def renew(self) -> None:
        """Extend the lock; ConflictError when another collector took it over (this one then stops)."""
        now = utcnow()
        with session_scope(self.engine) as session:
            done: Any = session.execute(
                update(BlobTombstone).where(col(BlobTombstone.sha256) == LOCK_KEY,
                                            col(BlobTombstone.created_at) == self.token).values(created_at=now))
        if not done.rowcount:
            raise GcRunningError(
                "this garbage collection lost its lock (it was not renewed in time and another collection took it)",
                hint="nothing more was deleted; the other collection goes on",
            )
        self.token = now

    def release(self) -> None:
        with session_scope(self.engine) as session:
            session.execute(delete(BlobTombstone).where(col(BlobTombstone.sha256) == LOCK_KEY,
                                                        col(BlobTombstone.created_at) == self.token))


@contextmanager
def gc_lock(engine: Engine, lock_seconds: float = LOCK_SECONDS) -> Iterator[GcLock]:
    lock = GcLock.acquire(engine, lock_seconds)
    try:
        yield lock
    finally:
        lock.release()


# --- the collector --------------------------------------------------------------------------------------------------


@dataclass
class _Tally:
    blobs: int = 0
    bytes: int = 0
    referenced: int = 0
    unreferenced: int = 0
    kept_held: int = 0
    kept_recent: int = 0
    kept_racing: int = 0
    deleted: int = 0
    deleted_bytes: int = 0
    deletable: list[ListedBlob] = field(default_factory=list)


def referenced_blobs(session: Session, sha256s: Sequence[str] | None = None) -> set[str]:
    """Digests an artifact of a build in the database, or a run manifest (its bytes and its OCI referrer),
    references (of ``sha256s``, or all). Builds that run manifests name are never deleted
    (:func:`api.services.catalog.delete_environment` refuses), so their artifacts stay referenced."""
    artifacts = select(BuildArtifact.sha256).distinct()
    manifests = select(RunManifestRecord.sha256).distinct()
    referrers = select(RunManifestRecord.referrer_sha256).distinct().where(
        col(RunManifestRecord.referrer_sha256).is_not(None))
    if sha256s is not None:
        artifacts = artifacts.where(col(BuildArtifact.sha256).in_(sha256s))
        manifests = manifests.where(col(RunManifestRecord.sha256).in_(sha256s))
        referrers = referrers.where(col(RunManifestRecord.referrer_sha256).in_(sha256s))
    found = set(session.exec(artifacts).all()) | set(session.exec(manifests).all())
    return found | {sha for sha in session.exec(referrers).all() if sha}


def held_blobs(session: Session, sha256s: Sequence[str] | None = None) -> set[str]:
    """Digests held by builds that have not finished (of ``sha256s``, or all)."""
    query = (select(BlobHold.sha256).distinct().join(Build, col(Build.id) == BlobHold.build_id)
             .where(col(Build.status).not_in(TERMINAL_VALUES)))
    if sha256s is not None:
        query = query.where(col(BlobHold.sha256).in_(sha256s))
    return set(session.exec(query).all())


def release_finished_holds(session: Session, dry_run: bool = False) -> int:
    """Delete the holds of finished builds (they protect nothing); the number (to be) deleted. The caller
    commits."""
    finished = select(Build.id).where(col(Build.status).in_(TERMINAL_VALUES))
    if dry_run:
        return len(session.exec(select(BlobHold.id).where(col(BlobHold.build_id).in_(finished))).all())
    result: Any = session.execute(delete(BlobHold).where(col(BlobHold.build_id).in_(finished)))
    return int(result.rowcount or 0)


def collect(engine: Engine, store: ArtifactStore, *, grace_seconds: float, dry_run: bool = False,
            stop: threading.Event | None = None, lock_seconds: float = LOCK_SECONDS) -> GcReport:
    """One garbage collection (see the module docstring); GcRunningError when another one is running."""
    started = time.monotonic()
    if dry_run:
        return _collect(engine, store, grace_seconds, None, stop, started)
    with gc_lock(engine, lock_seconds) as lock:
        return _collect(engine, store, grace_seconds, lock, stop, started)


def _collect(engine: Engine, store: ArtifactStore, grace_seconds: float, lock: GcLock | None,
             stop: threading.Event | None, started: float) -> GcReport:
    dry_run = lock is None
    now = utcnow()
    with session_scope(engine) as session:
        holds_released = release_finished_holds(session, dry_run)
    stale_cutoff = now - timedelta(seconds=STALE_TOMBSTONE_SECONDS)
    with session_scope(engine) as session:
        if dry_run:
            stale_tombstones = len(session.exec(select(BlobTombstone.sha256).where(
                col(BlobTombstone.created_at) < stale_cutoff, col(BlobTombstone.sha256) != LOCK_KEY)).all())
        else:
            stale_tombstones = _remove_stale_tombstones(session, None, stale_cutoff)
    staging_cutoff = now - timedelta(seconds=max(grace_seconds, STAGING_MIN_AGE_SECONDS))
    spool_cutoff = now - timedelta(seconds=max(grace_seconds, SPOOL_MIN_AGE_SECONDS))
    stale_uploads = store.remove_stale_uploads(staging_cutoff, dry_run=dry_run, spool_older_than=spool_cutoff)

    listed = []  # G1
    renewed = time.monotonic()
    for blob in store.iter_blobs():
        listed.append(blob)
        if lock is not None and time.monotonic() - renewed > lock.lock_seconds / 3:  # a long listing keeps the lock
            lock.renew()
            renewed = time.monotonic()
    with session_scope(engine) as session:  # G2
        referenced = referenced_blobs(session)
        held = held_blobs(session)
    tally = _Tally(blobs=len(listed), bytes=sum(b.size for b in listed))
    cutoff = now - timedelta(seconds=grace_seconds)
    for blob in listed:
        if blob.sha256 in referenced:
            tally.referenced += 1
        elif blob.sha256 in held:
            tally.unreferenced += 1
            tally.kept_held += 1
        elif blob.modified > cutoff:
            tally.unreferenced += 1
            tally.kept_recent += 1
        else:
            tally.unreferenced += 1
            tally.deletable.append(blob)
    if lock is not None:
        for batch in _chunks(tally.deletable, BATCH):
            if stop is not None and stop.is_set():
                break
            lock.renew()
            sweep(engine, store, batch, tally, stop)
    report = GcReport(
        dry_run=dry_run, grace_seconds=grace_seconds, blobs=tally.blobs, bytes=tally.bytes,
        referenced=tally.referenced, unreferenced=tally.unreferenced, kept_held=tally.kept_held,
        kept_recent=tally.kept_recent, kept_racing=tally.kept_racing, deletable=len(tally.deletable),
        deletable_bytes=sum(b.size for b in tally.deletable), deleted=tally.deleted,
        deleted_bytes=tally.deleted_bytes, holds_released=holds_released, stale_tombstones=stale_tombstones,
        stale_uploads=stale_uploads.count, stale_upload_bytes=stale_uploads.bytes,
        seconds=round(time.monotonic() - started, 3),
    )
    log.info("garbage collection%s: %d blobs, %d unreferenced, %d deleted (%d bytes), %d held, %d recent",
             " (dry run)" if dry_run else "", report.blobs, report.unreferenced, report.deleted,
             report.deleted_bytes, report.kept_held, report.kept_recent)
    return report


def sweep(engine: Engine, store: ArtifactStore, batch: Sequence[ListedBlob], tally: _Tally,
          stop: threading.Event | None = None) -> None:
    """G3 to G6 for ``batch`` (blobs the mark found unreferenced, unheld and old enough); counts into ``tally``."""
    token = utcnow()
    digests = [blob.sha256 for blob in batch]
    with session_scope(engine) as session:  # G3
        busy = set(session.exec(select(BlobTombstone.sha256).where(col(BlobTombstone.sha256).in_(digests))).all())
        _insert_new(session, BlobTombstone, [{"sha256": sha, "created_at": token}
                                             for sha in digests if sha not in busy])
    with session_scope(engine) as session:
        mine = set(session.exec(select(BlobTombstone.sha256).where(col(BlobTombstone.sha256).in_(digests),
                                                                     col(BlobTombstone.created_at) == token)).all())
    try:
        with session_scope(engine) as session:  # G4, after the tombstones are committed
            taken = referenced_blobs(session, sorted(mine))
            taken |= held_blobs(session, sorted(mine))
        deadline = time.monotonic() + BATCH_SECONDS
        for blob in batch:
            if blob.sha256 not in mine or blob.sha256 in taken:
                tally.kept_racing += 1  # referenced or held meanwhile, or another (dead) collector's tombstone
                continue
            if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                break  # the rest waits for the next collection; these tombstones must not grow stale
            store.delete(blob.sha256)  # G5
            tally.deleted += 1
            tally.deleted_bytes += blob.size
    finally:
        with session_scope(engine) as session:  # G6
            session.execute(delete(BlobTombstone).where(col(BlobTombstone.sha256).in_(mine),
                                                        col(BlobTombstone.created_at) == token))


def delete_blobs(engine: Engine, store: ArtifactStore, blobs: Sequence[ListedBlob],
                 lock_seconds: float = LOCK_SECONDS) -> tuple[int, int]:
    """Delete exactly ``blobs`` (no longer referenced: retention removed their builds' artifacts) through the
    collection's protocol (the lock, tombstones, G4's check again): a blob referenced or held meanwhile is kept.
    (deleted, deleted bytes); GcRunningError while a collection runs."""
    tally = _Tally()
    with gc_lock(engine, lock_seconds) as lock:
        for batch in _chunks(list(blobs), BATCH):
            lock.renew()
            sweep(engine, store, batch, tally)
    return tally.deleted, tally.deleted_bytes


def run_periodically(engine: Engine, store: ArtifactStore, interval_seconds: float, grace_seconds: float,
                     stop: threading.Event) -> None:
    """Collect every ``interval_seconds`` until ``stop`` is set (the server's background thread)."""
    while not stop.wait(interval_seconds):
        try:
            collect(engine, store, grace_seconds=grace_seconds, stop=stop)
        except GcRunningError:
            log.info("garbage collection skipped: another one is running")
        except Exception:  # noqa: BLE001 - the thread must outlive a database or store hiccup
            log.exception("garbage collection failed")
