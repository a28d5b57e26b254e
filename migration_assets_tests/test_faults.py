"""Real faults on real PostgreSQL: the loading connection killed mid-COPY, an unreachable target, a
permanent failure of a CRITICAL entity, a schema mismatch, MIGRATION_TIMEOUT."""

import threading
import time

import psycopg
import pytest
from psycopg import sql
from dagster import AssetKey, DagsterEventType, DagsterInstance, materialize

from .conftest import query, table_locked


def _kill_when_copying(admin: str, target_db: str, table: str, stop: threading.Event, killed: list,
                       pattern: str = 'COPY %"{table}"%FROM STDIN%', after_ms: int = 150) -> None:
    """Terminate the backend whose query matches ``pattern`` once it has been at it for a moment."""
    with psycopg.connect(admin, autocommit=True) as conn:
        while not stop.is_set():
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
                "AND query LIKE %s AND now() - query_start > make_interval(secs => %s / 1000.0)",
                [target_db, pattern.format(table=table), after_ms]).fetchall()
            if rows:
                conn.execute("SELECT pg_terminate_backend(%s)", [rows[0][0]])
                killed.append(rows[0][0])
                return
            time.sleep(0.005)


def _kill_one_copy_during_a_full_run(admin, databases, target, monkeypatch, *, legacy_name: str, seed: int,
                                     side: str, table: str, pattern: str, after_ms: int):
    """Materialize all 45 assets from a fresh legacy database while a thread terminates the first
    backend (on the ``side`` database, "legacy" or "target") whose query matches ``pattern``."""
    from migration_assets.definitions import build_resources, table_assets
    from migration_assets.simulator import generate

    legacy = databases.new(legacy_name)
    generate(legacy, scale=0.03, seed=seed, log=lambda *_: None)
    monkeypatch.setenv("SOURCE_DB_URL", legacy)
    monkeypatch.setenv("TARGET_DB_URL", target)
    monkeypatch.setenv("BATCH_SIZE", "300")  # many batches: the COPY is long enough to be caught
    db = psycopg.conninfo.conninfo_to_dict(legacy if side == "legacy" else target)["dbname"]
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_when_copying, args=(admin, db, table, stop, killed, pattern, after_ms))
    killer.start()
    try:
        result = materialize(table_assets(), resources=build_resources(), instance=DagsterInstance.ephemeral(),
                             raise_on_error=False)
    finally:
        stop.set()
        killer.join()
    assert killed, f"the {side} COPY of {table} was never caught in flight"
    return legacy, result


def _assert_retried_once_and_every_row_landed_once(legacy, target, result, entity_name: str, legacy_table: str):
    assert result.success
    retried = [ev for ev in result.all_events
               if ev.event_type == DagsterEventType.STEP_UP_FOR_RETRY and ev.step_key == entity_name]
    assert len(retried) == 1
    audit = query(target, "SELECT status, error_class FROM migration_control.migration_runs "
                          "WHERE entity = %s ORDER BY id", [entity_name])
    assert audit == [("FAILED", "CONNECTION"), ("COMPLETED", None)]
    (legacy_n,) = query(legacy, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(legacy_table)))[0]
    loaded, distinct = query(target, sql.SQL("SELECT count(*), count(DISTINCT (metadata->>'legacy_id')) FROM {}")
                             .format(sql.Identifier("public", entity_name)))[0]
    (quarantined,) = query(target, "SELECT count(*) FROM migration_control.quarantine "
                                   "WHERE entity = %s AND NOT resolved", [entity_name])[0]
    assert loaded == distinct
    assert loaded + quarantined == legacy_n


def test_legacy_connection_killed_mid_read_is_retried_and_rows_land_exactly_once(
        admin, databases, target, monkeypatch):
    """The source side: the reader's binary COPY out of the legacy table is terminated."""
    # pg_stat_activity keeps the first 1 kB of a query: the reader's COPY is known by its first column
    legacy, result = _kill_one_copy_during_a_full_run(
        admin, databases, target, monkeypatch, legacy_name="legacy_read_fault", seed=5, side="legacy",
        table="sys_msg_log", pattern='COPY (SELECT l."user_id" AS "recipient_id"%', after_ms=20)
    _assert_retried_once_and_every_row_landed_once(legacy, target, result, "system_messages", "sys_msg_log")


