"""Benchmark: ``envyard ci`` over a repository of environment specs, against ``envyard lock`` of one spec, in one run.

Ten specs over the real conda-forge records derived from public lockfiles (``../shared/data``), inflated to about
conda-forge linux-64's size (``--records``, as bench/solve.py does) so that a solve costs what it costs in real CI,
each spec with its lock. Every figure is the median of ``--repeat`` whole processes (the way CI runs them):

* nothing changed    ``envyard ci`` over the ten fresh specs vs ``envyard lock`` of ONE spec, each beyond the cost of
                     starting the process (``envyard --version``, measured in the same run): a fresh spec costs no
                     solve, so checking ten must cost far less than solving one (target <= 0.25x);
* one spec changed   ``envyard ci`` (relocks exactly that one) vs ``envyard lock`` of that spec (target <= 1.30x: the
                     nine fresh specs are only hashed);
* all ten changed    ``envyard ci -j 2`` vs ten ``envyard lock`` processes one after another (target <= 0.80x: one
                     process, its channel data loaded once, relocks two at a time on this machine's two cores).

Usage: python bench/ci.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from solve import DERIVED, inflate  # noqa: E402  (the same channel inflation as the solve benchmark)

#: ten environments a data-science repository might keep: each a different mix, all solvable on linux-64
ENVIRONMENTS = {
    "base": ["python", "numpy"],
    "pandas": ["python", "pandas"],
    "scipy": ["python", "scipy"],
    "sklearn": ["python", "scikit-learn"],
    "plots": ["python", "matplotlib"],
    "tables": ["python", "pandas", "pyarrow"],
    "stats": ["python", "scipy", "statsmodels"],
    "notebook": ["python", "numpy", "ipykernel"],
    "ml": ["python", "scikit-learn", "pandas"],
    "viz": ["python", "matplotlib", "pandas"],
}


def spec_text(name: str, deps: list[str], extra: str = "") -> str:
    return (f"name: {name}\nchannels: [conda-forge]\nplatforms: [linux-64]\ndependencies:\n"
            + "".join(f"  - {d}\n" for d in deps) + extra)


def target(name: str, value: float, limit: float) -> None:
    print(f"TARGET {name}: {value:.2f}x (<= {limit:.2f}x) {'PASS' if value <= limit else 'MISS'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--records", type=int, default=340_000, help="records in the channel (0: the derived ones)")
    args = parser.parse_args()
    envyard = shutil.which("envyard") or sys.exit("envyard is not on PATH: pip install -e .")
    with tempfile.TemporaryDirectory(prefix="envyard-bench-ci-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "ENVYARD_CACHE_DIR": str(work / "cache")}
        if args.records:
            inflate(DERIVED, args.records, work / "channels" / "conda-forge")
            alias = (work / "channels").as_uri() + "/"
        else:
            alias = DERIVED.parent.as_uri() + "/"
        repo = work / "repo"
        for name, deps in ENVIRONMENTS.items():
            (repo / name).mkdir(parents=True)
            (repo / name / "environment.yml").write_text(spec_text(name, deps))
        specs = sorted(str(p) for p in repo.glob("*/environment.yml"))

        def run(cmd: list[str], ok: tuple[int, ...] = (0,)) -> float:
            start = time.perf_counter()
            done = subprocess.run(cmd, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)
            elapsed = time.perf_counter() - start
            if done.returncode not in ok:
                sys.exit(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-2000:]}")
            return elapsed

        ci = [envyard, "ci", *specs, "--channel-alias", alias, "-j", "2", "--json"]

        def lock(spec: str, out: Path) -> list[str]:
            return [envyard, "lock", spec, "-p", "linux-64", "--channel-alias", alias, "-o", str(out), "--json"]

        run(ci)  # every lock made once (and the package cache warm)
        run([*ci, "--check"])  # all fresh now
        one = specs[0]
        scratch = iter(range(10_000))
        t_lock_one = statistics.median(run(lock(one, work / f"lock-{next(scratch)}")) for _ in range(args.repeat))
        t_fresh = statistics.median(run(ci) for _ in range(args.repeat))
        t_start = statistics.median(run([envyard, "--version"]) for _ in range(args.repeat))
        ratio = (t_fresh - t_start) / (t_lock_one - t_start)
        print(f"nothing changed: envyard ci over {len(specs)} specs {t_fresh:6.2f} s   "
              f"envyard lock of one spec {t_lock_one:6.2f} s   process start {t_start:6.2f} s   "
              f"ratio beyond the start {ratio:5.2f}x  (target <= 0.25x)")
        target("ci, nothing changed / lock of one spec (beyond process start)", ratio, 0.25)

        changed = Path(one)
        times = []
        for i in range(args.repeat):
            changed.write_text(spec_text("base", ENVIRONMENTS["base"], f"  - numpy >=1.{i}\n"))  # a new spec hash
            times.append(run(ci))
        t_one_changed = statistics.median(times)
        t_lock_changed = statistics.median(run(lock(one, work / f"lock-{next(scratch)}")) for _ in range(args.repeat))
        print(f"one spec changed: envyard ci {t_one_changed:6.2f} s   envyard lock of that spec {t_lock_changed:6.2f} s"
              f"   ratio {t_one_changed / t_lock_changed:5.2f}x  (target <= 1.30x)")
        target("ci, one of ten changed / lock of that spec", t_one_changed / t_lock_changed, 1.30)

        times, sequential = [], []
        for i in range(args.repeat):
            for name, deps in ENVIRONMENTS.items():
                (repo / name / "environment.yml").write_text(spec_text(name, deps, f"  - python >=3.{i}\n"))
            times.append(run(ci))
            start = time.perf_counter()
            for spec in specs:
                run(lock(spec, work / f"lock-{next(scratch)}"))
            sequential.append(time.perf_counter() - start)
        t_all, t_seq = statistics.median(times), statistics.median(sequential)
        print(f"all ten changed: envyard ci -j 2 {t_all:6.2f} s   ten envyard lock processes {t_seq:6.2f} s"
              f"   ratio {t_all / t_seq:5.2f}x  (target <= 0.80x)")
        target("ci, all ten changed / ten lock processes", t_all / t_seq, 0.80)


if __name__ == "__main__":
    main()
