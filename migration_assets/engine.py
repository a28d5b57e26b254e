"""The data path: legacy rows -> Arrow record batches -> target table, one transaction per table.

Source side (:class:`LegacyStream`)
    One ``SELECT <transformed columns> FROM <legacy table>``, read as Arrow record batches by the
    ADBC PostgreSQL driver (a binary COPY decoded in C, no Python per row). The SELECT converts
    every value (transforms.py; text is trimmed on the batch) and flags rows that cannot be
    loaded (a required NULL, a value failing its cast, an email that is not an email) with a
    reason, carrying the raw legacy row as JSON for those rows only. Keys travel as the legacy
    integers: :func:`uuid3_keys` turns each key column of a batch into RFC 4122 UUIDs at once,
    and ``metadata`` is assembled with pyarrow.compute. Batches are cut to BATCH_SIZE rows;
    memory holds a few, whatever the table's size.

Target side (:func:`load_stream`, used by the IO manager)
    In one transaction: rows are sent with a binary ``COPY ... FROM STDIN`` (encoded from Arrow
    by pgpq: UUIDs travel as 16 bytes, timestamps as integers) into a temporary staging table;
    children whose parent is missing and rows that would break a unique key are moved, set-based,
    from staging to the quarantine; then one ``INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE
    row IS DISTINCT FROM`` merges staging into the target. Nothing is ever deleted from the target.
    A re-run over an unchanged source writes nothing.

    Fast path: when the target table is empty, its primary key, unique constraints, foreign keys
    and indexes (and the foreign keys of its children, which are necessarily empty too) are
    dropped inside the transaction, the rows are COPied straight into the table, the rejects are
    moved out, and every constraint and index is rebuilt from the definitions the catalog gave.
    Building a b-tree once from sorted input is several times cheaper than maintaining it under
    random-UUID inserts, and re-adding a foreign key validates every row, so the result is the
    same table the merge path produces. A failure anywhere rolls all of it back, DDL included.
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import adbc_driver_postgresql.dbapi as adbc
import numpy as np
import pgpq
from pgpq import encoders as pgpq_encoders, schema as pgpq_schema
import psutil
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from psycopg import sql

from . import connections
from .registry import Entity, children, entity
from .target_schema import CONTROL_SCHEMA
from .transforms import (EMAIL_REGEX, Column, Kind, ParentKeys, blank_sql, md5_key_sql, parse_text_dates, trim_text,
                         uuid3_keys, uuid_from_md5_sql)

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 10_000  # rows per Arrow batch (BATCH_SIZE); measured: 20,000 is no faster and holds ~15 MB more
READ_HINT_BYTES = 4 << 20  # the ADBC driver cuts its batches near this size (its default: 16 MB)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def _bound_native_memory() -> None:
    """Keep freed batch memory for the next batch, but never more than a few batches' worth.

    A load allocates and frees the same few megabytes per batch, in three allocators: pyarrow's
    pool, the ADBC driver's and pgpq's (both plain malloc). With pyarrow's default pool (mimalloc)
    and glibc's adaptive mmap threshold, which keeps rising after large frees, peak RSS grew
    148 MB above the imports (largest table, 20,000 rows per batch). Mapping every block above
    128 KiB bounded it (72 MB) but made every batch fault its pages in afresh: 640,000 page
    faults and 1.3 s of system time on the 2.2M-row table, a fifth of its load. So Arrow uses the
    system allocator, blocks up to 4 MiB (every batch-sized buffer) come from the heap and are
    reused, and the heap gives back whatever lies free above 16 MiB: 24,000 faults, 0.3 s, for
    ~15 MB more peak RSS. Only glibc has ``mallopt``; elsewhere this keeps the defaults.
    """
    import ctypes
    import ctypes.util

    pa.set_memory_pool(pa.system_memory_pool())
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 4 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 16 << 20)
    except (OSError, AttributeError):  # not glibc (musl, macOS): keep the allocator's defaults
        pass


_bound_native_memory()

LEGACY_ID = "_legacy_id"
REJECT = "_reject"
DETAIL = "_detail"
RAW = "_raw"
NOTES = "_notes"
SOURCE_HASH = "_source_hash"
BUCKET = 1024  # legacy ids per bucket of the change summary
HASH_MOD = 1 << 64  # bucket hash sums are compared modulo 2^64
ENGINE_VERSION = "4"  # part of every source hash: bump when a transform or the hash changes meaning

# Quarantine reason codes (documented in the README).
REQUIRED_NULL = "REQUIRED_NULL"
INVALID_VALUE = "INVALID_VALUE"
INVALID_EMAIL = "INVALID_EMAIL"
ORPHAN_FK = "ORPHAN_FK"
DUPLICATE_KEY = "DUPLICATE_KEY"
REASONS = (REQUIRED_NULL, INVALID_VALUE, INVALID_EMAIL, ORPHAN_FK, DUPLICATE_KEY)


@dataclass(frozen=True)
class LoadOptions:
    batch_size: int = DEFAULT_BATCH_SIZE
    fast_path: bool = True
    error_recovery: bool = True
    progress_every: int = 10  # batches between progress log lines
    run_id: str = "manual"
    incremental: bool = True  # re-read only legacy-id buckets whose content changed
    mode: str = "full"  # "full": compare everything; "differential": read changes since the watermark
    delete_policy: str = "hard"  # what a legacy row deleted at the source does to its target row
    overlap_s: int = 300  # differential: re-read this much before the watermark (clock skew, late commits)

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"BATCH_SIZE must be a positive integer, not {self.batch_size!r}")
        if self.mode not in MODES:
            raise ValueError(f"MIGRATION_MODE must be one of {MODES}, not {self.mode!r}")
        if self.delete_policy not in DELETE_POLICIES:
            raise ValueError(f"DELETE_POLICY must be one of {DELETE_POLICIES}, not {self.delete_policy!r}")


MODES = ("full", "differential")
DELETE_POLICIES = ("hard", "soft")
SOFT_DELETED = "deleted_at_source"  # metadata key of a soft-deleted target row


# ===================================================================== source side


def target_columns(e: Entity) -> list[str]:
    return ["id"] + [c.target for c in e.columns] + ["metadata"]


def arrow_schema(e: Entity) -> pa.Schema:
    """The Arrow schema of the batches the IO manager receives (target columns + helpers)."""
    fields = [pa.field("id", pa.uuid(), nullable=False)]
    fields += [pa.field(c.target, c.arrow_type) for c in e.columns]
    fields += [pa.field("metadata", pa.string()), pa.field(LEGACY_ID, pa.int64()), pa.field(REJECT, pa.string()),
               pa.field(DETAIL, pa.string()), pa.field(RAW, pa.string()), pa.field(SOURCE_HASH, pa.int64()),
               pa.field(NOTES, pa.string())]
    return pa.schema(fields)


def _src(c: Column) -> sql.Composable:
    return sql.SQL("l.{}").format(sql.Identifier(c.legacy_name))


def _email_fixed_sql(src: sql.Composable) -> sql.Composable:
    """Email recovery: trim, lower-case, drop inner spaces, collapse '@@', fix ' at ', strip a trailing dot."""
    return sql.SQL(
        "rtrim(regexp_replace(replace(replace(lower(btrim({})), ' at ', '@'), ' ', ''), '@+', '@', 'g'), '.')"
    ).format(src)


# Placeholders for emails that cannot be corrected live under this domain (RFC 2606 reserves
# example.com), and a legacy address under it is never taken as valid: it becomes its own row's
# placeholder (or INVALID_EMAIL without recovery), so a placeholder can never collide with it.
PLACEHOLDER_DOMAIN = "invalid.example.com"


def _email_ok_sql(value: sql.Composable) -> sql.Composable:
    """SQL: ``value`` is a valid address and not under the placeholders' reserved domain."""
    domain = "@" + PLACEHOLDER_DOMAIN
    return sql.SQL("({v} ~ {re} AND right({v}, {n}) <> {d})").format(
        v=value, re=sql.Literal(EMAIL_REGEX), n=sql.Literal(len(domain)), d=sql.Literal(domain))


def _column_value_sql(e: Entity, c: Column, opts: LoadOptions) -> sql.Composable:
    src = _src(c)
    if c.kind is Kind.FK:
        return src  # the legacy integer: the UUID is computed on the batch (uuid3_keys)
    if c.kind is Kind.EMAIL and opts.error_recovery:
        fixed = _email_fixed_sql(src)
        placeholder = sql.SQL("{} || l.{} || {}").format(
            sql.Literal(f"invalid+{e.name}.{c.target}."), sql.Identifier(e.legacy_pk),
            sql.Literal("@" + PLACEHOLDER_DOMAIN))
        v = c.value_sql(src)
        return sql.SQL("CASE WHEN {v} IS NULL THEN NULL WHEN {v_ok} THEN {v} "
                       "WHEN {f_ok} THEN {f} ELSE {p} END").format(
            v=v, v_ok=_email_ok_sql(v), f=fixed, f_ok=_email_ok_sql(fixed), p=placeholder)
    value = c.value_sql(src)
    if opts.error_recovery and c.required and c.default is not None:
        value = sql.SQL("coalesce({}, {})").format(value, sql.SQL(c.default))
    return value


def _trimmed_in_arrow(c: Column, opts: LoadOptions) -> bool:
    """Text whose ``nullif(btrim(..), '')`` the load applies to the batch (:func:`trim_text`)
    instead of in the source query, where it cost more than the whole COPY of a long-text table.
    A required column with a recovery default keeps the SQL (the default replaces the NULL)."""
    return c.kind in (Kind.TEXT, Kind.LONG_TEXT) and not (opts.error_recovery and c.required and c.default is not None)


def _wire_value_sql(e: Entity, c: Column, opts: LoadOptions) -> sql.Composable:
    """What the source query sends for ``c``: the converted value, except where the batch does
    the rest (the legacy integer of a key, raw text trimmed in Arrow)."""
    if _trimmed_in_arrow(c, opts):
        return _src(c)
    return _column_value_sql(e, c, opts)


def _rejects_sql(e: Entity, opts: LoadOptions) -> tuple[sql.Composable, sql.Composable, sql.Composable]:
    """(reason, detail, recovery notes) expressions; reason NULL means the row is loadable."""
    reasons: list[tuple[sql.Composable, str, sql.Composable]] = []
    notes: list[sql.Composable] = []
    for c in e.columns:
        src = _src(c)
        defaulted = opts.error_recovery and c.default is not None
        if c.required and not defaulted:
            # text kinds (text dates too) turn blank values into NULL, so a value of spaces only counts as missing:
            # it must be quarantined, not reach the target's NOT NULL constraint
            converted = c.kind in (Kind.TEXT, Kind.LONG_TEXT, Kind.EMAIL, Kind.TEXT_DATE)
            missing = blank_sql(src) if converted else sql.SQL("{} IS NULL").format(src)
            reasons.append((missing, REQUIRED_NULL,
                            sql.Literal(f"{c.legacy_name} is NULL or blank; {c.target} is required")))
        elif c.required and defaulted:
            notes.append(sql.SQL("CASE WHEN {} IS NULL THEN {} END").format(
                src, sql.Literal(f'"{c.target}": {{"rule": "default_for_null"}}')))
        invalid = c.invalid_sql(src)
        if invalid is not None:
            reasons.append((invalid, INVALID_VALUE, sql.SQL("{} || {}::text").format(
                sql.Literal(f"{c.legacy_name}: cannot convert to {c.target_type}: "), src)))
        if c.kind is Kind.EMAIL:
            cleaned = c.value_sql(src)
            bad = sql.SQL("({v} IS NOT NULL AND NOT {ok})").format(v=cleaned, ok=_email_ok_sql(cleaned))
            if opts.error_recovery:
                notes.append(sql.SQL("CASE WHEN {bad} THEN {k} || to_json({s}::text)::text || "
                                     "CASE WHEN {f_ok} THEN ', \"rule\": \"email_corrected\"}}' "
                                     "ELSE ', \"rule\": \"email_placeholder\"}}' END END").format(
                    bad=bad, k=sql.Literal(f'"{c.target}": {{"original": '), s=src,
                    f_ok=_email_ok_sql(_email_fixed_sql(src))))
            else:
                reasons.append((bad, INVALID_EMAIL, sql.SQL("{} || {}::text").format(
                    sql.Literal(f"{c.legacy_name}: not a valid email: "), src)))
    if not reasons:
        reason = detail = sql.SQL("NULL::text")
    else:
        reason = sql.SQL("CASE {} END").format(sql.SQL(" ").join(
            sql.SQL("WHEN {} THEN {}").format(cond, sql.Literal(code)) for cond, code, _ in reasons))
        detail = sql.SQL("CASE {} END").format(sql.SQL(" ").join(
            sql.SQL("WHEN {} THEN {}").format(cond, d) for cond, _, d in reasons))
    if notes:
        note = sql.SQL("nullif(concat_ws(', ', {}), '')").format(sql.SQL(", ").join(notes))
    else:
        note = sql.SQL("NULL::text")
    return reason, detail, note


