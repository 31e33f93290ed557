"""Lock a small spec against local channels, for install, pack and image tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from envyard.builder.model import EnvironmentLock


def lock_spec(
    out_dir: Path,
    channel_root: Path,
    channel: str,
    dependencies: Sequence[str],
    platforms: Sequence[str] = ("linux-64",),
) -> tuple[EnvironmentLock, Path]:
    """Write an environment.yml for ``dependencies`` from ``channel`` (under ``channel_root``); lock it in ``out_dir``.

    Returns the lock and the path of the written conda-lock.yml.
    """
    from envyard.builder.channels import ChannelOptions
    from envyard.builder.lock import LockOptions
    from envyard.builder.pipeline import lock_to_directory

    out_dir.mkdir(parents=True, exist_ok=True)
    spec = out_dir / "environment.yml"
    deps = "".join(f"  - {d}\n" for d in dependencies)
    spec.write_text(f"name: {out_dir.name}\nchannels:\n  - {channel}\ndependencies:\n{deps}")
    channels = ChannelOptions(channel_alias=channel_root.as_uri() + "/")
    options = LockOptions(platforms=tuple(platforms), channels=channels)
    result = lock_to_directory(spec, out_dir, options, cache_dir=out_dir / ".cache")
    return result.lock, out_dir / "conda-lock.yml"
