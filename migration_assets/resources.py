"""Dagster resources: the two databases and the migration settings.

Configuration comes from the seed system's environment variables through ``EnvVar`` (see
definitions.py), so secrets are resolved at run time and never stored in the definitions, the UI
or run configuration: the password field is an ``EnvVar`` and :meth:`PostgresResource.__repr__`
only names host, port, database and user.
"""

from __future__ import annotations

from typing import Optional

import psycopg
from dagster import ConfigurableResource
from pydantic import Field

from .config import DbSettings
from .connections import connect
from .engine import DEFAULT_BATCH_SIZE, LegacyStream, LoadOptions
from .registry import Entity


class PostgresResource(ConfigurableResource):
    """A PostgreSQL database, given as a URL/conninfo or as discrete fields (fields win)."""

    url: Optional[str] = Field(default=None, description="libpq URL or conninfo string (SOURCE_DB_URL / TARGET_DB_URL)")
    host: Optional[str] = Field(default=None, description="Server host (…_DB_HOST)")
    port: Optional[int] = Field(default=None, description="Server port (…_DB_PORT)")
    database: Optional[str] = Field(default=None, description="Database name (…_DB_NAME)")
    user: Optional[str] = Field(default=None, description="User (…_DB_USER)")
    password: Optional[str] = Field(default=None, description="Password (…_DB_PASSWORD); never logged", repr=False)

    def settings(self) -> DbSettings:
        return DbSettings(url=self.url, host=self.host, port=self.port, dbname=self.database, user=self.user,
                          password=self.password)

    def conninfo(self) -> str:
        return self.settings().conninfo()

    def describe(self) -> str:
        return self.settings().describe()

    def connect(self, **kwargs) -> psycopg.Connection:
        try:
            return connect(self.conninfo(), **kwargs)
        except psycopg.OperationalError as exc:
            # libpq messages can echo the conninfo; say where without the secret
            raise psycopg.OperationalError(f"cannot connect to {self.describe()}: {_first_line(exc)}") from None

    def __repr__(self) -> str:
        return f"PostgresResource({self.describe()})"

    __str__ = __repr__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class MigrationSettings(ConfigurableResource):
    """The seed's migration settings."""

    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, description="Rows per Arrow record batch (BATCH_SIZE); bounds memory")
    max_retry_attempts: int = Field(default=3, description="Retries of a failed asset (MAX_RETRY_ATTEMPTS)")
    migration_timeout_ms: int = Field(default=1_800_000, description="Per-asset time limit in ms (MIGRATION_TIMEOUT)")
    error_recovery_enabled: bool = Field(default=True, description="Apply automatic fixes (ERROR_RECOVERY_ENABLED); "
                                                                   "false sends those rows to quarantine")
    fast_path: bool = Field(default=True, description="Bulk-load empty tables and build keys afterwards")
    target_env: str = Field(default="local", description="TARGET_ENV: local or remote")
    mode: str = Field(default="full", description="MIGRATION_MODE: 'full' compares every row (bucket "
                      "summaries), 'differential' reads only rows changed since the watermark; a run's "
                      "'migration/mode' tag overrides it")
    delete_policy: str = Field(default="hard", description="DELETE_POLICY for legacy rows deleted at the source: "
                               "'hard' removes the target row (children follow the fresh-migration rules), "
                               "'soft' keeps it and records metadata.deleted_at_source")
    differential_overlap_s: int = Field(default=300, description="DIFFERENTIAL_OVERLAP_SECONDS: how far before the "
                                        "watermark a differential refresh re-reads (clock skew, late commits)")

    def load_options(self, run_id: str, mode: str | None = None) -> LoadOptions:
        return LoadOptions(batch_size=self.batch_size, fast_path=self.fast_path,
                           error_recovery=self.error_recovery_enabled, run_id=run_id, mode=mode or self.mode,
                           delete_policy=self.delete_policy, overlap_s=self.differential_overlap_s)


class LegacyDatabase(PostgresResource):
    """The legacy (source) database; opens the per-table record-batch streams."""

    def stream(self, e: Entity, options: LoadOptions) -> LegacyStream:
        return LegacyStream(self.conninfo(), e, options)
