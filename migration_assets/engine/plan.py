"""What a load reads: the :class:`ReadPlan`, made before the stream reads, handed to it and to the
load, never written into the stream.

Three plans, chosen by the load (load.py):
- every row (:data:`READ_ALL`): an empty target (the fast path), or incremental comparison off;
- full mode on a loaded table (:func:`plan_changes`): both servers summarise the table per
  bucket of BUCKET legacy ids, in parallel; the source the count and sum of the per-row hash of
  its rows (source_sql.bucket_summary_sql), the target the same over its loaded rows plus its
  open quarantine rows (both keep the hash of the legacy row they came from), or the summary
  the last full load stored with its watermark when the target's count still matches it. Equal
  buckets hold exactly the legacy rows migrated last time and are not read again;
- differential mode (:func:`plan_differential`): the rows whose change mark is at or after the
  watermark minus an overlap (and minus the hour a daylight-saving zone set its clock back, when
  it did since the watermark), or later than the snapshot's clock, and the ids above the highest
  id seen.
Both narrowed plans add the rows that may load differently without a change at the source
(:func:`retry_rows_sql`). Deletes are found after the merge (deletes.py).

The watermark (:func:`read_watermark`, :func:`save_watermark_sql`) is the entity's row in
``migration_control.watermarks``: the snapshot's state after the last load, the transform
version its rows were converted with (source_sql.hash_salt) and, after a full load that
accounted for every row, its bucket summary. It is written in the load's transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from psycopg import sql

from ..registry import Entity
from ..transforms import md5_key_sql, uuid_from_md5_sql
from .names import (BUCKET, DUPLICATE_KEY, HASH_MOD, ORPHAN_FK, QUARANTINE, WATERMARKS, live_rows_sql, table_named,
                    target_table)
from .changes import Changes
from .options import LoadOptions
from .source_sql import bucket_summary_sql, changed_since_sql, future_marks_sql, hash_salt, ids_sql
from .stream import LegacyStream, SourceState

log = logging.getLogger(__name__)

Summary = dict[int, tuple[int, int]]  # bucket -> (rows, sum of source hashes mod 2^64)


@dataclass(frozen=True)
class ReadPlan:
    """Which legacy rows a load reads, and what the planner learnt on the way.

    ``where``: condition on the source query's alias ``l``; None reads every row (and the stream
    then sums up what it read). ``read_nothing``: no row needs reading. ``summary``: the source's
    bucket summary, when the planner computed it. ``verified_loaded`` / ``verified_quarantined``:
    rows of unchanged buckets, already in the target / still in quarantine (they count as read).
    ``accounted_before``: target + open quarantine rows counted before the load, when known.
    ``state``: the snapshot's state, when the planner's pass computed it. ``note``: one line for
    the audit trail's load path."""

    where: sql.Composable | None = None
    read_nothing: bool = False
    summary: Summary | None = None
    verified_loaded: int = 0
    verified_quarantined: int = 0
    accounted_before: int | None = None
    state: SourceState | None = None
    note: str = ""
    # logical mode (changes.py): the legacy ids the decoded changes touched (an id absent from the
    # snapshot was deleted: no search for deleted rows), and the WAL position to record
    touched: frozenset[int] | None = None
    logical_lsn: str | None = None


READ_ALL = ReadPlan()


@dataclass(frozen=True)
class Watermark:
    change_hwm: str | None  # naive text in LEGACY_TIMEZONE, comparable with the legacy change column
    min_id: int | None
    max_id: int | None
    legacy_rows: int
    summary: Summary | None = None  # after that load
    transform_version: int | None = None  # source_sql.hash_salt of that load (None: before it was recorded)
    logical_lsn: str | None = None  # logical mode: the WAL position that load read changes up to