def source_query(e: Entity, opts: LoadOptions, where: sql.Composable | None = None) -> sql.Composable:
    """The SELECT run on the legacy database (exposed for tests and the checksum check)."""
    reason, detail, notes = _rejects_sql(e, opts)
    cols = [sql.SQL("{} AS {}").format(_wire_value_sql(e, c, opts), sql.Identifier(c.target)) for c in e.columns]
    cols += [
        sql.SQL("l.{} AS {}").format(sql.Identifier(e.legacy_pk), sql.Identifier(LEGACY_ID)),
        sql.SQL("r.reason AS {}").format(sql.Identifier(REJECT)),
        sql.SQL("CASE WHEN r.reason IS NOT NULL THEN {} END AS {}").format(detail, sql.Identifier(DETAIL)),
        sql.SQL("CASE WHEN r.reason IS NOT NULL THEN row_to_json(l)::text END AS {}").format(sql.Identifier(RAW)),
        sql.SQL("{} AS {}").format(source_hash_sql(e, opts), sql.Identifier(SOURCE_HASH)),
        sql.SQL("{} AS {}").format(notes, sql.Identifier(NOTES)),
    ]
    q = sql.SQL("SELECT {} FROM {} AS l CROSS JOIN LATERAL (SELECT {} AS reason) AS r").format(
        sql.SQL(", ").join(cols), sql.Identifier(e.legacy_table), reason)
    if where is not None:
        q = sql.SQL("{} WHERE {}").format(q, where)
    return q


def hash_salt(e: Entity, opts: LoadOptions) -> int:
    """Salt of the per-row source hash: changes with the entity's definition and the recovery mode,
    so a changed transform makes every row look changed and get re-migrated."""
    import zlib

    return zlib.crc32(f"{ENGINE_VERSION}|{opts.error_recovery}|{e!r}".encode())


def source_hash_sql(e: Entity, opts: LoadOptions, alias: str = "l") -> sql.Composable:
    """64-bit hash of the legacy row's version: its ``xmin``, the id of the transaction that wrote
    it, salted with the entity's definition.

    PostgreSQL never changes a row in place: every UPDATE writes a new version with a new xmin, so
    a row whose content changed always changes its hash (so does one rewritten with the same
    values, or every row after a logical dump and restore: re-read, then found unchanged by the
    merge; a false alarm costs time, never a missed change). Hashing the values instead
    (hash_record_extended of the row) read every column of every row: on the 2.2M-row table it
    made the no-op re-run's source summary 1.0 s instead of 0.45 s. Only ever compared with
    values the same legacy database computed (a physical replica keeps the xmins)."""
    return sql.SQL("hashint8extended({}.xmin::text::bigint, {})").format(
        sql.Identifier(alias), sql.Literal(hash_salt(e, opts)))


def parse_copy_rows(chunks: list[bytes], schema: pa.Schema) -> pa.Table:
    """Parse rows of a PostgreSQL ``COPY ... (FORMAT csv)`` into a typed Arrow table.

    PostgreSQL writes NULL as an empty unquoted field and the empty string as ``""``; booleans as
    t/f. Both the legacy stream and the IO manager's load_input read COPY output through here.
    """
    return pcsv.read_csv(
        io.BytesIO(b"".join(chunks)),
        read_options=pcsv.ReadOptions(column_names=schema.names, block_size=1 << 26),
        parse_options=pcsv.ParseOptions(newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(column_types=schema, null_values=[""], strings_can_be_null=True,
                                            quoted_strings_can_be_null=False, true_values=["t"],
                                            false_values=["f"]))


class LegacyStream:
    """A stream of record batches of one legacy table, in the target's shape.

    Iterate it (or call :meth:`reader`) once. It owns a connection to the legacy database and
    closes it when exhausted or closed; :meth:`fetch_raw` reads raw legacy rows by id on that same
    connection (used to quarantine rows the target side rejects).
    """

    def __init__(self, conninfo: str, e: Entity, opts: LoadOptions, where: sql.Composable | None = None,
                 fail_after_batches: int | None = None):
        self.entity, self.opts = e, opts
        self.conninfo, self._where = conninfo, where
        self._conn: psycopg.Connection | None = None
        self._fail_after = fail_after_batches  # fault injection for tests
        self.schema = arrow_schema(e)
        self.rows_read = 0
        self.estimated_rows = 0
        self.verified_loaded = 0  # rows in unchanged buckets, already in the target
        self.verified_quarantined = 0  # rows in unchanged buckets, still in quarantine
        self.plan_note = ""
        self._state: SourceState | None = None
        self._empty = False
        # per-bucket (rows, sum of source hashes mod 2^64) of the legacy rows: accumulated from
        # the batches when the whole table is read, or the planner's source summary
        self.summary: dict[int, tuple[int, int]] | None = None
        self.accounted_before: int | None = None  # target + open quarantine rows, counted by the planner
        self._parent_keys: dict[str, ParentKeys] = {}  # foreign keys' UUIDs by parent, hashed once per id

    def _connect(self) -> psycopg.Connection:
        """The stream's one source connection, inside one REPEATABLE READ, READ ONLY transaction:
        the counts, the change summaries, the COPY, the raw rows of rejects and the search for
        deleted rows all see the same snapshot of a legacy database that keeps taking writes.
        Kept open between streams (connections.py)."""
        if self._conn is not None and self._conn.closed:
            self.close()
        if self._conn is None:
            self._conn = connections.take(self.conninfo, "legacy-stream", _stream_setup)
        return self._conn

    def snapshot(self) -> "SourceState":
        """Row count, id range and change high-water mark of the legacy table in this snapshot."""
        if self._state is None:
            self._state = SourceState(*self._connect().execute(source_state_sql(self.entity)).fetchone())
        return self._state

    def gaps(self, lower: int, upper: int) -> list[tuple[int, int]]:
        """Ranges of legacy ids within [lower, upper] that do not exist in this snapshot.

        Every deleted row lies in one. One aggregate over the primary key counts the rows per
        block of 64 ids and records which of them exist (a 64-bit mask); runs of empty blocks are
        gaps as a whole, and the missing ids of partly filled blocks are read off their masks, so
        the table is read once (probing each candidate id took a second pass, a hash of every id)."""
        e = self.entity
        # in the legacy key's own integer type, unless the bounds come within two blocks of int4's
        # limits, where the block arithmetic would overflow: then in bigint (casting every id costs
        # about a tenth of the query)
        c = sql.SQL("") if -2**31 + 128 < lower and upper < 2**31 - 128 else sql.SQL("::bigint")
        return self._connect().execute(sql.SQL(
            "WITH blocks AS (SELECT {pk}{c} >> 6 AS b, count(*) AS n, "
            "                bit_or(1::bigint << ({pk}{c} & 63)::int) AS m "
            "                FROM {t} WHERE {pk} BETWEEN %(lower)s{c} AND %(upper)s{c} GROUP BY 1), "
            "empty AS (SELECT (b + 1) << 6 AS lo, "
            "                 (lead(b, 1, (%(upper)s{c} >> 6) + 1) OVER (ORDER BY b) << 6) - 1 AS hi "
            "          FROM blocks "
            "          UNION ALL SELECT %(lower)s{c}, "
            "                 (coalesce((SELECT min(b) FROM blocks), (%(upper)s{c} >> 6) + 1) << 6) - 1), "
            "partial AS (SELECT b, m FROM blocks "
            "            WHERE n < least(%(upper)s{c}, (b << 6) + 63) - greatest(%(lower)s{c}, b << 6) + 1) "
            "SELECT greatest(lo, %(lower)s{c}), least(hi, %(upper)s{c}) FROM empty "
            "WHERE least(hi, %(upper)s{c}) >= greatest(lo, %(lower)s{c}) "
            "UNION ALL "
            "SELECT (b << 6) + i, (b << 6) + i FROM partial, generate_series(0, 63) AS i "
            "WHERE m & (1::bigint << i) = 0 AND (b << 6) + i BETWEEN %(lower)s{c} AND %(upper)s{c} "
            "ORDER BY 1").format(
            pk=sql.Identifier(e.legacy_pk), t=sql.Identifier(e.legacy_table), c=c),
            {"lower": lower, "upper": upper}).fetchall()

    def _estimate(self, conn) -> int:
        row = conn.execute("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                           [self.entity.legacy_table]).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _open_reader(self, query: sql.Composable):
        """An ADBC connection reading ``query`` inside this stream's snapshot: the psycopg
        connection exports its REPEATABLE READ snapshot and the reader's transaction adopts it, so
        the rows streamed are exactly those the counts and summaries saw."""
        conn = self._connect()
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        text = query.as_string(conn)
        reader_conn = _readers.take(self.conninfo)
        try:
            cur = reader_conn.cursor()
            try:
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            except adbc.Error:  # an idle connection the server has closed since: one fresh attempt
                reader_conn.close()
                reader_conn = adbc.connect(self.conninfo, autocommit=True)
                cur = reader_conn.cursor()
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)).as_string(conn))
            cur.execute("SET LOCAL jit = off")
            # One backend per read. The stream is consumed at the pace of Python and the target's
            # COPY, which keep the other cores busy: parallel workers only added their tuple-queue
            # copying (system_messages' stream 7% slower with two, medians of 5, 2 cores).
            cur.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            cur.execute("SET LOCAL TimeZone = 'UTC'")
            cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(READ_HINT_BYTES)})
            cur.execute(text)
            return reader_conn, cur  # the cursor owns the batch reader: keep it alive while reading
        except BaseException:
            reader_conn.close()
            raise

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        e, opts = self.entity, self.opts
        meta_prefix = pa.scalar('{"legacy_id": ')
        if self._empty:
            return
        if self._where is None:
            self.summary = {}
        reader_conn = None
        try:
            self.estimated_rows = self._estimate(self._connect())
            reader_conn, cursor = self._open_reader(source_query(e, opts, self._where))
            for batches, table in enumerate(_rebatch(cursor.fetch_record_batch(), opts.batch_size), start=1):
                yield self._to_batch(table, meta_prefix)
                if self._fail_after is not None and batches >= self._fail_after:
                    raise RuntimeError(f"injected failure after {batches} batches")
            cursor.close()
            _readers.give_back(self.conninfo, reader_conn)
            reader_conn = None
        except BaseException:
            self.close()  # an abandoned read: the source connection goes back rolled back
            raise
        finally:
            if reader_conn is not None:
                reader_conn.close()

    def _to_batch(self, table: pa.Table, meta_prefix) -> pa.RecordBatch:
        self.rows_read += table.num_rows
        cols = {name: table.column(name) for name in table.column_names}
        if self.summary is not None and self._where is None:
            self._add_to_summary(cols[LEGACY_ID], cols[SOURCE_HASH])
        cols["id"] = uuid3_keys(self.entity.name, cols[LEGACY_ID])
        for c in self.entity.columns:
            if c.kind is Kind.FK:
                keys = self._parent_keys.get(c.parent) or self._parent_keys.setdefault(c.parent, ParentKeys(c.parent))
                cols[c.target] = keys(cols[c.target])
            elif _trimmed_in_arrow(c, self.opts):
                cols[c.target] = trim_text(cols[c.target])
            elif c.kind is Kind.CENTS:
                # numeric arrives as its text (an opaque extension type): exact decimal parse
                col = cols[c.target].combine_chunks()
                cols[c.target] = pc.cast(col.storage if isinstance(col, pa.ExtensionArray) else col, c.arrow_type)
            elif c.kind is Kind.TEXT_DATE:
                # a present value that is not a real ISO date: quarantine the row (unless an
                # earlier rule already did), naming the column and the value
                text = cols[c.target]
                cols[c.target], invalid = parse_text_dates(text)
                newly = pc.and_(invalid, pc.is_null(cols[REJECT]))
                cols[REJECT] = pc.if_else(newly, pa.scalar(INVALID_VALUE), cols[REJECT])
                cols[DETAIL] = pc.if_else(newly, pc.binary_join_element_wise(
                    pa.scalar(f"{c.legacy_name}: cannot convert to date: "), text, ""), cols[DETAIL])
        legacy = pc.cast(cols[LEGACY_ID], pa.string())
        source_hash = pc.binary_join_element_wise(
            pa.scalar(', "source_hash": '), pc.cast(cols[SOURCE_HASH], pa.string()), "")
        notes = cols[NOTES]
        recovered = pc.binary_join_element_wise(pa.scalar(', "recovered": {'), notes, pa.scalar("}"), "")
        cols["metadata"] = pc.binary_join_element_wise(
            meta_prefix, legacy, source_hash, pc.fill_null(recovered, ""), pa.scalar("}"), "")
        out = pa.table({f.name: cols[f.name] for f in self.schema}).cast(self.schema).combine_chunks()
        batches = out.to_batches()
        return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=self.schema)

    def _add_to_summary(self, legacy_ids, hashes) -> None:
        """Fold a batch into the per-bucket summary (Arrow's integer sum wraps: modulo 2^64)."""
        buckets = pc.divide(pc.cast(legacy_ids, pa.int64()), BUCKET)
        agg = pa.table({"b": buckets, "h": pc.cast(hashes, pa.int64())}).group_by("b").aggregate(
            [("h", "count"), ("h", "sum")])
        for b, n, h in zip(agg.column("b").to_pylist(), agg.column("h_count").to_pylist(),
                           agg.column("h_sum").to_pylist()):
            rows, total = self.summary.get(b, (0, 0))
            self.summary[b] = (rows + n, (total + h) % HASH_MOD)

    def read_nothing(self) -> None:
        """The plan found nothing to read: the stream yields no batch and opens no reader."""
        self._empty = True

    @property
    def nothing_read(self) -> bool:
        return self._empty

    def set_where(self, where: sql.Composable) -> None:
        self._where = where if self._where is None else sql.SQL("({}) AND ({})").format(self._where, where)

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.schema, iter(self))

    def fetch_raw(self, legacy_ids: list[int], of: Entity | None = None) -> Iterator[tuple[int, str]]:
        """Raw legacy rows (as JSON text) of ``legacy_ids`` of this entity (or of ``of``, a child
        whose rows a delete cascades to), streamed from the source in the stream's snapshot."""
        e = of or self.entity
        conn = self._connect()
        query = sql.SQL("SELECT l.{pk}, row_to_json(l)::text FROM {t} AS l WHERE l.{pk} = ANY(%s)").format(
            pk=sql.Identifier(e.legacy_pk), t=sql.Identifier(e.legacy_table))
        with conn.cursor(name="raw_rows") as cur:
            cur.execute(query, [legacy_ids])
            while rows := cur.fetchmany(10_000):
                yield from rows

    def close(self) -> None:
        """Give the source connection back (its snapshot transaction rolled back) and drop the
        key caches (the orchestrator may hold on to a stream it was handed)."""
        self._parent_keys = {}
        if self._conn is not None:
            conn, self._conn = self._conn, None
            connections.give_back(conn, self.conninfo, "legacy-stream")


