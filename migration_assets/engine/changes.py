"""Change capture from the legacy server's logical decoding (MIGRATION_CHANGE_SOURCE=logical).

The legacy server keeps a logical replication slot (MIGRATION_SLOT) and a publication of the same
name over the registry's legacy tables. Decoding uses ``pgoutput``, the plugin built into
PostgreSQL 10+ and offered by every managed PostgreSQL (wal2json is an extension a team would
have to install, and is absent from several clouds); it is read through the SQL interface
(``pg_logical_slot_peek_binary_changes``), which psycopg supports (it has no replication
protocol) and which only *peeks*: nothing is consumed until :func:`confirm` advances the slot.

What a refresh takes from the slot is the set of legacy ids each table's committed transactions
inserted, updated (old and new key) or deleted since the slot's confirmed position, up to the
WAL position read before decoding (:class:`Changes`). The load then reads those ids from its
own snapshot, taken after the decoding, and merges them through the same path as every other
load (transforms, recovery rules, quarantine, cascades, the duplicate rule); an id absent from
the snapshot was deleted, exactly. A later change to the same row is in the snapshot already
and comes back in the next refresh's change set: re-reading a row is idempotent, so the order
of the changes within a refresh does not matter, only that none is missed.

Positions: each table's watermark records the position its load read up to
(``logical_lsn``), in the load's transaction. The slot is advanced, after a commit, to the lowest
position every registry table has recorded (:func:`confirm`): a crash between the target's
commit and the advance leaves the slot behind, and the next refresh re-reads those ids (the same
rows again, nothing lost, nothing applied twice in effect). A table loaded in full records the
slot's confirmed position from before its snapshot (a lower bound: what changed after it is read
again). A TRUNCATE cannot be listed by id: that table is compared in full mode.

The slot must exist before the snapshot of a table's first load, so that no change falls between
them: every load in logical mode creates it first when it is missing (:func:`ensure`). A slot
that is gone or invalidated (``wal_status = 'lost'``), or whose confirmed position is past a
table's recorded one (it was dropped and created again), makes that table's refresh a full-mode
one, with a warning.
"""

from __future__ import annotations

import datetime as dt
import logging
import struct
import threading
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from .. import connections
from ..registry import ENTITIES

log = logging.getLogger(__name__)

PLUGIN = "pgoutput"
_EPOCH_2000 = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class SlotState:
    confirmed: str | None  # confirmed_flush_lsn
    lost: bool  # wal_status 'lost': the WAL it needed is gone
    lag_bytes: int


@dataclass
class Changes:
    """What a peek found: per legacy table the ids touched, the tables truncated, the position
    decoded up to, the commit time of the oldest transaction found, and the changes counted."""

    upto: str
    ids: dict[str, set[int]] = field(default_factory=dict)
    truncated: set[str] = field(default_factory=set)
    oldest_commit: dt.datetime | None = None
    count: int = 0


def lsn(text: str) -> int:
    """A WAL position's text (``16/B374D848``) as a number, for comparing."""
    high, _, low = text.partition("/")
    return int(high, 16) << 32 | int(low, 16)


def _slot_connection(conninfo: str):
    """A kept-open autocommit connection for the slot's bookkeeping (every load checks the slot
    before its snapshot and advances it after its commit: a new connection each time cost
    about a second per refresh of 45 tables)."""
    return connections.borrowed(conninfo, "legacy-slot", autocommit=True)


def slot_state(conn: psycopg.Connection, slot: str) -> SlotState | None:
    row = conn.execute("SELECT confirmed_flush_lsn::text, wal_status = 'lost', "
                       "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
                       "FROM pg_replication_slots WHERE slot_name = %s", [slot]).fetchone()
    return None if row is None else SlotState(row[0], bool(row[1]), int(row[2] or 0))


def publication_sql(slot: str, tables: list[str], exists: bool) -> sql.Composable:
    names = sql.SQL(", ").join(sql.Identifier(t) for t in tables)
    if exists:
        return sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(sql.Identifier(slot), names)
    return sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(slot), names)


def ensure(conninfo: str, slot: str) -> tuple[SlotState, bool]:
    """The publication over every registry table and the slot, created where missing (each in
    its own transaction: PostgreSQL creates a logical slot only in a transaction that wrote
    nothing). Returns the slot's state and whether the slot was created now."""
    tables = [e.legacy_table for e in ENTITIES]
    with _slot_connection(conninfo) as conn:
        published = {t for (t,) in conn.execute(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = %s AND schemaname = current_schema()",
            [slot])}
        exists = conn.execute("SELECT EXISTS (SELECT FROM pg_publication WHERE pubname = %s)", [slot]).fetchone()[0]
        # two steps of one run (a process each) may both find them missing: the second to create
        # one finds it made (DuplicateObject) and goes on with it
        if missing := [t for t in tables if t not in published]:
            try:
                conn.execute(publication_sql(slot, missing, exists))
            except psycopg.errors.DuplicateObject:
                pass
        state = slot_state(conn, slot)
        created = state is None
        if created:
            try:
                conn.execute("SELECT pg_create_logical_replication_slot(%s, %s)", [slot, PLUGIN])
            except psycopg.errors.DuplicateObject:
                created = False
            state = slot_state(conn, slot)
    return state, created