def read_watermark(conn, e: Entity) -> Watermark | None:
    row = conn.execute(sql.SQL(
        "SELECT (change_hwm AT TIME ZONE 'UTC')::text, min_legacy_id, max_legacy_id, legacy_rows, "
        "summary_buckets, summary_rows, summary_hashes, transform_version, logical_lsn::text "
        "FROM {} WHERE entity = %s").format(WATERMARKS), [e.name]).fetchone()
    if not row:
        return None
    buckets, rows, hashes, version, lsn = row[4:]
    summary = {b: (n, int(h)) for b, n, h in zip(buckets, rows, hashes)} if buckets is not None else None
    return Watermark(*row[:4], summary=summary, transform_version=version, logical_lsn=lsn)


def save_watermark_sql(e: Entity, state: SourceState, opts: LoadOptions,
                       summary: Summary | None, logical_lsn: str | None = None) -> tuple[sql.Composable, list]:
    """(statement, parameters) that advance the entity's watermark. Run in the load's own
    transaction: it commits with the rows it vouches for, or not at all, so a crash can never make
    a later refresh skip rows. After a load the target holds exactly the snapshot's legacy ids
    (deletes applied), so the snapshot's own range is the range a later search for deleted rows
    must cover."""
    order = sorted(summary) if summary is not None else None
    statement = sql.SQL(
        "INSERT INTO {} AS w (entity, change_hwm, min_legacy_id, max_legacy_id, legacy_rows, run_id, mode, updated_at, "
        "summary_buckets, summary_rows, summary_hashes, transform_version, logical_lsn) "
        "VALUES (%s, %s::timestamp AT TIME ZONE 'UTC', %s, %s, %s, %s, %s, now(), %s, %s, %s::numeric[], %s, "
        "%s::pg_lsn) "
        "ON CONFLICT (entity) DO UPDATE SET change_hwm = EXCLUDED.change_hwm, min_legacy_id = EXCLUDED.min_legacy_id, "
        "max_legacy_id = EXCLUDED.max_legacy_id, legacy_rows = EXCLUDED.legacy_rows, run_id = EXCLUDED.run_id, "
        "mode = EXCLUDED.mode, updated_at = now(), summary_buckets = EXCLUDED.summary_buckets, "
        "summary_rows = EXCLUDED.summary_rows, summary_hashes = EXCLUDED.summary_hashes, "
        "transform_version = EXCLUDED.transform_version, logical_lsn = EXCLUDED.logical_lsn").format(WATERMARKS)
    return statement, [e.name, state.change_hwm, state.min_id, state.max_id, state.rows, opts.run_id, opts.mode,
                       order, [summary[b][0] for b in order] if order is not None else None,
                       [str(summary[b][1]) for b in order] if order is not None else None, hash_salt(e, opts),
                       logical_lsn]


def save_watermark(conn, e: Entity, state: SourceState, opts: LoadOptions, summary: Summary | None,
                   logical_lsn: str | None = None) -> None:
    conn.execute(*save_watermark_sql(e, state, opts, summary, logical_lsn))