def _stream_setup(conn: psycopg.Connection) -> None:
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    conn.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET jit = off")
    conn.commit()


# The legacy change columns are UTC timestamps without a time zone (Kind.TIMESTAMP); "now" is the
# start of the reading transaction, so one snapshot sees one clock.
SNAPSHOT_CLOCK = sql.SQL("(transaction_timestamp() AT TIME ZONE 'UTC')")


def source_state_sql(e: Entity) -> sql.Composable:
    """(rows, min id, max id, change high-water mark as text) of a legacy table: what a watermark
    records, and what the sensor compares with it.

    Four subqueries, not one aggregate: apart, the count can read the primary key's index and the
    three extremes are index endpoints (the change column is indexed, like every change-tracking
    column a differential refresh filters on); together they took a scan of the whole heap
    (sys_msg_log after a 1% mutation: 110 ms against 170 ms, 2.2M rows).

    The high-water mark is the highest change mark not later than the snapshot's own clock: one
    row marked in the future (a legacy clock gone wrong, a 9999-12-31 placeholder) would otherwise
    move the mark past every later change, and a differential refresh would skip them all. Rows
    marked in the future are re-read by every differential refresh instead (plan_differential)."""
    return sql.SQL("SELECT (SELECT count(*) FROM {t}), (SELECT min({pk}) FROM {t}), (SELECT max({pk}) FROM {t}), "
                   "(SELECT max({chg}) FROM {t} WHERE {chg} <= {now})::text").format(now=SNAPSHOT_CLOCK,
        pk=sql.Identifier(e.legacy_pk), chg=sql.Identifier(e.legacy_change_column), t=sql.Identifier(e.legacy_table))


class _IdleReaders:
    """Reader connections kept open between loads (at most two in all, the last ones used).

    Opening an ADBC connection costs ~50 ms (the driver reads the server's type catalog), more
    than a whole small table's load; 45 loads per run would pay it 45 times. A connection comes
    back only after a read that ended cleanly, its transaction rolled back; any error closes it.
    """

    def __init__(self, keep: int = 2):
        import threading

        self._idle: list[tuple[str, object]] = []  # (conninfo, connection), oldest first
        self._lock = threading.Lock()
        self._keep = keep

    def take(self, conninfo: str):
        with self._lock:
            for i in range(len(self._idle) - 1, -1, -1):
                if self._idle[i][0] == conninfo:
                    return self._idle.pop(i)[1]
        return adbc.connect(conninfo, autocommit=True)  # libpq takes key=value or a URI

    def give_back(self, conninfo: str, conn) -> None:
        try:
            cur = conn.cursor()
            cur.execute("ROLLBACK")  # end the read-only snapshot transaction
            cur.close()
        except Exception:
            conn.close()
            return
        with self._lock:
            self._idle.append((conninfo, conn))
            surplus = self._idle[:-self._keep]
            del self._idle[:-self._keep]
        for _, c in surplus:  # a process that reads many databases (tests) keeps only the latest
            c.close()


_readers = _IdleReaders()


def _rebatch(reader: pa.RecordBatchReader, size: int) -> Iterator[pa.Table]:
    """Cut the driver's batches (sized in bytes) into tables of exactly ``size`` rows (the last
    one shorter), without copying: slices of the batches read so far."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in reader:
        while batch.num_rows:
            take = min(size - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            batch = batch.slice(take)
            count += take
            if count == size:
                yield pa.Table.from_batches(pending)
                pending, count = [], 0
    if pending:
        yield pa.Table.from_batches(pending)


@dataclass(frozen=True)
class SourceState:
    rows: int
    min_id: int | None
    max_id: int | None
    change_hwm: str | None  # the change-tracking column's maximum, as the legacy server prints it


# ===================================================================== target side


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


def _t(e: Entity) -> sql.Identifier:
    return sql.Identifier("public", e.target_table)


def _t_name(name: str) -> sql.Identifier:
    return sql.Identifier("public", name)


def _ids(names) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def _write_options() -> pcsv.WriteOptions:
    return pcsv.WriteOptions(include_header=False, quoting_style="needed")


def _to_csv(batch: pa.RecordBatch | pa.Table) -> bytes:
    """CSV for COPY (the quarantine's rejects: ids, text and the raw row)."""
    out = io.BytesIO()
    pcsv.write_csv(batch, out, _write_options())
    return out.getvalue()


class _BinaryCopy:
    """Arrow batches -> PostgreSQL binary COPY data (pgpq, in Rust: no per-row Python).

    The Arrow type of each column must be the binary layout of the target column: UUIDs are
    their 16-byte storage (the layout uuid_recv reads), ``metadata`` is encoded as jsonb, the
    rest follows the registry's Arrow types (int32 for integer, timestamp[us] for timestamptz...).
    """

    def __init__(self, schema: pa.Schema):
        self.schema = pa.schema([pa.field(f.name, f.type.storage_type if isinstance(f.type, pa.ExtensionType)
                                          else f.type) for f in schema])
        encoders = {f.name: (pgpq_encoders.StringEncoderBuilder.new_with_output(f, pgpq_schema.Jsonb())
                             if f.name == "metadata" else pgpq.ArrowToPostgresBinaryEncoder.infer_encoder(f))
                    for f in self.schema}
        self._encoder = pgpq.ArrowToPostgresBinaryEncoder.new_with_encoders(self.schema, encoders)

    def header(self) -> bytes:
        return self._encoder.write_header()

    def encode(self, batch: pa.RecordBatch, skip: pa.Array | None = None) -> bytes:
        """The rows of ``batch``, except those where the boolean ``skip`` is true.

        Rows are skipped by encoding the runs between them (zero-copy slices): filtering the batch
        would copy every column to drop a few rejects, and most batches of dirty data hold some."""
        arrays = [c.storage if isinstance(c, pa.ExtensionArray) else c for c in batch.columns]
        rows = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        if skip is None:
            return self._encoder.write_batch(rows)
        out, start = [], 0
        for stop in np.flatnonzero(skip.to_numpy(zero_copy_only=False)).tolist() + [rows.num_rows]:
            if stop > start:
                out.append(self._encoder.write_batch(rows.slice(start, stop - start)))
            start = stop + 1
        return b"".join(out)

    def trailer(self) -> bytes:
        return self._encoder.finish()


def _capture_constraints(conn, e: Entity) -> list[tuple[str, str, str]]:
    """(table, name, definition) of every PK/unique/FK constraint on or referencing ``e``, plus indexes."""
    rows = conn.execute("""
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), contype,
               CASE contype WHEN 'p' THEN 0 WHEN 'u' THEN 1 ELSE 3 END AS ord
        FROM pg_constraint
        WHERE (conrelid = %(t)s::regclass AND contype IN ('p', 'u', 'f'))
           OR (confrelid = %(t)s::regclass AND contype = 'f' AND conrelid <> %(t)s::regclass)
        UNION ALL
        SELECT %(t)s::text, c.relname, pg_get_indexdef(i.indexrelid), 'i', 2
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = %(t)s::regclass
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid)
        ORDER BY 5, 2""", {"t": f"public.{e.target_table}"}).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def _fast_path_blocker(conn, e: Entity) -> str | None:
    """Why the fast path cannot drop the keys of ``e``, or None: a table the loading role does not
    own references it (Supabase's ``auth`` or ``storage`` schemas, a user's own table), and only
    its owner may drop that foreign key."""
    row = conn.execute("""
        SELECT c.conrelid::regclass::text, pg_get_userbyid(r.relowner)
        FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid
        WHERE c.confrelid = %s::regclass AND c.contype = 'f'
          AND NOT pg_has_role(current_user, r.relowner, 'USAGE')
        ORDER BY 1 LIMIT 1""", [f"public.{e.target_table}"]).fetchone()
    return f"{row[0]}, owned by {row[1]}, references it" if row else None


def _drop_constraints(conn, saved) -> None:
    for table, name, _, kind in sorted(saved, key=lambda s: {"f": 0, "i": 1, "u": 2, "p": 3}[s[3]]):
        if kind == "i":
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier("public", name)))
        else:
            conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.SQL(table), sql.Identifier(name)))


