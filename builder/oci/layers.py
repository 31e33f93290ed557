"""Layer planning: which installed files go into which image layer.

Each conda package is a *unit*: its files plus its ``conda-meta`` record. Units
are placed by rules that look at the package alone, so the same package gives
the same layer blob in every environment and registries share it:

* a unit of ``single_threshold`` bytes or more gets a layer of its own
  (largest first, while the budget lasts);
* smaller units go to one of ``buckets`` layers chosen by a hash of the package
  *name*, so a new version of a leaf package changes one bucket layer only;
* the last layer holds what belongs to the environment rather than to a package:
  ``conda-meta/history``, pip-installed files, the entrypoint.

The budget (``max_layers``, default 50; containerd accepts 127 with the base
image's) bounds the total: when more packages are large than the budget allows,
the smallest of them fall back to their bucket.

>>> units = [PackageUnit("python", "python-3.12.0-h0_0", ("bin/python",), 30_000_000),
...          PackageUnit("tzdata", "tzdata-2024a-h0_0", ("share/zoneinfo/UTC",), 400_000)]
>>> plan = plan_layers(units, ["conda-meta/history"], LayerBudget(max_layers=10, buckets=2))
>>> [layer.name for layer in plan]
['python-3.12.0-h0_0', 'bucket-0-of-2', 'environment']
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from envyard.builder.tarstream import tree_entries


@dataclass(frozen=True, slots=True)
class PackageUnit:
    """One installed conda package: its record stem and its files (relative to the prefix)."""

    name: str
    stem: str
    files: tuple[str, ...]
    size: int
    record_sha256: str = ""


@dataclass(frozen=True, slots=True)
class LayerBudget:
    max_layers: int = 50
    buckets: int = 8
    single_threshold: int = 1 << 20

    def __post_init__(self) -> None:
        if self.max_layers < 2:
            raise ValueError("max_layers must be at least 2 (packages and the environment layer)")


@dataclass(frozen=True, slots=True)
class PlannedLayer:
    """Files of one layer and the package units it holds (empty for the environment layer)."""

    name: str
    files: tuple[str, ...]
    units: tuple[PackageUnit, ...]

    def cache_key(self, settings: str) -> str | None:
        """A key for reusing this layer's blob: the records it holds plus the image settings; None if uncacheable."""
        if not self.units:
            return None
        digest = hashlib.sha256(settings.encode())
        for unit in self.units:
            digest.update(f"\0{unit.stem}\0{unit.record_sha256}".encode())
        return digest.hexdigest()


def bucket_of(name: str, buckets: int) -> int:
    """The bucket of a package name: stable across environments and versions.

    >>> bucket_of("numpy", 8) == bucket_of("numpy", 8)
    True
    """
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % buckets


def read_units(prefix: Path) -> tuple[list[PackageUnit], list[str]]:
    """The package units of an installed prefix and the files no package owns."""
    units = []
    owned: set[str] = set()
    for record_file in sorted((prefix / "conda-meta").glob("*.json")):
        data = record_file.read_bytes()
        record = json.loads(data)
        files = tuple(sorted(set(record.get("files", [])) | {f"conda-meta/{record_file.name}"}))
        size = sum(_lsize(prefix / f) for f in files)
        units.append(PackageUnit(record["name"], record_file.stem, files, size, hashlib.sha256(data).hexdigest()))
        owned.update(files)
    unowned = [rel for rel in tree_entries(prefix) if rel not in owned]
    return units, sorted(unowned)


def _lsize(path: Path) -> int:
    try:
        return path.lstat().st_size
    except FileNotFoundError:  # recorded but removed (clobbered); nothing to pack
        return 0


def plan_layers(units: Sequence[PackageUnit], unowned: Sequence[str], budget: LayerBudget) -> list[PlannedLayer]:
    """Assign every unit to a layer (see the module docs); the environment layer comes last."""
    buckets = max(1, min(budget.buckets, budget.max_layers - 1))
    single_slots = max(0, budget.max_layers - 1 - buckets)
    large = sorted((u for u in units if u.size >= budget.single_threshold), key=lambda u: (-u.size, u.stem))
    singles = {u.stem for u in large[:single_slots]}
    layers = [PlannedLayer(u.stem, u.files, (u,)) for u in sorted(units, key=lambda u: u.stem) if u.stem in singles]
    grouped: dict[int, list[PackageUnit]] = {}
    for unit in units:
        if unit.stem not in singles:
            grouped.setdefault(bucket_of(unit.name, buckets), []).append(unit)
    for index in sorted(grouped):
        members = tuple(sorted(grouped[index], key=lambda u: u.stem))
        files = tuple(sorted({f for u in members for f in u.files}))
        layers.append(PlannedLayer(f"bucket-{index}-of-{buckets}", files, members))
    layers.append(PlannedLayer("environment", tuple(unowned), ()))
    return layers