# ------------------------------------------------------------------ decoding pgoutput (protocol 1)


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, fmt: str):
        values = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        end = self.data.index(b"\0", self.at)
        text = self.data[self.at:end].decode()
        self.at = end + 1
        return text

    def tuple_data(self) -> list[bytes | None]:
        values = []
        for _ in range(self.take("!h")):
            kind = self.take("!c")
            if kind == b"t" or kind == b"b":
                n = self.take("!i")
                values.append(self.data[self.at:self.at + n])
                self.at += n
            else:  # n: NULL, u: an unchanged TOASTed value (never a key)
                values.append(None)
        return values


def decode(messages, keys: dict[str, str]) -> tuple[dict[str, set[int]], set[str], dt.datetime | None, int]:
    """The ids touched per table (of ``keys``: legacy table -> key column), the tables truncated,
    the oldest commit time and the number of row changes, from pgoutput messages (bytes)."""
    relations: dict[int, tuple[str, int | None]] = {}  # relation id -> (table, index of its key)
    ids: dict[str, set[int]] = {}
    truncated: set[str] = set()
    oldest, count = None, 0

    def note(rel: int, values: list[bytes | None]) -> None:
        table, at = relations[rel]
        if at is not None and values[at] is not None:
            ids.setdefault(table, set()).add(int(values[at]))

    for data in messages:
        r = _Reader(bytes(data))
        kind = r.take("!c")
        if kind == b"B":
            _, micros, _ = r.take("!QqI")
            when = _EPOCH_2000 + dt.timedelta(microseconds=micros)
            oldest = when if oldest is None or when < oldest else oldest
        elif kind == b"R":
            rel = r.take("!I")
            r.string()  # namespace
            table = r.string()
            r.take("!b")  # replica identity
            names = []
            for _ in range(r.take("!h")):
                r.take("!b")
                names.append(r.string())
                r.take("!Ii")
            key = keys.get(table)
            relations[rel] = (table, names.index(key) if key in names else None)
        elif kind in (b"I", b"U", b"D"):
            rel = r.take("!I")
            count += 1
            while r.at < len(r.data):
                r.take("!c")  # K or O (the old key or row), N (the new row)
                note(rel, r.tuple_data())
        elif kind == b"T":
            n, _ = r.take("!ib")
            for _ in range(n):
                rel = r.take("!I")
                if rel in relations:
                    truncated.add(relations[rel][0])
            count += 1
    return ids, truncated, oldest, count


_PEEK = ("SELECT data FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, NULL, 'proto_version', '1', "
         "'publication_names', %s)")


def peek(conninfo: str, slot: str) -> Changes:
    """The changes committed since the slot's confirmed position, up to the WAL position read
    first; nothing is consumed."""
    keys = {e.legacy_table: e.legacy_pk for e in ENTITIES}
    with connections.connect(conninfo) as conn:
        (upto,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        # a server-side cursor: the messages stream in batches, memory bounded by the batch
        with conn.cursor(name="ma_peek") as cur:
            cur.itersize = 10_000
            cur.execute(_PEEK, [slot, upto, slot])
            ids, truncated, oldest, count = decode((row[0] for row in cur), keys)
        conn.rollback()
    return Changes(upto, ids, truncated, oldest, count)


# One peek per run and process: every table of a run takes its ids from the same decoding (the
# first load step of the run decodes; decoding once per table would decode the same WAL 45 times).
_runs: dict[tuple[str, str, str], Changes] = {}
_lock = threading.Lock()


def changes_of_run(conninfo: str, slot: str, run_id: str) -> Changes:
    with _lock:
        key = (conninfo, slot, run_id)
        if key not in _runs:
            if len(_runs) > 8:
                _runs.clear()
            _runs[key] = peek(conninfo, slot)
        return _runs[key]


def forget(conninfo: str, slot: str, run_id: str) -> None:
    """Drop the run's decoded changes: the next load of the run decodes the slot anew."""
    with _lock:
        _runs.pop((conninfo, slot, run_id), None)


def confirm(conninfo: str, slot: str, positions: dict[str, str | None]) -> str | None:
    """Advance the slot to the lowest position every registry table recorded (``positions``:
    entity -> its watermark's logical_lsn), when each has one; returns the position confirmed."""
    if any(positions.get(e.name) is None for e in ENTITIES):
        return None
    lowest = min((positions[e.name] for e in ENTITIES), key=lsn)
    with _slot_connection(conninfo) as conn:
        state = slot_state(conn, slot)
        if state is None or state.lost:
            return None
        if lsn(lowest) > lsn(state.confirmed):
            conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", [slot, lowest])
        return lowest


def lag(conninfo: str, slot: str) -> tuple[int, float | None] | None:
    """(bytes of WAL the slot retains, seconds since the oldest change it holds was committed), or
    None without a slot. The seconds decode up to the first pending transaction only."""
    with _slot_connection(conninfo) as conn:
        state = slot_state(conn, slot)
        if state is None:
            return None
        rows = conn.execute("SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, 1, 'proto_version', '1', "
                            "'publication_names', %s)", [slot, slot]).fetchall()
    _, _, oldest, _ = decode((r[0] for r in rows), {})
    seconds = (dt.datetime.now(dt.timezone.utc) - oldest).total_seconds() if oldest else None
    return state.lag_bytes, seconds


def drop(conninfo: str, slot: str) -> bool:
    """Drop the slot and the publication (``migration-assets drop-slot``); whether a slot existed."""
    with _slot_connection(conninfo) as conn:
        existed = slot_state(conn, slot) is not None
        if existed:
            conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
        conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(slot)))
    return existed
