"""One table's load, in one transaction on the target: plan, stream, COPY, rejects, merge, deletes,
quarantine, watermark. The caller (commit.py: the one sequence the IO manager and
``migrate_entity`` share) writes the audit row in the same transaction and commits, or rolls
everything back.

Flow of :func:`load_stream`:
  1. lock the table against a second loader (readers are not blocked), choose the path: the fast
     path for an empty table (copy.py), the merge otherwise;
  2. plan what to read (plan.py): every row on the fast path; on the merge path the buckets whose
     summary changed (full mode) or the rows changed since the watermark (differential mode),
     plus the rows worth a retry;
  3. stream the planned rows (stream.py) through a reader thread a couple of batches ahead, and
     COPY them in binary into the table (fast path) or a temp staging table; the source's
     rejects are spooled aside and copied to the temp quarantine;
  4. reject what the target cannot take: orphans and duplicates (rejects.py), with their raw rows;
  5. fast path: rebuild and validate the keys (or, while the run holds them aside, keys.py, build
     the indexes only); merge path: evict target rows that no longer load
     (deletes.evict), free the unique values about to move, then one ``INSERT ... ON CONFLICT
     DO UPDATE ... WHERE IS DISTINCT FROM``, so an unchanged row is never written;
  6. upsert the quarantine, resolve the rows that loaded now; apply deletes (deletes.py);
  7. count, and advance the watermark in the same transaction (plan.save_watermark).
A re-run over an unchanged source writes nothing. Steps 3 to 7 are functions of their own
(:func:`copy_stream`, :func:`reject_target_side_with_raw`, :func:`finish_fast_path`,
:func:`count_and_save`): a sliced load (slices.py) runs step 3 once per slice and the rest once.
While a sliced load of the table is unfinished (its keys dropped), :func:`load_stream` refuses.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Callable

import psutil
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from ..errors import PermanentError
from ..registry import Entity
from .audit import LoadResult
from .changes import changes_of_run, ensure, lsn
from .copy import BinaryCopy, capture_constraints, drop_constraints, fast_path_blocker, restore_constraints, to_csv
from .deletes import apply_deletes, evict, resolve_quarantine_sql, target_rows_of_sql
from .keys import build_indexes_sql, set_aside_of
from .names import (DETAIL, LEGACY_ID, NOTES, RAW, REJECT, SLICE_LOADS, SOFT_DELETED, SOURCE_HASH, SOURCE_RULES,
                    column_list, legacy_uuid_sql, target_columns, target_table)
from .options import LoadOptions
from .plan import (READ_ALL, ReadPlan, Watermark, accounted, open_quarantine_rows, plan_changes, plan_differential,
                   plan_logical, read_watermark, save_watermark)
from .rejects import name_first_missing_parent, reject_target_side, unique_swap_sql, upsert_quarantine_sql
from .source_sql import hash_salt
from .stream import LegacyStream

log = logging.getLogger(__name__)


def _prefetch(batches, depth: int = 2):
    """Iterate ``batches`` in a background thread, at most ``depth`` batches ahead.

    Reading from the source (psycopg releases the GIL while it waits on the socket, pyarrow while
    it parses and computes) then overlaps with writing to the target instead of alternating with
    it. Memory grows by ``depth`` batches, still bounded by BATCH_SIZE. An exception in the
    reader is re-raised here; closing the generator stops the reader.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce():
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    thread = threading.Thread(target=produce, name="legacy-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)


class LoadObserver:
    """Measurement beside the load: seconds per phase, peak RSS, progress lines every
    ``progress_every`` batches (the IO manager's callback also enforces the time limit)."""

    def __init__(self, result: LoadResult, stream: LegacyStream, opts: LoadOptions,
                 on_progress: Callable[[str], None] | None):
        self.result, self.stream, self.opts, self.on_progress = result, stream, opts, on_progress
        self.started = self.mark = time.perf_counter()
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self.batches = 0

    def phase(self, name: str) -> None:
        now = time.perf_counter()
        self.result.phases[name] = round(self.result.phases.get(name, 0.0) + now - self.mark, 3)
        self.mark = now

    def batch(self) -> None:
        self.batches += 1
        self.peak = max(self.peak, self.proc.memory_info().rss)
        if self.on_progress and self.batches % self.opts.progress_every == 0:
            s = self.stream
            elapsed = time.perf_counter() - self.started
            rate = s.rows_read / elapsed if elapsed else 0
            left = max(s.estimated_rows - s.rows_read, 0)
            eta = f", about {left / rate:.0f}s left" if rate and s.estimated_rows else ""
            self.on_progress(f"{s.entity.name}: {s.rows_read:,} rows read, {rate:,.0f} rows/s{eta}")

    def finish(self) -> None:
        self.result.duration_s = time.perf_counter() - self.started
        self.result.finished_at = time.time()
        self.result.peak_rss_mb = max(self.peak, self.proc.memory_info().rss) / 2**20


SESSION_SQL = ("SET LOCAL TimeZone = 'UTC'; SET LOCAL synchronous_commit = off; "
               "SET LOCAL maintenance_work_mem = '256MB'; SET LOCAL jit = off")


class SliceError(PermanentError):
    """A sliced load (slices.py) cannot go on as asked, or blocks a one-step load of its table;
    the message says which and what to do. Permanent: a retry of the same step meets the same
    state."""

    kind = "SLICES"
    recovery = "re-run the job: pending slices load, completed ones stay, the last step builds the keys"


def unfinished_slices_sql() -> sql.Composable:
    """The run that planned the unfinished sliced load of an entity (parameter), if any."""
    return sql.SQL("SELECT run_id FROM {} WHERE entity = %s AND finished_at IS NULL").format(SLICE_LOADS)


def stage_sql(e: Entity, schema: str) -> list[sql.Composable]:
    """The merge path's staging table: exactly the registry's columns of the target, with their
    types (no constraint, default, identity or generated column: a column a user added to the
    target table never reaches it, so an identity's NOT NULL cannot reject the COPY), plus the
    legacy id."""
    return [sql.SQL("CREATE TEMP TABLE _stage ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
                column_list(target_columns(e)), target_table(e, schema)),
            sql.SQL("ALTER TABLE _stage ADD COLUMN {} bigint").format(sql.Identifier(LEGACY_ID))]


QUARANTINE_STAGE_SQL = sql.SQL("CREATE TEMP TABLE _quarantine (legacy_id bigint, reason text, detail text, raw jsonb, "
                               "source_hash bigint) ON COMMIT DROP")


def copy_sql(dest: sql.Composable, cols: list[str], freeze: bool) -> sql.Composable:
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary{})").format(
        dest, column_list(cols), sql.SQL(", FREEZE") if freeze else sql.SQL(""))


