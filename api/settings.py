"""The service's settings: builder's :class:`~builder.settings.Settings` plus what the server and workers need.

One object per process, read from ``ENVYARD_*`` variables (and command-line options on top).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from builder.settings import Settings


class ServiceSettings(Settings):
    """Settings of ``envyard serve`` and ``envyard worker``."""

    data_dir: Path = Field(default=Path("envyard-data"), description="Database, artifacts and admin token.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/envyard.db (WAL)."
    )
    storage_url: str | None = Field(
        default=None, description="Artifact store: file:///path or s3://bucket/prefix; default <data_dir>/artifacts."
    )
    s3_access_key: str | None = Field(default=None, description="Access key for an s3:// artifact store.")
    s3_secret_key: str | None = Field(default=None, description="Secret key for an s3:// artifact store.")
    lease_seconds: float = Field(
        default=30.0, description="How long a claimed build stays a worker's without a heartbeat."
    )
    heartbeat_seconds: float = Field(default=2.0, description="How often workers heartbeat (and learn of cancels).")
    build_time_limit_seconds: float = Field(default=3600.0, description="Running builds past this are failed.")
    max_attempts: int = Field(default=3, description="Times a build is tried before a lost lease fails it.")
    retry_backoff_seconds: float = Field(default=2.0, description="First requeue delay; doubles each attempt.")
    api_url: str | None = Field(default=None, description="The server the CLI and workers talk to.")
    token: str | None = Field(default=None, description="API token for the CLI and workers (ENVYARD_TOKEN).")
    secret_key: str | None = Field(
        default=None, description="Signs registry tokens and encrypts registry credentials; default "
        "<data_dir>/secret-key (created once). Every replica of one deployment needs the same key.",
    )

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
