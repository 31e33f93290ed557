"""Benchmark: envyard's /v2/ endpoint against Debian's docker-registry serving the same image, in one run.

Prints two figures, each against the reference registry (distribution, filesystem storage, plain HTTP, no auth)
measured in the same run:

1. pull            ``skopeo copy docker://HOST/bench/big:latest oci:DIR:bench`` of a generated multi-layer image
                   (16 gzip layers of mixed sizes, ~500 MB compressed; --quick ~50 MB) into a fresh directory each
                   time; from envyard with the admin token as ``--src-creds`` vs from docker-registry; the two take
                   turns (the first side alternates), one untimed warm-up copy each, median of --repeat (default 5)
                   (target <= 1.2x); for diagnosis also the CPU time (user + system) of each server and of skopeo
                   per copy, and a ``curl`` GET of the largest layer to /dev/null (the server's streaming without
                   skopeo's digest checks and writes);
2. manifest TTFB   GET of the image manifest by tag on a kept-alive connection, time from sending the request to
                   the first byte of the answer: with httpx (to the first body chunk: what a Python client sees)
                   and with a raw socket (to the first byte of the status line: the server alone); many samples in
                   rounds taking turns; median and p90 (reported; no target is set for it).

The image is generated deterministically (tar members of random, text-like and repetitive bytes, gzip level 1)
as an OCI layout, then stored in envyard as a completed build through the worker protocol (the bench claims the
build itself; tests/service/oci_content.py) and in docker-registry with ``skopeo copy oci:... docker://...``;
both must answer with the same manifest digest. Ratios are against the baseline of the same run; nothing is
asserted on absolute times. The servers (``envyard serve --workers 0`` on SQLite with a local artifact store,
docker-registry) are subprocesses on 127.0.0.1 stopped by PID. Everything lives in a fresh work directory that
is removed at the end, also after an error or Ctrl-C (--keep keeps it, with the servers' logs); ``--image DIR``
keeps the generated image in DIR and reuses it in later runs.

Usage: python bench/registry.py [--quick] [--size-mb MB] [--repeat N] [--samples N] [--image DIR] [--keep] [--json]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import io
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.table import Row, report_lines  # noqa: E402
from tests.servers import docker_registry, docker_registry_executable, free_port, stop_process  # noqa: E402

TARGETS = {"copy": 1.2}
REPOSITORY = ("bench", "big")  # namespace, environment
TAG = "latest"
LAYOUT_TAG = "bench"
FORMAT_VERSION = 1  # of the generated image; bump when generation changes
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
ACCEPT = ", ".join([MANIFEST_TYPE, "application/vnd.oci.image.index.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json"])
#: shares of the compressed size of the 14 sizeable layers (one large base, a few medium, a tail of small ones);
#: two tiny layers (an entrypoint script, a few config files) come on top
LAYER_WEIGHTS = (0.26, 0.17, 0.12, 0.09, 0.08, 0.06, 0.05, 0.045, 0.04, 0.03, 0.025, 0.015, 0.01, 0.005)
#: kinds of member content, chosen per file with these byte shares: incompressible (binaries), text-like
#: (gzip level 1: ~50%) and repetitive (sparse data, ~1%)
CONTENT_MIX = (("binary", 0.50), ("text", 0.35), ("repetitive", 0.15))
EXPECTED_RATIO = 0.50 + 0.35 * 0.52 + 0.15 * 0.02  # compressed / uncompressed, to size the tar content
TEXT_POOL_BYTES = 8 << 20
SERVER_ENV = {"ENVYARD_LEASE_SECONDS": "600", "ENVYARD_HEARTBEAT_SECONDS": "60"}

#: where progress and the table go: stdout, or stderr with --json (stdout then carries the JSON alone)
_OUTPUT = [sys.stdout]


def say(*parts: object, flush: bool = False) -> None:
    print(*parts, file=_OUTPUT[0], flush=flush)


# -- helpers -------------------------------------------------------------------------------------------------


def mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.2f} ms"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered)) - 1))]


def verdict(value: float, target: float | None) -> str:
    return "" if target is None else ("PASS" if value <= target else "MISS")


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, label: str, ours: float, baseline: float, target: float | None, fmt: Callable[[float], str]) -> None:
        ratio = ours / baseline
        self.rows.append(Row(label, fmt(ours), fmt(baseline), f"{ratio:.2f}x",
                             "" if target is None else f"<= {target:g}x", verdict(ratio, target)))

    def print_table(self) -> None:
        headers = ("measurement (median)", "envyard", "docker-registry", "ratio", "target", "result")
        for text in report_lines(headers, self.rows, self.notes, self.summary):
            say(text)


# -- the image -----------------------------------------------------------------------------------------------


@dataclass
class Layer:
    digest: str  # sha256:<hex> of the gzip blob
    size: int
    diff_id: str  # sha256:<hex> of the tar
    tar_size: int
    files: int


@dataclass
class Image:
    layout: Path
    manifest: bytes
    config: bytes
    layers: list[Layer]

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()

    def blob_path(self, digest: str) -> Path:
        return self.layout / "blobs" / "sha256" / digest.removeprefix("sha256:")

    @property
    def compressed(self) -> int:
        return sum(layer.size for layer in self.layers) + len(self.config) + len(self.manifest)


class GzipSink:
    """A write-only file object: gzip level 1 (mtime 0) into ``path``, hashing the tar and the gzip stream."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("wb")
        self._zlib = zlib.compressobj(1, zlib.DEFLATED, 31)
        self.raw = hashlib.sha256()
        self.gz = hashlib.sha256()
        self.raw_size = 0
        self.size = 0

    def _out(self, data: bytes) -> None:
        if data:
            self._file.write(data)
            self.gz.update(data)
            self.size += len(data)

    def write(self, data: bytes) -> int:
        self.raw.update(data)
        self.raw_size += len(data)
        self._out(self._zlib.compress(data))
        return len(data)

    def close(self) -> None:
        self._out(self._zlib.flush())
        self._file.close()