def test_connection_killed_mid_copy_is_retried_and_rows_land_exactly_once(
        admin, databases, target, monkeypatch):
    """The target side: the load's COPY into the target table is terminated."""
    legacy, result = _kill_one_copy_during_a_full_run(
        admin, databases, target, monkeypatch, legacy_name="legacy_fault", seed=3, side="target",
        table="tasks", pattern='COPY %"{table}"%FROM STDIN%', after_ms=150)
    _assert_retried_once_and_every_row_landed_once(legacy, target, result, "tasks", "wf_task")


def test_run_failure_sensor_records_the_failed_run(monkeypatch, legacy, target):
    from dagster import build_run_status_sensor_context

    from migration_assets.definitions import build_resources, table_assets
    from migration_assets.sensors import record_run_failures

    monkeypatch.setenv("SOURCE_DB_URL", legacy)
    monkeypatch.setenv("TARGET_DB_URL", "host=127.0.0.1 port=1 dbname=nowhere user=x connect_timeout=2")
    monkeypatch.setenv("MAX_RETRY_ATTEMPTS", "0")
    instance = DagsterInstance.ephemeral()
    offices = [a for a in table_assets() if a.key.path[-1] == "offices"]
    result = materialize(offices, resources=build_resources(), instance=instance, raise_on_error=False)
    assert not result.success
    failure = [ev for ev in result.all_events if ev.event_type == DagsterEventType.RUN_FAILURE][0]
    monkeypatch.setenv("TARGET_DB_URL", target)
    context = build_run_status_sensor_context(
        sensor_name="record_run_failures", dagster_instance=instance, dagster_run=result.dagster_run,
        dagster_event=failure, resources={"target": build_resources()["target"]}).for_run_failure()
    record_run_failures(context)
    rows = query(target, "SELECT entity, status, error_class, recovery FROM migration_control.migration_runs "
                         "WHERE run_id = %s", [result.run_id])
    # the kind the failed step decided (failures.as_failure keeps it in the failure's metadata),
    # not a guess from the run failure's text, which names the failed steps only
    assert rows == [("(run)", "FAILED", "UNREACHABLE",
                     "check the database's address, credentials and that it is running; then re-run")]


def _job_run(job_name: str = "full_migration", selection=None):
    from dagster import Definitions, in_process_executor

    from migration_assets.definitions import build_resources, table_assets
    from migration_assets.jobs import differential_refresh, full_migration

    defs = Definitions(assets=table_assets(), jobs=[full_migration, differential_refresh],
                       resources=build_resources(), executor=in_process_executor)
    job = defs.resolve_job_def(job_name)
    return job.execute_in_process(instance=DagsterInstance.ephemeral(), raise_on_error=False,
                                  asset_selection=selection)


def _descendants(name: str) -> set[str]:
    from migration_assets.registry import children

    out = set()
    for c in children(name):
        out |= {c.name} | _descendants(c.name)
    return out


def test_failed_critical_entity_stops_its_dependents_and_is_recorded_once(monkeypatch, legacy, target):
    from migration_assets.registry import ENTITIES, entity

    assert entity("offices").priority == "CRITICAL"
    monkeypatch.setenv("SOURCE_DB_URL", legacy)
    monkeypatch.setenv("TARGET_DB_URL", target)
    monkeypatch.setenv("MAX_RETRY_ATTEMPTS", "0")
    with psycopg.connect(target) as conn:  # a permanent fault: no row of offices can be written
        conn.execute("ALTER TABLE public.offices ADD CONSTRAINT refuse_all CHECK (false) NOT VALID")
    result = _job_run()
    assert not result.success
    materialized = {ev.asset_key.path[-1] for ev in result.all_events if ev.event_type == DagsterEventType.ASSET_MATERIALIZATION}
    blocked = _descendants("offices")
    assert blocked and not (blocked & materialized)
    assert materialized == {e.name for e in ENTITIES} - blocked - {"offices"}
    rows = query(target, "SELECT entity, error_class, recovery FROM migration_control.migration_runs "
                         "WHERE run_id = %s AND status = 'FAILED'", [result.run_id])
    assert len(rows) == 1 and rows[0][0] == "offices" and rows[0][2]  # the IO manager's row; the hook adds none


