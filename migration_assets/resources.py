"""Dagster resources: the two databases and the migration settings.

Configuration comes from the seed system's environment variables through ``EnvVar`` (see
definitions.py), so secrets are resolved at run time and never stored in the definitions, the UI
or run configuration: the password field is an ``EnvVar`` and :meth:`PostgresResource.__repr__`
only names host, port, database and user.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Optional

import psycopg
from dagster import ConfigurableResource
from pydantic import Field, create_model, model_validator

from .config import DbSettings
from .redaction import first_line
from .settings import BY_FIELD, SETTINGS, Settings
from .connections import connect
from .engine.accounting import CheckOptions
from .engine.options import LoadOptions
from .engine.stream import LegacyStream
from .registry import Entity




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


class _MigrationSettingsBase(ConfigurableResource):
    """The migration settings: one field per entry of settings.SETTINGS (the definitions pass the
    values read at start, so a run's configuration shows what it ran with). A value given in a
    run's configuration is checked as the environment's are, the setting named in the error."""

    @model_validator(mode="after")
    def _allowed(self):
        problems = [p for s in SETTINGS if (p := s.config_problem(getattr(self, s.field)))]
        if problems:
            raise ValueError("invalid settings: " + "; ".join(problems))
        return self

    @classmethod
    def from_settings(cls, values: Settings) -> "MigrationSettings":
        return cls(**{s.field: s.to_config(getattr(values, s.field)) for s in SETTINGS})

    def load_options(self, run_id: str, mode: str | None = None, incremental: bool = True) -> LoadOptions:
        engine = {s.field: getattr(self, s.field) for s in SETTINGS if s.engine}
        return LoadOptions(**{**engine, "mode": mode or self.mode}, run_id=run_id, incremental=incremental)

    def check_options(self, run_id: str) -> CheckOptions:
        """The checks' options: the settings CheckOptions names, MIGRATION_TIMEOUT, the run's load options."""
        named = {f.name: BY_FIELD[f.name].from_config(getattr(self, f.name))
                 for f in fields(CheckOptions) if f.name in BY_FIELD}
        return CheckOptions(**named, timeout_ms=self.migration_timeout_ms, load=self.load_options(run_id))


MigrationSettings = create_model(
    "MigrationSettings", __base__=_MigrationSettingsBase, __module__=__name__,
    **{s.field: (s.config_type, Field(default=s.to_config(s.default), ge=s.minimum, le=s.maximum,
                       description=f"{s.env}: {s.effect} (allowed: {s.allowed()})"))
       for s in SETTINGS})


class LegacyDatabase(PostgresResource):
    """The legacy (source) database; opens the per-table record-batch streams."""

    def stream(self, e: Entity, options: LoadOptions) -> LegacyStream:
        return LegacyStream(self.conninfo(), e, options)