def _restore_constraints(conn, saved) -> None:
    for table, name, definition, kind in sorted(saved, key=lambda s: {"p": 0, "u": 1, "i": 2, "f": 3}[s[3]]):
        if kind == "i":
            conn.execute(sql.SQL(definition))  # pg_get_indexdef output: a complete CREATE INDEX statement
        else:
            # table is a regclass text from the catalog (already quoted as needed)
            conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                sql.SQL(table), sql.Identifier(name), sql.SQL(definition)))


def _legacy_id_of(alias: str, staged: bool) -> sql.Composable:
    if staged:
        return sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(LEGACY_ID))
    return sql.SQL("({}.metadata->>'legacy_id')::bigint").format(sql.Identifier(alias))


def _upsert_quarantine(conn, rows: sql.Composable) -> None:
    """Insert or refresh quarantine rows. ``rows`` selects (entity, legacy_id, reason, detail, raw,
    source_hash, run_id), one row per (entity, legacy_id). A row seen again is reopened."""
    conn.execute(sql.SQL(
        "INSERT INTO {q} AS q (entity, legacy_id, reason, detail, raw, source_hash, first_run_id, last_run_id) "
        "SELECT entity, legacy_id, reason, detail, raw, source_hash, run_id, run_id FROM ({rows}) AS r "
        "ON CONFLICT (entity, legacy_id) DO UPDATE SET reason = EXCLUDED.reason, detail = EXCLUDED.detail, "
        "raw = EXCLUDED.raw, source_hash = EXCLUDED.source_hash, last_run_id = EXCLUDED.last_run_id, "
        "last_seen_at = now(), resolved = false, resolved_at = NULL, resolved_run_id = NULL, resolution = NULL").format(
        q=sql.Identifier(CONTROL_SCHEMA, "quarantine"), rows=rows))


def _set_null_note_sql(c: Column, parent: str) -> sql.Composable:
    """The ``metadata.recovered`` entry of a reference set NULL (alias ``s``): the rule, the missing
    parent and the value it had (what the retry and the content checksum read back)."""
    return sql.SQL("jsonb_build_object({k}, jsonb_build_object('rule', 'orphan_fk_set_null', "
                   "'missing_parent', {p}::text, 'was', s.{col}))").format(
        k=sql.Literal(c.target), p=sql.Literal(parent), col=sql.Identifier(c.target))


def _recovered_with_retry_sql(notes: sql.Composable) -> sql.Composable:
    """``s.metadata`` with ``notes`` merged into ``recovered`` and the retry mark set."""
    return sql.SQL("jsonb_set(s.metadata, '{{recovered}}', coalesce(s.metadata->'recovered', '{{}}'::jsonb) "
                   "|| {} || '{{\"retry\": true}}'::jsonb)").format(notes)


def _set_fk_null(conn, table: sql.Composable, c: Column, parent: str, where: sql.Composable) -> int:
    """The optional-orphan recovery: set the reference NULL where ``where`` holds (alias ``s``),
    recording the value it had and a retry mark in metadata.recovered. Returns the rows changed."""
    return conn.execute(sql.SQL("UPDATE {t} AS s SET {col} = NULL, metadata = {meta} WHERE {where}").format(
        t=table, col=sql.Identifier(c.target), meta=_recovered_with_retry_sql(_set_null_note_sql(c, parent)),
        where=where)).rowcount


def parent_joins(e: Entity, alias: str, relation: Callable[[Column], sql.Composable] | None = None
                 ) -> tuple[sql.Composable, list[sql.Composable]]:
    """LEFT JOINs of the rows ``alias`` to each foreign key's parent, as p0, p1... in
    ``e.foreign_keys`` order, and per foreign key the flag of a reference that found no parent.
    ``relation(c)``: what to join for column ``c`` (default: the parent's target table). The
    load's orphan search and the checks' scans both build their joins here.

    A NULL reference joins on the row's own id instead (never a parent's: another entity's name
    is hashed into it): when the planner hashes the rows rather than a larger parent (a right
    join), PostgreSQL 15 keeps NULL-keyed rows in one hash bucket that no batch split can
    divide, and the join ran 305 s instead of 0.5 s on a 325,000-row staged files table whose
    optional task_id is mostly NULL."""
    joins, flags = [], []
    for i, c in enumerate(e.foreign_keys):
        col, p = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c.target)), sql.Identifier(f"p{i}")
        rel = relation(c) if relation is not None else _t_name(c.parent)
        joins.append(sql.SQL("LEFT JOIN {rel} AS {p} ON {p}.id = coalesce({col}, {a}.id)").format(
            rel=rel, p=p, col=col, a=sql.Identifier(alias)))
        flags.append(sql.SQL("({col} IS NOT NULL AND {p}.id IS NULL)").format(col=col, p=p))
    return sql.SQL(" ").join(joins), flags


def orphan_detail(c: Column) -> str:
    """The quarantine detail of an ORPHAN_FK row. One text whether the parent never existed, was
    quarantined or was deleted at the source, so that a refresh writes what a fresh migration
    writes (the run's audit row says which parents were removed and why)."""
    return f"{c.target} references a missing {c.parent} row"


def _reject_orphans(conn, e: Entity, table: sql.Composable, staged: bool, opts: LoadOptions,
                    recoveries: dict) -> None:
    """Rows of ``table`` whose foreign keys point at a missing parent, found in one pass.

    One scan of the rows, left-joined to every parent's keys (hash joins), records which
    references are missing for the few rows concerned, by row address. Then a required (or,
    without recovery, any) missing reference moves the row to ``_quarantine`` as ORPHAN_FK naming
    the first such column; an optional one is set NULL, the value and a retry mark kept in
    ``metadata.recovered``, all of a row's columns in one update (an update moves the row, so its
    old address must not be used twice)."""
    fks = e.foreign_keys
    flags = [sql.Identifier(f"m{i}") for i in range(len(fks))]
    joins, missing = parent_joins(e, "s")
    conn.execute("DROP TABLE IF EXISTS pg_temp._missing")
    found = conn.execute(sql.SQL(
        "CREATE TEMP TABLE _missing ON COMMIT DROP AS SELECT s.ctid AS rid, {flags} FROM {t} AS s {joins} "
        "WHERE {any}").format(
        flags=sql.SQL(", ").join(sql.SQL("{} AS {}").format(m, f) for m, f in zip(missing, flags)),
        t=table, joins=joins, any=sql.SQL(" OR ").join(missing))).rowcount
    if not found:
        return
    blocking = [(i, c) for i, c in enumerate(fks) if c.required or not opts.error_recovery]
    if blocking:
        detail = sql.SQL("CASE {} END").format(sql.SQL(" ").join(
            sql.SQL("WHEN m.{} THEN {}").format(flags[i], sql.Literal(orphan_detail(c)))
            for i, c in blocking))
        conn.execute(sql.SQL(
            "WITH gone AS (DELETE FROM {t} AS s USING _missing m WHERE s.ctid = m.rid AND ({any}) "
            "AND s.ctid = ANY(ARRAY(SELECT rid FROM _missing m WHERE {any})) "  # a TID scan, not a table scan
            "RETURNING {lid} AS legacy_id, {detail} AS detail, (s.metadata->>'source_hash')::bigint AS h) "
            "INSERT INTO _quarantine (legacy_id, reason, detail, source_hash) "
            "SELECT legacy_id, {reason}, detail, h FROM gone").format(
            t=table, any=sql.SQL(" OR ").join(sql.SQL("m.{}").format(flags[i]) for i, _ in blocking),
            lid=_legacy_id_of("s", staged), detail=detail, reason=sql.Literal(ORPHAN_FK)))
    optional = [(i, c) for i, c in enumerate(fks) if not c.required and opts.error_recovery]
    if not optional:
        return
    sets = [sql.SQL("{col} = CASE WHEN m.{f} THEN NULL ELSE s.{col} END").format(
        col=sql.Identifier(c.target), f=flags[i]) for i, c in optional]
    notes = sql.SQL(" || ").join(sql.SQL("CASE WHEN m.{} THEN {} ELSE '{{}}'::jsonb END").format(
        flags[i], _set_null_note_sql(c, c.parent)) for i, c in optional)
    (n,) = conn.execute(sql.SQL(
        "WITH changed AS (UPDATE {t} AS s SET {sets}, metadata = {meta} "
        "FROM _missing m WHERE s.ctid = m.rid AND ({any}) AND s.ctid = ANY(ARRAY(SELECT rid FROM _missing m WHERE {any})) "
        "RETURNING {counts}) SELECT {total} FROM changed").format(
        t=table, sets=sql.SQL(", ").join(sets), meta=_recovered_with_retry_sql(notes),
        any=sql.SQL(" OR ").join(sql.SQL("m.{}").format(flags[i]) for i, _ in optional),
        counts=sql.SQL(", ").join(sql.SQL("m.{}::int AS {}").format(flags[i], flags[i]) for i, _ in optional),
        total=sql.SQL(" + ").join(sql.SQL("coalesce(sum({}), 0)").format(flags[i]) for i, _ in optional))).fetchone()
    if n:
        recoveries["orphan_fk_set_null"] = recoveries.get("orphan_fk_set_null", 0) + int(n)


def _reject_target_side(conn, e: Entity, table: sql.Composable, staged: bool, opts: LoadOptions,
                        recoveries: dict) -> None:
    """Move rows that the target cannot take from ``table`` (staging or, on the fast path, the target
    table itself) into the temp table ``_quarantine``: orphans, then unique-key duplicates."""
    if e.foreign_keys:
        _reject_orphans(conn, e, table, staged, opts, recoveries)
    # Unique keys, one rule for a fresh migration and a refresh: among the rows that hold a value,
    # the lowest legacy id wins. The competitors are the rows of this load and, on the merge path,
    # the target rows this load does not rewrite (a rewritten row competes with its new value, a
    # row this load quarantines does not compete).
    # Losers of this load are quarantined, never sent to the database; a target row that loses
    # to a newcomer with a lower id goes to ``_quarantine`` too, and leaves the target before the
    # merge with its children (the eviction of re-quarantined rows).
    for c in e.unique_columns:
        col = sql.Identifier(c.target)
        held = sql.SQL(
            "UNION ALL SELECT NULL::tid, x.id, (x.metadata->>'legacy_id')::bigint, x.{col}, "
            "(x.metadata->>'source_hash')::bigint FROM {tt} AS x "
            "WHERE x.{col} IN (SELECT s.{col} FROM {t} AS s WHERE s.{col} IS NOT NULL) "
            "AND NOT EXISTS (SELECT 1 FROM {t} AS s WHERE s.id = x.id) "
            "AND NOT EXISTS (SELECT 1 FROM _quarantine AS q "
            "                WHERE q.legacy_id = (x.metadata->>'legacy_id')::bigint)").format(tt=_t(e), t=table, col=col) \
            if staged else sql.SQL("")
        conn.execute(sql.SQL(
            "WITH cand AS (SELECT s.ctid AS rid, s.id, {lid} AS legacy_id, s.{col} AS v, "
            "  (s.metadata->>'source_hash')::bigint AS h FROM {t} AS s WHERE s.{col} IS NOT NULL {held}), "
            "losers AS (SELECT rid, legacy_id, v, h FROM (SELECT cand.*, "
            "  row_number() OVER (PARTITION BY v ORDER BY legacy_id) AS rn FROM cand) r WHERE rn > 1), "
            "gone AS (DELETE FROM {t} AS s USING losers WHERE s.ctid = losers.rid RETURNING losers.legacy_id, "
            "losers.v, losers.h) "
            "INSERT INTO _quarantine (legacy_id, reason, detail, source_hash) "
            "SELECT legacy_id, {reason}, {msg} || v, h FROM gone "
            "UNION ALL SELECT legacy_id, {reason}, {msg} || v, h FROM losers WHERE rid IS NULL").format(
            t=table, col=col, lid=_legacy_id_of("s", staged), reason=sql.Literal(DUPLICATE_KEY),
            msg=sql.Literal(f"duplicate {c.target}: "), held=held))


