"""Dagster resources: the two databases and the migration settings.

Configuration comes from the seed system's environment variables through ``EnvVar`` (see
definitions.py), so secrets are resolved at run time and never stored in the definitions, the UI
or run configuration: the password field is an ``EnvVar`` and :meth:`PostgresResource.__repr__`
only names host, port, database and user.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Optional

import psycopg
from dagster import ConfigurableResource
from pydantic import Field

from .config import DbSettings
from .redaction import first_line
from .settings import SETTINGS, Settings
from .connections import connect
from .engine.options import LoadOptions
from .engine.stream import LegacyStream
from .registry import Entity


BY_ENV = {s.env: s for s in SETTINGS}


class PostgresResource(ConfigurableResource):
    """A PostgreSQL database, given as a URL/conninfo or as discrete fields (fields win)."""

    url: Optional[str] = Field(default=None, description="libpq URL or conninfo string (SOURCE_DB_URL / TARGET_DB_URL)")
    host: Optional[str] = Field(default=None, description="Server host (…_DB_HOST)")
    port: Optional[int] = Field(default=None, description="Server port (…_DB_PORT)")
    database: Optional[str] = Field(default=None, description="Database name (…_DB_NAME)")
    user: Optional[str] = Field(default=None, description="User (…_DB_USER)")
    password: Optional[str] = Field(default=None, description="Password (…_DB_PASSWORD); never logged", repr=False)
    sslmode: Optional[str] = Field(default=None, description="sslmode when the URL sets none (TARGET_ENV=remote: "
                                                             "require)")

    def settings(self) -> DbSettings:
        return DbSettings(url=self.url, host=self.host, port=self.port, dbname=self.database, user=self.user,
                          password=self.password, sslmode=self.sslmode)

    def conninfo(self) -> str:
        return self.settings().conninfo()

    def describe(self) -> str:
        return self.settings().describe()

    def connect(self, **kwargs) -> psycopg.Connection:
        try:
            return connect(self.conninfo(), **kwargs)
        except psycopg.OperationalError as exc:
            # libpq messages can echo the conninfo; say where without the secret
            raise psycopg.OperationalError(f"cannot connect to {self.describe()}: {first_line(exc)}") from None

    def __repr__(self) -> str:
        return f"PostgresResource({self.describe()})"

    __str__ = __repr__


def _spec(env: str) -> dict:
    """Default and description of a setting's resource field, from its one definition."""
    setting = BY_ENV[env]
    default = str(setting.default) if setting.kind == "path" else (
        list(setting.default) if setting.kind == "tables" else setting.default)
    return {"default": default, "description": f"{env}: {setting.effect} (allowed: {setting.allowed()})"}


class MigrationSettings(ConfigurableResource):
    """The migration settings (settings.py defines each one once; the definitions pass the values
    read at start, so a run's configuration shows what it ran with)."""

    batch_size: int = Field(ge=1, **_spec("BATCH_SIZE"))
    max_retry_attempts: int = Field(ge=0, **_spec("MAX_RETRY_ATTEMPTS"))
    migration_timeout_ms: int = Field(ge=1, **_spec("MIGRATION_TIMEOUT"))
    error_recovery: bool = Field(**_spec("ERROR_RECOVERY_ENABLED"))
    target_env: str = Field(**_spec("TARGET_ENV"))
    fast_path: bool = Field(**_spec("MIGRATION_FAST_PATH"))
    mode: str = Field(**_spec("MIGRATION_MODE"))
    delete_policy: str = Field(**_spec("DELETE_POLICY"))
    overlap_s: int = Field(ge=0, **_spec("DIFFERENTIAL_OVERLAP_SECONDS"))
    asset_checks: bool = Field(**_spec("MIGRATION_ASSET_CHECKS"))
    sample_above: int = Field(**_spec("CONTENT_CHECKSUM_SAMPLE_ABOVE"))
    sample_every: int = Field(ge=1, **_spec("CONTENT_CHECKSUM_SAMPLE_EVERY"))
    uuid_every: int = Field(ge=1, **_spec("UUID_CHECK_EVERY"))
    reports_dir: str = Field(**_spec("MIGRATION_REPORTS_DIR"))
    executor: str = Field(**_spec("MIGRATION_EXECUTOR"))
    max_concurrent: int = Field(ge=1, **_spec("MIGRATION_MAX_CONCURRENT"))
    slice_rows: int = Field(ge=0, **_spec("MIGRATION_SLICE_ROWS"))
    text_encoding: str = Field(**_spec("LEGACY_TEXT_ENCODING"))
    legacy_timezone: str = Field(**_spec("LEGACY_TIMEZONE"))
    sliced_tables: list[str] = Field(**_spec("MIGRATION_SLICED_TABLES"))

    @classmethod
    def from_settings(cls, s: Settings) -> "MigrationSettings":
        def plain(v):
            return str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v

        return cls(**{f.name: plain(getattr(s, f.name)) for f in fields(s)})

    def load_options(self, run_id: str, mode: str | None = None) -> LoadOptions:
        return LoadOptions(batch_size=self.batch_size, fast_path=self.fast_path, error_recovery=self.error_recovery,
                           run_id=run_id, mode=mode or self.mode, delete_policy=self.delete_policy,
                           overlap_s=self.overlap_s, text_encoding=self.text_encoding,
                           legacy_timezone=self.legacy_timezone)


class LegacyDatabase(PostgresResource):
    """The legacy (source) database; opens the per-table record-batch streams."""

    def stream(self, e: Entity, options: LoadOptions) -> LegacyStream:
        return LegacyStream(self.conninfo(), e, options)