def merge_sql(e: Entity, schema: str) -> sql.Composable:
    """Staging into the target: insert new ids, update rows whose content differs, leave equal rows
    untouched (no new row version). Returns (inserted, updated)."""
    data_cols = [c.target for c in e.columns] + ["metadata"]
    return sql.SQL(
        "WITH up AS (INSERT INTO {t} AS t ({cols}) SELECT {cols} FROM _stage "
        "ON CONFLICT (id) DO UPDATE SET {sets} WHERE ({old}) IS DISTINCT FROM ({new}) "
        "RETURNING (xmax = 0) AS inserted) "
        "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up").format(
        t=target_table(e, schema), cols=column_list(target_columns(e)),
        sets=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in data_cols),
        old=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in data_cols),
        new=sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in data_cols))


def quarantine_rejects_sql(e: Entity, run_id: str) -> sql.Composable:
    """This load's rejects (``_quarantine``) into the control schema's quarantine."""
    return upsert_quarantine_sql(sql.SQL(
        "SELECT DISTINCT ON (legacy_id) {ent}::text AS entity, legacy_id, reason, detail, raw, source_hash, "
        "{run}::text AS run_id FROM _quarantine ORDER BY legacy_id").format(
        ent=sql.Literal(e.name), run=sql.Literal(run_id)))


def resolve_loaded_sql(e: Entity, run_id: str, staged: bool, schema: str) -> sql.Composable:
    """Resolve the open quarantine rows that loaded now. Only a row this load wrote can have left
    the quarantine: on the merge path those are the staged rows (not every open quarantine row of
    the table, most of which were not re-read)."""
    where = sql.SQL("NOT EXISTS (SELECT 1 FROM _quarantine x WHERE x.legacy_id = q.legacy_id) "
                    "AND EXISTS (SELECT 1 FROM {t} AS t WHERE t.id = {uuid})").format(
        t=target_table(e, schema), uuid=legacy_uuid_sql(e.name, sql.SQL("q.legacy_id")))
    if staged:
        where = sql.SQL("q.legacy_id IN (SELECT {} FROM _stage) AND {}").format(sql.Identifier(LEGACY_ID), where)
    return resolve_quarantine_sql(e, run_id, "loaded", where)


