"""A build worker's settings: builder's :class:`~envyard.builder.settings.Settings` plus what a worker needs.

``envyard worker`` reads them from ``ENVYARD_*`` variables; the server's settings
(``ServiceSettings``, in the API's package) extend them, so in-process workers take the server's.
The data directory, database and artifact store are named here only so that the build sandbox can hide them
(:func:`envyard.worker.sandbox.sandbox_for`): a worker never opens them.

>>> WorkerSettings(data_dir=Path("/srv/envyard"), _env_file=None).admin_token_file
PosixPath('/srv/envyard/admin-token')
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from envyard.builder.settings import Settings

__all__ = ["WorkerSettings"]


class WorkerSettings(Settings):
    """Settings of ``envyard worker`` (and, through the API's ``ServiceSettings``, of
    ``envyard serve``)."""

    data_dir: Path = Field(default=Path("envyard-data"), description="Database, artifacts and admin token.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/envyard.db (WAL)."
    )
    storage_url: str | None = Field(
        default=None, description="Artifact store: file:///path or s3://bucket/prefix; default <data_dir>/artifacts."
    )
    api_url: str | None = Field(default=None, description="The server the CLI and workers talk to.")
    token: str | None = Field(default=None, description="API token for the CLI and workers (ENVYARD_TOKEN).")

    work_root: Path | None = Field(
        default=None, description="Where workers build (one directory per build attempt, removed after it, swept "
        "at start); default <cache_dir>/work. Keep it outside the data directory: builds may read it.",
    )
    build_sandbox: Literal["bwrap", "uid", "none"] | None = Field(
        default=None, description="How build processes are isolated from the server's files: 'bwrap' (a "
        "bubblewrap sandbox that sees only the build's directory, the caches and the Python installation), "
        "'uid' (run as build_uid; the worker must be root) or 'none'; default bwrap when it works, else uid when "
        "the worker runs as root, else none. The network is shared (builds fetch their channels and indexes).",
    )
    build_uid: int = Field(default=65534, ge=1, description="The user (and group) builds run as in 'uid' mode.")
    build_read_only_paths: list[Path] = Field(
        default_factory=list, description="More paths a sandboxed build may read (JSON list), e.g. a local "
        "channel's directory; file:// channel aliases, mirrors and pip indexes of the settings are added.",
    )
    test_stage_delay: str | None = Field(
        default=None, description="test-only: hold builds in a stage, e.g. 'solving=30,pushing=5' (stage=seconds; "
        "the build's processes are stopped meanwhile), so that tests can cancel or collect during a stage. "
        "Never set it in production.",
    )

    @property
    def resolved_work_root(self) -> Path:
        return (self.work_root or self.cache_dir / "work").absolute()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'envyard.db').absolute()}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or (self.data_dir / "artifacts").absolute().as_uri()

    @property
    def admin_token_file(self) -> Path:
        return self.data_dir / "admin-token"

    @property
    def secret_key_file(self) -> Path:
        return self.data_dir / "secret-key"