def text_pool(seed: int) -> bytes:
    """A few MB of source-code-like lines from a vocabulary: gzip level 1 halves it."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz_"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 12))) for _ in range(5000)]
    lines: list[str] = []
    size = 0
    while size < TEXT_POOL_BYTES:
        indent = "    " * rng.randint(0, 3)
        line = indent + " ".join(rng.choice(words) for _ in range(rng.randint(2, 12))) + rng.choice(
            ["", ":", "()", " = None", ",", "  # " + rng.choice(words)]) + "\n"
        lines.append(line)
        size += len(line)
    return "".join(lines).encode()[:TEXT_POOL_BYTES]


def member_bytes(rng: random.Random, pool: bytes, kind: str, size: int) -> bytes:
    if kind == "binary":
        return rng.randbytes(size)
    if kind == "text":
        offset = rng.randrange(0, len(pool) - size)
        return pool[offset:offset + size]
    unit = rng.randbytes(rng.choice((16, 64, 512))) + bytes(rng.choice((256, 4096, 65536)))
    return (unit * (size // len(unit) + 1))[:size]


def build_layer(layout: Path, index: int, tar_bytes: int, seed: int, pool: bytes) -> Layer:
    """One layer: files of log-uniform sizes (512 B .. 4 MB) until ``tar_bytes`` of content."""
    rng = random.Random(seed * 1000 + index)
    kinds = [k for k, _ in CONTENT_MIX]
    weights = [w for _, w in CONTENT_MIX]
    spool = layout / "blobs" / f"layer-{index}.tmp"
    sink = GzipSink(spool)
    files = 0
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT, bufsize=1 << 20) as tar:  # type: ignore
        written = 0
        while written < tar_bytes:
            size = min(int(2 ** rng.uniform(9, 22)), max(512, tar_bytes - written))
            kind = rng.choices(kinds, weights)[0]
            data = member_bytes(rng, pool, kind, size)
            ext = {"binary": "so", "text": "py", "repetitive": "dat"}[kind]
            info = tarfile.TarInfo(f"opt/env/lib/pkg{index:02d}/d{files % 37:02d}/f{files:05d}.{ext}")
            info.size = len(data)
            info.mode = 0o755 if kind == "binary" else 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
            written += len(data)
            files += 1
    sink.close()
    digest = "sha256:" + sink.gz.hexdigest()
    os.replace(spool, layout / "blobs" / "sha256" / digest[7:])
    return Layer(digest, sink.size, "sha256:" + sink.raw.hexdigest(), sink.raw_size, files)


def write_blob(layout: Path, data: bytes) -> str:
    hexdigest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / hexdigest).write_bytes(data)
    return "sha256:" + hexdigest


def generate_image(layout: Path, size_mb: float, seed: int) -> Image:
    """An OCI layout at ``layout`` with one image (ref name LAYOUT_TAG) of ~``size_mb`` MB of gzip layers."""
    params = {"format": FORMAT_VERSION, "size_mb": size_mb, "seed": seed, "zlib": zlib.ZLIB_RUNTIME_VERSION}
    marker = layout / "bench-params.json"
    if marker.is_file() and json.loads(marker.read_text()).get("params") == params:
        saved = json.loads(marker.read_text())
        manifest = (layout / "blobs" / "sha256" / saved["manifest"][7:]).read_bytes()
        parsed = json.loads(manifest)
        config = (layout / "blobs" / "sha256" / parsed["config"]["digest"][7:]).read_bytes()
        return Image(layout, manifest, config, [Layer(**layer) for layer in saved["layers"]])
    rmtree(layout)
    (layout / "blobs" / "sha256").mkdir(parents=True)
    pool = text_pool(seed)
    total = size_mb * 1e6
    tar_sizes = [int(total * w / sum(LAYER_WEIGHTS) / EXPECTED_RATIO) for w in LAYER_WEIGHTS]
    tar_sizes += [2_000, 40_000]  # an entrypoint script, a few config files
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool_executor:
        futures = [pool_executor.submit(build_layer, layout, i, n, seed, pool) for i, n in enumerate(tar_sizes)]
        layers = [f.result() for f in futures]
    config = json.dumps({
        "created": "2024-01-01T00:00:00Z", "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/opt/env/bin:/usr/local/bin:/usr/bin:/bin", "CONDA_PREFIX=/opt/env"],
                   "Entrypoint": ["/opt/env/bin/entrypoint"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": f"envyard bench layer {i}"}
                    for i in range(len(layers))],
    }, separators=(",", ":")).encode()
    config_digest = write_blob(layout, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": layer.digest, "size": layer.size} for layer in layers],
    }, separators=(",", ":")).encode()
    manifest_digest = write_blob(layout, manifest)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": MANIFEST_TYPE, "digest": manifest_digest, "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": LAYOUT_TAG}}]}))
    marker.write_text(json.dumps({"params": params, "manifest": manifest_digest,
                                  "layers": [asdict(layer) for layer in layers]}))
    return Image(layout, manifest, config, layers)


# -- the two registries --------------------------------------------------------------------------------------


@dataclass
class Endpoint:
    label: str
    host: str  # 127.0.0.1:PORT
    creds: str | None  # for skopeo --src-creds
    headers: dict[str, str]  # for raw requests: authentication
    auth_note: str = ""
    pid: int | None = None  # the server process, for its CPU time

    @property
    def url(self) -> str:
        return f"http://{self.host}"


@contextlib.contextmanager
def envyard_serve(work: Path) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """``envyard serve --workers 0`` on a free loopback port (SQLite, local artifacts in ``work``)."""
    port = free_port()
    data_dir = work / "envyard-data"
    log_path = work / "envyard-serve.log"
    command = [sys.executable, "-m", "envyard.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--data-dir", str(data_dir), "--workers", "0", "--log-level", "warning"]
    env = {**os.environ, **SERVER_ENV, "ENVYARD_CACHE_DIR": str(work / "envyard-cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"envyard serve did not start:\n{log_path.read_text(errors='replace')}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        token = (data_dir / "admin-token").read_text().strip()
        yield f"127.0.0.1:{port}", token, process
    finally:
        if process.poll() is None:
            stop_process(process, timeout=15)


def load_envyard(host: str, token: str, image: Image) -> dict[str, Any]:
    """Store the image as a completed build of bench/big, playing the worker over HTTP."""
    from tests.service.oci_content import Blob, publish_build

    blobs = [Blob(CONFIG_TYPE, data=image.config)]
    blobs += [Blob(LAYER_TYPE, path=image.blob_path(layer.digest)) for layer in image.layers]
    with httpx.Client(base_url=f"http://{host}", headers={"Authorization": f"Bearer {token}"},
                      timeout=300.0) as http:
        return publish_build(http, *REPOSITORY, Blob(MANIFEST_TYPE, data=image.manifest), blobs)


def load_registry(host: str, image: Image) -> None:
    command = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{image.layout}:{LAYOUT_TAG}",
               f"docker://{host}/{'/'.join(REPOSITORY)}:{TAG}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr}")


def envyard_auth(host: str, token: str) -> tuple[dict[str, str], str]:
    """Headers that authenticate raw manifest GETs with the admin token, and how: Bearer with the token itself,
    Basic with the token as password, or a token from the realm of a Docker-style Bearer challenge."""
    path = f"/v2/{'/'.join(REPOSITORY)}/manifests/{TAG}"
    tried = []
    with httpx.Client(base_url=f"http://{host}", timeout=30.0) as http:
        anonymous = http.get(path, headers={"Accept": ACCEPT})
        challenge = anonymous.headers.get("www-authenticate", "")
        basic = "Basic " + base64.b64encode(f"anyone:{token}".encode()).decode()
        for label, value in (("Bearer <admin token>", f"Bearer {token}"),
                             ("Basic anyone:<admin token>", basic)):
            response = http.get(path, headers={"Accept": ACCEPT, "Authorization": value})
            tried.append(f"{label}: HTTP {response.status_code}")
            if response.status_code == 200:
                note = f"raw GETs send {label} on every request (anonymous: HTTP {anonymous.status_code}"
                note += f", challenge {challenge.split(' ')[0] or 'none'})" if challenge else ")"
                return {"Authorization": value}, note
        if challenge.lower().startswith("bearer "):
            fields = dict(part.split("=", 1) for part in _split_challenge(challenge[7:]))
            params = {k: v for k, v in fields.items() if k in ("service", "scope")}
            params.setdefault("scope", f"repository:{'/'.join(REPOSITORY)}:pull")
            answer = httpx.get(fields["realm"], params=params, auth=("anyone", token), timeout=30.0)
            tried.append(f"token from realm {fields['realm']}: HTTP {answer.status_code}")
            if answer.status_code == 200:
                body = answer.json()
                bearer = body.get("token") or body.get("access_token")
                value = f"Bearer {bearer}"
                if http.get(path, headers={"Accept": ACCEPT, "Authorization": value}).status_code == 200:
                    return {"Authorization": value}, (
                        f"raw GETs send a registry token from the challenge's realm ({fields['realm']}, "
                        f"expires_in {body.get('expires_in')}); the admin token itself: " + "; ".join(tried[:2]))
    raise RuntimeError(f"cannot authenticate a manifest GET on envyard: {'; '.join(tried)}; challenge: {challenge}")


def _split_challenge(text: str) -> Iterator[str]:
    """``realm="a",service="b"`` -> realm=a, service=b (values unquoted; commas inside quotes kept)."""
    part, quoted = "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            yield part.strip()
            part = ""
        else:
            part += char
    if part.strip():
        yield part.strip()


def manifest_digest(endpoint: Endpoint) -> str:
    response = httpx.head(f"{endpoint.url}/v2/{'/'.join(REPOSITORY)}/manifests/{TAG}",
                          headers={"Accept": ACCEPT, **endpoint.headers}, timeout=30.0)
    if response.status_code != 200:
        raise RuntimeError(f"{endpoint.label}: HEAD manifest: HTTP {response.status_code}")
    return response.headers.get("docker-content-digest", "")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc; 0.0 where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pid(name: str) -> int | None:
    """The PID of this process's child named ``name`` (the docker-registry that tests/servers.py started)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            text = stat.read_text()
            comm = text[text.index("(") + 1:text.rindex(")")]
            if comm == name[:15] and int(text.rsplit(")", 1)[1].split()[1]) == os.getpid():
                return int(stat.parent.name)
    return None