def _unique_swap_sql(e: Entity) -> list[sql.Composable]:
    """Statements that free the unique values the merge is about to move between rows.

    Unique constraints are checked row by row, so a merge in which two rows exchange values (or
    one takes a value another gives up) would fail on the first of them. Before the merge, the
    target rows whose unique value changes get a value no real row can hold (the row's own UUID,
    under a reserved domain for emails, whose CHECK constraint it satisfies); the merge then writes
    the real values. Only rows whose value changes are touched."""
    out = []
    for c in e.unique_columns:
        col = sql.Identifier(c.target)
        free = sql.SQL("'swap.' || replace(t.id::text, '-', '') || {}").format(sql.Literal("@" + SWAP_DOMAIN)) \
            if c.kind is Kind.EMAIL else sql.SQL("'migration-swap:' || t.id::text")
        out.append(sql.SQL(
            "UPDATE {t} AS t SET {col} = {free} FROM _stage AS s "
            "WHERE s.id = t.id AND t.{col} IS NOT NULL AND s.{col} IS DISTINCT FROM t.{col}").format(
            t=_t(e), col=col, free=free))
    return out


SWAP_DOMAIN = "swap.invalid"  # reserved (RFC 2606): never a real address


def _summaries_source(stream: "LegacyStream") -> list[tuple[int, int, int]]:
    """Per bucket: (bucket, rows, sum of source hashes). The same pass gives the snapshot's
    :class:`SourceState` (rows, id range, change high-water mark, capped at the snapshot's clock
    as in :func:`source_state_sql`), so it is not scanned twice."""
    e = stream.entity
    conn = stream._connect()
    rows = conn.execute(sql.SQL(
        "WITH s AS (SELECT l.{pk} / {b} AS b, count(*) AS n, sum({h}) AS h, min(l.{pk}) AS lo, max(l.{pk}) AS hi, "
        "           max(l.{chg}) FILTER (WHERE l.{chg} <= {now}) AS chg FROM {t} AS l GROUP BY 1) "
        "SELECT b, n, h, NULL, NULL, NULL FROM s "
        "UNION ALL SELECT NULL, coalesce(sum(n), 0), NULL, min(lo), max(hi), max(chg)::text FROM s").format(
        pk=sql.Identifier(e.legacy_pk), b=sql.Literal(BUCKET), h=source_hash_sql(e, stream.opts),
        chg=sql.Identifier(e.legacy_change_column), t=sql.Identifier(e.legacy_table), now=SNAPSHOT_CLOCK)).fetchall()
    total = next(r for r in rows if r[0] is None)
    if stream._state is None:
        stream._state = SourceState(int(total[1]), total[3], total[4], total[5])
    return sorted((r[0], r[1], r[2]) for r in rows if r[0] is not None)


def _retry_rows(conn, e: Entity, opts: LoadOptions) -> list[tuple[int, str]]:
    """Rows that may load differently without a change at the source, as (legacy id, where it is
    now): 'q' quarantined as a duplicate (the winner may be gone) or as an orphan whose parents all
    exist now; 't' loaded with an optional foreign key set NULL whose parent exists now. Orphans
    whose parent is still missing would only be quarantined again: they are not re-read."""
    blocking = [c for c in e.foreign_keys if c.required or not opts.error_recovery]
    # each orphan's parent keys are hashed once, in a lower query level (OFFSET 0 keeps it there):
    # the raw row is read once and one md5 is taken per key, instead of legacy_uuid()'s three
    digests = sql.SQL("").join(sql.SQL(", {} AS {}").format(
        md5_key_sql(c.parent, sql.SQL("(raw->>{})::bigint").format(sql.Literal(c.legacy_name))),
        sql.Identifier(f"h{i}")) for i, c in enumerate(blocking))
    parents_exist = sql.SQL(" AND ").join(
        sql.SQL("(q.{h} IS NULL OR EXISTS (SELECT 1 FROM {p} AS p WHERE p.id = {u}))").format(
            h=sql.Identifier(f"h{i}"), p=_t_name(c.parent),
            u=uuid_from_md5_sql(sql.SQL("q.{}").format(sql.Identifier(f"h{i}"))))
        for i, c in enumerate(blocking)) if blocking else sql.SQL("true")
    optional = [c for c in e.foreign_keys if not c.required]
    arrived = sql.SQL(" OR ").join(
        sql.SQL("EXISTS (SELECT 1 FROM {p} AS p WHERE p.id = (t.metadata->'recovered'->{k}->>'was')::uuid)").format(
            p=_t_name(c.parent), k=sql.Literal(c.target)) for c in optional) if optional else sql.SQL("false")
    return conn.execute(sql.SQL(
        "SELECT legacy_id, 'q' FROM (SELECT legacy_id, reason, raw IS NULL AS no_raw{digests} FROM {q} "
        "WHERE entity = {ent} AND NOT resolved AND reason IN ({d}, {o}) OFFSET 0) AS q "
        "WHERE reason = {d} OR q.no_raw OR ({parents_exist}) "
        "UNION ALL SELECT (t.metadata->>'legacy_id')::bigint, 't' FROM {t} AS t "
        "WHERE t.metadata->'recovered' ? 'retry' AND ({arrived})").format(
        q=sql.Identifier(CONTROL_SCHEMA, "quarantine"), ent=sql.Literal(e.name), o=sql.Literal(ORPHAN_FK),
        d=sql.Literal(DUPLICATE_KEY), t=_t(e), digests=digests, parents_exist=parents_exist,
        arrived=arrived)).fetchall()


@dataclass(frozen=True)
class Watermark:
    change_hwm: str | None  # naive UTC text, comparable with the legacy change column
    min_id: int | None
    max_id: int | None
    legacy_rows: int
    summary: dict[int, tuple[int, int]] | None = None  # bucket -> (rows, hash sum mod 2^64) after that load


def _watermark(conn, e: Entity) -> Watermark | None:
    row = conn.execute(sql.SQL(
        "SELECT (change_hwm AT TIME ZONE 'UTC')::text, min_legacy_id, max_legacy_id, legacy_rows, "
        "summary_buckets, summary_rows, summary_hashes "
        "FROM {} WHERE entity = %s").format(sql.Identifier(CONTROL_SCHEMA, "watermarks")), [e.name]).fetchone()
    if not row:
        return None
    buckets, rows, hashes = row[4:]
    summary = {b: (n, int(h)) for b, n, h in zip(buckets, rows, hashes)} if buckets is not None else None
    return Watermark(*row[:4], summary=summary)


def _save_watermark(conn, e: Entity, state: SourceState, opts: LoadOptions,
                    summary: dict[int, tuple[int, int]] | None) -> None:
    """Advance the entity's watermark in the load's own transaction: it commits with the rows it
    vouches for, or not at all, so a crash can never make a later refresh skip rows."""
    # After a load the target holds exactly the snapshot's legacy ids (deletes applied), so the
    # snapshot's own range is the range a later search for deleted rows must cover.
    order = sorted(summary) if summary is not None else None
    conn.execute(sql.SQL(
        "INSERT INTO {} AS w (entity, change_hwm, min_legacy_id, max_legacy_id, legacy_rows, run_id, mode, updated_at, "
        "summary_buckets, summary_rows, summary_hashes) "
        "VALUES (%s, %s::timestamp AT TIME ZONE 'UTC', %s, %s, %s, %s, %s, now(), %s, %s, %s::numeric[]) "
        "ON CONFLICT (entity) DO UPDATE SET change_hwm = EXCLUDED.change_hwm, min_legacy_id = EXCLUDED.min_legacy_id, "
        "max_legacy_id = EXCLUDED.max_legacy_id, legacy_rows = EXCLUDED.legacy_rows, run_id = EXCLUDED.run_id, "
        "mode = EXCLUDED.mode, updated_at = now(), summary_buckets = EXCLUDED.summary_buckets, "
        "summary_rows = EXCLUDED.summary_rows, summary_hashes = EXCLUDED.summary_hashes").format(
        sql.Identifier(CONTROL_SCHEMA, "watermarks")),
        [e.name, state.change_hwm, state.min_id, state.max_id, state.rows, opts.run_id, opts.mode,
         order, [summary[b][0] for b in order] if order is not None else None,
         [str(summary[b][1]) for b in order] if order is not None else None])


def plan_differential(conn: psycopg.Connection, stream: "LegacyStream", wm: Watermark) -> None:
    """Narrow ``stream`` to the legacy rows changed or added since the watermark.

    Changed: the change-tracking column at or after the high-water mark minus the overlap (a
    clock that lags, a transaction that committed after the last snapshot with an earlier
    timestamp), or later than the snapshot's clock (such marks never become the high-water mark,
    see :func:`source_state_sql`; they are counted in the plan note). Added: ids above the highest
    id seen. Plus the rows worth a retry (see
    :func:`_retry_rows`). Deletes are found after the merge (:func:`_apply_deletes`).
    """
    import datetime as dt

    e, opts = stream.entity, stream.opts
    pk = sql.SQL("l.{}").format(sql.Identifier(e.legacy_pk))
    conds = []
    if wm.change_hwm is not None:
        since = dt.datetime.fromisoformat(wm.change_hwm) - dt.timedelta(seconds=opts.overlap_s)
        # an untyped literal takes the column's own type, so the change column's index applies
        conds.append(sql.SQL("l.{} >= {}").format(sql.Identifier(e.legacy_change_column),
                                                  sql.Literal(since.isoformat(sep=" "))))
    chg = sql.SQL("l.{}").format(sql.Identifier(e.legacy_change_column))
    future = sql.SQL("{} > {}").format(chg, SNAPSHOT_CLOCK)
    conds.append(future)  # marked later than the snapshot's clock: read on every refresh
    (n_future,) = stream._connect().execute(sql.SQL("SELECT count(*) FROM {} AS l WHERE {}").format(
        sql.Identifier(e.legacy_table), future)).fetchone()
    if n_future:
        log.warning("%s: %d legacy rows have change marks in the future; every refresh re-reads them",
                    e.name, n_future)
    if wm.max_id is not None:
        conds.append(sql.SQL("{} > {}").format(pk, sql.Literal(wm.max_id)))
    retry = sorted({legacy_id for legacy_id, _ in _retry_rows(conn, e, opts)})
    if retry:
        conds.append(sql.SQL("{} = ANY({})").format(pk, sql.Literal(retry)))
    stream.set_where(sql.SQL(" OR ").join(conds) if conds else sql.SQL("true"))
    stream.plan_note = (f"differential: changed since {wm.change_hwm} - {opts.overlap_s}s, ids above "
                        f"{wm.max_id}, {n_future} rows marked in the future, {len(retry)} rows retried")