@pytest.mark.parametrize("started_by", ["job", "ui"])
def test_preflight_failure_is_classified_and_recorded_by_the_recovery_hook(started_by, monkeypatch, databases,
                                                                          target):
    """In a job and in an ad-hoc materialization (what the UI's "Materialize" starts: no job of
    ours, so only the hook the assets carry records the failure)."""
    from migration_assets.definitions import build_resources, table_assets
    from migration_assets.registry import entity
    from migration_assets.simulator import generate

    legacy = databases.new("legacy_hook")
    generate(legacy, scale=0.002, seed=4, log=lambda *_: None)
    e = entity("roles")
    with psycopg.connect(legacy) as conn:
        conn.execute(f'ALTER TABLE "{e.legacy_table}" RENAME COLUMN "{e.columns[0].legacy_name}" TO gone')
    monkeypatch.setenv("SOURCE_DB_URL", legacy)
    monkeypatch.setenv("TARGET_DB_URL", target)
    result = _job_run() if started_by == "job" else materialize(
        table_assets(), resources=build_resources(), instance=DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    failed = {ev.step_key for ev in result.all_events if ev.event_type == DagsterEventType.STEP_FAILURE}
    rows = dict(query(target, "SELECT entity, error_class FROM migration_control.migration_runs "
                              "WHERE run_id = %s AND status = 'FAILED'", [result.run_id]))
    assert failed and set(rows) == failed and set(rows.values()) == {"SCHEMA"}
    restarts = [ev for ev in result.all_events if ev.event_type == DagsterEventType.STEP_RESTARTED]
    assert restarts == []  # a schema mismatch is permanent: no retry


def test_migration_timeout_fails_clearly_without_retry_and_leaves_the_table_empty(monkeypatch, legacy, target):
    monkeypatch.setenv("SOURCE_DB_URL", legacy)
    monkeypatch.setenv("TARGET_DB_URL", target)
    monkeypatch.setenv("MIGRATION_TIMEOUT", "1000")  # ms, the smallest allowed
    with table_locked(target, "public.profiles"):  # the load's LOCK TABLE waits past the timeout
        result = _job_run(selection=[AssetKey("profiles")])
    assert not result.success
    assert [ev for ev in result.all_events if ev.event_type == DagsterEventType.STEP_RESTARTED] == []
    (error_class, error), = query(target, "SELECT error_class, error FROM migration_control.migration_runs "
                                          "WHERE run_id = %s AND status = 'FAILED'", [result.run_id])
    assert error_class == "TIMEOUT" and "MIGRATION_TIMEOUT" in error
    assert query(target, "SELECT count(*) FROM public.profiles") == [(0,)]


def test_a_level_step_commits_its_tables_in_turn_and_stops_at_the_one_that_fails(monkeypatch, legacy, target):
    """Under a process-per-step executor a level's tables share one step (assets.build_level_asset):
    the tables before the failing one stay committed, the failing one is audited FAILED once (by
    the load, not again by the failure hook), the ones after it are not started."""
    from migration_assets.registry import ENTITIES

    monkeypatch.setenv("SOURCE_DB_URL", legacy)
    monkeypatch.setenv("TARGET_DB_URL", target)
    monkeypatch.setenv("MIGRATION_EXECUTOR", "multiprocess")  # the level steps (the run itself is in process)
    monkeypatch.setenv("MIGRATION_TIMEOUT", "1000")
    level1 = [e.name for e in ENTITIES if e.level == 1]
    failing = level1[3]
    with table_locked(target, f"public.{failing}"):
        result = _job_run(selection=[AssetKey(n) for n in level1])
    assert not result.success
    steps = {ev.step_key for ev in result.all_events if ev.event_type == DagsterEventType.STEP_FAILURE}
    assert steps == {"level_01_tables"}
    audit = query(target, "SELECT entity, status, error_class FROM migration_control.migration_runs "
                          "WHERE run_id = %s ORDER BY id", [result.run_id])
    assert audit == [(n, "COMPLETED", None) for n in level1[:3]] + [(failing, "FAILED", "TIMEOUT")]
