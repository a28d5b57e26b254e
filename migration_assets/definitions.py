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
from .config import env_bool, env_int, resolve_databases
from .engine import DEFAULT_BATCH_SIZE
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
    source, target = _db_kwargs("SOURCE_DB"), _db_kwargs("TARGET_DB")
    if source is None or target is None:
        dbs = resolve_databases()
        source = source or {"url": dbs.source.conninfo()}
        target = target or {"url": dbs.target.conninfo()}
    settings = MigrationSettings(
        batch_size=env_int("BATCH_SIZE", DEFAULT_BATCH_SIZE),
        max_retry_attempts=env_int("MAX_RETRY_ATTEMPTS", 3),
        migration_timeout_ms=env_int("MIGRATION_TIMEOUT", 1_800_000),
        error_recovery_enabled=env_bool("ERROR_RECOVERY_ENABLED", True),
        fast_path=env_bool("MIGRATION_FAST_PATH", True),
        target_env=os.environ.get("TARGET_ENV", "local"),
        mode=os.environ.get("MIGRATION_MODE", "full"),
        delete_policy=os.environ.get("DELETE_POLICY", "hard"),
        differential_overlap_s=env_int("DIFFERENTIAL_OVERLAP_SECONDS", 300),
    )
    target_db = PostgresResource(**target)
    return {
        "legacy": LegacyDatabase(**source),
        "target": target_db,
        "settings": settings,
        IO_MANAGER_KEY: PostgresArrowIOManager(target=target_db, settings=settings),
    }


defs = Definitions(
    assets=[*table_assets, migration_reports],
    jobs=[full_migration, differential_refresh],
    sensors=[record_run_failures, legacy_changes],
    schedules=[nightly_full_sync],
    resources=build_resources(),
    executor=in_process_executor,
)