def _accounted(conn, e: Entity, opts: LoadOptions, result: "LoadResult | None" = None) -> int:
    """Target rows (not soft-deleted) + unresolved quarantine rows of ``e``.

    With ``result`` whose ``existing`` is not known yet (a differential load does not count the
    table before it starts), the count before the load is derived from the one taken here, right
    after the merge: before = now - inserted + evicted."""
    live = sql.SQL("NOT (metadata ? {})").format(sql.Literal(SOFT_DELETED)) \
        if opts.delete_policy == "soft" else sql.SQL("true")
    rows, live_rows, held = conn.execute(sql.SQL(
        "SELECT count(*), count(*) FILTER (WHERE {live}), "
        "(SELECT count(*) FROM {q} WHERE entity = %s AND NOT resolved) FROM {t}"
    ).format(t=_t(e), live=live, q=sql.Identifier(CONTROL_SCHEMA, "quarantine")), [e.name]).fetchone()
    if result is not None and result.existing is None:
        result.existing = rows - result.inserted + result.evicted
    return live_rows + held


GAP_EXPAND_LIMIT = 5_000_000  # ids; beyond this the deleted rows are found by a scan instead


def _apply_deletes(conn, e: Entity, stream: "LegacyStream", opts: LoadOptions, result: "LoadResult",
                   state: SourceState, previous: Watermark | None) -> None:
    """Find the rows whose legacy row was deleted, set-based, and apply the delete policy.

    After the merge the target holds every legacy row of the snapshot (loaded or quarantined),
    so (target rows + open quarantine) - legacy rows is exactly the number of rows deleted at the
    source. When it is 0 nothing more is done. Otherwise the source lists the gaps in its ids
    (one ordered pass over its primary key), and the target looks up the ids in those gaps by
    their deterministic UUID (primary-key probes) and in the quarantine.

    Policies: ``hard`` removes the row (children follow the rules of a fresh migration: a
    required reference moves the child to quarantine as ORPHAN_FK, an optional one is set NULL),
    so the target equals a fresh migration of the source; ``soft`` keeps the row and records
    ``metadata.deleted_at_source`` (run and time), leaving children untouched. Either way open
    quarantine rows of deleted legacy rows are resolved as ``deleted_at_source``.
    """
    if stream.nothing_read and stream.accounted_before is not None:
        accounted = stream.accounted_before  # this load wrote nothing: the count before still holds
    else:
        accounted = _accounted(conn, e, opts, result)
    result.accounted_after = accounted
    if accounted <= state.rows:
        return
    # the gaps searched span every id the target or the quarantine may hold: the snapshot's range,
    # the last watermark's and the open quarantine's (rows quarantined by a parent's cascade)
    held = conn.execute(sql.SQL("SELECT min(legacy_id), max(legacy_id) FROM {} WHERE entity = %s AND NOT resolved").format(
        sql.Identifier(CONTROL_SCHEMA, "quarantine")), [e.name]).fetchone()
    ids = [x for x in (state.min_id, state.max_id, *held) + ((previous.min_id, previous.max_id) if previous else ())
           if x is not None]
    if previous is None or previous.min_id is None:
        lo, hi = conn.execute(sql.SQL("SELECT min(l), max(l) FROM (SELECT (metadata->>'legacy_id')::bigint AS l "
                                      "FROM {t} UNION ALL SELECT legacy_id FROM {q} WHERE entity = %s) s").format(
            t=_t(e), q=sql.Identifier(CONTROL_SCHEMA, "quarantine")), [e.name]).fetchone()
        ids += [x for x in (lo, hi) if x is not None]
    gaps = stream.gaps(min(ids), max(ids))
    conn.execute("CREATE TEMP TABLE _gone (legacy_id bigint PRIMARY KEY) ON COMMIT DROP")
    conn.execute("CREATE TEMP TABLE _gaps (lo bigint, hi bigint) ON COMMIT DROP")
    with conn.cursor().copy("COPY _gaps (lo, hi) FROM STDIN") as cp:
        for g in gaps:
            cp.write_row(g)
    q = sql.Identifier(CONTROL_SCHEMA, "quarantine")
    live = sql.SQL("AND NOT (t.metadata ? {})").format(sql.Literal(SOFT_DELETED)) \
        if opts.delete_policy == "soft" else sql.SQL("")
    if sum(h - l + 1 for l, h in gaps) <= GAP_EXPAND_LIMIT:
        conn.execute(sql.SQL(
            "INSERT INTO _gone SELECT g FROM _gaps, generate_series(lo, hi) AS g "
            "WHERE EXISTS (SELECT 1 FROM {t} AS t WHERE t.id = {ctl}.legacy_uuid({ent}, g) {live}) "
            "OR EXISTS (SELECT 1 FROM {q} AS q WHERE q.entity = {ent} AND q.legacy_id = g AND NOT q.resolved)").format(
            t=_t(e), ctl=sql.Identifier(CONTROL_SCHEMA), ent=sql.Literal(e.name), live=live, q=q))
    else:  # sparse legacy ids: one scan of the target's legacy ids against the gaps
        conn.execute(sql.SQL(
            "INSERT INTO _gone SELECT DISTINCT s.l FROM (SELECT (t.metadata->>'legacy_id')::bigint AS l FROM {t} AS t "
            "WHERE true {live} UNION ALL SELECT legacy_id FROM {q} WHERE entity = {ent} AND NOT resolved) s "
            "JOIN _gaps ON s.l BETWEEN _gaps.lo AND _gaps.hi").format(t=_t(e), live=live, q=q, ent=sql.Literal(e.name)))
    run = sql.Literal(opts.run_id)
    gone_quarantined = conn.execute(sql.SQL(
        "UPDATE {q} SET resolved = true, resolved_at = now(), resolved_run_id = {run}, resolution = {res} "
        "WHERE entity = {ent} AND NOT resolved AND legacy_id IN (SELECT legacy_id FROM _gone)").format(
        q=q, run=run, res=sql.Literal(SOFT_DELETED), ent=sql.Literal(e.name))).rowcount
    conn.execute(sql.SQL("CREATE TEMP TABLE _evict_deleted ON COMMIT DROP AS SELECT t.id FROM {t} AS t WHERE t.id = "
                         "ANY(ARRAY(SELECT {ctl}.legacy_uuid({ent}, g.legacy_id) FROM _gone g))").format(
        t=_t(e), ctl=sql.Identifier(CONTROL_SCHEMA), ent=sql.Literal(e.name)))
    if opts.delete_policy == "hard":
        result.deleted = _evict(conn, e, "_evict_deleted", stream, opts, result)
    else:
        result.deleted = conn.execute(sql.SQL(
            "UPDATE {t} AS t SET metadata = t.metadata || jsonb_build_object({k}, jsonb_build_object("
            "'run_id', {run}::text, 'at', now())) FROM _evict_deleted d WHERE t.id = d.id").format(
            t=_t(e), k=sql.Literal(SOFT_DELETED), run=run)).rowcount
    result.accounted_after = accounted - result.deleted - gone_quarantined
    log.info("%s: %d target rows deleted at the source (%s policy), %d gaps checked", e.name, result.deleted,
             opts.delete_policy, len(gaps))


_steps = iter(range(1, 1 << 62))  # cascade step numbers, unique within the process


def _evict(conn, e: Entity, ids_table: str, stream: "LegacyStream", opts: LoadOptions, result: "LoadResult") -> int:
    """Remove the target rows of ``e`` listed (column ``id``) in the temp table ``ids_table``.

    Their descendants are treated as a fresh migration would treat them with that parent absent:
    a required reference moves the child row to the quarantine (ORPHAN_FK, the parent named, the
    raw legacy row attached), and so on down the foreign-key graph; an optional reference is set
    NULL and marked for a retry. The walk is breadth-first over one temp table ``_cascade`` (one
    row per removed descendant); rows are then deleted table by table, deepest dependency level
    first, so no foreign key ever points at a removed row. Returns the number of rows of ``e``
    removed.
    """
    n = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(ids_table))).fetchone()[0]
    if not n:
        return 0
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _cascade (step bigint, entity text, id uuid, legacy_id bigint, "
                 "h bigint, detail text, PRIMARY KEY (entity, id)) ON COMMIT DROP")
    first_step = next(_steps)
    removals: list[tuple[Entity, sql.Composable]] = [(e, sql.SQL("SELECT id FROM {}").format(sql.Identifier(ids_table)))]
    i = 0
    while i < len(removals):
        parent, ids_sql = removals[i]
        i += 1
        for child in children(parent.name):
            for c in (c for c in child.foreign_keys if c.parent == parent.name):
                ct, col = _t(child), sql.Identifier(c.target)
                if c.required or not opts.error_recovery:
                    step = next(_steps)
                    moved = conn.execute(sql.SQL(
                        "INSERT INTO _cascade SELECT {step}, {ent}, ch.id, (ch.metadata->>'legacy_id')::bigint, "
                        "(ch.metadata->>'source_hash')::bigint, {detail} FROM {ct} AS ch "
                        "WHERE ch.{col} = ANY(ARRAY({ids})) ON CONFLICT DO NOTHING").format(
                        step=sql.Literal(step), ent=sql.Literal(child.name), ct=ct, col=col, ids=ids_sql,
                        detail=sql.Literal(orphan_detail(c)))).rowcount
                    if moved:
                        result.cascaded[child.name] = result.cascaded.get(child.name, 0) + moved
                        removals.append((child, sql.SQL("SELECT id FROM _cascade WHERE step = {}").format(
                            sql.Literal(step))))
                else:
                    n = _set_fk_null(conn, ct, c, parent.name,
                                     sql.SQL("s.{} = ANY(ARRAY({}))").format(col, ids_sql))
                    if n:
                        result.cascaded[child.name] = result.cascaded.get(child.name, 0) + n
    # Children before parents, by dependency level, deepest first. Not in the walk's order: a row
    # reachable by two paths is registered once, by whichever path found it first, which can be
    # before its other parent was reached (a file's order_files row found through the file, then
    # its order through a doctor's office), and deleting in reverse walk order would then remove
    # that parent while the row still references it.
    removed = 0
    for target_entity in sorted({ent.name: ent for ent, _ in removals}.values(), key=lambda x: -x.level):
        ids_sql = sql.SQL(" UNION ALL ").join(ids for ent, ids in removals if ent.name == target_entity.name)
        removed = conn.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(ARRAY({}))").format(
            _t(target_entity), ids_sql)).rowcount
    if len(removals) > 1:
        _quarantine_cascaded(conn, stream, opts, first_step)
    return removed  # the last DELETE is the one of ``e`` itself


def _name_first_missing_parent(conn, e: Entity, opts: LoadOptions) -> None:
    """Rewrite the detail of ``e``'s open ORPHAN_FK rows to name the first required reference, in
    the registry's order, whose parent is missing now: the one a fresh migration names, whichever
    removal quarantined the row (a row moved to quarantine for its file may have lost its case
    since, or been reached through its file first). Run by ``e``'s own load, after its parents'
    loads of the same run: once per table, not once per removal. Only tables with two or more
    such references can differ, and only rows that name a later reference than the first: tested
    on the short detail before the raw row is read (all such rows of all tables: 0.24 s at
    scale 1.0 after 40 refreshes)."""
    blocking = [c for c in e.foreign_keys if c.required or not opts.error_recovery]
    if len(blocking) < 2:
        return
    q = sql.Identifier(CONTROL_SCHEMA, "quarantine")
    first_missing = sql.SQL("CASE {} END").format(sql.SQL(" ").join(
        sql.SQL("WHEN NOT EXISTS (SELECT 1 FROM {p} AS p WHERE p.id = {ctl}.legacy_uuid({pe}, "
                "(q.raw->>{col})::bigint)) THEN {d}").format(
            p=_t_name(c.parent), ctl=sql.Identifier(CONTROL_SCHEMA), pe=sql.Literal(c.parent),
            col=sql.Literal(c.legacy_name), d=sql.Literal(orphan_detail(c))) for c in blocking))
    conn.execute(sql.SQL(
        "WITH d AS MATERIALIZED (SELECT q.legacy_id, {first} AS detail FROM {q} AS q "
        "  WHERE q.entity = {ent} AND NOT q.resolved AND q.reason = {orphan} AND q.raw IS NOT NULL "
        "  AND q.detail = ANY({later})) "
        "UPDATE {q} AS q SET detail = d.detail FROM d "
        "WHERE q.entity = {ent} AND q.legacy_id = d.legacy_id AND d.detail IS NOT NULL "
        "AND d.detail IS DISTINCT FROM q.detail").format(
        q=q, first=first_missing, ent=sql.Literal(e.name), orphan=sql.Literal(ORPHAN_FK),
        later=sql.Literal([orphan_detail(c) for c in blocking[1:]])))


