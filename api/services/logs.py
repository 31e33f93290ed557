"""Build logs: appended as chunks (one row per batch a worker sends), read back in order. Never rewritten.

Followers of a running build (Server-Sent Events) share one poller per build (:class:`LogHub`): however many
streams are open, a build costs one short query per poll interval, and no stream holds a database session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine, func, update
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from envyard.api.db import session_scope
from envyard.api.models import Build, BuildStatus, LogChunk

__all__ = ["LogBatch", "LogHub", "append_log", "chunks_after", "iter_log"]

READ_BATCH = 500
POLL_SECONDS = 0.3
IDLE_SECONDS = 10.0
FOLLOWER_QUEUE = 256
log = logging.getLogger(__name__)


def append_log(session: Session, build_id: int, text: str) -> None:
    """Append ``text`` (one or more lines) to the build's log; the caller commits."""
    if not text:
        return
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # progress bars' carriage returns become lines
    session.add(LogChunk(build_id=build_id, text=text))
    session.execute(
        update(Build)
        .where(col(Build.id) == build_id)
        .values(log_bytes=Build.log_bytes + len(text.encode()), log_lines=Build.log_lines + text.count("\n"))
    )


def chunks_after(session: Session, build_id: int, after_id: int, limit: int = READ_BATCH,
                 upto: int | None = None) -> Sequence[LogChunk]:
    query = select(LogChunk).where(LogChunk.build_id == build_id, col(LogChunk.id) > after_id)
    if upto is not None:
        query = query.where(col(LogChunk.id) <= upto)
    return session.exec(query.order_by(col(LogChunk.id)).limit(limit)).all()


def iter_log(engine: Engine, build_id: int) -> Iterator[str]:
    """The whole log, batch by batch, each read in its own short session (a slow reader holds no connection)."""
    after = 0
    while True:
        with session_scope(engine) as session:
            batch = [(c.id or 0, c.text) for c in chunks_after(session, build_id, after)]
        if not batch:
            return
        for _chunk_id, text in batch:
            yield text
        after = batch[-1][0]


@dataclass(frozen=True, slots=True)
class LogBatch:
    """What a follower gets: new chunks ``(id, text)``, the build's status when first seen or changed, and ``end``
    once the build is over and its log fully sent. An empty batch: nothing happened for a while (keepalive)."""

    chunks: tuple[tuple[int, str], ...] = ()
    status: str | None = None
    end: bool = False


@dataclass(eq=False)
class _Follower:
    position: int  # the channel's last chunk id when this follower joined: older chunks it reads itself
    status: str
    queue: asyncio.Queue[LogBatch]
    lagged: bool = False  # its queue overflowed: it left the channel and catches up from the database


@dataclass(eq=False)
class _Channel:
    build_id: int
    last_id: int = 0
    status: str = ""
    followers: set[_Follower] = field(default_factory=set)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    failed: BaseException | None = None
    task: asyncio.Task[None] | None = None

    def publish(self, batch: LogBatch) -> None:
        for follower in list(self.followers):
            try:
                follower.queue.put_nowait(batch)
            except asyncio.QueueFull:
                follower.lagged = True
                self.followers.discard(follower)


class LogHub:
    """One poller per followed build, started by its first follower and stopped after its last one left or the
    build ended; each poll is one short session. Followers joining late read the older chunks themselves."""

    def __init__(self, engine: Engine, poll_seconds: float = POLL_SECONDS, queue_size: int = FOLLOWER_QUEUE) -> None:
        self._engine = engine
        self._poll_seconds = poll_seconds
        self._queue_size = queue_size
        self._channels: dict[int, _Channel] = {}

    # --- database reads (in the thread pool, one short session each) ----------------------------------

    def _head(self, build_id: int) -> tuple[int, str]:
        with session_scope(self._engine) as session:
            last = session.exec(select(func.max(LogChunk.id)).where(LogChunk.build_id == build_id)).one()
            status = session.exec(select(Build.status).where(Build.id == build_id)).first()
        return int(last or 0), str(status or BuildStatus.FAILED)

    def _read(self, build_id: int, after: int, upto: int | None) -> tuple[list[tuple[int, str]], str]:
        with session_scope(self._engine) as session:
            chunks = [(c.id or 0, c.text) for c in chunks_after(session, build_id, after, upto=upto)]
            status = session.exec(select(Build.status).where(Build.id == build_id)).first()
        return chunks, str(status or BuildStatus.FAILED)

    # --- the poller ---------------------------------------------------------------------------------------

    async def _channel(self, build_id: int) -> _Channel:
        channel = self._channels.get(build_id)
        if channel is None:
            channel = self._channels[build_id] = _Channel(build_id)
            channel.task = asyncio.create_task(self._poll(channel), name=f"envyard-log-poller-{build_id}")
        await channel.ready.wait()
        if channel.failed is not None:
            raise channel.failed
        return channel

    def _drop(self, channel: _Channel) -> None:
        if self._channels.get(channel.build_id) is channel:
            del self._channels[channel.build_id]

    async def _poll(self, channel: _Channel) -> None:
        try:
            channel.last_id, channel.status = await run_in_threadpool(self._head, channel.build_id)
        except Exception as exc:  # noqa: BLE001 - its followers get the error; the next follower tries again
            channel.failed = exc
            self._drop(channel)
            return
        finally:
            channel.ready.set()
        try:
            behind = False
            while True:
                await asyncio.sleep(0 if behind else self._poll_seconds)
                if not channel.followers:
                    return
                try:
                    chunks, status = await run_in_threadpool(self._read, channel.build_id, channel.last_id, None)
                except Exception:  # noqa: BLE001 - a database hiccup: followers wait for the next poll
                    log.warning("polling the log of build %s failed", channel.build_id, exc_info=True)
                    continue
                behind = len(chunks) >= READ_BATCH
                if chunks:
                    channel.last_id = chunks[-1][0]
                changed = status != channel.status
                channel.status = status
                if chunks or changed:
                    channel.publish(LogBatch(tuple(chunks), status if changed else None))
                if not chunks and BuildStatus(status).terminal:
                    channel.publish(LogBatch(status=status, end=True))
                    return
        finally:
            self._drop(channel)

    # --- a follower -----------------------------------------------------------------------------------

    async def follow(self, build_id: int, after: int = 0,
                     idle_seconds: float = IDLE_SECONDS) -> AsyncIterator[LogBatch]:
        """The build's log after chunk ``after``, then what is appended, until the build ends."""
        while True:
            channel = await self._channel(build_id)
            follower = _Follower(channel.last_id, channel.status, asyncio.Queue(self._queue_size))
            channel.followers.add(follower)
            try:
                while after < follower.position:  # what was logged before this follower joined
                    chunks, _ = await run_in_threadpool(self._read, build_id, after, follower.position)
                    if not chunks:
                        break
                    after = chunks[-1][0]
                    yield LogBatch(tuple(chunks))
                yield LogBatch(status=follower.status)
                while not (follower.lagged and follower.queue.empty()):
                    try:
                        batch = await asyncio.wait_for(follower.queue.get(), idle_seconds)
                    except TimeoutError:
                        yield LogBatch()
                        continue
                    chunks = tuple(c for c in batch.chunks if c[0] > after)
                    if chunks:
                        after = chunks[-1][0]
                    yield LogBatch(chunks, batch.status, batch.end)
                    if batch.end:
                        return
            finally:
                channel.followers.discard(follower)
