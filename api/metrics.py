"""Prometheus metrics read from the database at scrape time, so every replica of a deployment reports the same.

:func:`metrics_registry` makes one :class:`prometheus_client.CollectorRegistry` per application (held in its state,
never process-global) with a :class:`DatabaseCollector`: each scrape runs a few aggregate queries.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func
from sqlmodel import col, select

from envyard.api.db import session_scope
from envyard.api.models import Build, BuildStatus, UsageEvent
from envyard.api.services.usage import storage_by_namespace

__all__ = ["STAGE_BUCKETS", "DatabaseCollector", "metrics_registry", "stage_durations"]

STAGE_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
_STAGES = ("solving", "installing", "imaging", "pushing")


def stage_durations(rows: list[tuple]) -> dict[str, list[float]]:
    """Stage -> seconds of each build's stage (from one stage's timestamp to the next one's, or to the end)."""
    found: dict[str, list[float]] = {stage: [] for stage in _STAGES}
    for row in rows:
        marks = dict(zip((*_STAGES, "finished"), row, strict=True))
        for index, stage in enumerate(_STAGES):
            start = marks[stage]
            if start is None:
                continue
            end = next((marks[later] for later in (*_STAGES[index + 1:], "finished") if marks[later] is not None),
                       None)
            if end is not None:
                found[stage].append(max((end - start).total_seconds(), 0.0))
    return found


class DatabaseCollector(Collector):
    """Queue depth, builds by state, stage durations, failures by type, storage bytes and registry pulls."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        with session_scope(self.engine) as session:
            states = dict(session.exec(select(Build.status, func.count()).group_by(col(Build.status))).all())
            failures = dict(session.exec(select(Build.error_code, func.count())
                                         .where(Build.status == BuildStatus.FAILED)
                                         .group_by(col(Build.error_code))).all())
            stamps = session.exec(select(Build.solving_at, Build.installing_at, Build.imaging_at, Build.pushing_at,
                                         Build.finished_at).where(col(Build.finished_at).is_not(None))).all()
            storage = storage_by_namespace(session)
            pulls = dict(session.exec(select(UsageEvent.kind, func.count()).group_by(col(UsageEvent.kind))).all())
        yield GaugeMetricFamily("envyard_queue_depth", "Builds queued.", value=states.get(BuildStatus.QUEUED, 0))
        by_state = GaugeMetricFamily("envyard_builds", "Builds by state.", labels=["state"])
        for state in BuildStatus:
            by_state.add_metric([state.value], states.get(state.value, 0))
        yield by_state
        histogram = HistogramMetricFamily("envyard_build_stage_duration_seconds",
                                          "Time finished builds spent in each stage.", labels=["stage"])
        for stage, values in stage_durations([tuple(row) for row in stamps]).items():
            counts = Counter(next((b for b in STAGE_BUCKETS if v <= b), float("inf")) for v in values)
            cumulative, buckets = 0, []
            for bound in (*STAGE_BUCKETS, float("inf")):
                cumulative += counts.get(bound, 0)
                buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
            histogram.add_metric([stage], buckets, sum(values))
        yield histogram
        failed = CounterMetricFamily("envyard_build_failures", "Failed builds by error type.", labels=["code"])
        for code, count in sorted(failures.items(), key=lambda item: item[0] or ""):
            failed.add_metric([code or "unknown"], count)
        yield failed
        stored = GaugeMetricFamily("envyard_storage_bytes", "Bytes each namespace's builds keep in the store.",
                                   labels=["namespace"])
        for namespace, size in sorted(storage.items()):
            stored.add_metric([namespace], size)
        yield stored
        pulled = CounterMetricFamily("envyard_registry_pulls", "Registry and artifact downloads, by kind.",
                                     labels=["kind"])
        for kind in ("manifest", "blob", "artifact"):
            pulled.add_metric([kind], pulls.get(kind, 0))
        yield pulled


def metrics_registry(engine: Engine) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one) holding the database collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(engine))
    return registry
