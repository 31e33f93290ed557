"""Build real source distributions whose in-tree PEP 517 backend runs given code, for tests of sdist builds.

The sdist has no PKG-INFO, so a resolver must run the backend to learn its metadata. The backend needs nothing
from an index (``requires = []``, ``backend-path = ["."]``) and makes a valid pure wheel.

>>> import tarfile, tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     path = build_sdist(d, "demo-pkg", "1.0", hook="pass")
...     names = sorted(tarfile.open(path).getnames())
>>> path.name, names
('demo_pkg-1.0.tar.gz', ['demo_pkg-1.0/backend.py', 'demo_pkg-1.0/pyproject.toml'])
"""

from __future__ import annotations

import io
import tarfile
import textwrap
from os import PathLike
from pathlib import Path

from tests.wheelhouse import dist_name

_BACKEND = '''
import base64, hashlib, os, zipfile

DIST, NAME, VERSION = {dist!r}, {name!r}, {version!r}


def _hook():
{hook}


def _metadata():
    return f"Metadata-Version: 2.1\\nName: {{NAME}}\\nVersion: {{VERSION}}\\n"


def get_requires_for_build_wheel(config_settings=None):
    _hook()
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    _hook()
    info = os.path.join(metadata_directory, f"{{DIST}}-{{VERSION}}.dist-info")
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w") as fh:
        fh.write(_metadata())
    return os.path.basename(info)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _hook()
    info = f"{{DIST}}-{{VERSION}}.dist-info"
    files = {{f"{{DIST}}/__init__.py": "", f"{{info}}/METADATA": _metadata(),
             f"{{info}}/WHEEL": "Wheel-Version: 1.0\\nGenerator: t\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}}
    record = []
    for arc, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{{arc}},sha256={{digest}},{{len(text.encode())}}")
    files[f"{{info}}/RECORD"] = "\\n".join([*record, f"{{info}}/RECORD,,"]) + "\\n"
    name = f"{{DIST}}-{{VERSION}}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as zf:
        for arc, text in files.items():
            zf.writestr(arc, text)
    return name


def build_sdist(sdist_directory, config_settings=None):
    raise NotImplementedError
'''

_PYPROJECT = '''[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]
'''


def build_sdist(directory: str | PathLike[str], name: str, version: str, *, hook: str) -> Path:
    """Write ``{dist}-{version}.tar.gz`` into *directory*; its backend runs *hook* (Python statements) in every
    hook that builds metadata or a wheel."""
    dist = dist_name(name)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    backend = _BACKEND.format(dist=dist, name=name, version=version, hook=textwrap.indent(hook.strip(), "    "))
    path = directory / f"{dist}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for arcname, text in (("pyproject.toml", _PYPROJECT), ("backend.py", backend)):
            data = text.encode()
            info = tarfile.TarInfo(f"{dist}-{version}/{arcname}")
            info.size, info.mtime, info.mode = len(data), 1_577_836_800, 0o644
            tar.addfile(info, io.BytesIO(data))
    return path
