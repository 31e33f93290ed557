"""``envyard channel build``: a local channel from recipe files."""

from __future__ import annotations

import sys
from pathlib import Path

import click

__all__ = ["channel_group"]


@click.group("channel")
def channel_group() -> None:
    """Local channels."""


@channel_group.command("build")
@click.argument("recipes", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path))
def channel_build(recipes: tuple[Path, ...], out_dir: Path) -> None:
    """Assemble packages from recipe files (see specs/recipes) into an indexed channel at OUTPUT."""
    from envyard.builder.localchannel import build_channel

    built = build_channel(recipes, out_dir)
    click.echo(f"built {len(built)} packages into {out_dir}", file=sys.stdout)