def retry_rows_sql(e: Entity, opts: LoadOptions) -> sql.Composable:
    """Rows that may load differently without a change at the source, as (legacy id, where it is
    now): 'q' quarantined as a duplicate (the winner may be gone) or as an orphan whose parents all
    exist now; 't' loaded with an optional foreign key set NULL whose parent exists now. Orphans
    whose parent is still missing would only be quarantined again: they are not re-read. Each
    orphan's parent keys are hashed once, in a lower query level (OFFSET 0 keeps it there): the
    raw row is read once and one md5 is taken per key."""
    blocking = [c for c in e.foreign_keys if c.required or not opts.error_recovery]
    digests = sql.SQL("").join(sql.SQL(", {} AS {}").format(
        md5_key_sql(c.parent, sql.SQL("(raw->>{})::bigint").format(sql.Literal(c.legacy_name))),
        sql.Identifier(f"h{i}")) for i, c in enumerate(blocking))
    parents_exist = sql.SQL(" AND ").join(
        sql.SQL("(q.{h} IS NULL OR EXISTS (SELECT 1 FROM {p} AS p WHERE p.id = {u}))").format(
            h=sql.Identifier(f"h{i}"), p=table_named(c.parent, opts.target_schema),
            u=uuid_from_md5_sql(sql.SQL("q.{}").format(sql.Identifier(f"h{i}"))))
        for i, c in enumerate(blocking)) if blocking else sql.SQL("true")
    optional = [c for c in e.foreign_keys if not c.required]
    arrived = sql.SQL(" OR ").join(
        sql.SQL("EXISTS (SELECT 1 FROM {p} AS p WHERE p.id = (t.metadata->'recovered'->{k}->>'was')::uuid)").format(
            p=table_named(c.parent, opts.target_schema), k=sql.Literal(c.target))
        for c in optional) if optional else sql.SQL("false")
    return sql.SQL(
        "SELECT legacy_id, 'q' FROM (SELECT legacy_id, reason, raw IS NULL AS no_raw{digests} FROM {q} "
        "WHERE entity = {ent} AND NOT resolved AND reason IN ({d}, {o}) OFFSET 0) AS q "
        "WHERE reason = {d} OR q.no_raw OR ({parents_exist}) "
        "UNION ALL SELECT (t.metadata->>'legacy_id')::bigint, 't' FROM {t} AS t "
        "WHERE t.metadata->'recovered' ? 'retry' AND ({arrived})").format(
        q=QUARANTINE, ent=sql.Literal(e.name), o=sql.Literal(ORPHAN_FK),
        d=sql.Literal(DUPLICATE_KEY), t=target_table(e, opts.target_schema), digests=digests,
        parents_exist=parents_exist, arrived=arrived)


def open_quarantine_rows(conn, e: Entity) -> int:
    """Unresolved quarantine rows of ``e`` (read through the quarantine's partial index)."""
    return conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE entity = %s AND NOT resolved").format(
        QUARANTINE), [e.name]).fetchone()[0]


def accounted_sql(e: Entity, opts: LoadOptions) -> sql.Composable:
    """(target rows, target rows present under the delete policy, open quarantine rows) of ``e``."""
    return sql.SQL(
        "SELECT count(*), count(*) FILTER (WHERE {live}), "
        "(SELECT count(*) FROM {q} WHERE entity = {ent} AND NOT resolved) FROM {t} AS t").format(
        t=target_table(e, opts.target_schema), live=live_rows_sql("t", opts.delete_policy), q=QUARANTINE,
        ent=sql.Literal(e.name))


def accounted(conn, e: Entity, opts: LoadOptions) -> tuple[int, int]:
    """(target rows, target rows present + open quarantine rows): what accounts for legacy rows."""
    rows, live_rows, held = conn.execute(accounted_sql(e, opts)).fetchone()
    return rows, live_rows + held


def target_summary_sql(e: Entity, schema: str) -> sql.Composable:
    """Per bucket: (bucket, rows loaded, rows in open quarantine, sum of their source hashes)."""
    return sql.SQL(
        "SELECT b, sum(n_loaded)::bigint, sum(n_quarantined)::bigint, sum(h) FROM ("
        "  SELECT (metadata->>'legacy_id')::bigint / {b} AS b, count(*) AS n_loaded, 0 AS n_quarantined, "
        "         sum((metadata->>'source_hash')::bigint) AS h FROM {t} GROUP BY 1"
        "  UNION ALL"
        "  SELECT legacy_id / {b}, 0, count(*), sum(source_hash) FROM {q} WHERE entity = {ent} AND NOT resolved "
        "  GROUP BY 1) s GROUP BY b ORDER BY b").format(
        b=sql.Literal(BUCKET), t=target_table(e, schema), q=QUARANTINE, ent=sql.Literal(e.name))


def quarantine_buckets_sql(e: Entity) -> sql.Composable:
    """Per bucket: (bucket, open quarantine rows) (the small, indexed quarantine)."""
    return sql.SQL("SELECT legacy_id / {b}, count(*) FROM {q} WHERE entity = {ent} AND NOT resolved GROUP BY 1").format(
        b=sql.Literal(BUCKET), q=QUARANTINE, ent=sql.Literal(e.name))


