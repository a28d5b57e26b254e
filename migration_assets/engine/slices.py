"""A large empty table loaded in id-range slices, each slice its own transaction (and, under a
process-per-step executor, its own step on its own worker), the keys built once after the last.

Why this shape: a table's load is one transaction, so the largest table bounds a run's wall time
whatever the number of workers. Cut into slices, the part that scales with the rows (reading,
transforming and COPYing them) runs on as many workers as there are slices; what needs the whole
table (orphans and duplicates across slices, the keys, their validation, the quarantine and the
watermark) runs once, in the last step, with the fast path's own code (load.py). Only an empty
target is sliced: a loaded table's refresh reads only what changed (plan.py) and stays one step.

Flow, with the state in the control schema so that any step can run on any worker, in any
process, and a crashed one re-runs alone:
  1. :func:`plan_slices` (one transaction): lock the table, snapshot the legacy table's state,
     cut its ids into ranges of about ``slice_rows`` rows (percentiles of the legacy key, so
     sparse ids still give even slices), drop the keys as the fast path does and record them with
     the plan (``slice_loads``) and one ``PENDING`` row per slice (``slices``). A plan left
     unfinished by an earlier run is returned as it is: that run's completed slices stay.
  2. :func:`load_slice` (one transaction per slice, concurrently): lock the slice's row (a
     second worker given the same slice waits, then finds it done), COPY the range's rows into
     the table, keep its source rejects in ``slice_rejects``, mark the slice ``COMPLETED`` with
     the run, the worker and the counts. A crash rolls all of it back: the slice is still
     ``PENDING`` and the next attempt loads it from scratch.
  3. :func:`finish_slices` (one transaction): refuse while a slice is pending; take the slices'
     rejects into the load's quarantine, then the fast path's steps 4–7 on the whole table
     (orphans, duplicates, keys rebuilt and validated, quarantine, watermark) and the audit
     row's details name every slice. A crash here leaves the slices done and the keys dropped;
     the next run re-runs this step alone.

While a plan is unfinished its table has no keys: a one-step load of it (load.py) refuses to
start, naming the plan.

The rows of a slice are read in the slice's own snapshot, after the plan's: the watermark is the
plan's snapshot, so a change made during the load is read again by the next refresh; rows added
above the plan's highest id are left to it.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import dataclass
from typing import Callable

import psycopg
from psycopg import sql

from ..registry import Entity
from .audit import LoadResult
from .copy import capture_constraints, drop_constraints, fast_path_blocker
from .load import (QUARANTINE_STAGE_SQL, SESSION_SQL, LoadObserver, SliceError, copy_stream, count_and_save,
                   finish_fast_path, reject_target_side_with_raw)
from .names import SLICE_LOADS, SLICE_REJECTS, SLICES, target_columns, target_table
from .options import LoadOptions
from .plan import READ_ALL
from .stream import LegacyStream, SourceState

COMPLETED = "COMPLETED"
PENDING = "PENDING"


@dataclass(frozen=True)
class Slice:
    number: int
    lo: int  # legacy ids lo..hi, both included
    hi: int
    status: str = PENDING
    rows_read: int | None = None
    rejected: int | None = None
    worker: str | None = None
    run_id: str | None = None
    recoveries: dict | None = None
    duration_ms: int | None = None

    @property
    def key(self) -> str:
        """The slice's mapping key in a run (Dagster's dynamic outputs)."""
        return f"slice_{self.number}"


@dataclass(frozen=True)
class SlicePlan:
    """The unfinished sliced load of one table, as the control schema records it."""

    entity: str
    run_id: str  # the run that planned it
    state: SourceState  # the legacy table when planned: what the watermark records
    constraints: tuple  # (table, name, definition, kind) of the keys dropped, rebuilt by the last step
    slices: tuple[Slice, ...]

    def pending(self) -> list[Slice]:
        return [s for s in self.slices if s.status != COMPLETED]


@dataclass(frozen=True)
class FinishSlices:
    """What a sliced asset's last step hands its IO manager: finish the table's sliced load
    (:func:`finish_slices`) with this stream (its raw rows of rejects), instead of loading it."""

    stream: LegacyStream

    @property
    def opts(self) -> LoadOptions:
        return self.stream.opts

    def close(self) -> None:
        self.stream.close()


def slice_bounds_sql(e: Entity) -> sql.Composable:
    """SQL (parameter: the fractions, float8[]): the legacy ids at those percentiles of the key."""
    return sql.SQL("SELECT percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY {pk}) FROM {t}").format(
        pk=sql.Identifier(e.legacy_pk), t=sql.Identifier(e.legacy_table))


def slice_ranges(state: SourceState, bounds: list[int]) -> list[tuple[int, int]]:
    """Id ranges (lo, hi), both included, from the lowest to the highest id of ``state``, cut after
    each of ``bounds`` (ascending, repeated values dropped)."""
    cuts = sorted({b for b in bounds if b is not None and state.min_id <= b < state.max_id})
    ranges, lo = [], state.min_id
    for b in cuts:
        ranges.append((lo, b))
        lo = b + 1
    ranges.append((lo, state.max_id))
    return ranges


def slice_where_sql(e: Entity, s: Slice) -> sql.Composable:
    """Condition on the source query's alias ``l``: the slice's ids."""
    return sql.SQL("l.{} BETWEEN {} AND {}").format(sql.Identifier(e.legacy_pk), sql.Literal(s.lo), sql.Literal(s.hi))


def read_slice_plan_sql() -> sql.Composable:
    return sql.SQL("SELECT run_id, constraints, legacy_rows, min_legacy_id, max_legacy_id, change_hwm FROM {} "
                   "WHERE entity = %s AND finished_at IS NULL").format(SLICE_LOADS)


def read_slices_sql() -> sql.Composable:
    return sql.SQL("SELECT slice, lo, hi, status, rows_read, rejected, worker, run_id, recoveries, duration_ms "
                   "FROM {} WHERE entity = %s ORDER BY slice").format(SLICES)


def record_plan_sql() -> list[sql.Composable]:
    """The plan's row (replacing a finished plan of the same table, and its slices)."""
    return [sql.SQL("DELETE FROM {} WHERE entity = %(entity)s").format(SLICE_LOADS),
            sql.SQL("INSERT INTO {} (entity, run_id, constraints, legacy_rows, min_legacy_id, max_legacy_id, "
                    "change_hwm) VALUES (%(entity)s, %(run_id)s, %(constraints)s, %(rows)s, %(min_id)s, %(max_id)s, "
                    "%(hwm)s)").format(SLICE_LOADS)]


