"""Build logs: appended as chunks (one row per batch a worker sends), read back in order. Never rewritten."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sqlalchemy import update
from sqlmodel import Session, col, select

from api.models import Build, LogChunk

READ_BATCH = 500


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


def chunks_after(session: Session, build_id: int, after_id: int, limit: int = READ_BATCH) -> Sequence[LogChunk]:
    return session.exec(
        select(LogChunk)
        .where(LogChunk.build_id == build_id, col(LogChunk.id) > after_id)
        .order_by(col(LogChunk.id))
        .limit(limit)
    ).all()


def iter_log(session: Session, build_id: int) -> Iterator[str]:
    """The whole log, chunk by chunk, without loading it all at once."""
    after = 0
    while True:
        batch = chunks_after(session, build_id, after)
        if not batch:
            return
        for chunk in batch:
            yield chunk.text
        after = batch[-1].id or after
