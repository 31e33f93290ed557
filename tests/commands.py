"""How tests run envyard's commands: as modules of this interpreter (the checkout under test, not a PATH entry)."""

from __future__ import annotations

import sys

__all__ = ["BUILD_CHILD", "ENVYARD"]

#: ``envyard …`` (the console script's module)
ENVYARD: tuple[str, ...] = (sys.executable, "-m", "envyard.cli")
#: the build child a worker starts for each build
BUILD_CHILD: tuple[str, ...] = (sys.executable, "-m", "envyard.worker.job")