def load_stream(conn: psycopg.Connection, stream: LegacyStream, opts: LoadOptions,
                on_progress: Callable[[str], None] | None = None) -> LoadResult:
    """Load ``stream`` into its target table inside the caller's open transaction on ``conn`` (the
    steps are the module docstring's). The caller commits (after writing the audit row in the same
    transaction) or rolls back."""
    e = stream.entity
    result = LoadResult(e.name, "merge", started_at=time.time(), mode=opts.mode)
    watch = LoadObserver(result, stream, opts, on_progress)
    target = target_table(e, opts.target_schema)
    conn.execute(SESSION_SQL)
    # 1. one loader per table at a time; readers are not blocked
    conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(target))
    if planned := conn.execute(unfinished_slices_sql(), [e.name]).fetchone():
        # its keys are dropped until the sliced load's last step (slices.py) rebuilds them
        raise SliceError(f"{e.name}: a sliced load planned by run {planned[0]} is unfinished (the table has no keys "
                         "until it finishes): re-run the job with the table still sliced (MIGRATION_SLICE_ROWS, "
                         "MIGRATION_SLICED_TABLES): it loads the pending slices and builds the keys")
    # a table whose keys the run set aside (keys.py) loads on the fast path when empty: without its
    # keys, no other path can; with rows (a resumed run), the merge uses the indexes its load built
    aside = bool(set_aside_of(conn, e, opts.target_schema))
    has_rows = conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(target)).fetchone()[0]
    fast = (opts.fast_path or aside) and not has_rows
    blocker = fast_path_blocker(conn, e, opts.target_schema) if fast and not aside else None
    if blocker:
        fast = False
        result.load_path = f"merge (fast path not possible: {blocker})"
        log.warning("%s: fast path not possible (%s): loading through the merge", e.name, blocker)
    previous = read_watermark(conn, e)
    # A transform changed since the rows were loaded (or the version predates its recording): the
    # differential plan would leave the unchanged legacy rows as the old transform made them. Full
    # mode compares every bucket, and the source hash is salted with the same version, so every
    # row is read and converted anew.
    retransform = previous is not None and previous.transform_version != hash_salt(e, opts)
    if has_rows and retransform and opts.mode == "differential":
        log.warning("%s: its transform changed since its rows were loaded: full mode (every row converted again)",
                    e.name)
        result.mode = "full"
    differential = has_rows and opts.mode == "differential" and previous is not None and not retransform
    logical = logical_start(stream, previous, differential) if opts.change_source == "logical" else None
    if differential and logical is not None and not logical.usable:
        result.mode, differential = "full", False
    # logical mode: the run's decoded changes (before this stream's snapshot); a TRUNCATE lists no ids
    found = changes_of_run(stream.conninfo, opts.slot, opts.run_id) if differential and logical else None
    if found is not None and e.legacy_table in found.truncated:
        log.warning("%s: its legacy table was truncated since the last refresh: full mode", e.name)
        result.mode, differential, found = "full", False, None
    # A differential load reads a few rows of what may be millions: it counts the table once,
    # after the merge (apply_deletes needs that count anyway), and derives the count before.
    result.existing = None if differential else (
        conn.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone()[0] if has_rows else 0)
    # 2. the plan
    plan = READ_ALL
    if found is not None:
        plan = plan_logical(conn, stream, found)
    elif differential:
        plan = plan_differential(conn, stream, previous)
    elif result.existing and opts.incremental:
        result.mode = "full"
        plan = plan_changes(conn, stream, previous, result.existing)
    if logical is not None and plan.logical_lsn is None:  # a full load: what changed after the floor comes again
        plan = replace(plan, logical_lsn=logical.floor)
    if plan.note:
        result.load_path = f"merge ({plan.note})"
    state = plan.state or stream.snapshot()
    saved = []
    if fast and aside:
        result.load_path = "fast (keys set aside for the run: bulk load, then build indexes)"
    elif fast:
        result.load_path = "fast (empty target: bulk load, then build keys)"
        saved = capture_constraints(conn, e, opts.target_schema)
        drop_constraints(conn, saved, opts.target_schema)
    if fast:
        # Emptied in this transaction, the table takes COPY FREEZE: rows are written frozen and
        # the pages all-visible, so neither the key builds below nor the first queries after the
        # load rewrite every page to set hint bits, and no vacuum has to freeze it later. The
        # table is empty (that is why this path runs); TRUNCATE only gives it a new file.
        conn.execute(sql.SQL("TRUNCATE {}").format(target))
        dest = target
    else:
        for statement in stage_sql(e, opts.target_schema):
            conn.execute(statement)
        dest = sql.Identifier("_stage")
    conn.execute(QUARANTINE_STAGE_SQL)
    watch.phase("prepare")

    # 3. stream and COPY; the source's rejects go to _quarantine
    batches = iter(()) if plan.read_nothing else stream.batches(plan.where)
    cols = target_columns(e) + ([] if fast else [LEGACY_ID])
    source_rules = copy_stream(conn, stream, batches, cols, dest, fast, watch)
    result.records_read = stream.rows_read + plan.verified_loaded + plan.verified_quarantined

    # 4. what the target cannot take
    recoveries = reject_target_side_with_raw(conn, e, dest, fast, opts, stream, watch)

    # 5. keys (fast path) or the merge
    if fast:
        finish_fast_path(conn, e, opts, result, saved, watch)
    else:
        # rows that loaded before and no longer do (their legacy row now breaks a rule, or a row with a
        # lower legacy id took their unique value): the old version leaves the target, before the
        # merge (which may give its unique value to the winner), with its children
        conn.execute(target_rows_of_sql(e, opts.target_schema, "_evict", sql.SQL("SELECT legacy_id FROM _quarantine")))
        result.evicted = evict(conn, e, "_evict", stream, opts, result)
        watch.phase("evict_requarantined")
        for statement in unique_swap_sql(e, opts.target_schema):
            conn.execute(statement)
        result.inserted, result.updated = conn.execute(merge_sql(e, opts.target_schema)).fetchone()
        watch.phase("merge")

        # 6. the quarantine, then deletes. The resolution first: it touches only open rows this load
        # did not quarantine again, the upsert only rows it did, so the order changes nothing but
        # the plan. After the upsert the statistics still gave the entity the few open rows it had
        # before, and with thousands just written the planner scanned _stage once per quarantine
        # row (BENCHMARKS.md, design measurements).
        result.resolved = conn.execute(resolve_loaded_sql(e, opts.run_id, True, opts.target_schema)).rowcount
        conn.execute(quarantine_rejects_sql(e, opts.run_id))
        watch.phase("quarantine_upsert_and_resolve")
        apply_deletes(conn, e, stream, opts, result, state, previous, plan)
        name_first_missing_parent(conn, e, opts)
        if result.existing is None:  # not counted on the way (the plan read nothing)
            rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone()[0]
            result.existing = rows - result.inserted + result.evicted + result.deleted
        watch.phase("deletes")

    # 7. counts and the watermark
    summary = plan.summary if plan.summary is not None else stream.summary
    count_and_save(conn, e, opts, result, plan, state, summary, source_rules, recoveries, watch)
    return result


