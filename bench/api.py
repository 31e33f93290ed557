"""Benchmark: the API server (real ``envyard serve`` on uvicorn) against baselines measured in the same run.

Prints three figures, each against its target:

1. list/get latency  PostgreSQL seeded (COPY) with 20 namespaces, 10,000 environments, 100,000 builds (completed,
                     failed, canceled: none queued or running) and 100,000 build-package rows; each endpoint driven
                     alone by an open-loop generator at a fixed rate (50 req/s, 10 s per endpoint; --quick: 5 s) in
                     1-s slices taking turns with /healthz, so background noise hits all alike; p99 of each vs the
                     p99 of the same server's /healthz (target <= 3x). Then, as a diagnosis, the same requests one
                     at a time through the app in this process: SQL statements, SQL time, the rest; EXPLAIN
                     ANALYZE of any statement slower than 2 ms;
2. resubmit          POST /api/v1/environments with an unchanged spec (answered by reusing its completed build),
                     median of 50, vs a fresh solve + lock of that spec (bench/solve.py's cross-platform spec,
                     linux-64) in-process with the builder API on a warm repodata cache, median of 3, against the
                     real records of ../shared (target >= 50x faster); for context (not --quick) also against a
                     synthetic inflation of them to conda-forge linux-64's size (bench/solve.py's ``inflate``);
3. log ingestion     100,000 build-log lines POSTed through the worker protocol in the batches a worker sends
                     (2,000 lines, ~200 KiB) vs appending the same batches to a local file (write + flush, no
                     fsync) (target <= 2x); on PostgreSQL and on the default SQLite; the log read back must equal
                     what was sent, byte for byte; also what PostgreSQL alone takes to store one batch.

Ratios are against baselines measured in the same run; nothing is asserted on absolute times. Everything runs on
127.0.0.1; the servers (PostgreSQL, two ``envyard serve``) are subprocesses stopped by PID at the end. The work
directory (default /tmp/envyard-bench-api) is emptied at the start and removed after a successful run (--keep
keeps it, with the servers' logs; a failed run leaves it in place).

Usage: python bench/api.py [--quick] [--rate R] [--seconds S] [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.solve import CROSS_PLATFORM, DERIVED  # noqa: E402
from bench.table import format_table  # noqa: E402
from tests.servers import free_port, postgres_available, postgres_server, stop_process, wait_for_port  # noqa: E402

TARGETS = {"latency": 3.0, "resubmit": 50.0, "logs": 2.0}
NAMESPACES = 20
ENVIRONMENTS = 10_000
BUILDS_PER_ENV = 10
PACKAGES_PER_BUILD = 10
SPECS = 300
LOG_LINES = 100_000
LOG_BATCH_LINES = 2_000
RESUBMITS = 50
LOCK_REPEAT = 3
#: the numpy versions spread over the seeded current builds (~2,000 environments each)
NUMPY_VERSIONS = ("1.26.4", "2.0.2", "2.1.3", "2.2.6", "2.3.1")
#: a package in ~1% of the current builds: a selective filter
RARE = ("tensorflow", "2.16.1", 97)
PACKAGE_POOL = (
    "pandas", "scipy", "scikit-learn", "matplotlib", "xarray", "dask", "distributed", "zarr", "netcdf4", "h5py",
    "pyarrow", "polars", "numba", "llvmlite", "jupyterlab", "ipykernel", "ipython", "notebook", "bokeh", "holoviews",
    "panel", "altair", "seaborn", "plotly", "statsmodels", "sympy", "networkx", "pillow", "imageio", "scikit-image",
    "opencv", "shapely", "pyproj", "geopandas", "rasterio", "fiona", "gdal", "cartopy", "requests", "urllib3",
    "certifi", "idna", "charset-normalizer", "aiohttp", "fsspec", "s3fs", "gcsfs", "boto3", "botocore", "pydantic",
    "fastapi", "uvicorn", "starlette", "sqlalchemy", "psycopg", "alembic", "click", "rich", "typer", "pyyaml",
    "ruamel.yaml", "jinja2", "markupsafe", "tornado", "pyzmq", "traitlets", "protobuf", "grpcio", "tqdm", "joblib",
    "threadpoolctl", "cloudpickle", "msgpack-python", "lz4", "zstd", "blosc", "openssl", "libcurl", "zlib", "xz",
    "bzip2", "libffi", "ncurses", "readline", "sqlite", "tk", "libgcc-ng", "libstdcxx-ng", "libgfortran5", "openblas",
    "libblas", "liblapack", "mkl", "intel-openmp", "cython", "pybind11", "setuptools", "wheel", "pip", "packaging",
    "attrs", "pluggy", "pytest", "coverage", "hypothesis"
)
SERVER_ENV = {"ENVYARD_LEASE_SECONDS": "600", "ENVYARD_HEARTBEAT_SECONDS": "60"}


# -- helpers -------------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (p in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def print_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    print("\n".join(format_table(headers, rows, indent="  ")), flush=True)


@dataclass
class Server:
    """A running ``envyard serve`` (a subprocess, stopped by PID)."""

    label: str
    url: str
    token: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60.0)


@contextmanager
def envyard_serve(work: Path, label: str, database_url: str | None) -> Iterator[Server]:
    """``envyard serve --workers 0`` on a free loopback port with its own data directory."""
    port = free_port()
    data_dir = work / f"data-{label}"
    log_path = work / f"serve-{label}.log"
    executable = shutil.which("envyard")
    command = [executable] if executable else [sys.executable, "-m", "envyard.cli"]
    command += ["serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir), "--workers", "0",
                "--log-level", "warning"]
    if database_url:
        command += ["--database", database_url]
    env = {**os.environ, **SERVER_ENV, "ENVYARD_CACHE_DIR": str(work / "serve-cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, cwd=REPO, env=env)
    try:
        try:
            wait_for_port(port, timeout=60)
        except TimeoutError:
            raise RuntimeError(f"envyard serve did not start:\n{log_path.read_text(errors='replace')}") from None
        token = (data_dir / "admin-token").read_text().strip()
        yield Server(label, f"http://127.0.0.1:{port}", token, data_dir, log_path, process)
    finally:
        if process.poll() is None:
            stop_process(process, timeout=15)


def check(response: httpx.Response, *statuses: int) -> Any:
    if response.status_code not in statuses:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: HTTP {response.status_code}: "
                           f"{response.text[:500]}")
    return response.json() if response.content else None


# -- seeding ---------------------------------------------------------------------------------------------------


@dataclass
class Seeded:
    environments: list[tuple[str, str]] = field(default_factory=list)  # (namespace, name) by id
    builds: int = 0
    packages: int = 0
    seconds: float = 0.0


def _hex(rng: random.Random, nbytes: int = 32) -> str:
    return rng.randbytes(nbytes).hex()


def _copy(cursor: Any, table: str, columns: list[str], rows: Iterator[tuple[Any, ...]] | list[tuple[Any, ...]]) -> int:
    quoted = ", ".join(f'"{c}"' for c in columns)
    count = 0
    with cursor.copy(f'COPY "{table}" ({quoted}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def seed_postgres(url: str, rng: random.Random) -> Seeded:
    """Bulk-load (COPY) namespaces, specs, environments, builds and the current builds' packages into the
    database the server has migrated; then point every environment at its newest completed build."""
    import psycopg

    from envyard.api.services.builds import spec_digest

    started = time.perf_counter()
    seeded = Seeded()
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    now = datetime.now(UTC).replace(tzinfo=None)
    epoch = now - timedelta(days=365)
    options = json.dumps({"image": True, "archive": True, "sbom": "spdx", "channel_alias": None})
    with psycopg.connect(conninfo) as connection, connection.cursor() as cursor:
        _copy(cursor, "namespace", ["id", "name", "description", "created_at"],
              [(i, f"team-{i:02d}", f"namespace {i}", epoch) for i in range(1, NAMESPACES + 1)])
        specs = []
        for i in range(1, SPECS + 1):
            deps = rng.sample(PACKAGE_POOL, 8)
            text = (f"name: env-{i}\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.12\n  - numpy\n"
                    + "".join(f"  - {d}\n" for d in deps))
            specs.append((i, spec_digest("environment.yml", text), "environment.yml", text, epoch))
        _copy(cursor, "spec", ["id", "sha256", "filename", "content", "created_at"], specs)
        environments = []
        for env_id in range(1, ENVIRONMENTS + 1):
            ns = (env_id - 1) % NAMESPACES + 1
            name = f"env-{env_id:05d}"
            seeded.environments.append((f"team-{ns:02d}", name))
            created = epoch + timedelta(seconds=env_id * 60)
            environments.append((env_id, ns, name, f"environment {env_id}", created, created))
        _copy(cursor, "environment",
              ["id", "namespace_id", "name", "description", "created_at", "updated_at"], environments)

        build_columns = [
            "id", "environment_id", "spec_id", "status", "platforms", "options", "attempt", "not_before", "lease_id",
            "lease_owner", "lease_expires_at", "cancel_requested", "error_code", "error_stage", "error_message",
            "error_hint", "created_at", "queued_at", "solving_at", "installing_at", "imaging_at", "pushing_at",
            "started_at", "finished_at", "image_digest", "lock_sha256", "package_count", "log_bytes", "log_lines",
            "requested_by",
        ]
        current: dict[int, int] = {}
        total_seconds = (now - epoch).total_seconds()

        def builds() -> Iterator[tuple[Any, ...]]:
            build_id = 0
            for env_id in range(1, ENVIRONMENTS + 1):
                spec_id = (env_id - 1) % SPECS + 1
                for k in range(BUILDS_PER_ENV):
                    build_id += 1
                    roll = rng.random()
                    last = k == BUILDS_PER_ENV - 1
                    status = "completed" if roll < (0.95 if last else 0.85) else (
                        "failed" if roll < 0.95 else "canceled")
                    t0 = epoch + timedelta(seconds=total_seconds * (build_id / (ENVIRONMENTS * BUILDS_PER_ENV)))
                    t = [t0 + timedelta(seconds=s) for s in (0, 2, 40, 95, 140, 170)]
                    done = status == "completed"
                    failed = status == "failed"
                    if done:
                        current[env_id] = build_id
                    yield (
                        build_id, env_id, spec_id, status, '["linux-64"]', options, 1, None, None,
                        "worker@bench-host", None, status == "canceled",
                        "solve-conflict" if failed else None, "solving" if failed else None,
                        "nothing provides libfoo >=2 needed by bar-1.0" if failed else None,
                        "relax the pin on bar" if failed else None,
                        t[0], t[0], t[1], t[2] if done else None, t[3] if done else None, t[4] if done else None,
                        t[1], t[5], f"sha256:{_hex(rng)}" if done else None, _hex(rng) if done else None,
                        rng.randint(40, 300) if done else 0, rng.randint(20_000, 400_000), rng.randint(200, 4_000),
                        "admin",
                    )

        seeded.builds = _copy(cursor, "build", build_columns, builds())

        def packages() -> Iterator[tuple[Any, ...]]:
            package_id = 0
            for env_id, build_id in current.items():
                chosen = [("python", "3.12.7", "hc5c86c4_0_cpython"),
                          ("numpy", NUMPY_VERSIONS[env_id % len(NUMPY_VERSIONS)], "py312h58c1407_0")]
                if env_id % RARE[2] == 0:
                    chosen.append((RARE[0], RARE[1], "cpu_py312h0a4a5b9_0"))
                for name in rng.sample(PACKAGE_POOL, PACKAGES_PER_BUILD - len(chosen)):
                    chosen.append((name, f"{rng.randint(0, 5)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
                                   f"py312h{_hex(rng, 4)[:7]}_0"))
                for name, version, build in chosen:
                    package_id += 1
                    yield package_id, build_id, "linux-64", "conda", name, version, build

        seeded.packages = _copy(cursor, "buildpackage",
                                ["id", "build_id", "platform", "manager", "name", "version", "build"], packages())
        cursor.execute("CREATE TEMP TABLE bench_current (environment_id integer, build_id integer)")
        _copy(cursor, "bench_current", ["environment_id", "build_id"], list(current.items()))
        cursor.execute("UPDATE environment SET current_build_id = c.build_id FROM bench_current c "
                       "WHERE environment.id = c.environment_id")
        for table in ("namespace", "spec", "environment", "build", "buildpackage"):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), "
                           f"(SELECT max(id) FROM \"{table}\"))")
        connection.commit()
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
    seeded.seconds = time.perf_counter() - started
    return seeded


# -- 1. list/get latency at a fixed rate ------------------------------------------------------------------------


@dataclass
class Endpoint:
    label: str
    paths: list[str]
    ok: Callable[[Any], bool]


def endpoints(seeded: Seeded, rng: random.Random, quick: bool) -> list[Endpoint]:
    from envyard.api.services.pagination import encode_cursor

    def items(body: Any) -> bool:
        return isinstance(body, dict) and bool(body.get("items"))

    def one_env(body: Any) -> bool:
        return isinstance(body, dict) and bool(body.get("name")) and body.get("current_build") is not None

    def one_build(body: Any) -> bool:
        return isinstance(body, dict) and isinstance(body.get("id"), int) and bool(body.get("status"))

    n = 500
    envs = rng.sample(seeded.environments, n)
    found = [
        Endpoint("GET /healthz", ["/healthz"], lambda b: isinstance(b, dict) and b.get("status") == "ok"),
        Endpoint("GET /environments?limit=50 (first page)", ["/api/v1/environments?limit=50"], items),
        Endpoint("GET /environments?limit=50&cursor=<deep>",
                 [f"/api/v1/environments?limit=50&cursor={encode_cursor(rng.randint(7_000, 9_900))}"
                  for _ in range(n)], items),
        Endpoint("GET /environments?package=numpy&package_version=V",
                 [f"/api/v1/environments?package=numpy&package_version={v}&limit=50" for v in NUMPY_VERSIONS], items),
        Endpoint("GET /environments/{ns}/{name}", [f"/api/v1/environments/{ns}/{name}" for ns, name in envs],
                 one_env),
        Endpoint("GET /builds?limit=50", ["/api/v1/builds?limit=50"], items),
        Endpoint("GET /builds/{id}", [f"/api/v1/builds/{rng.randint(1, seeded.builds)}" for _ in range(n)],
                 one_build),
    ]
    if not quick:
        found.insert(4, Endpoint(f"GET /environments?package={RARE[0]}&package_version={RARE[1]} (~1%)",
                                 [f"/api/v1/environments?package={RARE[0]}&package_version={RARE[1]}&limit=50"],
                                 items))
    return found


@dataclass
class Phase:
    endpoint: Endpoint
    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)  # how late the generator sent each request
    errors: list[str] = field(default_factory=list)
    sent: int = 0


async def drive_slice(client: httpx.AsyncClient, phase: Phase, rate: float, count: int, offset: int) -> None:
    """Open loop: request i is sent at start + i / rate whatever earlier requests are doing (no coordinated
    omission); its latency runs from the moment it is handed to the client until its body has arrived. How late
    the generator itself was is recorded apart (``lags``), so client-side stalls show instead of hiding."""
    loop = asyncio.get_running_loop()
    paths = phase.endpoint.paths

    async def one(path: str) -> None:
        sent = loop.time()
        try:
            response = await client.get(path)
            elapsed = loop.time() - sent
            if response.status_code != 200:
                phase.errors.append(f"HTTP {response.status_code} {path}: {response.text[:200]}")
            elif not phase.endpoint.ok(response.json()):
                phase.errors.append(f"empty or unexpected body {path}: {response.text[:200]}")
            else:
                phase.latencies.append(elapsed)
        except (httpx.HTTPError, ValueError) as exc:
            phase.errors.append(f"{type(exc).__name__} {path}: {exc!r}")

    tasks = []
    start = loop.time() + 0.01
    for i in range(count):
        scheduled = start + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        phase.lags.append(max(0.0, loop.time() - scheduled))
        tasks.append(asyncio.create_task(one(paths[(offset + i) % len(paths)])))
        phase.sent += 1
    _done, pending = await asyncio.wait(tasks, timeout=30)
    for task in pending:
        task.cancel()
        phase.errors.append("no answer within 30 s")


async def drive_all(server: Server, points: list[Endpoint], rate: float, seconds: float,
                    slice_seconds: float = 1.0) -> list[Phase]:
    """Each endpoint alone at ``rate`` in slices of ``slice_seconds``, the endpoints taking turns (healthz,
    A, B, ..., healthz, A, B, ...) so that whatever else the machine does hits all of them alike."""
    # idle connections are dropped well before uvicorn's 5-s keep-alive timeout closes them from its side (reusing
    # one just as the server closes it fails the request with a ReadError that is no fault of the endpoint)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=2.0)
    phases = [Phase(p) for p in points]
    per_slice = max(1, round(rate * slice_seconds))
    rounds = max(1, round(seconds / slice_seconds))
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"},
                                 timeout=30.0, limits=limits) as client:
        for phase in phases:  # warm-up, not counted
            for path in phase.endpoint.paths[:10]:
                await client.get(path)
        gc.collect()
        gc.disable()  # no collector pauses in the generator while it measures
        try:
            for r in range(rounds):
                for phase in phases:
                    await drive_slice(client, phase, rate, per_slice, r * per_slice)
                print(f"\r  round {r + 1}/{rounds}", end="", flush=True)
        finally:
            gc.enable()
    print()
    return phases


def bench_latency(server: Server, seeded: Seeded, rate: float, seconds: float, quick: bool,
                  summary: list[str]) -> list[Phase]:
    rng = random.Random(7)
    phases = asyncio.run(drive_all(server, endpoints(seeded, rng, quick), rate, seconds))
    base = phases[0]
    base_p99 = percentile(base.latencies, 99) if base.latencies else float("nan")
    rows = []
    worst = 0.0
    errors = sum(len(phase.errors) for phase in phases)
    for phase in phases:
        lat = phase.latencies
        is_base = phase is base
        lag = f"{percentile(phase.lags, 99) * 1e3:.1f} / {max(phase.lags) * 1e3:.1f}"
        if not lat:
            rows.append((phase.endpoint.label, str(phase.sent), str(len(phase.errors)), "-", "-", "-", "-", "-", lag,
                         "MISS"))
            worst = math.inf
            continue
        p99 = percentile(lat, 99)
        ratio = p99 / base_p99
        if not is_base:
            worst = max(worst, ratio)
        rows.append((phase.endpoint.label, str(phase.sent), str(len(phase.errors)), f"{percentile(lat, 50) * 1e3:.1f}",
                     f"{percentile(lat, 95) * 1e3:.1f}", f"{p99 * 1e3:.1f}", f"{max(lat) * 1e3:.1f}",
                     "1.00x (base)" if is_base else f"{ratio:.2f}x", lag,
                     "" if is_base else verdict(ratio <= TARGETS["latency"] and not phase.errors)))
    print_table(("endpoint", "sent", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms", "p99 / healthz",
                 "gen lag p99/max ms", "<= 3x"), rows)
    for phase in phases:
        for error in sorted(set(phase.errors))[:3]:
            print(f"  error: {phase.endpoint.label}: {error}")
    summary.append(f"TARGET 1  list/get p99 <= {TARGETS['latency']:.0f}x healthz p99 ({ms(base_p99)}) at "
                   f"{rate:g} req/s: worst {worst:.2f}x, {errors} failed requests  "
                   f"{verdict(worst <= TARGETS['latency'] and not errors)}")
    return phases


# -- where the time goes: the same requests in-process, SQL statements timed, slow plans explained -------------------


@dataclass
class Probe:
    label: str
    method: str
    path: str
    body: dict[str, Any] | None = None


def breakdown(url: str, work: Path, probes: list[Probe], repeat: int = 30) -> None:
    """Each request ``repeat`` times through the ASGI app in this process (no network, no load) on the same
    database: SQL statements per request, their time, the whole request; EXPLAIN ANALYZE of any statement
    whose median exceeds 2 ms."""
    import warnings

    import psycopg
    from sqlalchemy import event

    from envyard.api.app import create_app
    from envyard.api.deps import app_state
    from envyard.api.settings import ServiceSettings

    warnings.simplefilter("ignore")
    app = create_app(ServiceSettings(data_dir=work / "data-inprocess", database_url=url))
    state = app_state(app)
    engine = state.engine
    statements: list[tuple[str, Any, float]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        conn.info["bench_t0"] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        statements.append((statement, params, time.perf_counter() - conn.info["bench_t0"]))

    slow: list[tuple[str, str, Any, float]] = []

    async def run() -> list[tuple[str, ...]]:
        rows = []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench",
                                     headers={"Authorization": f"Bearer {state.admin_token}"}) as client:
            for probe in probes:
                totals, db, counts = [], [], []
                per_statement: dict[str, list[float]] = {}
                examples: dict[str, Any] = {}
                size = 0
                for i in range(repeat + 3):
                    statements.clear()
                    start = time.perf_counter()
                    response = await client.request(probe.method, probe.path, json=probe.body)
                    elapsed = time.perf_counter() - start
                    if response.status_code >= 300:
                        raise RuntimeError(f"{probe.label}: HTTP {response.status_code} {response.text[:300]}")
                    if i < 3:
                        continue  # warm-up
                    size = len(response.content)
                    totals.append(elapsed)
                    db.append(sum(t for _, _, t in statements))
                    counts.append(len(statements))
                    for statement, params, t in statements:
                        key = " ".join(statement.split())
                        per_statement.setdefault(key, []).append(t)
                        examples[key] = params
                for key, times in per_statement.items():
                    if statistics.median(times) > 0.002 and key.upper().startswith("SELECT"):
                        slow.append((probe.label, key, examples[key], statistics.median(times)))
                rows.append((probe.label, f"{statistics.median(counts):g}", f"{statistics.median(db) * 1e3:.2f}",
                             f"{statistics.median(totals) * 1e3:.2f}",
                             f"{(statistics.median(totals) - statistics.median(db)) * 1e3:.2f}", f"{size / 1024:.0f}"))
        return rows

    try:
        rows = asyncio.run(run())
    finally:
        engine.dispose()
    print_table(("request (in-process)", "SQL stmts", "SQL ms", "request ms", "non-SQL ms", "body KiB"), rows)
    if not slow:
        return
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as connection:
        for label, statement, params, median in slow:
            plan = [r[0] for r in connection.execute(("EXPLAIN (ANALYZE, BUFFERS) " + statement).encode(),
                                                     params).fetchall()]
            print(f"\n  slow statement of {label} (median {median * 1e3:.2f} ms): {statement[:160]} ...")
            for line in plan:
                if any(k in line for k in ("Scan", "Join", "Sort", "Limit", "Hash", "rows=", "Execution", "Nested")):
                    print(f"    {line[:150]}")
            connection.rollback()


# -- 2. resubmitting an unchanged spec vs a fresh lock -------------------------------------------------------------


def spec_text() -> str:
    return "channels:\n  - conda-forge\ndependencies:\n" + "".join(f"  - {s}\n" for s in CROSS_PLATFORM)


@dataclass
class LockTimes:
    label: str
    records: int
    fresh_gateway: float
    warm_gateway: float
    packages: list[dict[str, str]]

    @property
    def fastest(self) -> float:
        return min(self.fresh_gateway, self.warm_gateway)


def bench_lock(work: Path, alias_root: Path, label: str) -> LockTimes:
    """A fresh solve + lock of the spec in-process, median of LOCK_REPEAT after a warm-up: as ``envyard lock``
    does it (a new gateway over the warm on-disk repodata cache) and with one gateway kept warm in memory (as
    bench/solve.py measures)."""
    from bench.solve import count_records
    from envyard.builder.channels import ChannelOptions, make_gateway
    from envyard.builder.lock import LockOptions
    from envyard.builder.pipeline import lock_to_directory

    root = work / f"lock-{label}"
    spec = root / "environment.yml"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(spec_text())
    channels = ChannelOptions(channel_alias=alias_root.as_uri() + "/")
    options = LockOptions(platforms=("linux-64",), channels=channels, environ=dict(os.environ))
    gateway = make_gateway(root / "cache" / "gateway", channels)

    def fresh() -> Any:
        return lock_to_directory(spec, root / "out", options, cache_dir=root / "cache", environ=os.environ)

    def warm() -> Any:
        return lock_to_directory(spec, root / "out2", options, cache_dir=root / "cache", environ=os.environ,
                                 gateway=gateway)

    result = fresh()
    warm()
    times: dict[str, list[float]] = {"fresh": [], "warm": []}
    for _ in range(LOCK_REPEAT):
        for key, fn in (("fresh", fresh), ("warm", warm)):
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    packages = [{"platform": "linux-64", "manager": "conda", "name": p.name, "version": p.version, "build": p.build}
                for p in result.lock.platforms["linux-64"].conda]
    return LockTimes(label, count_records(alias_root / "conda-forge"), statistics.median(times["fresh"]),
                     statistics.median(times["warm"]), packages)


def claim_only(http: httpx.Client, build_id: int) -> str:
    """Claim the one queued build through the worker protocol; returns the lease."""
    job = check(http.post("/api/v1/jobs/claim", json={"worker": "bench", "wait_seconds": 0}), 200)
    if job["build_id"] != build_id:
        raise RuntimeError(f"claimed build {job['build_id']}, expected {build_id}: another build was queued")
    return str(job["lease_id"])


def resubmit_body() -> dict[str, Any]:
    return {"namespace": "bench", "name": "datascience", "spec": spec_text(), "platforms": ["linux-64"],
            "options": {"channel_alias": DERIVED.parent.as_uri() + "/"}}


def bench_resubmit(server: Server, packages: list[dict[str, str]]) -> list[float]:
    """Submit the spec, have it 'built' (claim + complete through the worker protocol, with the packages of the
    real lock), then time RESUBMITS identical submissions, each of which must reuse that build."""
    body = resubmit_body()
    with server.client() as http:
        first = check(http.post("/api/v1/environments", json=body), 201)
        lease = claim_only(http, first["id"])
        check(http.post(f"/api/v1/jobs/{first['id']}/complete",
                        json={"lease_id": lease, "artifacts": [], "packages": packages, "lock_sha256": "0" * 64}),
              200)
        for _ in range(5):  # warm-up, not counted
            check(http.post("/api/v1/environments", json=body), 200)
        times = []
        for _ in range(RESUBMITS):
            start = time.perf_counter()
            response = http.post("/api/v1/environments", json=body)
            times.append(time.perf_counter() - start)
            again = check(response, 200)
            if not again["reused"] or again["id"] != first["id"] or again["status"] != "completed":
                raise RuntimeError(f"resubmit did not reuse build {first['id']}: {again}")
    return times


# -- 3. log ingestion vs a local file ------------------------------------------------------------------------------


def log_batches(rng: random.Random) -> list[bytes]:
    """LOG_LINES realistic build-output lines (80-120 characters, a few non-ASCII) in worker-sized batches."""
    names = ["python", "numpy", *PACKAGE_POOL]
    start = datetime(2025, 3, 1, 12, 0, 0)
    lines = []
    for i in range(LOG_LINES):
        name = rng.choice(names)
        version = f"{rng.randint(0, 4)}.{rng.randint(0, 30)}.{rng.randint(0, 12)}"
        build = f"py312h{_hex(rng, 4)[:7]}_{rng.randint(0, 3)}"
        ts = (start + timedelta(milliseconds=37 * i)).isoformat(timespec="milliseconds")
        kind = i % 4
        if kind == 0:
            line = (f"  + {name:<22} {version:<9} {build:<18} conda-forge/linux-64  {rng.uniform(0.1, 90):6.1f} MB"
                    f"  {rng.randint(1, 400):>4} ms")
        elif kind == 1:
            line = f"{ts} INFO  install: linking {name}-{version}-{build} into /opt/env ({rng.randint(3, 9000)} files)"
        elif kind == 2:
            line = (f"{ts} DEBUG extract: {name}-{version}-{build}.conda sha256:{_hex(rng, 8)}... "
                    f"{rng.randint(1, 900)} ms")
        else:
            line = f"{ts} INFO  ✔ verified {name} {version} ({build}) — {rng.randint(10, 5000)} files … ok"
        lines.append(line[:120].ljust(80) + "\n")
    return ["".join(lines[i:i + LOG_BATCH_LINES]).encode() for i in range(0, LOG_LINES, LOG_BATCH_LINES)]


def bench_file_append(batches: list[bytes], path: Path, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        path.unlink(missing_ok=True)
        start = time.perf_counter()
        with path.open("ab") as handle:
            for batch in batches:
                handle.write(batch)
                handle.flush()
        times.append(time.perf_counter() - start)
    if path.read_bytes() != b"".join(batches):
        raise RuntimeError("the baseline file does not hold what was written")
    return statistics.median(times)


@dataclass
class LogRun:
    total: float
    per_batch: list[float]
    read_back: float
    one_line: float  # median of a POST of a single line: the per-request cost


def ingest_once(server: Server, batches: list[bytes], run: int) -> LogRun:
    """Create a build, claim it (the one queued build), POST every batch as a worker does, read the log back."""
    body = {"namespace": "bench", "name": f"logs-{run}", "spec": f"dependencies:\n  - zlib\n# run {run}\n",
            "platforms": ["linux-64"]}
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    with server.client() as http:
        build = check(http.post("/api/v1/environments", json=body), 201)
        build_id = build["id"]
        lease = claim_only(http, build_id)
        before = http.get(f"/api/v1/builds/{build_id}/logs").content
        per_batch = []
        start = time.perf_counter()
        for batch in batches:
            t = time.perf_counter()
            check(http.post(f"/api/v1/jobs/{build_id}/logs", params={"lease_id": lease}, content=batch,
                            headers=headers), 204)
            per_batch.append(time.perf_counter() - t)
        total = time.perf_counter() - start
        t = time.perf_counter()
        text = http.get(f"/api/v1/builds/{build_id}/logs").content
        read_back = time.perf_counter() - t
        sent = b"".join(batches)
        if text != before + sent:
            at = next((i for i, (a, b) in enumerate(zip(text[len(before):], sent, strict=False)) if a != b), None)
            raise RuntimeError(f"build {build_id}: the log read back differs from what was sent "
                               f"({len(text) - len(before)} vs {len(sent)} bytes; first difference at {at})")
        view = check(http.get(f"/api/v1/builds/{build_id}"), 200)
        lines = before.count(b"\n") + sent.count(b"\n")
        if view["log_lines"] != lines:
            raise RuntimeError(f"build {build_id}: log_lines {view['log_lines']}, expected {lines}")
        small = []
        for i in range(20):
            t = time.perf_counter()
            check(http.post(f"/api/v1/jobs/{build_id}/logs", params={"lease_id": lease},
                            content=f"one more line {i}\n".encode(), headers=headers), 204)
            small.append(time.perf_counter() - t)
        check(http.post(f"/api/v1/jobs/{build_id}/fail", json={"lease_id": lease, "code": "bench", "message": "done"}),
              200)
    return LogRun(total, per_batch, read_back, statistics.median(small))


def bench_logs(server: Server, batches: list[bytes], baseline: float, repeat: int, summary: list[str]) -> None:
    runs = [ingest_once(server, batches, i) for i in range(repeat)]
    total = statistics.median(r.total for r in runs)
    per_batch = statistics.median(statistics.median(r.per_batch) for r in runs)
    ratio = total / baseline
    size = sum(len(b) for b in batches)
    print(f"  {server.label}: {len(batches)} POSTs of ~{size / len(batches) / 1024:.0f} KiB in {ms(total)} "
          f"(median per POST {ms(per_batch)}; a one-line POST {ms(statistics.median(r.one_line for r in runs))}; "
          f"{size / total / 1e6:.1f} MB/s; read back {ms(runs[-1].read_back)}, identical)  vs file {ms(baseline)}"
          f"  -> {ratio:.1f}x  {verdict(ratio <= TARGETS['logs'])}", flush=True)
    summary.append(f"TARGET 3  {LOG_LINES:,} log lines via the API ({server.label}) <= {TARGETS['logs']:.0f}x a "
                   f"local file: {ms(total)} vs {ms(baseline)} = {ratio:.1f}x  {verdict(ratio <= TARGETS['logs'])}")


def postgres_chunk_floor(url: str, batch: bytes, repeat: int = 20) -> dict[str, float]:
    """What PostgreSQL alone takes to store one batch (INSERT of the text + UPDATE of a counter, committed), in
    scratch tables shaped like logchunk: with the default TOAST compression (pglz) and with lz4."""
    import psycopg

    text = batch.decode()
    found: dict[str, float] = {}
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as connection:
        for label, compression in (("pglz (default)", ""), ("lz4", " COMPRESSION lz4")):
            try:
                connection.execute(f"CREATE TEMP TABLE bench_chunk (id serial PRIMARY KEY, build_id integer, "
                                   f"text text{compression} NOT NULL)")
                connection.execute("CREATE TEMP TABLE bench_counter (id integer PRIMARY KEY, n bigint)")
                connection.execute("INSERT INTO bench_counter VALUES (1, 0)")
                connection.commit()
            except psycopg.Error as exc:
                connection.rollback()
                print(f"  ({label} not measured: {exc})")
                continue
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                connection.execute("INSERT INTO bench_chunk (build_id, text) VALUES (1, %s)", (text,))
                connection.execute("UPDATE bench_counter SET n = n + %s WHERE id = 1", (len(batch),))
                connection.commit()
                times.append(time.perf_counter() - start)
            found[label] = statistics.median(times)
            connection.execute("DROP TABLE bench_chunk, bench_counter")
            connection.commit()
    return found


# -- main --------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 s per endpoint, one log run per database")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (default 50)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per endpoint (default 10, --quick 5)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "envyard-bench-api",
                        help="emptied at the start; removed after a successful run unless --keep")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (database, server logs)")
    args = parser.parse_args()
    seconds = args.seconds or (5.0 if args.quick else 10.0)
    if not DERIVED.is_dir():
        sys.exit(f"shared data not found at {DERIVED}")
    if not postgres_available():
        sys.exit("PostgreSQL is not installed (apt-get install postgresql)")
    work = args.work.absolute()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    work.chmod(0o755)
    started = time.perf_counter()
    summary: list[str] = []
    print(f"work directory {work}; {os.cpu_count()} CPUs; {args.rate:g} req/s for {seconds:g} s per endpoint\n")

    print(f"2a. fresh solve + lock in-process (conda-forge linux-64: {' '.join(CROSS_PLATFORM)}), median of "
          f"{LOCK_REPEAT} after a warm-up")
    locks = [bench_lock(work, DERIVED.parent, "derived")]
    if not args.quick:  # context: the same lock on a channel of conda-forge linux-64's size (bench/solve.py)
        from bench.solve import inflate

        inflate(DERIVED, 340_000, work / "inflated" / "conda-forge")
        locks.append(bench_lock(work, work / "inflated", "inflated"))
    for lock in locks:
        print(f"  {lock.label} channel ({lock.records:,} records): new gateway over the warm disk cache (as "
              f"`envyard lock`) {ms(lock.fresh_gateway)}; gateway warm in memory {ms(lock.warm_gateway)}; "
              f"{len(lock.packages)} packages", flush=True)
    batches = log_batches(random.Random(3))
    log_size = sum(len(b) for b in batches)
    line_lengths = [len(line) for line in b"".join(batches).decode().splitlines()]
    file_baseline = bench_file_append(batches, work / "baseline.log", 5)
    log_repeat = 1 if args.quick else 3

    (work / "pg").mkdir()
    with postgres_server(work / "pg") as url:
        with envyard_serve(work, "postgresql", url) as pg:
            print(f"\nenvyard serve on {pg.url} (PostgreSQL), seeding ...", flush=True)
            seeded = seed_postgres(url, random.Random(1))
            print(f"  seeded {NAMESPACES} namespaces, {len(seeded.environments):,} environments, {seeded.builds:,} "
                  f"builds, {seeded.packages:,} build packages, {SPECS} specs in {seeded.seconds:.1f} s\n")
            print(f"1. list/get latency (PostgreSQL): open loop, each endpoint alone at {args.rate:g} req/s, "
                  f"{seconds:g} s per endpoint in 1-s slices taking turns")
            phases = bench_latency(pg, seeded, args.rate, seconds, args.quick, summary)

            print("\n2b. resubmitting the unchanged spec (PostgreSQL)")
            resubmit = {"PostgreSQL": bench_resubmit(pg, locks[0].packages)}
            print(f"  median {ms(statistics.median(resubmit['PostgreSQL']))} over {RESUBMITS}")

            print("\n   where the time goes (PostgreSQL): the same requests through the app in this process, "
                  "one at a time")
            probes = [Probe(p.endpoint.label, "GET", p.endpoint.paths[0]) for p in phases]
            probes.append(Probe("POST /environments (resubmit)", "POST", "/api/v1/environments", resubmit_body()))
            breakdown(url, work, probes)

            print(f"\n3. ingesting {LOG_LINES:,} log lines ({log_size / 1e6:.1f} MB, {len(batches)} batches of "
                  f"{LOG_BATCH_LINES:,} lines, line length {min(line_lengths)}-{max(line_lengths)}, mean "
                  f"{statistics.mean(line_lengths):.0f}); baseline: append to a local file {ms(file_baseline)}")
            bench_logs(pg, batches, file_baseline, log_repeat, summary)
            floor = postgres_chunk_floor(url, batches[0])
            print("    PostgreSQL alone, one batch stored (INSERT + UPDATE + COMMIT, psycopg): "
                  + "; ".join(f"{k} {ms(v)}" for k, v in floor.items()), flush=True)
        with envyard_serve(work, "sqlite", None) as lite:
            bench_logs(lite, batches, file_baseline, log_repeat, summary)
            resubmit["SQLite"] = bench_resubmit(lite, locks[0].packages)

    print("\n2. resubmit an unchanged spec vs a fresh lock (target >= 50x faster than the faster of the two locks)")
    rows = []
    for label, times in resubmit.items():
        median = statistics.median(times)
        for lock in locks:
            speedup = lock.fastest / median
            rows.append((label, f"{median * 1e3:.1f}", f"{percentile(times, 90) * 1e3:.1f}",
                         f"{lock.label} ({lock.records:,})", f"{lock.fresh_gateway * 1e3:.0f}",
                         f"{lock.warm_gateway * 1e3:.0f}", f"{speedup:.0f}x",
                         verdict(speedup >= TARGETS["resubmit"]) + ("" if lock is locks[0] else " (context)")))
        speedup = locks[0].fastest / median
        summary.append(f"TARGET 2  resubmit ({label}) >= {TARGETS['resubmit']:.0f}x faster than a fresh lock: "
                       f"{ms(median)} vs {ms(locks[0].fastest)} = {speedup:.0f}x  "
                       f"{verdict(speedup >= TARGETS['resubmit'])}")
    print_table(("database", "resubmit median ms", "p90 ms", "channel (records)", "lock, new gateway ms",
                 "lock, warm gateway ms", "speed-up", ">= 50x"), rows)

    print()
    for line in sorted(summary, key=lambda s: s[:8]):
        print(line)
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    if args.keep:
        print(f"kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
