"""Benchmark: installs and images of a real-sized environment against the plain tools, in one run.

The environment is the linux-64 solve of pangeo's ml-notebook root packages against the real conda-forge
records in ../shared (see bench/solve.py), built from a *shadow channel* (bench/shadow.py): one synthesized
``.conda`` per record with the record's name, version, build and depends, realistic files, and an installed
size scaled from the record's real archive size (``--total-mb``, or ``--scale`` directly). Prints:

1. warm install   ``install_lock`` into a fresh prefix, package cache populated, vs ``cp -al`` of the same
                  installed tree (target <= 1.5x);
2. image build    ``build_platform_image`` of a prefix installed for /opt/env with a cold layer cache (a
                  fresh blob store each time) vs ``tar -cf - PREFIX | gzip -6 > /dev/null`` (target <= 1.0x);
                  also the warm (layer-cache hit) rebuild, the layer count and the largest layers;
3. one-leaf change  a new version of one leaf package, image built into the same store, both images pushed
                  to a loopback docker-registry in sequence: bytes uploaded by the second push as a share of
                  that image's compressed size, layers + config (target <= 5%);
4. two environments sharing 90% of their packages (10% leaf-ish packages at other versions), pushed to two
                  repositories of one registry: registry storage (``du -sb``) for both vs one (target <= 1.2x).

Times are medians of ``--repeat`` runs; ratios are against baselines measured in the same run. Nothing is
asserted. The shadow channel and package cache live under ``--work`` (default: a fixed directory in the
temporary directory) and are reused by later runs; prefixes, stores and registries of a run are removed at the
end unless ``--keep``.

Usage: python bench/image.py [--quick] [--repeat N] [--total-mb MB | --scale F] [--work DIR] [--keep] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import importlib.util
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import shadow  # noqa: E402
from bench.solve import DERIVED, pangeo_sized_specs  # noqa: E402
from bench.table import Row, report_lines  # noqa: E402
from envyard.builder.install import InstallOptions, install_lock  # noqa: E402
from envyard.builder.model import LockedCondaPackage, PlatformLock  # noqa: E402
from envyard.builder.oci.image import BuiltLayer, ImageOptions, build_platform_image  # noqa: E402
from envyard.builder.oci.model import ManifestBlob, OciImage  # noqa: E402
from envyard.builder.oci.store import BlobStore  # noqa: E402

PLATFORM = "linux-64"
ENV_PREFIX = "/opt/env"
#: --quick: a pandas environment (about 30 packages), about 40 MB installed
QUICK_SPECS = ("pandas",)
TARGETS = {"install": 1.5, "image": 1.0, "leaf": 0.05, "two-env": 1.2}


# -- helpers -------------------------------------------------------------------------------------------------


def mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def du_bytes(path: Path) -> int:
    """Apparent size of a tree (``du -sb``): what a registry's storage holds."""
    out = subprocess.run(["du", "-sb", str(path)], check=True, capture_output=True, text=True).stdout
    return int(out.split()[0])