# -- 1. skopeo copy ------------------------------------------------------------------------------------------


def skopeo_copy(endpoint: Endpoint, destination: Path, expected: str) -> tuple[float, float]:
    """Wall time of one copy into a fresh ``destination``, and skopeo's own CPU time (user + system)."""
    rmtree(destination)
    command = ["skopeo", "copy", "--quiet", "--src-tls-verify=false"]
    if endpoint.creds:
        command += ["--src-creds", endpoint.creds]
    command += [f"docker://{endpoint.host}/{'/'.join(REPOSITORY)}:{TAG}", f"oci:{destination}:{LAYOUT_TAG}"]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    if result.returncode != 0:
        raise RuntimeError(f"skopeo copy from {endpoint.label} failed: {result.stderr.strip()}")
    got = json.loads((destination / "index.json").read_text())["manifests"][0]["digest"]
    if got != expected:
        raise RuntimeError(f"skopeo copy from {endpoint.label} wrote manifest {got}, expected {expected}")
    rmtree(destination)
    return elapsed, client_cpu


def bench_copy(sides: list[Endpoint], work: Path, image: Image, repeat: int) -> dict[str, dict[str, list[float]]]:
    """Per side: wall times of the copies ("wall"), the server's CPU time (user + system) during each ("server")
    and skopeo's ("client")."""
    found: dict[str, dict[str, list[float]]] = {side.label: {"wall": [], "server": [], "client": []}
                                                for side in sides}
    for side in sides:  # warm-up (not counted): both stores' files in the page cache, skopeo's caches
        skopeo_copy(side, work / "copy", image.digest)
    for i in range(repeat):
        order = sides if i % 2 == 0 else sides[::-1]
        for side in order:
            before = cpu_seconds(side.pid) if side.pid else 0.0
            elapsed, client = skopeo_copy(side, work / "copy", image.digest)
            used = cpu_seconds(side.pid) - before if side.pid else float("nan")
            for key, value in (("wall", elapsed), ("server", used), ("client", client)):
                found[side.label][key].append(value)
            say(f"  {side.label:<16} copy {i + 1}/{repeat}: {elapsed:.2f} s ({image.compressed / elapsed / 1e6:,.0f} "
                f"MB/s; CPU: server {used:.2f} s, skopeo {client:.2f} s)", flush=True)
            os.sync()  # the destination's dirty pages were dropped with it; don't let writeback hit the next copy
    return found


