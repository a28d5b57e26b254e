"""Sensors and the schedule.

``legacy_changes`` keeps the target in step while the legacy system stays live: each tick reads a
signature of every legacy table without scanning it (write counters, max id, max change mark),
counts the tables whose signature moved (and all of them every EXACT_EVERY_S), compares them
with the watermarks, and requests a differential refresh of the entities that changed.
``nightly_full_sync`` compares everything once a night. Both start stopped.
``record_run_failures`` records run-level failures in the audit trail.

Step failures are already audited by the IO manager (one FAILED row per entity, with the error
class and the recovery advice). A run can also fail outside any step (the run worker dies, a
resource cannot be initialised, the run is canceled): this sensor writes one FAILED row per such
run with entity ``(run)``, so ``migration_control.migration_runs`` tells the whole story. It starts
stopped, as Dagster users expect; turn it on in the UI.
"""

import hashlib
import json
import time

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
from .connections import set_statement_timeout
from .cutover import describe, recorded
from .engine import changes
from .engine.audit import write_audit
from .engine.source_sql import source_state_sql
from .errors import ErrorKind
from .failures import kind_from_metadata
from .redaction import redact
from .jobs import differential_refresh, full_migration
from .registry import ENTITIES, topological_order
from .resources import LegacyDatabase, MigrationSettings, PostgresResource
from .engine.names import ORPHAN_FK, QUARANTINE, WATERMARKS

RUN_ENTITY = "(run)"


def run_failure_kind(context: RunFailureSensorContext) -> ErrorKind:
    """What failed a run: the kind its first failed step decided (failures.as_failure keeps it in
    the failure's metadata), else the error's class as Dagster serialized it."""
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        user = data.user_failure_data if data else None
        if user is not None and (kind := kind_from_metadata(user.metadata or {})) is not None:
            return kind
        if data is not None and data.error is not None:
            return ErrorKind("UNKNOWN", False, f"{event.step_key}: {data.error.cls_name}: {redact(data.error.message)}",
                             "investigate: see the run's logs")
    message = redact(context.failure_event.message or "run failed")
    return ErrorKind("UNKNOWN", False, message, "investigate: see the run's logs")


@run_failure_sensor(name="record_run_failures", minimum_interval_seconds=30,
                    default_status=DefaultSensorStatus.STOPPED,
                    description="Record failed runs in migration_control.migration_runs (entity '(run)').")
def record_run_failures(context: RunFailureSensorContext, target: PostgresResource) -> None:
    kind = run_failure_kind(context)
    run = context.dagster_run
    with target.connect() as conn:
        write_audit(conn, run.run_id, None, RUN_ENTITY, status="FAILED", error_class=kind.name, error=kind.message,
                    recovery=kind.recovery)
        conn.commit()
    context.log.info(f"recorded failure of run {run.run_id}: {kind.name}")


# ------------------------------------------------------------------ differential refresh

def legacy_states(conn, zone: str, names=None) -> dict[str, tuple[int, int | None, str | None]]:
    """(rows, max legacy id, change high-water mark) of every legacy table (or of ``names``), in
    ONE query, the marks capped at the legacy clock in ``zone`` (LEGACY_TIMEZONE). The row count
    scans each table: the only figure that shows a delete for certain."""
    chosen = [e for e in ENTITIES if names is None or e.name in names]
    if not chosen:
        return {}
    parts = [sql.SQL("SELECT {}::text, s.* FROM ({}) AS s").format(sql.Literal(e.name), source_state_sql(e, zone))
             for e in chosen]
    # No JIT: the tables' counts add up to a plan costly enough to be compiled, and compiling it takes
    # longer than running it (BENCHMARKS.md, design measurements).
    conn.execute("SET LOCAL TimeZone = 'UTC'; SET LOCAL jit = off")
    return {name: (rows, max_id, hwm)
            for name, rows, _min_id, max_id, hwm in conn.execute(sql.SQL(" UNION ALL ").join(parts))}


def legacy_signatures(conn) -> dict[str, list] | None:
    """Per legacy table, without reading it: the statistics system's counters of inserted, updated
    and deleted rows, the highest id and the highest change mark (both index endpoints). Any write
    moves one of them, so an unchanged signature means an unchanged table, except for the few
    seconds a backend may hold its counters before reporting them (at most PostgreSQL's idle
    flush interval; at exit, at once). None when the server keeps no counters (track_counts off)."""
    conn.execute("SET LOCAL TimeZone = 'UTC'")
    (counting,) = conn.execute("SELECT current_setting('track_counts')::bool").fetchone()
    if not counting:
        return None
    parts = [sql.SQL(
        "SELECT {n}::text, pg_stat_get_tuples_inserted(r), pg_stat_get_tuples_updated(r), "
        "pg_stat_get_tuples_deleted(r), (SELECT max({pk}) FROM {t}), (SELECT max({chg})::text FROM {t}) "
        "FROM (SELECT {t_name}::regclass::oid AS r) AS c").format(
        n=sql.Literal(e.name), pk=sql.Identifier(e.legacy_pk), chg=sql.Identifier(e.legacy_change_column),
        t=sql.Identifier(e.legacy_table), t_name=sql.Literal(sql.Identifier(e.legacy_table).as_string(conn)))
        for e in ENTITIES]
    return {row[0]: list(row[1:]) for row in conn.execute(sql.SQL(" UNION ALL ").join(parts))}


EXACT_EVERY_S = 600  # the sensor recounts every table at least this often, whatever the signatures say