def _source_summary(stream: LegacyStream) -> tuple[list[tuple[int, int, int]], SourceState]:
    """The source's buckets (bucket, rows, hash sum mod 2^64) and the snapshot's state, in one pass."""
    rows = stream.query(bucket_summary_sql(stream.entity, stream.opts))
    total = next(r for r in rows if r[0] is None)
    state = SourceState(int(total[1]), total[3], total[4], total[5])
    return sorted((r[0], r[1], int(r[2]) % HASH_MOD) for r in rows if r[0] is not None), state


def _stored_summary(conn, e: Entity, opts: LoadOptions, previous: Watermark | None,
                    existing: int | None) -> tuple[Summary | None, int | None]:
    """(the summary the last full-mode load left, when it still describes the target; the target +
    open quarantine rows counted to decide it). It describes the target when the counts agree: a
    row removed or added behind the engine's back makes the planner summarise the target itself,
    and re-read what differs. ``existing``: the target's row count, already taken by the load."""
    if previous is None or previous.summary is None:
        return None, None
    if existing is not None and opts.delete_policy == "hard":  # every target row counts
        before = existing + open_quarantine_rows(conn, e)
    else:
        before = accounted(conn, e, opts)[1]
    if before != sum(n for n, _ in previous.summary.values()):
        return None, before
    return previous.summary, before


def plan_changes(conn, stream: LegacyStream, previous: Watermark | None = None,
                 existing: int | None = None) -> ReadPlan:
    """The plan of a full-mode load of a loaded table: the buckets whose summaries differ, and the
    rows worth a retry. The source's summary runs on the stream's snapshot in a thread while the
    target's runs on ``conn``."""
    e, opts = stream.entity, stream.opts
    with ThreadPoolExecutor(max_workers=1) as pool:
        source_future = pool.submit(_source_summary, stream)
        stored, accounted_before = _stored_summary(conn, e, opts, previous, existing)
        if stored is None:
            rows = conn.execute(target_summary_sql(e, opts.target_schema)).fetchall()
            target = {b: (loaded, quarantined, int(h) % HASH_MOD) for b, loaded, quarantined, h in rows}
        else:
            held = dict(conn.execute(quarantine_buckets_sql(e)).fetchall())
            target = {b: (n - held.get(b, 0), held.get(b, 0), h) for b, (n, h) in stored.items()}
        retry = conn.execute(retry_rows_sql(e, opts)).fetchall()
        source_rows, state = source_future.result()
    verified_loaded = verified_quarantined = 0
    dirty = []
    for b, n, h in source_rows:
        loaded, quarantined, th = target.pop(b, (0, 0, None))
        if loaded + quarantined == n and th == h:
            verified_loaded += loaded
            verified_quarantined += quarantined
        else:
            dirty.append(b)
    # buckets only the target has: their legacy rows were deleted (deletes.py); nothing to read
    retry_ids = sorted({legacy_id for legacy_id, _ in retry})
    dirty_set = set(dirty)
    for legacy_id, where in retry:
        if legacy_id // BUCKET not in dirty_set:  # counted as verified above, re-read instead
            if where == "q":
                verified_quarantined -= 1
            else:
                verified_loaded -= 1
    nothing = not dirty and not retry_ids
    return ReadPlan(
        where=None if nothing else ids_sql(e, buckets=dirty, ids=retry_ids), read_nothing=nothing,
        summary={b: (n, h) for b, n, h in source_rows}, verified_loaded=verified_loaded,
        verified_quarantined=verified_quarantined, accounted_before=accounted_before, state=state,
        note=(f"{len(dirty)} of {len(source_rows)} id buckets changed, {len(retry_ids)} rows retried, "
              f"{verified_loaded + verified_quarantined:,} rows verified unchanged"
              f"{', against the last load' + chr(39) + 's summary' if stored is not None else ''}"))


