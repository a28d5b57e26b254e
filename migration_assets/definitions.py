"""The code location: 45 table assets, their resources, the IO manager and the executor.

Databases: the seed's variables (SOURCE_DB_URL or SOURCE_DB_HOST/PORT/NAME/USER/PASSWORD, same
for TARGET_DB_*) are bound with ``EnvVar``, so their values are read at run time and never shown
in the UI. Without them, config.resolve_databases() picks MIGRATION_PG_URL or starts the embedded
server (``migration-assets setup`` writes a .env file that ``dagster dev`` loads, so normally the
variables are set).

Executor: in-process. A migration step is one streaming COPY; the multiprocess executor's
~1.8 s process start per step (measured: 168 s for 45 no-op assets + 45 checks, against 15.6 s
in process) would dwarf the loads of the 40 small tables and, on 2 cores, steal CPU from the
two database servers that do the real work. The connection budget follows from one step at a
time: the load's target connection, the stream's source connection and its Arrow reader (two
idle readers are kept between loads), the checks' source and target connections (all kept open
between steps: connections.py), plus one short audit connection on failure: at most 7, under
the seed's 10.
"""

from __future__ import annotations

import os

from dagster import Definitions, EnvVar, in_process_executor

from .assets import IO_MANAGER_KEY, migration_reports, table_assets
from . import settings
from .config import DbSettings, resolve_databases
from .io_manager import PostgresArrowIOManager
from .resources import LegacyDatabase, MigrationSettings, PostgresResource
from .jobs import differential_refresh, full_migration
from .sensors import legacy_changes, nightly_full_sync, record_run_failures


def _db_kwargs(prefix: str) -> dict | None:
    """EnvVar bindings for the variables that are set (URL wins), or None when none are."""
    if os.environ.get(f"{prefix}_URL"):
        return {"url": EnvVar(f"{prefix}_URL")}
    if not os.environ.get(f"{prefix}_HOST"):
        return None
    fields = {"host": "HOST", "database": "NAME", "user": "USER", "password": "PASSWORD"}
    kwargs = {field: EnvVar(f"{prefix}_{var}") for field, var in fields.items() if os.environ.get(f"{prefix}_{var}")}
    if os.environ.get(f"{prefix}_PORT"):
        kwargs["port"] = EnvVar.int(f"{prefix}_PORT")
    return kwargs


def build_resources() -> dict:
    """The resources, from the settings read once (settings.load: a bad value stops here, named).

    Databases are bound by name (``EnvVar``): where none is configured, the databases that
    config.resolve_databases() picks go into this process's environment first, so a resolved
    connection string (with its password) is never a resource's config value, which Dagster
    keeps in every run's snapshot."""
    s = settings.load()
    source, target = _db_kwargs("SOURCE_DB"), _db_kwargs("TARGET_DB")
    if source is None or target is None:
        dbs = resolve_databases()
        if source is None:
            os.environ["SOURCE_DB_URL"] = dbs.source.conninfo()
            source = {"url": EnvVar("SOURCE_DB_URL")}
        if target is None:
            os.environ["TARGET_DB_URL"] = dbs.target.conninfo()
            target = {"url": EnvVar("TARGET_DB_URL")}
    settings.refuse_same_database(lambda: DbSettings.from_env("SOURCE_DB").params(),
                                  lambda: DbSettings.from_env("TARGET_DB").params())
    migration = MigrationSettings.from_settings(s)
    target_db = PostgresResource(**target, sslmode="require" if s.target_env == "remote" else None)
    return {
        "legacy": LegacyDatabase(**source),
        "target": target_db,
        "settings": migration,
        IO_MANAGER_KEY: PostgresArrowIOManager(target=target_db, settings=migration),
    }


defs = Definitions(
    assets=[*table_assets, migration_reports],
    jobs=[full_migration, differential_refresh],
    sensors=[record_run_failures, legacy_changes],
    schedules=[nightly_full_sync],
    resources=build_resources(),
    executor=in_process_executor,
)