def _quarantine_cascaded(conn, stream: "LegacyStream", opts: LoadOptions, since_step: int) -> None:
    """Quarantine the descendants removed by one eviction, with their raw legacy rows."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _cascade_raw (entity text, legacy_id bigint, raw jsonb) "
                 "ON COMMIT DROP")
    wanted: dict[str, list[int]] = {}
    for name, legacy_id in conn.execute("SELECT entity, legacy_id FROM _cascade WHERE step > %s", [since_step]):
        wanted.setdefault(name, []).append(legacy_id)
    with conn.cursor().copy("COPY _cascade_raw (entity, legacy_id, raw) FROM STDIN") as cp:
        for name, ids in wanted.items():
            for legacy_id, raw in stream.fetch_raw(ids, of=entity(name)):
                cp.write_row((name, legacy_id, raw))
    _upsert_quarantine(conn, sql.SQL(
        "SELECT DISTINCT ON (c.entity, c.legacy_id) c.entity, c.legacy_id, {r} AS reason, c.detail, raw.raw, "
        "c.h AS source_hash, {run}::text AS run_id "
        "FROM _cascade c LEFT JOIN _cascade_raw raw USING (entity, legacy_id) WHERE c.step > {since} "
        "ORDER BY c.entity, c.legacy_id, c.step").format(
        r=sql.Literal(ORPHAN_FK), run=sql.Literal(opts.run_id), since=sql.Literal(since_step)))


def _open_quarantine_rows(conn, e: Entity) -> int:
    """Unresolved quarantine rows of ``e`` (read through the quarantine's partial index)."""
    return conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE entity = %s AND NOT resolved").format(
        sql.Identifier(CONTROL_SCHEMA, "quarantine")), [e.name]).fetchone()[0]


def _stored_summary(conn, stream: "LegacyStream", previous: Watermark | None, existing: int | None):
    """The summary the last full-mode load left, when it still describes the target: same number
    of target + open quarantine rows (a row removed or added behind the engine's back makes the
    planner summarise the target itself, and re-read what differs). ``existing`` is the target's
    row count, already taken by the load."""
    if previous is None or previous.summary is None:
        return None
    e, opts = stream.entity, stream.opts
    if existing is not None and opts.delete_policy == "hard":  # every target row counts
        stream.accounted_before = existing + _open_quarantine_rows(conn, e)
    else:
        stream.accounted_before = _accounted(conn, e, opts)
    if stream.accounted_before != sum(n for n, _ in previous.summary.values()):
        return None
    return previous.summary


def plan_changes(conn: psycopg.Connection, stream: "LegacyStream", previous: Watermark | None = None,
                 existing: int | None = None) -> None:
    """Narrow ``stream`` to the legacy rows that may change the target.

    Both servers summarise the table per bucket of BUCKET legacy ids, in parallel: the source
    the count and sum of the per-row hash of its raw rows, the target the same over its loaded
    rows plus its unresolved quarantine rows (both keep the hash of the legacy row they came
    from). Equal buckets hold exactly the legacy rows that were migrated last time, and since
    the transforms are deterministic (and part of the hash salt), re-reading them would change
    nothing. Rows that may load differently without a source change are always re-read: target-
    side quarantines (their parent or the duplicate may be gone now) and rows whose optional
    foreign key was set NULL (the parent may have arrived).
    """
    from concurrent.futures import ThreadPoolExecutor

    e = stream.entity
    q = sql.Identifier(CONTROL_SCHEMA, "quarantine")
    with ThreadPoolExecutor(max_workers=1) as pool:
        source_future = pool.submit(_summaries_source, stream)
        stored = _stored_summary(conn, stream, previous, existing)
        if stored is None:
            target_rows = conn.execute(sql.SQL(
                "SELECT b, sum(n_loaded)::bigint, sum(n_quarantined)::bigint, sum(h) FROM ("
                "  SELECT (metadata->>'legacy_id')::bigint / {b} AS b, count(*) AS n_loaded, 0 AS n_quarantined, "
                "         sum((metadata->>'source_hash')::bigint) AS h FROM {t} GROUP BY 1"
                "  UNION ALL"
                "  SELECT legacy_id / {b}, 0, count(*), sum(source_hash) FROM {q} WHERE entity = {ent} AND NOT resolved "
                "  GROUP BY 1) s GROUP BY b ORDER BY b").format(
                b=sql.Literal(BUCKET), t=_t(e), q=q, ent=sql.Literal(e.name))).fetchall()
            target = {b: (loaded, quarantined, int(h) % HASH_MOD) for b, loaded, quarantined, h in target_rows}
        else:
            # the summary of the last load, split into loaded and quarantined rows by the (small,
            # indexed) quarantine
            held = dict(conn.execute(sql.SQL(
                "SELECT legacy_id / {b}, count(*) FROM {q} WHERE entity = {ent} AND NOT resolved GROUP BY 1").format(
                b=sql.Literal(BUCKET), q=q, ent=sql.Literal(e.name))).fetchall())
            target = {b: (n - held.get(b, 0), held.get(b, 0), h) for b, (n, h) in stored.items()}
        retry = _retry_rows(conn, e, stream.opts)
        source_rows = [(b, n, int(h) % HASH_MOD) for b, n, h in source_future.result()]
    stream.summary = {b: (n, h) for b, n, h in source_rows}
    dirty = []
    for b, n, h in source_rows:
        loaded, quarantined, th = target.pop(b, (0, 0, None))
        if loaded + quarantined == n and th == h:
            stream.verified_loaded += loaded
            stream.verified_quarantined += quarantined
        else:
            dirty.append(b)
    # buckets only the target has: the legacy rows were deleted (deletes are the differential
    # refresh's business; the merge never deletes); nothing to stream for them
    retry_set = {legacy_id for legacy_id, _ in retry}
    dirty_set = set(dirty)
    for legacy_id, where in retry:
        if legacy_id // BUCKET not in dirty_set:  # counted as verified above, re-read below instead
            if where == "q":
                stream.verified_quarantined -= 1
            else:
                stream.verified_loaded -= 1
    pk = sql.SQL("l.{}").format(sql.Identifier(e.legacy_pk))
    conds = []
    if dirty:
        conds.append(sql.SQL("({} / {}) = ANY({})").format(pk, sql.Literal(BUCKET), sql.Literal(dirty)))
    if retry_set:
        conds.append(sql.SQL("{} = ANY({})").format(pk, sql.Literal(sorted(retry_set))))
    if conds:
        stream.set_where(sql.SQL(" OR ").join(conds))
    else:
        stream.read_nothing()
    stream.plan_note = (f"{len(dirty)} of {len(source_rows)} id buckets changed, {len(retry_set)} rows retried, "
                        f"{stream.verified_loaded + stream.verified_quarantined:,} rows verified unchanged"
                        f"{', against the last load' + chr(39) + 's summary' if stored is not None else ''}")


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