def observe_legacy(conn, seen: dict, counted_at: float, now: float, zone: str) -> tuple[dict, dict, bool]:
    """The legacy states, counting only the tables whose signature moved since ``seen`` (the last
    evaluation's {name: {"sig": ..., "state": ...}}), or every table when the last full count is
    older than EXACT_EVERY_S (or there is none). Returns (states, what to remember, counted all)."""
    sigs = legacy_signatures(conn)
    full = sigs is None or not seen or not 0 <= now - counted_at < EXACT_EVERY_S  # (a clock set back too)
    stale = None if full else {name for name, sig in sigs.items() if (seen.get(name) or {}).get("sig") != sig}
    states = legacy_states(conn, zone, stale)
    if not full:
        states.update({name: tuple(seen[name]["state"]) for name in sigs if name not in stale})
    remembered = {name: {"sig": sigs[name], "state": list(states[name])} for name in states} if sigs else {}
    return states, remembered, full


def migrated_states(conn) -> dict[str, tuple[int, int | None, str | None]]:
    """The same triple as of each entity's last committed load (its watermark)."""
    return {name: (rows, max_id, hwm) for name, rows, max_id, hwm in conn.execute(sql.SQL(
        "SELECT entity, legacy_rows, max_legacy_id, (change_hwm AT TIME ZONE 'UTC')::text FROM {}").format(
        WATERMARKS))}


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
        description="Polls the legacy database and requests a differential refresh of exactly the entities "
                    "whose table differs from its watermark (rows, max id, change high-water mark). Each tick "
                    "reads every table's signature without scanning it (statistics counters of written rows, max "
                    "id, max change mark) and counts only the tables whose signature moved; every table is "
                    "counted at least every 10 minutes. The cursor and run keys keep a change from being "
                    "requested twice.")
def legacy_changes(context: SensorEvaluationContext, legacy: LegacyDatabase, target: PostgresResource,
                   settings: MigrationSettings):
    if settings.change_source == "logical":
        return _slot_changes(legacy, target, settings)
    cursor = json.loads(context.cursor) if context.cursor else {}
    if "requested" not in cursor:  # the cursor of an earlier version: only what was requested
        cursor = {"requested": cursor}
    requested = cursor["requested"]
    clock = time.time()
    with legacy.connect() as src:  # each tick reads in one transaction per database, under MIGRATION_TIMEOUT
        set_statement_timeout(src, settings.migration_timeout_ms)
        now, seen, counted_all = observe_legacy(src, cursor.get("seen", {}), cursor.get("counted_at", 0.0), clock,
                                                 settings.legacy_timezone)
    with target.connect() as tgt:
        set_statement_timeout(tgt, settings.migration_timeout_ms)
        if (skip := _cut_over(tgt, settings)) is not None:
            return skip
        done = migrated_states(tgt)
        waiting = {r[0] for r in tgt.execute(sql.SQL(
            "SELECT DISTINCT entity FROM {} WHERE NOT resolved AND reason = {}").format(
            QUARANTINE, sql.Literal(ORPHAN_FK)))}
    cursor["seen"] = seen
    if counted_all:
        cursor["counted_at"] = clock
    wanted = entities_to_refresh(now, done, waiting)
    # a change already requested (its run may still be going) is not requested again
    fresh = [n for n in wanted if requested.get(n) != _digest(now[n])]
    for n in fresh:
        requested[n] = _digest(now[n])
    context.update_cursor(json.dumps(cursor, sort_keys=True))
    if not fresh:
        return SkipReason(f"legacy database unchanged since the last refresh ({len(wanted)} pending in a run)"
                          if wanted else "legacy database unchanged since the last refresh")
    run_key = "diff-" + _digest(sorted((n, now[n]) for n in fresh))
    return RunRequest(run_key=run_key, asset_selection=[AssetKey(n) for n in fresh] + [AssetKey(REPORT_ASSET)],
                      tags={MODE_TAG: "differential", "migration/entities": str(len(fresh))})


def _cut_over(tgt, settings: MigrationSettings) -> SkipReason | None:
    """The tick's answer on a target that was cut over (no refresh unless MIGRATION_AFTER_CUTOVER)."""
    if not settings.after_cutover and (c := recorded(tgt)) is not None:
        return SkipReason(f"{describe(c)}: no refresh is requested (MIGRATION_AFTER_CUTOVER)")
    return None


def _slot_changes(legacy: LegacyDatabase, target: PostgresResource, settings: MigrationSettings):
    """Logical mode: wake on the changes pending in the replication slot. Every table is
    requested, not only the changed ones: the slot advances to the lowest position all tables
    recorded (engine/changes.py), and a table without changes costs a few statements."""
    with target.connect() as tgt:
        set_statement_timeout(tgt, settings.migration_timeout_ms)
        if (skip := _cut_over(tgt, settings)) is not None:
            return skip
    with legacy.connect() as src:
        if changes.slot_state(src, settings.slot) is None:
            return SkipReason(f"no replication slot {settings.slot} yet: a migration in logical mode creates it")
    found = changes.peek(legacy.conninfo(), settings.slot)
    if not found.count:
        return SkipReason(f"no change pending in the replication slot {settings.slot}")
    return RunRequest(run_key=f"logical-{found.upto}",
                      asset_selection=[AssetKey(e.name) for e in ENTITIES] + [AssetKey(REPORT_ASSET)],
                      tags={MODE_TAG: "differential",
                            "migration/changed_tables": str(len(set(found.ids) | found.truncated)),
                            "migration/changes": str(found.count)})


nightly_full_sync = ScheduleDefinition(
    name="nightly_full_sync", job=full_migration, cron_schedule="0 2 * * *", execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED, tags={MODE_TAG: "full"},
    description=f"Every night at 02:00 UTC, refresh all {len(ENTITIES)} entities comparing every row (per-bucket "
                "hashes of the legacy rows against the target): catches what a watermark cannot see, such as a legacy write "
                "that did not advance the change-tracking column.")
