"""The cutover: the moment the target becomes the application's (``migration-assets cutover``,
the ``cutover`` job in the UI).

The ``cutover`` job refreshes every table differentially with its checks (the legacy side's
writes are stopped by then: the runbook in the README), then its ``cutover`` step, in one
target transaction: checks :func:`problems` (every table loaded by this very run, every ERROR
check of the latest results passing, the quarantine budget among them), applies the app-ready
migration (``supabase/cutover``: defaults for ``id``, ``created_at`` and ``updated_at``, an
``updated_at`` trigger; target_schema.app_ready_sql), and records the cutover in
``migration_control.cutovers`` with the final refresh's counts and the write-freeze window it
measured. Either all of it commits or nothing does.

From then on a load refuses to start (:class:`CutOver`, checked by every load step's
pre-flight and by the ``migrate`` and ``refresh`` commands, exit 2), because it would overwrite
rows the application now owns; MIGRATION_AFTER_CUTOVER (``--after-cutover``) overrides it, at the
risks the README names. The checks, the reports and ``status`` still run.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
from psycopg import sql

from .engine.names import CONTROL_SCHEMA
from .errors import PermanentError
from .registry import ENTITIES
from .target_schema import CUTOVER_DIR

CUTOVERS = sql.Identifier(CONTROL_SCHEMA, "cutovers")
_ERROR = "ERROR"


class CutOver(PermanentError):
    """The target was cut over: loads would overwrite the application's rows (permanent)."""

    kind = "CUT_OVER"
    recovery = "the target belongs to the application now; MIGRATION_AFTER_CUTOVER=true loads anyway (README, " \
               "'Cutover')"


class CutoverRefused(PermanentError):
    """A precondition of the cutover is not met; the message names each (permanent)."""

    kind = "CUTOVER_REFUSED"
    recovery = "fix what the message names (migrate, resolve failing checks or the quarantine), then cut over again"


def recorded(conn: psycopg.Connection) -> dict | None:
    """The target's cutover (the latest row of ``migration_control.cutovers``), or None."""
    if conn.execute("SELECT to_regclass(%s)", [f"{CONTROL_SCHEMA}.cutovers"]).fetchone()[0] is None:
        return None
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(sql.SQL("SELECT * FROM {} ORDER BY id DESC LIMIT 1").format(CUTOVERS)).fetchone()


def describe(c: dict) -> str:
    return f"the target was cut over at {c['cut_over_at']:%Y-%m-%d %H:%M:%S %Z} by run {c['run_id']}"


def refuse_loads(conn: psycopg.Connection, allowed: bool) -> None:
    """Raise :class:`CutOver` when the target was cut over and loads are not ``allowed``
    (MIGRATION_AFTER_CUTOVER)."""
    if not allowed and (c := recorded(conn)) is not None:
        raise CutOver(f"{describe(c)}: a load would overwrite rows the application now owns; set "
                      "MIGRATION_AFTER_CUTOVER=true (or pass --after-cutover) to load anyway")


_LATEST_LOADS = sql.SQL("""
    SELECT DISTINCT ON (entity) entity, status, run_id FROM {}.migration_runs ORDER BY entity, id DESC""")
_LATEST_CHECKS = sql.SQL("""
    SELECT DISTINCT ON (entity, check_name) entity, check_name, passed, severity, metadata
    FROM {}.check_results ORDER BY entity, check_name, id DESC""")


def problems(conn: psycopg.Connection, run_id: str | None = None) -> list[str]:
    """What stands in the way of a cutover: already cut over; a table never loaded or whose last
    attempt did not complete (with ``run_id``: not loaded by that run, the final refresh); an
    ERROR check failing in a table's latest results (the quarantine budget included), or none
    recorded."""
    if (c := recorded(conn)) is not None:
        return [describe(c)]
    schema = sql.Identifier(CONTROL_SCHEMA)
    last = {name: (status, run) for name, status, run in conn.execute(_LATEST_LOADS.format(schema))}
    checks: dict[str, list[tuple[str, bool, str, dict]]] = {}
    for name, check, passed, severity, metadata in conn.execute(_LATEST_CHECKS.format(schema)):
        checks.setdefault(name, []).append((check, passed, severity, metadata))
    out = []
    for e in ENTITIES:
        status, run = last.get(e.name, (None, None))
        if status is None:
            out.append(f"{e.name}: never loaded")
        elif status not in ("COMPLETED", "ALREADY_MIGRATED"):
            out.append(f"{e.name}: its last load is {status}")
        elif run_id is not None and run != run_id:
            out.append(f"{e.name}: not refreshed by this run (a cutover's final refresh loads every table)")
        results = checks.get(e.name, [])
        if not results:
            out.append(f"{e.name}: no checks recorded")
        for check, passed, severity, metadata in results:
            if not passed and severity == _ERROR:
                share = f" ({metadata['percent']}% in quarantine, maximum {metadata['max_percent']:g}%)" \
                    if "max_percent" in metadata else ""
                out.append(f"{e.name}: ERROR check {check} fails{share}")
    return out


def refusal(problem_list: list[str]) -> CutoverRefused:
    more = f" (and {len(problem_list) - 12} more)" if len(problem_list) > 12 else ""
    return CutoverRefused("cutover refused: " + "; ".join(problem_list[:12]) + more + "; nothing was changed")


def perform(conn: psycopg.Connection, run_id: str, schema: str, directory: Path = CUTOVER_DIR) -> dict:
    """In the caller's transaction (committed by the caller): refuse on :func:`problems` of run
    ``run_id``, apply the app-ready files not applied yet to the tables in ``schema``, record the
    cutover with that run's counts and the measured windows. Returns the recorded row."""
    from .migrations import apply_files, lock_history

    lock_history(conn)  # one cutover (or setup) at a time
    if found := problems(conn, run_id):
        raise refusal(found)
    started = time.perf_counter()
    applied = apply_files(conn, sorted(directory.glob("*.sql")), schema)
    seconds = time.perf_counter() - started
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(sql.SQL("""
            INSERT INTO {} (run_id, refresh_started_at, refresh_seconds, cutover_seconds, inserted, updated,
                            deleted, quarantined, app_ready)
            SELECT %(run)s, min(started_at), extract(epoch FROM max(finished_at) - min(started_at)),
                   %(seconds)s, coalesce(sum(inserted), 0), coalesce(sum(updated), 0), coalesce(sum(deleted), 0),
                   coalesce(sum(quarantined), 0), %(applied)s
            FROM {} WHERE run_id = %(run)s
            RETURNING *""").format(CUTOVERS, sql.Identifier(CONTROL_SCHEMA, "migration_runs")),
            {"run": run_id, "seconds": round(seconds, 3), "applied": applied}).fetchone()


def summary(c: dict) -> str:
    window = (c["cut_over_at"] - c["refresh_started_at"]).total_seconds()
    return (f"{describe(c)}: final refresh {float(c['refresh_seconds']):.1f}s (inserted {c['inserted']:,}, updated "
            f"{c['updated']:,}, deleted {c['deleted']:,}, quarantined {c['quarantined']:,}), app-ready schema "
            f"{float(c['cutover_seconds']):.2f}s ({', '.join(c['app_ready']) or 'already applied'}); write-freeze "
            f"window from the final refresh's start to the cutover's commit: {window:.1f}s")