def bench_blob_get(sides: list[Endpoint], image: Image, repeat: int) -> dict[str, list[float]]:
    """Diagnosis: ``curl`` GET of the largest layer to /dev/null (the server's streaming alone, without
    skopeo's digest checks and writes), sides taking turns; wall times."""
    layer = max(image.layers, key=lambda layer: layer.size)
    times: dict[str, list[float]] = {side.label: [] for side in sides}
    for i in range(repeat + 1):
        for side in sides if i % 2 == 0 else sides[::-1]:
            command = ["curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{time_total} %{size_download}"]
            command += ["-H", f"Authorization: {side.headers['Authorization']}"] if side.headers else []
            command.append(f"{side.url}/v2/{'/'.join(REPOSITORY)}/blobs/{layer.digest}")
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
            if result.returncode != 0 or int(result.stdout.split()[1]) != layer.size:
                raise RuntimeError(f"curl blob GET from {side.label}: {result.stdout} {result.stderr}")
            if i > 0:  # the first round is a warm-up
                times[side.label].append(float(result.stdout.split()[0]))
    return times


def diagnose_blob_get(sides: list[Endpoint], image: Image, repeat: int, report: Report) -> None:
    largest = max(layer.size for layer in image.layers)
    say(f"\n   diagnosis: curl GET of the largest layer ({mb(largest)}) to /dev/null, {repeat} taking turns",
        flush=True)
    gets = bench_blob_get(sides, image, repeat)
    a, b = statistics.median(gets["envyard"]), statistics.median(gets["docker-registry"])
    say(f"  envyard {a:.3f} s ({largest / a / 1e6:,.0f} MB/s), docker-registry {b:.3f} s "
        f"({largest / b / 1e6:,.0f} MB/s)", flush=True)
    report.add(f"  blob GET {mb(largest)} (curl, diagnosis)", a, b, None, lambda s: f"{s:.3f} s")
    report.data["blob_get"] = {"bytes": largest, "envyard_s": gets["envyard"], "registry_s": gets["docker-registry"],
                               "ratio": a / b}


