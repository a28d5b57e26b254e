"""The code location: the table assets (one per registry entity), the reports asset, their
resources, the IO manager, jobs, sensors, the schedule and the executor.

Nothing happens on import. Dagster calls :func:`defs` (``@definitions``) when it loads the code
location; that call reads the settings once (settings.load: a bad value stops the load, named),
bounds the process's native memory (engine.memory) and binds the databases. Databases: the
seed's variables (SOURCE_DB_URL or SOURCE_DB_HOST/PORT/NAME/USER/PASSWORD, same for TARGET_DB_*)
are bound with ``EnvVar``, so their values are read at run time and never shown in the UI.
Without them, config.resolve_databases() picks MIGRATION_PG_URL or starts the embedded server
(``migration-assets setup`` writes a .env file that ``dagster dev`` loads, so normally the
variables are set).

Executor: MIGRATION_EXECUTOR (executors.py), in-process by default. A migration step is one
streaming COPY; the multiprocess executor's process start and import per step would dwarf the
loads of the 40 small tables (BENCHMARKS.md) and, on a small machine, steal CPU from the two
database servers that do the real work. The connection budget of one step at a time: the load's
target connection, the stream's source connection and its Arrow reader (two idle readers are kept
between loads), the checks' source and target connections (all kept open between steps:
connections.py), plus one short audit connection on failure: at most 7, under the seed's 10; each
concurrent step of another executor adds its own.
"""

from __future__ import annotations

import os

import dagster as dg
from dagster import Definitions, EnvVar

from . import settings
from .assets import IO_MANAGER_KEY, build_table_assets, migration_reports, target_cutover, target_keys
from .lineage import legacy_specs
from .config import DbSettings, resolve_databases
from .engine.memory import bound_native_memory
from .executors import build_executor
from .io_manager import PostgresArrowIOManager
from .jobs import asset_checks, cutover as cutover_job, differential_refresh, dry_run, full_migration
from .resources import LegacyDatabase, MigrationSettings, PostgresResource
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


def build_resources(s: settings.Settings | None = None) -> dict:
    """The resources, from the settings (read here when not given).

    Databases are bound by name (``EnvVar``): where none is configured, the databases that
    config.resolve_databases() picks go into this process's environment first, so a resolved
    connection string (with its password) is never a resource's config value, which Dagster
    keeps in every run's snapshot."""
    s = s or settings.load()
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


def table_assets(s: settings.Settings | None = None) -> list:
    """The table assets, with the settings given (read here when not)."""
    return build_table_assets(s or settings.load())


# The definitions built in this process, by the environment they were built from. Dagster calls
# defs() each time it loads a job from its code pointer: twice per step in a step process of the
# multiprocess executor (the step's plan, then its execution), and building the assets is
# most of a small step's own time. The environment is the whole input (settings.load and the
# database bindings read nothing else), so an unchanged environment gets the same object, as a
# module-level Definitions would; any change builds them again.
_built: dict[tuple, Definitions] = {}


def _environment() -> tuple:
    return tuple(sorted(os.environ.items()))


def build_defs() -> Definitions:
    """The code location's definitions, built once per process and environment (``_built``)."""
    before = _environment()
    if before in _built:
        return _built[before]
    s = settings.load()
    bound_native_memory()
    built = Definitions(
        assets=[*legacy_specs(), *table_assets(s), target_keys, migration_reports, target_cutover],
        jobs=[full_migration, differential_refresh, asset_checks, dry_run, cutover_job],
        sensors=[record_run_failures, legacy_changes],
        schedules=[nightly_full_sync],
        resources=build_resources(s),
        executor=build_executor(s, broker_configured=bool(os.environ.get(settings.BROKER_URL_VARIABLE))),
    )
    _built.clear()
    # build_resources may have put the databases it resolved into the environment: both keys
    _built[before] = _built[_environment()] = built
    return built


@dg.definitions
def defs() -> Definitions:
    return build_defs()