def tree_stats(path: Path) -> tuple[int, int]:
    """Regular files and their bytes under ``path`` (symlinks not followed)."""
    files = size = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            st = os.lstat(os.path.join(root, name))
            if not os.path.islink(os.path.join(root, name)):
                files += 1
                size += st.st_size
    return files, size


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_of(fns: dict[str, Callable[[], object]], repeat: int, between: Callable[[], object] | None = None
              ) -> dict[str, float]:
    """Run each function ``repeat`` times, interleaved (a, b, a, b, ...), and return the median of each."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for key, fn in fns.items():
            times[key].append(timed(fn))
            if between is not None:
                between()
    return {k: statistics.median(v) for k, v in times.items()}


def verdict(value: float, target: float) -> str:
    return "PASS" if value <= target else "MISS"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, label: str, ours: str, baseline: str = "", ratio: str = "", target: str = "",
            result: str = "") -> None:
        self.rows.append(Row(label, ours, baseline, ratio, target, result))
        print(f"  {label}: {ours}" + (f"  vs {baseline}" if baseline else "") + (f"  -> {ratio}" if ratio else ""),
              flush=True)

    def print_table(self) -> None:
        headers = ("measurement", "envyard", "baseline", "ratio", "target", "result")
        for text in report_lines(headers, self.rows, self.notes, self.summary):
            print(text)


def _load_test_servers() -> Any | None:
    path = REPO / "tests" / "servers.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("envyard_bench_test_servers", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _push_available() -> bool:
    return importlib.util.find_spec("registry.push") is not None and importlib.util.find_spec(
        "registry.client") is not None


@contextlib.contextmanager
def registry(tmp: Path) -> Iterator[tuple[str, Path] | None]:
    """A loopback docker-registry (host, storage root), or None when it or the push code is unavailable."""
    servers = _load_test_servers()
    if servers is None or not _push_available() or servers.docker_registry_executable() is None:
        yield None
        return
    tmp.mkdir(parents=True, exist_ok=True)
    with servers.docker_registry(tmp) as host:
        yield host, tmp / "storage"


def push(host: str, image: OciImage, store: BlobStore, ref: str, mount_from: Sequence[str] = ()) -> Any:
    from envyard.registry.client import RegistryClient
    from envyard.registry.push import push_image
    from envyard.registry.reference import parse_reference

    with RegistryClient(host) as client:
        return push_image(image, store, parse_reference(f"{host}/{ref}"), client, mount_from=mount_from)


def image_blobs(manifest: ManifestBlob) -> dict[str, int]:
    """digest -> size of everything a registry stores for an image: config, layers and the manifest."""
    blobs = {d.digest: d.size for d in manifest.children()}
    blobs[manifest.descriptor.digest] = manifest.descriptor.size
    return blobs


def compressed_size(manifest: ManifestBlob) -> int:
    """The image's size as pushed: layers + config."""
    return sum(d.size for d in manifest.children())


# -- environment ---------------------------------------------------------------------------------------------


@dataclass
class Environments:
    base: list[shadow.ShadowPackage]
    leaf: shadow.ShadowPackage
    leaf_new: shadow.ShadowPackage
    swapped: list[shadow.ShadowPackage]
    swapped_new: list[shadow.ShadowPackage]
    scale: float
    channel: Path


def dependents(packages: Sequence[shadow.ShadowPackage]) -> dict[str, int]:
    names = {p.record.name for p in packages}
    count = dict.fromkeys(names, 0)
    for p in packages:
        for dep in {d.split()[0] for d in p.record.depends}:
            if dep in count:
                count[dep] += 1
    return count


