"""The ``envyard`` command."""

from __future__ import annotations

from envyard.api.cli import cli, main

__all__ = ["cli", "main"]
