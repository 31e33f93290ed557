"""Build envyard's own container image with envyard: no Dockerfile, no daemon.

1. package this checkout as the conda package ``envyard`` (noarch: python) into a local channel
   (``envyard channel build``, byte-reproducible archives);
2. lock ``environment.yml`` (``envyard lock``; the local channel through ``--channel-alias`` beside conda-forge);
3. ``envyard image`` the lock: files owned by 1000:1000 (the uid the manifests run as), written as an OCI layout
   tagged ``0.1.0`` and, with ``--push``, pushed as ``envyard/envyard:0.1.0`` (deploy/README.md).

Same lock, same packages: same image digest.

    python deploy/image/build.py --out build/image --channel-alias https://conda.anaconda.org/ \\
        --push registry.example.org/envyard/envyard:0.1.0
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PACKAGES = {"builder": "builder", "api": "api", "worker": "worker", "registry": "registry", "cli": "cli"}
IMAGE_NAME = "envyard/envyard"
IMAGE_TAG = "0.1.0"
USER = "1000:1000"
ENTRY = "#!@PREFIX@/bin/python\nimport sys\nfrom envyard.cli import main\nsys.exit(main())\n"


def envyard(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "envyard.cli", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"envyard {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def recipe(version: str = IMAGE_TAG) -> dict[str, object]:
    """The recipe of the ``envyard`` conda package: every file of this checkout's packages (no caches)."""
    files: dict[str, object] = {"python-scripts/envyard": ENTRY}
    for name, folder in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                relative = path.relative_to(REPO / folder).as_posix()
                files[f"site-packages/envyard/{name}/{relative}"] = {"copy": str(path)}
    return {"package": {"name": "envyard", "version": version},
            "build": {"number": 0, "string": "pyh0_0", "noarch": "python"},
            "requirements": {"run": ["python >=3.11"]}, "files": files,
            "about": {"license": "BSD-3-Clause", "summary": "envyard, packaged from its checkout for its own image"}}


def build(out: Path, spec: Path, channel_alias: str, push: str | None = None) -> dict[str, object]:
    """Channel, lock and image under ``out``; the ``envyard image --json`` answer."""
    channels = out / "channels"
    shutil.rmtree(out / "recipes", ignore_errors=True)
    (out / "recipes").mkdir(parents=True)
    (out / "recipes" / "envyard.yaml").write_text(yaml.safe_dump(recipe(), sort_keys=True))
    envyard("channel", "build", str(out / "recipes" / "envyard.yaml"), "-o", str(channels / "envyard-local"))
    text = spec.read_text().replace("  - envyard-local\n", f"  - file://{channels}/envyard-local\n")
    (out / "environment.yml").write_text(text)  # the local channel by URL, conda-forge through the alias
    envyard("lock", str(out / "environment.yml"), "--channel-alias", channel_alias, "-o", str(out / "lock"),
            "-p", "linux-64")
    image = ["image", str(out / "lock" / "conda-lock.yml"), "-p", "linux-64", "--name", "envyard", "--user", USER,
             "--output", f"oci:{out / 'oci'}:{IMAGE_TAG}", "--json"]
    if push:
        image += ["--push", push]
    return dict(json.loads(envyard(*image)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--spec", type=Path, default=HERE / "environment.yml")
    parser.add_argument("--channel-alias", default="https://conda.anaconda.org/",
                        help="where conda-forge is (a mirror's base URL)")
    parser.add_argument("--push", help=f"push the image, e.g. REGISTRY/{IMAGE_NAME}:{IMAGE_TAG}")
    args = parser.parse_args()
    print(json.dumps(build(args.out.absolute(), args.spec, args.channel_alias, args.push), indent=2))


if __name__ == "__main__":
    main()
