"""pgoutput (protocol 1) messages as PostgreSQL documents them ("Logical Replication Message
Formats"), decoded into the ids each table's changes touched (engine/changes.py)."""

from __future__ import annotations

import datetime as dt
import struct

from migration_assets.engine.changes import decode, lsn


def _s(text: str) -> bytes:
    return text.encode() + b"\0"


def _tuple(*values) -> bytes:
    out = struct.pack("!h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v == "TOAST":
            out += b"u"
        else:
            data = str(v).encode()
            out += b"t" + struct.pack("!i", len(data)) + data
    return out


def _relation(rel: int, table: str, columns: list[str]) -> bytes:
    out = b"R" + struct.pack("!I", rel) + _s("public") + _s(table) + struct.pack("!b", ord("d"))
    out += struct.pack("!h", len(columns))
    for i, name in enumerate(columns):
        out += struct.pack("!b", 1 if i == 0 else 0) + _s(name) + struct.pack("!Ii", 23, -1)
    return out


def _begin(when: dt.datetime) -> bytes:
    micros = int((when - dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)).total_seconds() * 1_000_000)
    return b"B" + struct.pack("!QqI", 0x16B374D848, micros, 742)


def test_inserts_updates_deletes_and_truncates_become_ids_per_table():
    t1 = dt.datetime(2026, 12, 6, 9, 30, tzinfo=dt.timezone.utc)
    messages = [
        _begin(t1 + dt.timedelta(seconds=5)),
        _relation(16401, "tbl_office", ["office_id", "office_name", "notes"]),
        b"I" + struct.pack("!I", 16401) + b"N" + _tuple(7, "Main", None),
        b"U" + struct.pack("!I", 16401) + b"N" + _tuple(3, "Renamed", "TOAST"),
        b"U" + struct.pack("!I", 16401) + b"K" + _tuple(4, None, None) + b"N" + _tuple(40, "Key moved", None),
        b"C" + struct.pack("!bQQq", 0, 1, 2, 3),
        _begin(t1),
        _relation(16402, "users", ["name", "user_id"]),  # the key need not be the first column
        b"D" + struct.pack("!I", 16402) + b"K" + _tuple(None, 99),
        b"T" + struct.pack("!ib", 1, 0) + struct.pack("!I", 16402),
        _relation(16403, "not_mapped", ["id"]),
        b"I" + struct.pack("!I", 16403) + b"N" + _tuple(1),
    ]
    ids, truncated, oldest, count = decode(messages, {"tbl_office": "office_id", "users": "user_id"})
    assert ids == {"tbl_office": {7, 3, 4, 40}, "users": {99}}
    assert truncated == {"users"} and oldest == t1 and count == 6


def test_a_wal_position_compares_as_a_number():
    assert lsn("16/B374D848") == 0x16B374D848
    assert lsn("0/FFFFFFFF") < lsn("1/0") < lsn("A/0")