def prepare(args: argparse.Namespace, work: Path) -> Environments:
    specs = list(QUICK_SPECS) if args.quick else pangeo_sized_specs()
    start = time.perf_counter()
    records = shadow.solve_records(DERIVED, specs, PLATFORM, work / "gateway-cache")
    estimated = sum(1 for r in records if r.size_estimated)
    total = int((args.total_mb or (40 if args.quick else 450)) * 1e6)
    scale = args.scale or shadow.auto_scale(records, total)
    scale = float(shadow.scale_tag(scale))
    python = shadow.python_version(records)
    base = shadow.plan(records, scale, python)
    print(f"environment: {len(specs)} root specs -> {len(records)} packages ({PLATFORM}, python {python}); "
          f"{estimated} records have no size (estimated from same-name records or the kind's median); "
          f"scale {scale:g} installed bytes per real archive byte -> {mb(sum(p.installed_bytes for p in base))} "
          f"planned ({time.perf_counter() - start:.1f} s)")
    kinds: dict[str, int] = {}
    for p in base:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    print("kinds: " + ", ".join(f"{k} {kinds[k]}" for k in shadow.KINDS if k in kinds))

    deps = dependents(base)
    leaves = sorted((p for p in base if deps[p.record.name] == 0), key=lambda p: (p.installed_bytes, p.record.name))
    leaf = leaves[len(leaves) // 2]  # the median-sized leaf: a small/medium package, deterministic
    if len(leaves) < 5:
        print(f"note: only {len(leaves)} leaf package(s): the one-leaf and 90%-shared figures are smoke values")
    leaf_new = shadow.plan([shadow.bumped(leaf.record)], scale, python)[0]
    # leaf-ish: fewest dependents first, ties broken by a hash of the name (a deterministic spread of sizes)
    n_swap = max(1, round(len(base) * 0.10))
    ranked = sorted(base, key=lambda p: (deps[p.record.name], hashlib.sha256(p.record.name.encode()).digest()))
    swapped = sorted(ranked[:n_swap], key=lambda p: p.record.name)
    swapped_new = shadow.plan([shadow.bumped(p.record) for p in swapped], scale, python)

    channel = work / f"shadow-v{shadow.SHADOW_FORMAT}-{shadow.scale_tag(scale)}"
    every = {p.file_name: p for p in [*base, leaf_new, *swapped_new]}
    start = time.perf_counter()
    written = shadow.synthesize(list(every.values()), channel)
    shadow.index_channel(channel, list(every.values()))
    print(f"shadow channel: {channel} ({len(every)} archives, {written} written now, "
          f"{time.perf_counter() - start:.1f} s)")
    return Environments(base, leaf, leaf_new, swapped, swapped_new, scale, channel)


def make_lock(envs: Environments, packages: Sequence[shadow.ShadowPackage]) -> PlatformLock:
    locked: dict[str, LockedCondaPackage] = shadow.locked(envs.channel, packages)
    return shadow.platform_lock(PLATFORM, locked.values())


def replaced(base: Sequence[shadow.ShadowPackage], old: Sequence[shadow.ShadowPackage],
             new: Sequence[shadow.ShadowPackage]) -> list[shadow.ShadowPackage]:
    gone = {p.file_name for p in old}
    return [p for p in base if p.file_name not in gone] + list(new)


# -- the benchmark -------------------------------------------------------------------------------------------


def build(prefix: Path, store: BlobStore, work_dir: Path) -> tuple[ManifestBlob, list[BuiltLayer]]:
    work_dir.mkdir(parents=True, exist_ok=True)
    return build_platform_image(prefix, PLATFORM, ImageOptions(env_prefix=ENV_PREFIX), store, work_dir)


def bench_install(lock: PlatformLock, run: Path, cache: Path, repeat: int, report: Report) -> Path:
    options = InstallOptions(cache_layers=[cache])
    source = run / "prefix"
    t_first = timed(lambda: install_lock(lock, source, options))
    owners: dict[str, int] = {}
    for record in (source / "conda-meta").glob("*.json"):
        for path in json.loads(record.read_text()).get("files", []):
            owners[path] = owners.get(path, 0) + 1
    clobbered = sum(1 for n in owners.values() if n > 1)
    if clobbered:
        report.notes.append(f"{clobbered} paths are owned by more than one package (the shadow channel clobbers)")
    files, size = tree_stats(source)
    print(f"  first install (fills the package cache unless --work reused it): {t_first:.2f} s; "
          f"{files:,} files, {mb(size)} in the prefix")
    counter = iter(range(10_000))
    targets: dict[str, Path] = {}

    def ours() -> None:
        targets["ours"] = run / f"warm-{next(counter)}"
        install_lock(lock, targets["ours"], options)

    def cp() -> None:
        targets["cp"] = run / f"cp-{next(counter)}"
        subprocess.run(["cp", "-al", str(source), str(targets["cp"])], check=True)

    def clean() -> None:
        for path in targets.values():
            rmtree(path)

    ours(), clean()  # warm-up
    t = median_of({"ours": ours, "cp": cp}, repeat, clean)
    ratio = t["ours"] / t["cp"]
    report.add("1 warm-cache install vs cp -al", f"{t['ours']:.3f} s", f"{t['cp']:.3f} s", f"{ratio:.2f}x",
               f"<= {TARGETS['install']:.2f}x", verdict(ratio, TARGETS["install"]))
    report.summary.append(f"TARGET 1 warm-cache install / cp -al: {ratio:.2f}x (target <= {TARGETS['install']:.2f}x) "
                          f"{verdict(ratio, TARGETS['install'])}")
    return source


def bench_image(prefix: Path, run: Path, repeat: int, report: Report) -> tuple[ManifestBlob, BlobStore]:
    counter = iter(range(10_000))
    stores: list[Path] = []

    def ours() -> None:
        root = run / f"store-cold-{next(counter)}"
        stores.append(root)
        build(prefix, BlobStore(root), run / "image-work")

    def baseline() -> None:
        script = f"set -o pipefail; tar -cf - -C {str(prefix.parent)!r} {prefix.name!r} | gzip -6 > /dev/null"
        subprocess.run(["bash", "-c", script], check=True)

    def clean() -> None:
        while stores:
            rmtree(stores.pop())

    baseline()  # warm the page cache
    t = median_of({"ours": ours, "tar": baseline}, repeat, clean)
    ratio = t["ours"] / t["tar"]
    report.add("2 image build, cold layer cache, vs tar|gzip -6", f"{t['ours']:.3f} s", f"{t['tar']:.3f} s",
               f"{ratio:.2f}x", f"<= {TARGETS['image']:.2f}x", verdict(ratio, TARGETS["image"]))
    store = BlobStore(run / "store")
    manifest, built = build(prefix, store, run / "image-work")
    t_warm = statistics.median(timed(lambda: build(prefix, store, run / "image-work")) for _ in range(repeat))
    reused = sum(1 for b in build(prefix, store, run / "image-work")[1] if b.reused)
    report.add("  image rebuild, warm layer cache", f"{t_warm:.3f} s", f"{t['tar']:.3f} s",
               f"{t_warm / t['tar']:.2f}x", "", f"({reused}/{len(built)} layers reused)")
    report.summary.append(f"TARGET 2 image build (cold layer cache) / tar|gzip -6: {ratio:.2f}x "
                          f"(target <= {TARGETS['image']:.2f}x) {verdict(ratio, TARGETS['image'])}")
    _files, installed = tree_stats(prefix)
    total = compressed_size(manifest)
    largest = sorted(built, key=lambda b: -b.descriptor.size)
    print(f"  layers: {len(built)} (max {ImageOptions().budget.max_layers}); compressed {mb(total)} "
          f"(layers + config) of {mb(installed)} installed ({total / installed:.0%})")
    print("  largest layers: " + ", ".join(f"{b.name} {mb(b.descriptor.size)}" for b in largest[:8]))
    buckets = [b for b in built if b.name.startswith("bucket-")]
    if buckets:
        print(f"  bucket layers: {len(buckets)}, {mb(sum(b.descriptor.size for b in buckets))} together "
              f"({sum(b.descriptor.size for b in buckets) / total:.0%} of the image), each "
              + ", ".join(mb(b.descriptor.size) for b in sorted(buckets, key=lambda b: b.name)))
    return manifest, store


def bench_leaf(envs: Environments, lock_a: PlatformLock, manifest_a: ManifestBlob, store: BlobStore, run: Path,
               cache: Path, report: Report) -> None:
    lock_b = make_lock(envs, replaced(envs.base, [envs.leaf], [envs.leaf_new]))
    prefix = run / "prefix-leaf"
    install_lock(lock_b, prefix, InstallOptions(cache_layers=[cache], target_prefix=ENV_PREFIX))
    t = time.perf_counter()
    manifest_b, built = build(prefix, store, run / "image-work")
    t = time.perf_counter() - t
    rebuilt = [b for b in built if not b.reused]
    leaf = envs.leaf.record
    print(f"  changed leaf: {leaf.name} {leaf.version} -> {envs.leaf_new.record.version} "
          f"({mb(envs.leaf_new.installed_bytes)} installed); image rebuilt in {t:.2f} s, layers rebuilt: "
          + ", ".join(f"{b.name} {mb(b.descriptor.size)}" for b in rebuilt))
    new_blobs = image_blobs(manifest_b)
    old_blobs = image_blobs(manifest_a)
    computed = sum(size for digest, size in new_blobs.items() if digest not in old_blobs)
    total = compressed_size(manifest_b)
    uploaded, how = computed, "computed: blobs + manifest not in the first image"
    with registry(run / "registry-leaf") as reg:
        if reg is not None:
            host, _storage = reg
            first = push(host, OciImage(manifest_a, (manifest_a,)), store, "bench/leaf:before")
            second = push(host, OciImage(manifest_b, (manifest_b,)), store, "bench/leaf:after")
            print(f"  pushes to {host}: first {mb(first.uploaded_bytes)} ({first.uploaded_blobs} blobs), "
                  f"second {mb(second.uploaded_bytes)} ({second.uploaded_blobs} blobs uploaded, "
                  f"{second.existing_blobs} already there); computed blob difference {mb(computed)}")
            uploaded, how = second.uploaded_bytes, "PushReport.uploaded_bytes of the 2nd push"
        else:
            report.notes.append("no docker-registry or registry.push: bytes pushed are computed from blob digests")
    share = uploaded / total
    report.add("3 one-leaf change: 2nd push uploads", mb(uploaded), mb(total), f"{share:.2%}",
               f"<= {TARGETS['leaf']:.0%}", verdict(share, TARGETS["leaf"]))
    report.notes.append(f"3: {how}; baseline = the changed image's layers + config")
    report.summary.append(f"TARGET 3 one-leaf change, bytes uploaded / image size: {share:.2%} "
                          f"(target <= {TARGETS['leaf']:.0%}) {verdict(share, TARGETS['leaf'])}")
    rmtree(prefix)


def bench_two_envs(envs: Environments, manifest_a: ManifestBlob, store: BlobStore, run: Path, cache: Path,
                   report: Report) -> None:
    lock_b = make_lock(envs, replaced(envs.base, envs.swapped, envs.swapped_new))
    prefix = run / "prefix-b"
    install_lock(lock_b, prefix, InstallOptions(cache_layers=[cache], target_prefix=ENV_PREFIX))
    manifest_b, built = build(prefix, store, run / "image-work")
    shared = len(envs.base) - len(envs.swapped)
    swapped_bytes = sum(p.installed_bytes for p in envs.swapped)
    all_bytes = sum(p.installed_bytes for p in envs.base)
    print(f"  second environment: {len(envs.swapped)} of {len(envs.base)} packages at another version "
          f"({shared / len(envs.base):.0%} shared by count, {1 - swapped_bytes / all_bytes:.0%} by installed bytes); "
          f"{sum(1 for b in built if not b.reused)} of {len(built)} layers differ from the first image's: "
          + ", ".join(f"{b.name} {mb(b.descriptor.size)}" for b in built if not b.reused))
    a_blobs, b_blobs = image_blobs(manifest_a), image_blobs(manifest_b)
    computed = sum({**a_blobs, **b_blobs}.values()) / sum(a_blobs.values())
    ratio, how = computed, "computed: unique blob bytes of both images / of one"
    with registry(run / "registry-two") as reg:
        if reg is not None:
            host, storage = reg
            push_a = push(host, OciImage(manifest_a, (manifest_a,)), store, "bench/env-a:1")
            one = du_bytes(storage)
            push_b = push(host, OciImage(manifest_b, (manifest_b,)), store, "bench/env-b:1",
                          mount_from=["bench/env-a"])
            both = du_bytes(storage)
            ratio, how = both / one, "du -sb of the registry's storage root"
            print(f"  registry {host}: env-a pushed {mb(push_a.uploaded_bytes)}, storage {mb(one)}; env-b pushed "
                  f"{mb(push_b.uploaded_bytes)} ({push_b.mounted_blobs} blobs mounted, "
                  f"{push_b.uploaded_blobs} uploaded), storage {mb(both)}; computed blob ratio {computed:.3f}x")
            baseline, ours = mb(one), mb(both)
        else:
            baseline, ours = mb(sum(a_blobs.values())), mb(sum({**a_blobs, **b_blobs}.values()))
    report.add("4 two envs (90% shared): registry storage", ours, baseline, f"{ratio:.2f}x",
               f"<= {TARGETS['two-env']:.2f}x", verdict(ratio, TARGETS["two-env"]))
    report.notes.append(f"4: {how}; baseline = the same registry holding only the first image")
    report.summary.append(f"TARGET 4 two environments sharing 90%, registry storage both / one: {ratio:.2f}x "
                          f"(target <= {TARGETS['two-env']:.2f}x) {verdict(ratio, TARGETS['two-env'])}")
    rmtree(prefix)


def profile(lock: PlatformLock, image_prefix: Path, run: Path, cache: Path) -> None:
    """cProfile of a warm install and of a cold image build with its layers built one by one in this thread."""
    import envyard.builder.install as install_module
    from envyard.builder.oci.image import ENTRYPOINT, build_layer, entrypoint_script
    from envyard.builder.oci.layers import plan_layers, read_units

    print("\nprofile: warm install_lock, time per stage (builder.install's stage functions wrapped in this process)")
    stages = {"fetch_packages": "cache check (fetch_packages)", "_link": "rattler.install (_link)",
              "scrub_conda_meta": "scrub_conda_meta"}
    spent: dict[str, float] = {}
    originals = {name: getattr(install_module, name) for name in stages}

    def wrapped(name: str) -> Callable[..., Any]:
        def call(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return originals[name](*a, **k)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
        return call

    try:
        for name in stages:
            setattr(install_module, name, wrapped(name))
        for i in range(3):
            spent.clear()
            options = InstallOptions(cache_layers=[cache])
            total = timed(lambda i=i, o=options: install_lock(lock, run / f"profile-prefix-{i}", o))
            rmtree(run / f"profile-prefix-{i}")
            print(f"  total {total:.3f} s: " + ", ".join(f"{stages[k]} {spent.get(k, 0):.3f} s" for k in stages)
                  + f", other {total - sum(spent.values()):.3f} s")
    finally:
        for name, fn in originals.items():
            setattr(install_module, name, fn)
    profiler = cProfile.Profile()
    profiler.runcall(install_lock, lock, run / "profile-prefix", InstallOptions(cache_layers=[cache]))
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(8)
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip()))
    rmtree(run / "profile-prefix")

    print("\nprofile: cold image build, layers built sequentially in one thread")
    store = BlobStore(run / "profile-store")
    options = ImageOptions(env_prefix=ENV_PREFIX)
    profiler = cProfile.Profile()
    profiler.enable()
    t0 = time.perf_counter()
    units, unowned = read_units(image_prefix)
    script = run / "profile-entrypoint"
    script.write_text(entrypoint_script(ENV_PREFIX, f"{ENV_PREFIX}/bin/sh"))
    extra = {ENTRYPOINT: script}
    plan = plan_layers(units, [*unowned, *extra], options.budget)
    t1 = time.perf_counter()
    for layer in plan:
        build_layer(image_prefix, layer, options, store, extra, PLATFORM)
    t2 = time.perf_counter()
    profiler.disable()
    print(f"  read_units + plan_layers {t1 - t0:.3f} s; tar + gzip of {len(plan)} layers {t2 - t1:.3f} s "
          "(one thread, profiler on)")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(14)
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip()))
    rmtree(run / "profile-store")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small environment (pandas, ~40 MB): a smoke run")
    parser.add_argument("--repeat", type=int, default=3, help="timed repeats (median); default 3")
    parser.add_argument("--total-mb", type=float, default=None,
                        help="installed size of the environment (default 450, --quick 40)")
    parser.add_argument("--scale", type=float, default=None,
                        help="installed bytes per byte of each record's real archive size (overrides --total-mb)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "envyard-bench-image",
                        help="cache of shadow channels and the package cache, reused when present")
    parser.add_argument("--keep", action="store_true", help="keep this run's prefixes, stores and registries")
    parser.add_argument("--profile", action="store_true",
                        help="profile a warm install and a cold image build (also done when target 1 or 2 is missed)")
    args = parser.parse_args()
    if not DERIVED.is_dir():
        sys.exit(f"shared data not found at {DERIVED}")
    work = args.work.absolute()
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    envs = prepare(args, work)
    lock_a = make_lock(envs, envs.base)
    cache = work / f"pkgs-{envs.channel.name}"
    run = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    report = Report()
    print(f"run directory: {run}; {os.cpu_count()} CPUs; repeat {args.repeat}\n")
    try:
        print("1. warm-cache install")
        bench_install(lock_a, run, cache, args.repeat, report)
        print("2. image build")
        image_prefix = run / "prefix-opt-env"
        install_lock(lock_a, image_prefix, InstallOptions(cache_layers=[cache], target_prefix=ENV_PREFIX))
        manifest_a, store = bench_image(image_prefix, run, args.repeat, report)
        print("3. one-leaf change")
        bench_leaf(envs, lock_a, manifest_a, store, run, cache, report)
        print("4. two environments sharing 90% of packages")
        bench_two_envs(envs, manifest_a, store, run, cache, report)
        report.print_table()
        missed = any(s.startswith(("TARGET 1", "TARGET 2")) and s.endswith("MISS") for s in report.summary)
        if args.profile or (missed and not args.quick):
            profile(lock_a, image_prefix, run, cache)
        print(f"\ntotal {time.perf_counter() - started:.1f} s")
    finally:
        if args.keep:
            print(f"kept: {run}")
        else:
            rmtree(run)


if __name__ == "__main__":
    main()
