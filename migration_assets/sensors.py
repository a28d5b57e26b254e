"""Sensors and the schedule.

``legacy_changes`` keeps the target in step while the legacy system stays live: one cheap query
on the legacy database, compared with the watermarks, requests a differential refresh of the
entities that changed. ``nightly_full_sync`` compares everything once a night. Both start
stopped. ``record_run_failures`` records run-level failures in the audit trail.

Step failures are already audited by the IO manager (one FAILED row per entity, with the error
class and the recovery advice). A run can also fail outside any step (the run worker dies, a
resource cannot be initialised, the run is canceled): this sensor writes one FAILED row per such
run with entity ``(run)``, so ``migration_control.migration_runs`` tells the whole story. It starts
stopped, as Dagster users expect; turn it on in the UI.
"""

import hashlib
import json

from dagster import (
    AssetKey,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    ScheduleDefinition,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    sensor,
)
from psycopg import sql

from .assets import MODE_TAG, REPORT_ASSET
from .engine import source_state_sql, write_audit
from .errors import classify
from .jobs import differential_refresh, full_migration
from .registry import ENTITIES, topological_order
from .resources import LegacyDatabase, PostgresResource
from .target_schema import CONTROL_SCHEMA

RUN_ENTITY = "(run)"


@run_failure_sensor(name="record_run_failures", minimum_interval_seconds=30,
                    default_status=DefaultSensorStatus.STOPPED,
                    description="Record failed runs in migration_control.migration_runs (entity '(run)').")
def record_run_failures(context: RunFailureSensorContext, target: PostgresResource) -> None:
    failure = context.failure_event
    message = failure.message or "run failed"
    kind = classify(Exception(message))
    run = context.dagster_run
    with target.connect() as conn:
        write_audit(conn, run.run_id, None, RUN_ENTITY, status="FAILED", error_class=kind.name, error=kind.message,
                    recovery=kind.recovery)
        conn.commit()
    context.log.info(f"recorded failure of run {run.run_id}: {kind.name}")


# ------------------------------------------------------------------ differential refresh

def legacy_states(conn) -> dict[str, tuple[int, int | None, str | None]]:
    """(rows, max legacy id, change high-water mark) of every legacy table, in ONE query."""
    parts = [sql.SQL("SELECT {}::text, s.* FROM ({}) AS s").format(sql.Literal(e.name), source_state_sql(e))
             for e in ENTITIES]
    conn.execute("SET TimeZone = 'UTC'")
    return {name: (rows, max_id, hwm)
            for name, rows, _min_id, max_id, hwm in conn.execute(sql.SQL(" UNION ALL ").join(parts))}


def migrated_states(conn) -> dict[str, tuple[int, int | None, str | None]]:
    """The same triple as of each entity's last committed load (its watermark)."""
    return {name: (rows, max_id, hwm) for name, rows, max_id, hwm in conn.execute(sql.SQL(
        "SELECT entity, legacy_rows, max_legacy_id, (change_hwm AT TIME ZONE 'UTC')::text FROM {}").format(
        sql.Identifier(CONTROL_SCHEMA, "watermarks")))}


def entities_to_refresh(legacy: dict, migrated: dict, orphans_waiting: set[str]) -> list[str]:
    """Entities whose legacy table differs from its watermark (new, changed or deleted rows, or
    never migrated), plus children with quarantined orphans whose parent is being refreshed (the
    parent row they wait for may be among the changes). Parents come before children."""
    changed = {name for name, state in legacy.items() if migrated.get(name) != state}
    for e in topological_order():
        if e.name in orphans_waiting and changed.intersection(e.parents):
            changed.add(e.name)
    return [e.name for e in topological_order(changed)]


def _digest(state) -> str:
    return hashlib.sha1(json.dumps(state, default=str).encode()).hexdigest()[:16]


@sensor(name="legacy_changes", job=differential_refresh, minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.STOPPED,
        description="Polls the legacy database (one query for all 45 tables: rows, max id, change high-water "
                    "mark), compares it with the watermarks, and requests a differential refresh of exactly "
                    "the entities that changed. The cursor and run keys keep a change from being requested twice.")
def legacy_changes(context: SensorEvaluationContext, legacy: LegacyDatabase, target: PostgresResource):
    with legacy.connect() as src:
        now = legacy_states(src)
    with target.connect() as tgt:
        done = migrated_states(tgt)
        waiting = {r[0] for r in tgt.execute(sql.SQL(
            "SELECT DISTINCT entity FROM {} WHERE NOT resolved AND reason = 'ORPHAN_FK'").format(
            sql.Identifier(CONTROL_SCHEMA, "quarantine")))}
    requested = json.loads(context.cursor) if context.cursor else {}
    wanted = entities_to_refresh(now, done, waiting)
    # a change already requested (its run may still be going) is not requested again
    fresh = [n for n in wanted if requested.get(n) != _digest(now[n])]
    if not fresh:
        return SkipReason(f"legacy database unchanged since the last refresh ({len(wanted)} pending in a run)"
                          if wanted else "legacy database unchanged since the last refresh")
    for n in fresh:
        requested[n] = _digest(now[n])
    context.update_cursor(json.dumps(requested, sort_keys=True))
    run_key = "diff-" + _digest(sorted((n, now[n]) for n in fresh))
    return RunRequest(run_key=run_key, asset_selection=[AssetKey(n) for n in fresh] + [AssetKey(REPORT_ASSET)],
                      tags={MODE_TAG: "differential", "migration/entities": str(len(fresh))})


nightly_full_sync = ScheduleDefinition(
    name="nightly_full_sync", job=full_migration, cron_schedule="0 2 * * *", execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED, tags={MODE_TAG: "full"},
    description="Every night at 02:00 UTC, refresh all 45 entities comparing every row (per-bucket hashes of the "
                "legacy rows against the target): catches what a watermark cannot see, such as a legacy write "
                "that did not advance the change-tracking column.")