@dataclass(frozen=True)
class LogicalStart:
    floor: str  # the slot's confirmed position before this load's snapshot
    usable: bool  # the slot's changes since the table's recorded position are all there


def logical_start(stream: LegacyStream, previous: Watermark | None, differential: bool) -> LogicalStart:
    """Logical mode, before the stream's snapshot: the slot and the publication exist (created
    when missing, so that no change can fall between them and the snapshot), and whether a
    differential load can take its changes from the slot (changes.py: otherwise full mode)."""
    e, slot = stream.entity, stream.opts.slot
    state, created = ensure(stream.conninfo, slot)
    why = None  # a full load reads every row (or every changed bucket) anyway: only a differential one asks
    if differential and (created or state.lost):
        why = "was missing and was created now" if created else "lost the WAL it needed (wal_status lost)"
    elif differential and previous.logical_lsn is None:
        why = "has no recorded position for this table (loaded in watermark mode)"
    elif differential and lsn(state.confirmed) > lsn(previous.logical_lsn):
        why = f"is at {state.confirmed}, past this table's recorded {previous.logical_lsn} (dropped and created again?)"
    if why is not None:
        log.warning("%s: the replication slot %s %s: a full-mode pass instead of the slot's changes", e.name, slot, why)
    return LogicalStart(state.confirmed, why is None)


