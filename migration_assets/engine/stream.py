"""The source side of a load: one legacy table as a stream of Arrow record batches in the
target's shape, read inside one snapshot.

Flow: the stream opens a source connection in a REPEATABLE READ, READ ONLY transaction; the
planner reads counts and summaries through :meth:`LegacyStream.query`, in that snapshot; then
:meth:`LegacyStream.batches` runs the source query (source_sql.py) restricted by the plan's
condition, read by the ADBC PostgreSQL driver (a binary COPY decoded in C, no Python per row) on a
second connection that adopts the same snapshot, cut into BATCH_SIZE rows, and finished per batch:
keys become UUIDs (transforms.uuid3_keys, ParentKeys), raw text is trimmed, money parsed, text
dates checked (a bad one quarantines the row), and ``metadata`` assembled, all with pyarrow
compute. Memory holds a few batches, whatever the table's size.

The stream keeps only what it has read: the rows read, the snapshot's state, and, when it reads
the whole table, the per-bucket summary of what it read. What to read is the plan's (plan.py),
handed to :meth:`batches`, never written into the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import adbc_driver_postgresql.dbapi as adbc
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from .. import connections
from ..registry import Entity
from ..transforms import Kind, ParentKeys, parse_text_dates, trim_text, uuid3_keys
from .names import BUCKET, DETAIL, HASH_MOD, INVALID_VALUE, LEGACY_ID, NOTES, RAW, REJECT, SOURCE_HASH
from .options import LoadOptions
from .source_sql import for_server, raw_rows_sql, source_query, source_state_sql, trimmed_in_arrow

READ_HINT_BYTES = 4 << 20  # the ADBC driver cuts its batches near this size (its default: 16 MB)


@dataclass(frozen=True)
class SourceState:
    rows: int
    min_id: int | None
    max_id: int | None
    change_hwm: str | None  # the change-tracking column's maximum, as the legacy server prints it


def arrow_schema(e: Entity) -> pa.Schema:
    """The Arrow schema of the batches: the target's columns, then the helper columns (names.py)."""
    fields = [pa.field("id", pa.uuid(), nullable=False)]
    fields += [pa.field(c.target, c.arrow_type) for c in e.columns]
    fields += [pa.field("metadata", pa.string()), pa.field(LEGACY_ID, pa.int64()), pa.field(REJECT, pa.string()),
               pa.field(DETAIL, pa.string()), pa.field(RAW, pa.string()), pa.field(SOURCE_HASH, pa.int64()),
               pa.field(NOTES, pa.string())]
    return pa.schema(fields)


