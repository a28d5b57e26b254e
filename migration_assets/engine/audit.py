"""What one load did, and its row in the audit trail (``migration_control.migration_runs``).

:class:`LoadResult` is filled by the load, phase by phase; :func:`write_audit` writes it (or a
failure without one) in the caller's transaction, so a load's audit row commits with its rows.
The IO manager, the failure hook and the sensors write through here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from .names import MIGRATION_RUNS


@dataclass
class LoadResult:
    entity: str
    load_path: str
    records_read: int = 0
    existing: int | None = 0  # None while a differential load has not counted the table yet
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    resolved: int = 0
    deleted: int = 0  # target rows whose legacy row was deleted (removed, or marked under the soft policy)
    evicted: int = 0  # target rows whose legacy row no longer loads (now quarantined): removed
    cascaded: dict = field(default_factory=dict)  # child entity -> rows quarantined/detached by those removals
    mode: str = "full"
    remaining_difference: int = 0  # legacy rows - (target rows + open quarantine) after the load
    accounted_after: int | None = None  # target rows + open quarantine rows after the load
    quarantine_by_reason: dict = field(default_factory=dict)
    phases: dict = field(default_factory=dict)  # seconds spent per load phase
    recoveries: dict = field(default_factory=dict)
    slices: list = field(default_factory=list)  # a sliced load's slices: ids, rows, worker, run (slices.py)
    duration_s: float = 0.0
    peak_rss_mb: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.records_read / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def status(self) -> str:
        if self.records_read == 0:
            return "SKIPPED"
        if self.inserted == 0 and self.updated == 0 and self.deleted == 0 and self.evicted == 0 and self.existing > 0:
            return "ALREADY_MIGRATED"
        return "COMPLETED"


def write_audit(conn, run_id: str, result: LoadResult | None, entity_name: str, *, status: str | None = None,
                error_class: str | None = None, error: str | None = None, recovery: str | None = None,
                mode: str = "full", started_at: float | None = None) -> None:
    details = {}
    if result is not None:
        details = {"quarantine_by_reason": result.quarantine_by_reason, "recoveries": result.recoveries,
                   "phases_s": result.phases,
                   "resolved": result.resolved, "peak_rss_mb": round(result.peak_rss_mb, 1),
                   "evicted": result.evicted, "cascaded": result.cascaded,
                   "remaining_difference": result.remaining_difference}
        if result.slices:
            details["slices"] = result.slices
        mode = result.mode
    r = result or LoadResult(entity_name, "n/a")
    started = started_at or r.started_at or time.time()
    conn.execute(sql.SQL(
        "INSERT INTO {} (run_id, entity, status, mode, load_path, records_read, existing_records, inserted, updated, "
        "unchanged, quarantined, deleted, duration_ms, started_at, finished_at, error_class, error, recovery, details) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, to_timestamp(%s), to_timestamp(%s), %s, %s, %s, %s)"
    ).format(MIGRATION_RUNS), [
        run_id, entity_name, status or r.status, mode, r.load_path, r.records_read, r.existing, r.inserted,
        r.updated, r.unchanged, r.quarantined, r.deleted, int(r.duration_s * 1000), started, r.finished_at or time.time(),
        error_class, error, recovery, psycopg.types.json.Jsonb(details)])