def copy_stream(conn: psycopg.Connection, stream: LegacyStream, batches, cols: list[str], dest: sql.Composable,
                freeze: bool, watch: LoadObserver) -> dict[str, int]:
    """Step 3: COPY the loadable rows of ``batches`` into ``dest`` (binary), spool the source's
    rejects aside and copy them into ``_quarantine`` after. Returns the recovery rules the source
    query applied to the rows sent, by rule."""
    rejects = tempfile.SpooledTemporaryFile(max_size=8 << 20)
    source_rules: dict[str, int] = {}
    n_rejects = 0
    encoder = BinaryCopy(pa.schema([stream.schema.field(c) for c in cols]))
    with conn.cursor().copy(copy_sql(dest, cols, freeze=freeze)) as copy:
        copy.write(encoder.header())
        for batch in _prefetch(batches, depth=2):
            bad_mask = pc.is_valid(batch.column(REJECT))
            n_bad = batch.num_rows - batch.column(REJECT).null_count  # rows with a reject reason
            copy.write(encoder.encode(batch.select(cols), skip=bad_mask if n_bad else None))
            _count_source_rules(batch.column(NOTES), bad_mask, source_rules)
            if n_bad:
                bad = batch.filter(bad_mask).select([LEGACY_ID, REJECT, DETAIL, RAW, SOURCE_HASH])
                rejects.write(to_csv(bad))
                n_rejects += n_bad
            watch.batch()
        copy.write(encoder.trailer())
    watch.phase("stream_and_copy")
    if n_rejects:
        rejects.seek(0)
        with conn.cursor().copy("COPY _quarantine (legacy_id, reason, detail, raw, source_hash) FROM STDIN "
                                "(FORMAT csv)") as qc:
            while block := rejects.read(1 << 20):
                qc.write(block)
    rejects.close()
    watch.phase("quarantine_copy")
    return source_rules


def reject_target_side_with_raw(conn: psycopg.Connection, e: Entity, dest: sql.Composable, fast: bool,
                                opts: LoadOptions, stream: LegacyStream, watch: LoadObserver) -> dict[str, int]:
    """Step 4: orphans and duplicates of the rows in ``dest`` go to ``_quarantine`` (rejects.py),
    with their raw legacy rows. Returns the recoveries applied on the way, by rule."""
    # Fresh statistics first: a just-loaded table (and any temp table: autovacuum never sees
    # those) has none, and the orphan/duplicate queries would get nested-loop plans of millions of
    # probes. Only the columns those queries join or group on: sampling every text column costs
    # more than the queries it informs.
    stat_cols = [c.target for c in e.foreign_keys + e.unique_columns]
    if stat_cols:
        conn.execute(sql.SQL("ANALYZE {} ({})").format(dest, column_list(stat_cols)))
    watch.phase("analyze")
    recoveries: dict[str, int] = {}
    reject_target_side(conn, e, dest, staged=not fast, opts=opts, recoveries=recoveries)
    watch.phase("orphans_and_duplicates")
    # raw legacy rows of target-side rejects, fetched from the source by id in one query and
    # attached set-based (tens of thousands of rows when a parent's rows cascade)
    missing_raw = [r[0] for r in conn.execute("SELECT legacy_id FROM _quarantine WHERE raw IS NULL").fetchall()]
    if missing_raw:
        conn.execute("CREATE TEMP TABLE _raw (legacy_id bigint PRIMARY KEY, raw jsonb) ON COMMIT DROP")
        with conn.cursor().copy("COPY _raw (legacy_id, raw) FROM STDIN") as rc:
            for legacy_id, raw in stream.fetch_raw(missing_raw):
                rc.write_row((legacy_id, raw))
        conn.execute("UPDATE _quarantine q SET raw = r.raw FROM _raw r WHERE r.legacy_id = q.legacy_id "
                     "AND q.raw IS NULL")
    watch.phase("raw_rows_of_rejects")
    return recoveries