def record_slice_sql() -> sql.Composable:
    return sql.SQL("INSERT INTO {} (entity, slice, lo, hi) VALUES (%s, %s, %s, %s)").format(SLICES)


def lock_slice_sql() -> sql.Composable:
    return sql.SQL("SELECT lo, hi, status FROM {} WHERE entity = %s AND slice = %s FOR UPDATE").format(SLICES)


def keep_slice_rejects_sql(e: Entity, number: int) -> sql.Composable:
    """This slice's source rejects (``_quarantine``) kept until the last step."""
    return sql.SQL("INSERT INTO {} (entity, slice, legacy_id, reason, detail, raw, source_hash) "
                   "SELECT {}, {}, legacy_id, reason, detail, raw, source_hash FROM _quarantine").format(
        SLICE_REJECTS, sql.Literal(e.name), sql.Literal(number))


def complete_slice_sql() -> sql.Composable:
    return sql.SQL("UPDATE {} SET status = 'COMPLETED', run_id = %s, worker = %s, rows_read = %s, rejected = %s, "
                   "recoveries = %s, duration_ms = %s, finished_at = now() "
                   "WHERE entity = %s AND slice = %s").format(SLICES)


def take_slice_rejects_sql(e: Entity) -> sql.Composable:
    """The slices' rejects into the last step's ``_quarantine``."""
    return sql.SQL("INSERT INTO _quarantine (legacy_id, reason, detail, raw, source_hash) "
                   "SELECT legacy_id, reason, detail, raw, source_hash FROM {} WHERE entity = {}").format(
        SLICE_REJECTS, sql.Literal(e.name))


def finish_plan_sql(e: Entity, run_id: str) -> list[sql.Composable]:
    return [sql.SQL("DELETE FROM {} WHERE entity = {}").format(SLICE_REJECTS, sql.Literal(e.name)),
            sql.SQL("UPDATE {} SET finished_at = now(), finished_run_id = {} WHERE entity = {}").format(
                SLICE_LOADS, sql.Literal(run_id), sql.Literal(e.name))]


def read_slice_plan(conn: psycopg.Connection, e: Entity) -> SlicePlan | None:
    """The unfinished sliced load of ``e``, or None."""
    row = conn.execute(read_slice_plan_sql(), [e.name]).fetchone()
    if row is None:
        return None
    run_id, constraints, rows, min_id, max_id, hwm = row
    slices = tuple(Slice(n, lo, hi, status, read, rejected, worker, rid, rec, ms)
                   for n, lo, hi, status, read, rejected, worker, rid, rec, ms
                   in conn.execute(read_slices_sql(), [e.name]).fetchall())
    return SlicePlan(e.name, run_id, SourceState(rows, min_id, max_id, hwm),
                     tuple(tuple(c) for c in constraints), slices)


