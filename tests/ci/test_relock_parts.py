"""The scheduler's parts on their own: the database lease that lets one replica run the schedules, and the
notification's signature and retries against a real loopback listener."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import update
from sqlmodel import col

from envyard.api.db import make_engine, migrate, session_scope
from envyard.api.models import ServiceLease
from envyard.api.services import relock
from envyard.api.settings import ServiceSettings
from tests.listener import recording_listener


def test_one_replica_holds_the_relock_lease(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    assert relock.take_lease(engine, 60, holder="replica-a")
    assert not relock.take_lease(engine, 60, holder="replica-b")  # held
    assert relock.take_lease(engine, 60, holder="replica-a")  # renewed by its holder
    with session_scope(engine) as session:  # replica-a stops renewing: its lease expires
        session.execute(update(ServiceLease).where(col(ServiceLease.name) == relock.LEASE_NAME)
                        .values(expires_at=datetime(2000, 1, 1, tzinfo=UTC)))
    assert relock.take_lease(engine, 60, holder="replica-b")
    assert not relock.take_lease(engine, 60, holder="replica-a")
    engine.dispose()


def test_cron_next_run():
    start = datetime(2026, 12, 7, 5, 59, tzinfo=UTC)  # a Monday
    assert relock.next_run("0 6 * * 1", start) == datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    assert relock.next_run("0 6 * * 1", datetime(2026, 12, 7, 6, 0, tzinfo=UTC)).day == 14


def test_notification_is_signed_and_retried_with_backoff(tmp_path: Path):
    with recording_listener() as listener:
        listener.post_statuses = [503, 502]
        settings = ServiceSettings(data_dir=tmp_path, relock_notify_secret="s3cret", relock_notify_attempts=4,
                                   relock_notify_backoff_seconds=0.2,
                                   allowed_url_prefixes=[listener.url + "/"], _env_file=None)
        started = time.monotonic()
        relock.notify(listener.url + "/n", {"event": "relock", "build_id": 7}, settings).join(timeout=20)
        elapsed = time.monotonic() - started
        assert len(listener.posts) == 3  # two refusals, then accepted: no fourth try
        assert elapsed >= 0.2 + 0.4  # backoff doubles
        bodies = {body for _, _, body in listener.posts}
        assert len(bodies) == 1
        body = bodies.pop()
        assert json.loads(body) == {"event": "relock", "build_id": 7}
        expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert all(headers["x-envyard-signature-256"] == expected for _, headers, _ in listener.posts)


def test_a_notification_url_outside_the_policy_is_not_sent(tmp_path: Path):
    with recording_listener() as listener:
        settings = ServiceSettings(data_dir=tmp_path, allowed_url_prefixes=[], _env_file=None)
        relock.notify(listener.url + "/n", {"event": "relock"}, settings).join(timeout=20)
        assert listener.posts == []  # a private address, not allowed: refused, not retried