class LegacyStream:
    """The record batches of one legacy table, in the target's shape, in one snapshot.

    It owns a connection to the legacy database (its snapshot) and gives it back when closed;
    :meth:`query` and :meth:`fetch_raw` read on that connection, :meth:`batches` streams the
    rows a plan selects (all of them without one).
    """

    def __init__(self, conninfo: str, e: Entity, opts: LoadOptions, fail_after_batches: int | None = None):
        self.entity, self.opts, self.conninfo = e, opts, conninfo
        self.schema = arrow_schema(e)
        self._conn: psycopg.Connection | None = None
        self._fail_after = fail_after_batches  # fault injection for tests
        self.rows_read = 0
        self.estimated_rows = 0
        self.state: SourceState | None = None
        # per-bucket (rows, sum of source hashes mod 2^64) of the rows read, when the whole table is read
        self.summary: dict[int, tuple[int, int]] | None = None
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
            # a SQL_ASCII server's text is decoded by the source query (LEGACY_TEXT_ENCODING)
            self.opts = for_server(self.opts, self._conn.info.parameter_status("server_encoding") or "")
        return self._conn

    def query(self, query: sql.Composable, params=None) -> list[tuple]:
        """The rows of ``query``, in the stream's snapshot."""
        return self._connect().execute(query, params).fetchall()

    def snapshot(self) -> SourceState:
        """Row count, id range and change high-water mark of the legacy table in this snapshot."""
        if self.state is None:
            self.state = SourceState(*self.query(source_state_sql(self.entity, self.opts.legacy_timezone))[0])
        return self.state

    def _estimate(self) -> int:
        row = self._connect().execute("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                                      [self.entity.legacy_table]).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _open_reader(self, query: sql.Composable):
        """An ADBC connection reading ``query`` inside this stream's snapshot: the psycopg
        connection exports its REPEATABLE READ snapshot and the reader's transaction adopts it, so
        the rows streamed are exactly those the counts and summaries saw."""
        conn = self._connect()
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        text = query.as_string(conn)
        reader_conn = connections.readers.take(self.conninfo)
        try:
            cur = reader_conn.cursor()
            try:
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            except adbc.Error:  # an idle connection the server has closed since: one fresh attempt
                reader_conn.close()
                reader_conn = connections.readers.open(self.conninfo)
                cur = reader_conn.cursor()
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)).as_string(conn))
            cur.execute("SET LOCAL jit = off")
            # One backend per read: the stream is consumed at the pace of Python and the target's
            # COPY, which keep the other cores busy; parallel workers only add their tuple-queue
            # copying (BENCHMARKS.md, design measurements).
            cur.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            cur.execute("SET LOCAL TimeZone = 'UTC'")
            cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(READ_HINT_BYTES)})
            cur.execute(text)
            return reader_conn, cur  # the cursor owns the batch reader: keep it alive while reading
        except BaseException:
            reader_conn.close()
            raise

    def batches(self, where: sql.Composable | None = None) -> Iterator[pa.RecordBatch]:
        """The batches of the rows ``where`` selects (alias ``l``; None: every row, and then the
        stream also sums up what it read per bucket in :attr:`summary`)."""
        self._connect()  # first: it adapts the options to the server (for_server)
        e, opts = self.entity, self.opts
        meta_prefix = pa.scalar('{"legacy_id": ')
        if where is None:
            self.summary = {}
        reader_conn = None
        try:
            self.estimated_rows = self._estimate()
            reader_conn, cursor = self._open_reader(source_query(e, opts, where))
            # The driver's own reader, not fetch_record_batch(): that one is the bare pyarrow reader,
            # whose errors are OSErrors without the SQLSTATE, so a server's data error (a byte the
            # client encoding cannot take, say) looked like a lost connection and was retried.
            # This one raises the driver's typed errors (DataError, with .sqlstate).
            reader = cursor._results.reader
            for n, table in enumerate(_rebatch(reader, opts.batch_size), start=1):
                yield self._to_batch(table, meta_prefix, summarise=where is None)
                if self._fail_after is not None and n >= self._fail_after:
                    raise RuntimeError(f"injected failure after {n} batches")
            cursor.close()
            connections.readers.give_back(self.conninfo, reader_conn)
            reader_conn = None
        except BaseException:
            self.close()  # an abandoned read: the source connection goes back rolled back
            raise
        finally:
            if reader_conn is not None:
                reader_conn.close()

    def _to_batch(self, table: pa.Table, meta_prefix, summarise: bool) -> pa.RecordBatch:
        self.rows_read += table.num_rows
        cols = {name: table.column(name) for name in table.column_names}
        if summarise:
            self._add_to_summary(cols[LEGACY_ID], cols[SOURCE_HASH])
        cols["id"] = uuid3_keys(self.entity.name, cols[LEGACY_ID])
        for c in self.entity.columns:
            if c.kind is Kind.FK:
                keys = self._parent_keys.get(c.parent) or self._parent_keys.setdefault(c.parent, ParentKeys(c.parent))
                cols[c.target] = keys(cols[c.target])
            elif trimmed_in_arrow(c, self.opts):
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

    def fetch_raw(self, legacy_ids: list[int], of: Entity | None = None) -> Iterator[tuple[int, str]]:
        """Raw legacy rows (as JSON text) of ``legacy_ids`` of this entity (or of ``of``, a child
        whose rows a delete cascades to), streamed from the source in the stream's snapshot."""
        with self._connect().cursor(name="raw_rows") as cur:
            cur.execute(raw_rows_sql(of or self.entity, self.opts), [legacy_ids])
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