def load_stream(conn: psycopg.Connection, stream: LegacyStream, opts: LoadOptions,
                on_progress: Callable[[str], None] | None = None) -> LoadResult:
    """Load ``stream`` into its target table inside the caller's open transaction on ``conn``.

    The caller commits (after writing the audit row in the same transaction) or rolls back.
    """
    e = stream.entity
    result = LoadResult(e.name, "merge", started_at=time.time())
    t0 = time.perf_counter()
    mark = [t0]

    def phase(name: str) -> None:
        now = time.perf_counter()
        result.phases[name] = round(result.phases.get(name, 0.0) + now - mark[0], 3)
        mark[0] = now

    proc = psutil.Process()
    peak = proc.memory_info().rss
    target = _t(e)
    conn.execute("SET LOCAL TimeZone = 'UTC'; SET LOCAL synchronous_commit = off; "
                  "SET LOCAL maintenance_work_mem = '256MB'; SET LOCAL jit = off")
    # One loader per table at a time; readers are not blocked.
    conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(target))
    has_rows = conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(target)).fetchone()[0]
    fast = opts.fast_path and not has_rows
    blocker = _fast_path_blocker(conn, e) if fast else None
    if blocker:
        fast = False
        result.load_path = f"merge (fast path not possible: {blocker})"
        log.warning("%s: fast path not possible (%s): loading through the merge", e.name, blocker)
    previous = _watermark(conn, e)
    result.mode = opts.mode
    differential = has_rows and opts.mode == "differential" and previous is not None
    # A differential load reads a few rows of what may be millions: it counts the table once,
    # after the merge (_apply_deletes needs that count anyway), and derives the count before.
    result.existing = None if differential else (
        conn.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone()[0] if has_rows else 0)
    if differential:
        plan_differential(conn, stream, previous)  # rows changed since the watermark (+ retries)
        result.load_path = f"merge ({stream.plan_note})"
    elif result.existing and opts.incremental:
        result.mode = "full"
        plan_changes(conn, stream, previous, result.existing)  # narrows the stream to changed buckets (+ rows worth a retry)
        result.load_path = f"merge ({stream.plan_note})"
    state = stream.snapshot()  # the planner's source summary may have computed it already
    saved = []
    if fast:
        result.load_path = "fast (empty target: bulk load, then build keys)"
        saved = _capture_constraints(conn, e)
        _drop_constraints(conn, saved)
        # Emptied in this transaction, the table takes COPY FREEZE: rows are written frozen and
        # the pages all-visible, so neither the key builds below nor the first queries after the
        # load rewrite every page to set hint bits, and no vacuum has to freeze it later. The
        # table is empty (that is why this path runs); TRUNCATE only gives it a new file.
        conn.execute(sql.SQL("TRUNCATE {}").format(target))
        dest = target
    else:
        conn.execute(sql.SQL("CREATE TEMP TABLE _stage (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(target))
        conn.execute(sql.SQL("ALTER TABLE _stage ADD COLUMN {} bigint").format(sql.Identifier(LEGACY_ID)))
        dest = sql.Identifier("_stage")
    conn.execute("CREATE TEMP TABLE _quarantine (legacy_id bigint, reason text, detail text, raw jsonb, "
                 "source_hash bigint) ON COMMIT DROP")

    phase("prepare")
    cols = target_columns(e) + ([] if fast else [LEGACY_ID])
    rejects = tempfile.SpooledTemporaryFile(max_size=8 << 20)
    source_rules: dict[str, int] = {}
    n_rejects = 0
    batches = 0
    encoder = _BinaryCopy(pa.schema([stream.schema.field(c) for c in cols]))
    freeze = sql.SQL(", FREEZE") if fast else sql.SQL("")
    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary{})").format(dest, _ids(cols), freeze)) as copy:
        copy.write(encoder.header())
        for batch in _prefetch(stream, depth=2):
            bad_mask = pc.is_valid(batch.column(REJECT))
            n_bad = batch.num_rows - batch.column(REJECT).null_count  # rows with a reject reason
            copy.write(encoder.encode(batch.select(cols), skip=bad_mask if n_bad else None))
            _count_source_rules(batch.column(NOTES), bad_mask, source_rules)
            if n_bad:
                bad = batch.filter(bad_mask).select([LEGACY_ID, REJECT, DETAIL, RAW, SOURCE_HASH])
                rejects.write(_to_csv(bad))
                n_rejects += n_bad
            batches += 1
            peak = max(peak, proc.memory_info().rss)
            if on_progress and batches % opts.progress_every == 0:
                elapsed = time.perf_counter() - t0
                rate = stream.rows_read / elapsed if elapsed else 0
                left = max(stream.estimated_rows - stream.rows_read, 0)
                eta = f", about {left / rate:.0f}s left" if rate and stream.estimated_rows else ""
                on_progress(f"{e.name}: {stream.rows_read:,} rows read, {rate:,.0f} rows/s{eta}")
        copy.write(encoder.trailer())
    phase("stream_and_copy")
    result.records_read = stream.rows_read + stream.verified_loaded + stream.verified_quarantined
    if n_rejects:
        rejects.seek(0)
        with conn.cursor().copy("COPY _quarantine (legacy_id, reason, detail, raw, source_hash) FROM STDIN "
                                "(FORMAT csv)") as qc:
            while block := rejects.read(1 << 20):
                qc.write(block)
    rejects.close()

    phase("quarantine_copy")
    # Fresh statistics: a just-loaded table (and any temp table: autovacuum never sees those) has
    # none, and the orphan/duplicate queries below then get nested-loop plans of millions of probes.
    # Only the columns those queries join or group on: sampling statistics of every text column
    # of every table costs more than the queries it informs.
    stat_cols = [c.target for c in e.foreign_keys + e.unique_columns]
    if stat_cols:
        conn.execute(sql.SQL("ANALYZE {} ({})").format(dest, _ids(stat_cols)))
    phase("analyze")
    recoveries: dict[str, int] = {}
    _reject_target_side(conn, e, dest, staged=not fast, opts=opts, recoveries=recoveries)
    phase("orphans_and_duplicates")
    # raw legacy rows of target-side rejects, fetched from the source by id in one query and
    # attached set-based (these can be tens of thousands of rows when a parent's rows cascade)
    missing_raw = [r[0] for r in conn.execute("SELECT legacy_id FROM _quarantine WHERE raw IS NULL").fetchall()]
    if missing_raw:
        conn.execute("CREATE TEMP TABLE _raw (legacy_id bigint PRIMARY KEY, raw jsonb) ON COMMIT DROP")
        with conn.cursor().copy("COPY _raw (legacy_id, raw) FROM STDIN") as rc:
            for legacy_id, raw in stream.fetch_raw(missing_raw):
                rc.write_row((legacy_id, raw))
        conn.execute("UPDATE _quarantine q SET raw = r.raw FROM _raw r WHERE r.legacy_id = q.legacy_id "
                     "AND q.raw IS NULL")

    phase("raw_rows_of_rejects")
    if fast:
        _restore_constraints(conn, saved)
        result.inserted = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone()[0]
        phase("build_keys")
    else:
        data_cols = [c.target for c in e.columns] + ["metadata"]
        upsert = sql.SQL(
            "WITH up AS (INSERT INTO {t} AS t ({cols}) SELECT {cols} FROM _stage "
            "ON CONFLICT (id) DO UPDATE SET {sets} WHERE ({old}) IS DISTINCT FROM ({new}) "
            "RETURNING (xmax = 0) AS inserted) "
            "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up").format(
            t=target, cols=_ids(target_columns(e)),
            sets=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in data_cols),
            old=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in data_cols),
            new=sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in data_cols))
        # rows that loaded before and no longer do (their legacy row now breaks a rule, or a row with a
        # lower legacy id took their unique value): the old version leaves the target, before the
        # merge (which may give its unique value to the winner), with its children
        conn.execute(sql.SQL("CREATE TEMP TABLE _evict ON COMMIT DROP AS SELECT t.id FROM {t} AS t WHERE t.id = "
                             "ANY(ARRAY(SELECT {ctl}.legacy_uuid({ent}, q.legacy_id) FROM _quarantine q))").format(
            t=target, ctl=sql.Identifier(CONTROL_SCHEMA), ent=sql.Literal(e.name)))
        result.evicted = _evict(conn, e, "_evict", stream, opts, result)
        phase("evict_requarantined")
        for statement in _unique_swap_sql(e):
            conn.execute(statement)
        result.inserted, result.updated = conn.execute(upsert).fetchone()
        phase("merge")
    # Quarantine: upsert this run's rejects, resolve the ones that loaded now.
    run = opts.run_id
    _upsert_quarantine(conn, sql.SQL(
        "SELECT DISTINCT ON (legacy_id) {ent}::text AS entity, legacy_id, reason, detail, raw, source_hash, "
        "{run}::text AS run_id FROM _quarantine ORDER BY legacy_id").format(
        ent=sql.Literal(e.name), run=sql.Literal(run)))
    # Only a row this load wrote can have left the quarantine: on the merge path those are the
    # staged rows (not every open quarantine row of the table, most of which were not re-read).
    staged_only = sql.SQL("") if fast else sql.SQL(
        "AND q.legacy_id IN (SELECT {} FROM _stage) ").format(sql.Identifier(LEGACY_ID))
    cur = conn.execute(sql.SQL(
        "UPDATE {q} AS q SET resolved = true, resolved_at = now(), resolved_run_id = {run}, resolution = 'loaded' "
        "WHERE q.entity = {ent} AND NOT q.resolved {staged_only}"
        "AND NOT EXISTS (SELECT 1 FROM _quarantine x WHERE x.legacy_id = q.legacy_id) "
        "AND EXISTS (SELECT 1 FROM {t} AS t WHERE t.id = {ctl}.legacy_uuid({ent}, q.legacy_id))").format(
        q=sql.Identifier(CONTROL_SCHEMA, "quarantine"), ent=sql.Literal(e.name), run=sql.Literal(run),
        t=target, ctl=sql.Identifier(CONTROL_SCHEMA), staged_only=staged_only))
    result.resolved = cur.rowcount
    if fast:
        # The fast path read every legacy row of the snapshot: an open quarantine row that this
        # load neither loaded nor quarantined again is of a legacy row that no longer exists (the
        # table was emptied by a cascade, or the source shrank), whatever its reason.
        gone = conn.execute(sql.SQL(
            "UPDATE {q} AS q SET resolved = true, resolved_at = now(), resolved_run_id = {run}, resolution = {res} "
            "WHERE q.entity = {ent} AND NOT q.resolved "
            "AND NOT EXISTS (SELECT 1 FROM _quarantine x WHERE x.legacy_id = q.legacy_id)").format(
            q=sql.Identifier(CONTROL_SCHEMA, "quarantine"), run=sql.Literal(run), res=sql.Literal(SOFT_DELETED),
            ent=sql.Literal(e.name))).rowcount
        if gone:
            log.info("%s: %d open quarantine rows of legacy rows that no longer exist resolved", e.name, gone)
        # the table was empty: its rows are the ones just counted (none soft-deleted), so the
        # accounting below needs only the quarantine's open rows, not a second scan of the table
        result.accounted_after = result.inserted + _open_quarantine_rows(conn, e)
    phase("quarantine_upsert_and_resolve")
    if not fast:
        _apply_deletes(conn, e, stream, opts, result, state, previous)
        _name_first_missing_parent(conn, e, opts)
        if result.existing is None:  # not counted on the way (the plan read nothing)
            rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone()[0]
            result.existing = rows - result.inserted + result.evicted + result.deleted
        phase("deletes")
    result.quarantine_by_reason = dict(conn.execute(
        "SELECT reason, count(*) FROM _quarantine GROUP BY reason ORDER BY reason").fetchall())
    result.quarantined = sum(result.quarantine_by_reason.values()) + stream.verified_quarantined
    # recoveries applied in the source query are recorded in metadata->'recovered'
    recoveries.update({k: v for k, v in source_rules.items() if v})
    result.recoveries = recoveries
    phase("counts")
    loaded = result.records_read - result.quarantined
    result.unchanged = max(loaded - result.inserted - result.updated, 0)
    accounted = result.accounted_after if result.accounted_after is not None else _accounted(conn, e, opts)
    result.remaining_difference = state.rows - accounted
    # The summary stays valid for the next full-mode load only when this load accounted for the
    # whole snapshot (target + open quarantine = legacy rows) from a summary of all of it.
    keep = stream.summary if result.mode == "full" and result.remaining_difference == 0 else None
    _save_watermark(conn, e, state, opts, keep)
    phase("watermark")
    result.duration_s = time.perf_counter() - t0
    result.finished_at = time.time()
    result.peak_rss_mb = max(peak, proc.memory_info().rss) / 2**20
    return result


def needs_full_pass(result: LoadResult) -> bool:
    """A differential load that left legacy rows neither in the target nor in quarantine: rows it
    could not see (inserted below the highest id seen, with a change mark older than the
    watermark). A full-mode pass of the table, right after, compares every bucket and loads them."""
    return result.mode == "differential" and result.remaining_difference > 0


def full_pass(conn: psycopg.Connection, stream: "LegacyStream", opts: LoadOptions, on_progress=None) -> LoadResult:
    """The full-mode pass after :func:`needs_full_pass`, on a stream of its own; the caller commits."""
    full_opts = replace(opts, mode="full")
    again = LegacyStream(stream.conninfo, stream.entity, full_opts)
    try:
        log.warning("%s: the differential load left legacy rows unaccounted for: comparing every row", stream.entity.name)
        return load_stream(conn, again, full_opts, on_progress)
    finally:
        again.close()


SOURCE_RULES = ("default_for_null", "email_corrected", "email_placeholder")  # applied by the source query


def _count_source_rules(notes: pa.Array, rejected: pa.Array, counts: dict[str, int]) -> None:
    """Count the recovery rules the source query applied to the rows sent to the target, from
    their notes (what ``metadata.recovered`` holds), instead of reading the loaded rows back."""
    if notes.null_count == len(notes):
        return
    applied = pc.filter(notes, pc.and_(pc.is_valid(notes), pc.invert(rejected)))
    for rule in SOURCE_RULES:
        n = pc.sum(pc.count_substring(applied, f'"rule": "{rule}"')).as_py() or 0
        counts[rule] = counts.get(rule, 0) + n


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
        mode = result.mode
    r = result or LoadResult(entity_name, "n/a")
    started = started_at or r.started_at or time.time()
    conn.execute(sql.SQL(
        "INSERT INTO {} (run_id, entity, status, mode, load_path, records_read, existing_records, inserted, updated, "
        "unchanged, quarantined, deleted, duration_ms, started_at, finished_at, error_class, error, recovery, details) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, to_timestamp(%s), to_timestamp(%s), %s, %s, %s, %s)"
    ).format(sql.Identifier(CONTROL_SCHEMA, "migration_runs")), [
        run_id, entity_name, status or r.status, mode, r.load_path, r.records_read, r.existing, r.inserted,
        r.updated, r.unchanged, r.quarantined, r.deleted, int(r.duration_s * 1000), started, r.finished_at or time.time(),
        error_class, error, recovery, psycopg.types.json.Jsonb(details)])


def migrate_entity(source_conninfo: str, target_conninfo: str, name: str, opts: LoadOptions,
                   on_progress=None, fail_after_batches: int | None = None) -> LoadResult:
    """Load one entity outside Dagster (tests, benchmark): stream, load, audit, commit."""
    e = entity(name)
    stream = LegacyStream(source_conninfo, e, opts, fail_after_batches=fail_after_batches)
    try:
        with connections.borrowed(target_conninfo, "load") as conn:
            result = load_stream(conn, stream, opts, on_progress)
            write_audit(conn, opts.run_id, result, e.name)
            conn.commit()
            if needs_full_pass(result):
                result = full_pass(conn, stream, opts, on_progress)
                write_audit(conn, opts.run_id, result, e.name)
                conn.commit()
        return result
    finally:
        stream.close()
