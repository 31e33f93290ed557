"""Benchmark: envyard's whole lock against a bare ``rattler.solve`` of the same specs, in one run.

Prints, for (a) the real conda-forge records derived from public lockfiles and (b) synthetic inflations
of them to ~110k and ~340k records (about conda-forge linux-64's size):

* lock / bare      envyard's lock (parse, solve, verify, write three formats) vs the bare solve on the
                   same gateway (target <= 1.2x); every lock writes a new output directory, since a relock
                   into a directory holding a lock of the same inputs keeps it without solving (reported
                   on its own line: relock, unchanged spec);
* 4-platform lock  vs the slowest single-platform lock (target <= 1.5x);
* process          ``envyard lock`` as a whole process vs a bare-solve process (target <= +0.5 s);
* --check          ``envyard lock --check`` as a process (performs no solve).

Usage: python bench/solve.py [--repeat N] [--sizes 110000,340000]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DERIVED = REPO.parent / "shared" / "data" / "repodata" / "derived-from-lockfiles" / "conda-forge"
PANGEO_LOCK = REPO.parent / "shared" / "data" / "locks" / "conda-lock" / (
    "pangeo-data__pangeo-docker-images__ml-notebook_conda-lock.yml"
)
PLATFORMS = ("linux-64", "linux-aarch64", "osx-arm64", "win-64")
#: a spec every platform of the derived channel can solve, for the 4-platform comparison
CROSS_PLATFORM = ["python", "numpy", "pandas", "scipy", "scikit-learn", "matplotlib"]


def pangeo_sized_specs() -> list[str]:
    """The root packages of pangeo's real ml-notebook lock (nothing else depends on them), unpinned,
    that the derived channel can solve for linux-64: a pangeo-notebook-sized spec."""
    from envyard.builder.lockfiles import read_lockfile

    lock = read_lockfile(PANGEO_LOCK).platforms["linux-64"]
    depended = {d.split()[0] for p in lock.conda for d in p.depends}
    return sorted(p.name for p in lock.conda if p.name not in depended)


def inflate(channel: Path, target_records: int, out: Path) -> Path:
    """A copy of ``channel`` with synthetic records: older builds of real packages (which the solver must
    consider) and renamed copies (which it must load and index), up to ``target_records`` in total."""
    subdirs = [d.name for d in channel.iterdir() if (d / "repodata.json").exists()]
    data = {s: json.loads((channel / s / "repodata.json").read_text()) for s in subdirs}
    real = sum(len(d.get("packages", {})) + len(d.get("packages.conda", {})) for d in data.values())
    copies = max(1, round(target_records / real) - 1)
    for subdir, repodata in data.items():
        out_packages = {}
        for key in ("packages", "packages.conda"):
            extra = {}
            for fn, rec in repodata.get(key, {}).items():
                for i in range(copies):
                    new = dict(rec)
                    if i % 2 == 0:  # an older build of the same package
                        new["build_number"] = 0
                        if rec.get("timestamp"):
                            new["timestamp"] = rec["timestamp"] - 86_400_000 * (i + 1)
                        new["build"] = f"{rec['build']}_old{i}"
                    else:  # an unrelated package with the same shape
                        new["name"] = f"{rec['name']}-synth{i}"
                    new["sha256"] = f"{i:04x}" + rec.get("sha256", "0" * 64)[4:]
                    stem = fn.rsplit(".conda", 1)[0] if fn.endswith(".conda") else fn.rsplit(".tar.bz2", 1)[0]
                    ext = fn[len(stem):]
                    extra[f"{new['name']}-{new['version']}-{new['build']}{ext}"] = new
            out_packages[key] = {**repodata.get(key, {}), **extra}
        (out / subdir).mkdir(parents=True, exist_ok=True)
        (out / subdir / "repodata.json").write_text(json.dumps({**repodata, **out_packages}))
    return out


def count_records(channel: Path) -> int:
    total = 0
    for f in channel.glob("*/repodata.json"):
        d = json.loads(f.read_text())
        total += len(d.get("packages", {})) + len(d.get("packages.conda", {}))
    return total


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def target(name: str, value: float, limit: float, unit: str) -> None:
    """The TARGET line of one target: PASS when ``value`` is at most ``limit``."""
    print(f"TARGET {name}: {value:.2f}{unit} (<= {limit:.2f}{unit}) {'PASS' if value <= limit else 'MISS'}")


def bench_channel(label: str, alias_root: Path, specs: list[str], repeat: int, workdir: Path) -> None:
    import rattler

    from envyard.builder.channels import ChannelOptions, make_gateway
    from envyard.builder.lock import LockOptions
    from envyard.builder.pipeline import lock_to_directory
    from envyard.builder.virtual_packages import virtual_packages_for

    options = ChannelOptions(channel_alias=alias_root.as_uri() + "/")
    gateway = make_gateway(workdir / f"cache-{label}", options)
    spec_file = workdir / f"spec-{label}.yml"
    spec_file.write_text("channels: [conda-forge]\ndependencies:\n" + "".join(f"  - {s}\n" for s in specs))
    multi_file = workdir / f"multi-{label}.yml"
    multi_file.write_text("channels: [conda-forge]\ndependencies:\n" + "".join(f"  - {s}\n" for s in CROSS_PLATFORM))
    channel = options.channel_alias + "conda-forge"

    def bare(platform: str) -> None:
        virtual = [v.to_rattler() for v in virtual_packages_for(platform, cuda="12.4")]
        asyncio.run(rattler.solve([channel], specs, gateway=gateway, platforms=[platform, "noarch"],
                                  virtual_packages=virtual))

    runs = itertools.count()

    def ours(platforms: tuple[str, ...], spec_file: Path = spec_file, out: Path | None = None) -> None:
        out = out or workdir / f"out-{label}-{next(runs)}"  # a lock from scratch, not a relock
        lock_to_directory(spec_file, out, LockOptions(platforms=platforms, channels=options, cuda="12.4"),
                          cache_dir=workdir, gateway=gateway)

    bare("linux-64"), ours(("linux-64",))  # load repodata into the gateway once
    t_bare = timed(lambda: bare("linux-64"), repeat)
    t_ours = timed(lambda: ours(("linux-64",)), repeat)
    print(f"{label:>22}  linux-64  bare solve {t_bare * 1000:8.1f} ms   envyard lock {t_ours * 1000:8.1f} ms"
          f"   ratio {t_ours / t_bare:5.2f}x  (target <= 1.20x)")
    target(f"{label} lock / bare solve", t_ours / t_bare, 1.20, "x")
    relock_dir = workdir / f"relock-{label}"
    ours(("linux-64",), out=relock_dir)
    t_relock = timed(lambda: ours(("linux-64",), out=relock_dir), repeat)
    print(f"{'':>22}  relock, unchanged spec {t_relock * 1000:8.1f} ms   ({t_relock / t_ours:4.2f}x of a lock)")
    singles = {}
    for p in PLATFORMS:
        ours((p,), multi_file)
        singles[p] = timed(lambda p=p: ours((p,), multi_file), repeat)
    t_multi = timed(lambda: ours(PLATFORMS, multi_file), repeat)
    slowest = max(singles.values())
    print(f"{'':>22}  4 platforms ({len(CROSS_PLATFORM)} specs) {t_multi * 1000:8.1f} ms"
          f"   slowest single {slowest * 1000:8.1f} ms"
          f"   ratio {t_multi / slowest:5.2f}x  (target <= 1.50x)")
    target(f"{label} 4 platforms / slowest single", t_multi / slowest, 1.50, "x")


def bench_process(specs: list[str], workdir: Path) -> None:
    alias = DERIVED.parent.as_uri() + "/"
    spec_file = workdir / "pangeo.yml"
    spec_file.write_text("channels: [conda-forge]\ndependencies:\n" + "".join(f"  - {s}\n" for s in specs))
    bare_script = workdir / "bare.py"
    bare_script.write_text(textwrap.dedent(f"""
        import asyncio, rattler
        from rattler import GenericVirtualPackage as V, PackageName as N, Version as Ve, BuildString as B
        vp = [V(N(n), Ve(v), B(b)) for n, v, b in [("__glibc", "2.28", "0"), ("__unix", "0", "0"),
              ("__linux", "5.10", "0"), ("__archspec", "1", "x86_64"), ("__cuda", "12.4", "0")]]
        gw = rattler.Gateway(cache_dir={str(workdir / 'bare-cache')!r})
        asyncio.run(rattler.solve([{alias + 'conda-forge'!r}], {specs!r}, gateway=gw,
                                  platforms=["linux-64", "noarch"], virtual_packages=vp))
        import os; os._exit(0)  # as envyard's CLI does: no finalization race with rattler's threads
    """))
    env = {**os.environ, "ENVYARD_CACHE_DIR": str(workdir / "proc-cache")}
    runs = itertools.count()

    def lock_cmd(out: Path | None = None) -> list[str]:  # a new output directory: a lock, not a relock
        return [shutil.which("envyard") or "envyard", "lock", str(spec_file), "-p", "linux-64", "--cuda", "12.4",
                "--channel-alias", alias, "-o", str(out or workdir / f"proc-out-{next(runs)}"), "--json"]

    check_cmd = [*lock_cmd(workdir / "proc-out"), "--check"]

    def run(cmd: list[str]) -> float:
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start

    run([sys.executable, str(bare_script)]), run(lock_cmd(workdir / "proc-out"))
    t_bare = statistics.median(run([sys.executable, str(bare_script)]) for _ in range(5))
    t_lock = statistics.median(run(lock_cmd()) for _ in range(5))
    t_check = statistics.median(run(check_cmd) for _ in range(5))
    label = f"process, {len(specs)} specs"
    print(f"{label:>22}  bare-solve process {t_bare:6.2f} s   envyard lock {t_lock:6.2f} s"
          f"   extra {t_lock - t_bare:+5.2f} s  (target <= +0.50 s)")
    target("process: envyard lock - bare-solve process", t_lock - t_bare, 0.50, " s")
    print(f"{'':>22}  envyard lock --check {t_check:6.2f} s   ({t_check / t_lock:4.2f}x of a lock; no solve)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", default="110000,340000")
    args = parser.parse_args()
    if not DERIVED.is_dir():
        sys.exit(f"shared data not found at {DERIVED}")
    specs = pangeo_sized_specs()
    print(f"spec: {len(specs)} root packages of pangeo's ml-notebook lock; __cuda 12.4\n")
    with tempfile.TemporaryDirectory(prefix="envyard-bench-") as tmp:
        workdir = Path(tmp)
        print(f"{'channel':>22}")
        bench_channel(f"derived ({count_records(DERIVED)})", DERIVED.parent, specs, args.repeat, workdir)
        for size in (int(s) for s in args.sizes.split(",") if s):
            root = workdir / f"inflated-{size}"
            inflate(DERIVED, size, root / "conda-forge")
            bench_channel(f"inflated ({count_records(root / 'conda-forge')})", root, specs, args.repeat, workdir)
        print()
        bench_process(specs, workdir)


if __name__ == "__main__":
    main()