def plan_differential(conn, stream: LegacyStream, wm: Watermark) -> ReadPlan:
    """The plan of a differential load: the legacy rows changed or added since the watermark.

    Changed: the change-tracking column at or after the high-water mark minus the overlap (a
    clock that lags, a transaction that committed after the last snapshot with an earlier
    timestamp), or later than the snapshot's clock (such marks never become the high-water mark,
    see source_sql.source_state_sql; they are counted in the note). Added: ids above the highest
    id seen. Plus the rows worth a retry (:func:`retry_rows_sql`).
    """
    e, opts = stream.entity, stream.opts
    conds = []
    set_back = dt.timedelta(0)
    if wm.change_hwm is not None:
        hwm = dt.datetime.fromisoformat(wm.change_hwm)
        now = dt.datetime.now(zoneinfo.ZoneInfo(opts.legacy_timezone)).replace(tzinfo=None)
        set_back = clock_set_back(opts.legacy_timezone, hwm, now)
        since = hwm - dt.timedelta(seconds=opts.overlap_s) - set_back
        conds.append(changed_since_sql(e, since.isoformat(sep=" ")))
    future, count_future = future_marks_sql(e, opts.legacy_timezone)
    conds.append(future)
    ((n_future,),) = stream.query(count_future)
    if n_future:
        log.warning("%s: %d legacy rows have change marks in the future; every refresh re-reads them",
                    e.name, n_future)
    retry = sorted({legacy_id for legacy_id, _ in conn.execute(retry_rows_sql(e, opts)).fetchall()})
    if wm.max_id is not None or retry:
        conds.append(ids_sql(e, above=wm.max_id, ids=retry))
    return ReadPlan(where=sql.SQL(" OR ").join(conds),
                    note=(f"differential: changed since {wm.change_hwm} - {opts.overlap_s}s"
                          f"{f' - {set_back} (clocks set back in {opts.legacy_timezone})' if set_back else ''}, ids above "
                          f"{wm.max_id}, {n_future} rows marked in the future, {len(retry)} rows retried"))


def plan_logical(conn, stream: LegacyStream, found: Changes) -> ReadPlan:
    """The plan of a differential load in logical mode: the legacy ids the decoded changes
    touched (``found``, decoded before this stream's snapshot), plus the rows worth a retry."""
    e, opts = stream.entity, stream.opts
    touched = found.ids.get(e.legacy_table, set())
    retry = {legacy_id for legacy_id, _ in conn.execute(retry_rows_sql(e, opts)).fetchall()}
    wanted = sorted(touched | retry)
    note = f"logical: {len(touched)} ids changed up to {found.upto}, {len(retry)} rows retried"
    if not wanted:
        return ReadPlan(read_nothing=True, touched=frozenset(), logical_lsn=found.upto, note=note)
    return ReadPlan(where=ids_sql(e, above=None, ids=wanted), touched=frozenset(touched), logical_lsn=found.upto,
                    note=note)


def clock_set_back(zone: str, since: dt.datetime, until: dt.datetime) -> dt.timedelta:
    """The most the wall clock of ``zone`` went back between the naive local times ``since`` and
    ``until`` (a daylight-saving time ending: one hour in most zones), or zero.

    Marks written in the hour a clock repeats can be lower than a mark written before it, so a
    refresh whose watermark is in that hour must re-read from an hour earlier. The UTC offset is
    sampled once per day, from ``since`` (at most 800 days back: every shift of a zone recurs
    within a year; a time in the repeated hour reads as the earlier offset) to a day after
    ``until``; a fall in the offset between two samples is a clock set back by that much."""
    tz = zoneinfo.ZoneInfo(zone)
    day = dt.timedelta(days=1)
    start, end = max(since, until - 800 * day), max(since, until) + day
    shift, previous = dt.timedelta(0), None
    t = start
    while t <= end:
        offset = t.replace(tzinfo=tz).utcoffset()
        if previous is not None and offset < previous:
            shift = max(shift, previous - offset)
        previous, t = offset, t + day
    return shift