# -- 2. manifest TTFB ----------------------------------------------------------------------------------------


class RawConnection:
    """One kept-alive HTTP/1.1 connection: send a prepared GET, time to the first byte back, read the rest."""

    def __init__(self, host: str) -> None:
        name, _, port = host.partition(":")
        self.sock = socket.create_connection((name, int(port)), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get(self, request: bytes) -> tuple[float, int, bytes]:
        start = time.perf_counter()
        self.sock.sendall(request)
        data = self.sock.recv(65536)
        first = time.perf_counter() - start
        if not data:
            raise ConnectionError("the server closed the connection")
        while b"\r\n\r\n" not in data:
            data += self._recv()
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if "chunked" in fields.get("transfer-encoding", ""):
            raise RuntimeError("unexpected chunked manifest response")
        length = int(fields.get("content-length", "0"))
        while len(body) < length:
            body += self._recv()
        return first, status, body

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-response")
        return chunk

    def close(self) -> None:
        self.sock.close()


def bench_ttfb(sides: list[Endpoint], image: Image, rounds: int, per_round: int) -> dict[str, dict[str, list[float]]]:
    """Per side, per method (httpx, socket): TTFB samples. Each round opens fresh connections (untimed, with
    warm-up requests) and takes ``per_round`` samples per side and method, the sides taking turns."""
    path = f"/v2/{'/'.join(REPOSITORY)}/manifests/{TAG}"
    result: dict[str, dict[str, list[float]]] = {s.label: {"httpx": [], "socket": []} for s in sides}

    def httpx_round(side: Endpoint) -> None:
        with httpx.Client(base_url=side.url, headers={"Accept": ACCEPT, **side.headers}, timeout=30.0) as http:
            for i in range(per_round + 3):
                request = http.build_request("GET", path)
                start = time.perf_counter()
                response = http.send(request, stream=True)
                first = None
                body = b""
                for chunk in response.iter_raw():
                    if first is None:
                        first = time.perf_counter() - start
                    body += chunk
                response.close()
                if response.status_code != 200 or body != image.manifest:
                    raise RuntimeError(f"{side.label}: GET {path}: HTTP {response.status_code} {body[:200]!r}")
                if i >= 3 and first is not None:
                    result[side.label]["httpx"].append(first)

    def socket_round(side: Endpoint) -> None:
        extra = "".join(f"{k}: {v}\r\n" for k, v in side.headers.items())
        request = (f"GET {path} HTTP/1.1\r\nHost: {side.host}\r\nAccept: {ACCEPT}\r\n{extra}"
                   "User-Agent: envyard-bench\r\n\r\n").encode()
        connection = RawConnection(side.host)
        try:
            for i in range(per_round + 3):
                first, status, body = connection.get(request)
                if status != 200 or body != image.manifest:
                    raise RuntimeError(f"{side.label}: raw GET {path}: HTTP {status} {body[:200]!r}")
                if i >= 3:
                    result[side.label]["socket"].append(first)
        finally:
            connection.close()

    for r in range(rounds):
        order = sides if r % 2 == 0 else sides[::-1]
        for side in order:
            httpx_round(side)
            socket_round(side)
    return result


# -- main ----------------------------------------------------------------------------------------------------


def tool_version(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def run(args: argparse.Namespace, work: Path, report: Report) -> None:
    size_mb = args.size_mb or (50.0 if args.quick else 500.0)
    repeat = args.repeat or 5
    samples = args.samples or (200 if args.quick else 1000)
    per_round = 25 if args.quick else 50
    rounds = max(1, samples // per_round)
    say(f"work directory {work}; {os.cpu_count()} CPUs; {tool_version(['skopeo', '--version'])}; "
        f"{tool_version(['docker-registry', '--version'])}")

    layout = args.image.absolute() if args.image else work / "image"
    started = time.perf_counter()
    image = generate_image(layout, size_mb, args.seed)
    tar_total = sum(layer.tar_size for layer in image.layers)
    say(f"image {image.digest}: {len(image.layers)} gzip layers, {mb(image.compressed)} compressed "
        f"({mb(tar_total)} of tar, {sum(layer.files for layer in image.layers):,} files), largest "
        + ", ".join(mb(s) for s in sorted((layer.size for layer in image.layers), reverse=True)[:4])
        + f"; ready in {time.perf_counter() - started:.1f} s ({layout})", flush=True)
    report.data["image"] = {"digest": image.digest, "layers": len(image.layers), "compressed_bytes": image.compressed,
                            "tar_bytes": tar_total, "layer_bytes": [layer.size for layer in image.layers]}

    (work / "registry").mkdir()
    with envyard_serve(work) as (ey_host, token, process), docker_registry(work / "registry") as reg_host:
        started = time.perf_counter()
        build = load_envyard(ey_host, token, image)
        say(f"envyard serve on {ey_host}: build {build['id']} stored in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        load_registry(reg_host, image)
        say(f"docker-registry on {reg_host}: pushed with skopeo in {time.perf_counter() - started:.1f} s")

        headers, auth_note = envyard_auth(ey_host, token)
        envyard = Endpoint("envyard", ey_host, f"anyone:{token}", headers, auth_note, process.pid)
        registry = Endpoint("docker-registry", reg_host, None, {}, "", child_pid("docker-registry"))
        sides = [envyard, registry]
        for side in sides:
            digest = manifest_digest(side)
            if digest != image.digest:
                raise RuntimeError(f"{side.label} serves manifest {digest}, expected {image.digest}")
        report.notes.append(f"envyard auth: skopeo --src-creds anyone:<admin token>; {auth_note}")
        report.notes.append("docker-registry: no auth (plain HTTP, filesystem storage); both serve manifest "
                            f"{image.digest[:19]}...")

        say(f"\n1. skopeo copy docker://HOST/{'/'.join(REPOSITORY)}:{TAG} oci:DIR (fresh each time), one warm-up "
            f"each, then {repeat} taking turns", flush=True)
        copies = bench_copy(sides, work, image, repeat)
        ey, reg = copies["envyard"], copies["docker-registry"]
        ours, base = statistics.median(ey["wall"]), statistics.median(reg["wall"])
        report.add(f"skopeo copy, {mb(image.compressed)} ({len(image.layers)} layers)", ours, base,
                   TARGETS["copy"], lambda s: f"{s:.2f} s")
        for key, who in (("server", "server"), ("client", "skopeo")):
            if statistics.median(reg[key]) > 0:
                report.add(f"  {who} CPU (user+sys) per copy", statistics.median(ey[key]), statistics.median(reg[key]),
                           None, lambda s: f"{s:.2f} s")
        ratio = ours / base
        report.summary.append(f"TARGET 1  skopeo copy <= {TARGETS['copy']:g}x docker-registry: {ours:.2f} s vs "
                              f"{base:.2f} s = {ratio:.2f}x  {verdict(ratio, TARGETS['copy'])}  "
                              f"({image.compressed / ours / 1e6:,.0f} vs {image.compressed / base / 1e6:,.0f} MB/s)")
        report.data["copy"] = {"envyard_s": ey["wall"], "registry_s": reg["wall"], "envyard_median_s": ours,
                               "registry_median_s": base, "ratio": ratio, "target": TARGETS["copy"],
                               "pass": ratio <= TARGETS["copy"], "envyard_server_cpu_s": ey["server"],
                               "registry_server_cpu_s": reg["server"], "skopeo_cpu_s_from_envyard": ey["client"],
                               "skopeo_cpu_s_from_registry": reg["client"]}

        if shutil.which("curl") is None:
            report.notes.append("curl not found: no blob GET diagnosis")
        else:
            diagnose_blob_get(sides, image, repeat, report)

        say(f"\n2. manifest TTFB (GET by tag, kept-alive connection): {rounds} rounds x {per_round} samples per "
            "side and client, taking turns", flush=True)
        ttfb = bench_ttfb(sides, image, rounds, per_round)
        report.data["ttfb"] = {}
        for method, label in (("httpx", "manifest TTFB, httpx"), ("socket", "manifest TTFB, raw socket")):
            a, b = ttfb["envyard"][method], ttfb["docker-registry"][method]
            report.add(label, statistics.median(a), statistics.median(b), None, ms)
            report.add(label.replace("TTFB", "TTFB p90"), percentile(a, 90), percentile(b, 90), None, ms)
            report.data["ttfb"][method] = {
                "samples": len(a), "envyard_median_s": statistics.median(a), "registry_median_s": statistics.median(b),
                "envyard_p90_s": percentile(a, 90), "registry_p90_s": percentile(b, 90),
                "ratio": statistics.median(a) / statistics.median(b)}
            say(f"  {method:<6} envyard median {ms(statistics.median(a))} (p90 {ms(percentile(a, 90))}), "
                f"docker-registry {ms(statistics.median(b))} (p90 {ms(percentile(b, 90))})", flush=True)
        t = report.data["ttfb"]["socket"]
        report.summary.append(f"          manifest TTFB (raw socket) {ms(t['envyard_median_s'])} vs "
                              f"{ms(t['registry_median_s'])} = {t['ratio']:.2f}x  (reported, no target)")
        report.data["auth"] = auth_note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a ~50 MB image, 200 TTFB samples per side and client")
    parser.add_argument("--size-mb", type=float, default=None, help="compressed image size (default 500, --quick 50)")
    parser.add_argument("--repeat", type=int, default=None, help="timed copies per side (default 5)")
    parser.add_argument("--samples", type=int, default=None,
                        help="TTFB samples per side and client (default 1000, --quick 200)")
    parser.add_argument("--seed", type=int, default=5, help="of the generated image")
    parser.add_argument("--image", type=Path, default=None,
                        help="keep the generated OCI layout here and reuse it when its parameters match")
    parser.add_argument("--work", type=Path, default=None,
                        help="work directory (default: a fresh one in the temporary directory); emptied at the start")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (stores, servers' logs)")
    parser.add_argument("--json", action="store_true", help="progress and table to stderr, results as JSON to stdout")
    args = parser.parse_args()
    if args.json:
        _OUTPUT[0] = sys.stderr
    if shutil.which("skopeo") is None:
        sys.exit("skopeo not found: apt-get install skopeo")
    if docker_registry_executable() is None:
        sys.exit("docker-registry not found: apt-get install docker-registry")
    if args.work:
        work = args.work.absolute()
        rmtree(work)
        work.mkdir(parents=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="envyard-bench-registry-"))

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)  # cleanup as for Ctrl-C
    started = time.perf_counter()
    report = Report()
    try:
        run(args, work, report)
        report.print_table()
        say(f"\ntotal {time.perf_counter() - started:.1f} s")
        if args.json:
            print(json.dumps({"quick": args.quick, **report.data, "total_s": time.perf_counter() - started},
                             indent=2))
    except KeyboardInterrupt:
        sys.exit("interrupted; servers stopped" + ("" if args.keep else ", work directory removed"))
    finally:
        if args.keep:
            say(f"kept: {work}")
        else:
            rmtree(work)


if __name__ == "__main__":
    main()