def finish_fast_path(conn: psycopg.Connection, e: Entity, opts: LoadOptions, result: LoadResult,
                     saved: list, watch: LoadObserver) -> None:
    """Steps 5 and 6 of the fast path: rebuild and validate the keys ``saved`` holds, or, when the
    run set the table's keys aside (keys.py), build its indexes only; then the quarantine. Every
    legacy row of the snapshot was read, so an open quarantine row that this load neither loaded
    nor quarantined again is of a legacy row that no longer exists (the table was emptied by a
    cascade, or the source shrank), whatever its reason: it is resolved."""
    target = target_table(e, opts.target_schema)
    restore_constraints(conn, saved)
    for statement in build_indexes_sql(set_aside_of(conn, e, opts.target_schema)):
        conn.execute(statement)
    result.inserted = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone()[0]
    watch.phase("build_keys")
    conn.execute(quarantine_rejects_sql(e, opts.run_id))
    result.resolved = conn.execute(resolve_loaded_sql(e, opts.run_id, False, opts.target_schema)).rowcount
    gone = conn.execute(resolve_quarantine_sql(e, opts.run_id, SOFT_DELETED, sql.SQL(
        "NOT EXISTS (SELECT 1 FROM _quarantine x WHERE x.legacy_id = q.legacy_id)"))).rowcount
    if gone:
        log.info("%s: %d open quarantine rows of legacy rows that no longer exist resolved", e.name, gone)
    # the table was empty: its rows are the ones just counted (none soft-deleted), so the
    # accounting needs only the quarantine's open rows, not a second scan of the table
    result.accounted_after = result.inserted + open_quarantine_rows(conn, e)
    watch.phase("quarantine_upsert_and_resolve")


def count_and_save(conn: psycopg.Connection, e: Entity, opts: LoadOptions, result: LoadResult, plan: ReadPlan,
                   state, summary, source_rules: dict[str, int], recoveries: dict[str, int],
                   watch: LoadObserver) -> None:
    """Step 7: the counts, and the watermark in the load's transaction. ``summary``: the bucket
    summary of the whole snapshot, when this load has one."""
    result.quarantine_by_reason = dict(conn.execute(
        "SELECT reason, count(*) FROM _quarantine GROUP BY reason ORDER BY reason").fetchall())
    result.quarantined = sum(result.quarantine_by_reason.values()) + plan.verified_quarantined
    # recoveries applied in the source query are recorded in metadata->'recovered'
    recoveries.update({k: v for k, v in source_rules.items() if v})
    result.recoveries = recoveries
    watch.phase("counts")
    loaded = result.records_read - result.quarantined
    result.unchanged = max(loaded - result.inserted - result.updated, 0)
    after = result.accounted_after if result.accounted_after is not None else accounted(conn, e, opts)[1]
    result.remaining_difference = state.rows - after
    # The summary stays valid for the next full-mode load only when this load accounted for the
    # whole snapshot (target + open quarantine = legacy rows) from a summary of all of it.
    keep = summary if result.mode == "full" and result.remaining_difference == 0 else None
    save_watermark(conn, e, state, opts, keep, plan.logical_lsn)
    watch.phase("watermark")
    watch.finish()


def needs_full_pass(result: LoadResult) -> bool:
    """A differential load that left legacy rows neither in the target nor in quarantine: rows it
    could not see (inserted below the highest id seen, with a change mark older than the
    watermark). A full-mode pass of the table, right after, compares every bucket and loads them."""
    return result.mode == "differential" and result.remaining_difference > 0


def load_again(conn: psycopg.Connection, stream: LegacyStream, opts: LoadOptions, on_progress=None) -> LoadResult:
    """The table loaded again with ``opts``, on a stream (and a snapshot) of its own; the caller
    commits. After :func:`needs_full_pass`: in full mode (:func:`full_pass`); in logical mode
    first with the slot's changes decoded anew (rows committed after the position the run decoded
    up to were already in the first load's snapshot: they are among the newer changes)."""
    again = LegacyStream(stream.conninfo, stream.entity, opts)
    try:
        return load_stream(conn, again, opts, on_progress)
    finally:
        again.close()


def full_pass(conn: psycopg.Connection, stream: LegacyStream, opts: LoadOptions, on_progress=None) -> LoadResult:
    """The full-mode pass after :func:`needs_full_pass`, on a stream of its own; the caller commits."""
    return load_again(conn, stream, replace(opts, mode="full"), on_progress)




def _count_source_rules(notes: pa.Array, rejected: pa.Array, counts: dict[str, int]) -> None:
    """Count the recovery rules the source query applied to the rows sent to the target, from
    their notes (what ``metadata.recovered`` holds), instead of reading the loaded rows back."""
    if notes.null_count == len(notes):
        return
    applied = pc.filter(notes, pc.and_(pc.is_valid(notes), pc.invert(rejected)))
    for rule in SOURCE_RULES:
        n = pc.sum(pc.count_substring(applied, f'"rule": "{rule}"')).as_py() or 0
        counts[rule] = counts.get(rule, 0) + n