def plan_slices(conn: psycopg.Connection, stream: LegacyStream, opts: LoadOptions, slice_rows: int) -> SlicePlan | None:
    """Step 1, in the caller's transaction on the target (the caller commits): the unfinished plan
    of the table if there is one; else a new plan when the target table is empty, the fast path is
    allowed and possible and the legacy table holds more than ``slice_rows`` rows (its keys
    dropped); else None: the table loads in one step."""
    e = stream.entity
    conn.execute(SESSION_SQL)
    conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(target_table(e, opts.target_schema)))
    unfinished = read_slice_plan(conn, e)
    if unfinished is not None or slice_rows <= 0 or not opts.fast_path:
        return unfinished
    if conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(target_table(e, opts.target_schema))).fetchone()[0]:
        return None
    if fast_path_blocker(conn, e, opts.target_schema):
        return None  # the one-step load says why, and merges
    state = stream.snapshot()
    if state.rows <= slice_rows:
        return None
    n = math.ceil(state.rows / slice_rows)
    bounds = stream.query(slice_bounds_sql(e), [[k / n for k in range(1, n)]])[0][0]
    saved = capture_constraints(conn, e, opts.target_schema)
    drop_constraints(conn, saved, opts.target_schema)
    for statement in record_plan_sql():
        conn.execute(statement, {"entity": e.name, "run_id": opts.run_id, "constraints": json.dumps(saved),
                                 "rows": state.rows, "min_id": state.min_id, "max_id": state.max_id,
                                 "hwm": state.change_hwm})
    for number, (lo, hi) in enumerate(slice_ranges(state, bounds), start=1):
        conn.execute(record_slice_sql(), [e.name, number, lo, hi])
    return read_slice_plan(conn, e)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def load_slice(conn: psycopg.Connection, stream: LegacyStream, opts: LoadOptions, number: int,
               on_progress: Callable[[str], None] | None = None) -> Slice:
    """Step 2, in the caller's transaction (the caller commits): load slice ``number`` of the
    table's unfinished plan, unless it is done already. Returns the slice as recorded."""
    e = stream.entity
    conn.execute(SESSION_SQL)
    row = conn.execute(lock_slice_sql(), [e.name, number]).fetchone()
    plan_row = conn.execute(read_slice_plan_sql(), [e.name]).fetchone()
    if row is None or plan_row is None:
        raise SliceError(f"{e.name}: slice {number} is not part of an unfinished sliced load: the table's load "
                         "was finished or re-planned since; re-run the job")
    lo, hi, status = row
    if status == COMPLETED:
        return next(s for s in read_slice_plan(conn, e).slices if s.number == number)
    this = Slice(number, lo, hi)
    result = LoadResult(e.name, f"slice {number}", started_at=time.time(), mode="full")
    watch = LoadObserver(result, stream, opts, on_progress)
    conn.execute(QUARANTINE_STAGE_SQL)
    source_rules = copy_stream(conn, stream, stream.batches(slice_where_sql(e, this)), target_columns(e),
                               target_table(e, opts.target_schema), False, watch)
    rejected = conn.execute(keep_slice_rejects_sql(e, number)).rowcount
    watch.finish()
    duration_ms = int(result.duration_s * 1000)
    recoveries = {k: v for k, v in source_rules.items() if v}
    conn.execute(complete_slice_sql(), [opts.run_id, worker_name(), stream.rows_read, rejected,
                                        json.dumps(recoveries), duration_ms, e.name, number])
    return Slice(number, lo, hi, COMPLETED, stream.rows_read, rejected, worker_name(), opts.run_id, recoveries,
                 duration_ms)


def finish_slices(conn: psycopg.Connection, stream: LegacyStream, opts: LoadOptions,
                  on_progress: Callable[[str], None] | None = None) -> LoadResult:
    """Step 3, in the caller's transaction (the caller writes the audit row and commits): the
    fast path's steps 4–7 over the whole table, once every slice is done."""
    e = stream.entity
    result = LoadResult(e.name, "", started_at=time.time(), mode="full")
    watch = LoadObserver(result, stream, opts, on_progress)
    conn.execute(SESSION_SQL)
    conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(target_table(e, opts.target_schema)))
    plan = read_slice_plan(conn, e)
    if plan is None:
        raise SliceError(f"{e.name}: no unfinished sliced load to finish (finished by another run?): re-run the job")
    if pending := plan.pending():
        raise SliceError(f"{e.name}: {len(pending)} of {len(plan.slices)} slices not loaded yet "
                         f"({', '.join(s.key for s in pending[:10])}): re-run the job; the slices done stay done")
    result.load_path = (f"fast in {len(plan.slices)} slices (empty target: bulk load in id ranges, "
                        "then build keys once)")
    result.existing = 0
    result.records_read = sum(s.rows_read or 0 for s in plan.slices)
    result.slices = [{"slice": s.number, "ids": [s.lo, s.hi], "rows_read": s.rows_read, "rejected": s.rejected,
                      "worker": s.worker, "run_id": s.run_id, "duration_ms": s.duration_ms} for s in plan.slices]
    source_rules: dict[str, int] = {}
    for s in plan.slices:
        for rule, n in (s.recoveries or {}).items():
            source_rules[rule] = source_rules.get(rule, 0) + n
    conn.execute(QUARANTINE_STAGE_SQL)
    conn.execute(take_slice_rejects_sql(e))
    watch.phase("prepare")
    target = target_table(e, opts.target_schema)
    recoveries = reject_target_side_with_raw(conn, e, target, True, opts, stream, watch)
    finish_fast_path(conn, e, opts, result, list(plan.constraints), watch)
    count_and_save(conn, e, opts, result, READ_ALL, plan.state, None, source_rules, recoveries, watch)
    for statement in finish_plan_sql(e, opts.run_id):
        conn.execute(statement)
    return result
