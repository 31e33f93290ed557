"""Benchmark: envyard's conda-lock.yml writer against conda-lock's own, on the biggest shared locks.

For each lock it prints the best-of-N time of

* ours          ``render_conda_lock`` + writing the text to a file (scalar cache cleared: cold)
* conda-lock    ``conda_lock.lockfile.write_conda_lock_file`` (pydantic model -> PyYAML) of the same lock
* CSafeDumper   libyaml's C emitter on the equivalent plain document (the fastest "use a YAML library" option)

and the ratio conda-lock / ours, plus our pixi.lock and @EXPLICIT writers for scale.
The target is "well under 50 ms for ~800 packages"; the tests make no timing assertions.

Usage: python bench/lockwrite.py [--repeat N]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from envyard.builder.lockfiles import read_lockfile, render_conda_lock, render_explicit, write_pixi_lock  # noqa: E402
from envyard.builder.lockfiles._yaml import yaml_scalar  # noqa: E402

LOCKS = REPO.parent / "shared" / "data" / "locks" / "conda-lock"
FILES = [
    "pangeo-data__pangeo-docker-images__ml-notebook_conda-lock.yml",
    "pangeo-data__pangeo-docker-images__base-notebook_conda-lock.yml",
]


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_one(name: str, repeat: int, out: Path) -> None:
    from conda_lock.lockfile import parse_conda_lock_file, write_conda_lock_file

    path = LOCKS / name
    if not path.exists():
        print(f"skip {name}: shared data not found")
        return
    lock = read_lockfile(path)
    packages = sum(len(p.conda) + len(p.pip) for p in lock.platforms.values())
    theirs_model = parse_conda_lock_file(path)
    doc = yaml.safe_load(render_conda_lock(lock))
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

    def ours() -> None:
        yaml_scalar.cache_clear()  # measure cold: no scalar remembered from an earlier render
        (out / "ours.yml").write_text(render_conda_lock(lock))

    def conda_lock() -> None:
        write_conda_lock_file(copy.deepcopy(theirs_model), out / "theirs.yml", metadata_choices=None)

    copy_cost = best(lambda: copy.deepcopy(theirs_model), repeat)
    t_ours = best(ours, repeat)
    t_theirs = max(best(conda_lock, repeat) - copy_cost, 1e-9)
    t_c = best(lambda: yaml.dump(doc, Dumper=dumper, sort_keys=False), repeat)
    t_pixi = best(lambda: write_pixi_lock(lock, out / "pixi.lock"), repeat)
    t_explicit = best(lambda: [render_explicit(lock, p) for p in lock.platform_names], repeat)
    print(f"{name} ({packages} packages, {len(lock.platforms)} platform(s))")
    print(f"  conda-lock.yml  ours {t_ours * 1e3:7.1f} ms | conda-lock {t_theirs * 1e3:7.1f} ms"
          f" | ratio {t_theirs / t_ours:5.1f}x | CSafeDumper alone {t_c * 1e3:6.1f} ms")  # fmt: skip
    print(f"  pixi.lock       ours {t_pixi * 1e3:7.1f} ms (py-rattler)")
    print(f"  @EXPLICIT       ours {t_explicit * 1e3:7.1f} ms (all platforms, toposorted)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in FILES:
            bench_one(name, args.repeat, Path(tmp))


if __name__ == "__main__":
    main()
