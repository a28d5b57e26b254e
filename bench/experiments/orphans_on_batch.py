"""Issue 38's first lever, bounded: what the orphan search on the target costs per table, and what
finding the orphans on the batch instead would cost, on a target a full migration at the scale
wrote (bench.run's child, ``bench.migrate_once``) and its legacy database.

Per table with foreign keys:
- ``search``: the fast path's orphan search as the load runs it (rejects.orphan_sql: one scan of
  the loaded rows hash-joined to every parent's keys), in a transaction rolled back;
- ``parents``: reading each parent's loaded legacy ids from the target into a bitmap, in the
  load's transaction (a second connection cannot: dropping a foreign key takes an ACCESS
  EXCLUSIVE lock on the parent, so a reader outside the load waits for its commit);
- ``lookup``: testing the table's legacy references against those bitmaps, batch by batch as
  the stream would (numpy indexing, 10,000 rows a batch).
The saving of a batch search is at most ``search`` (the parents' sets kept from their own loads in
the same process, which only the in-process executor has); read from the target it is
``search - parents - lookup`` per table.

    .venv/bin/python -m bench.experiments.orphans_on_batch LEGACY_URL TARGET_URL [--rounds 3]"""

from __future__ import annotations

import argparse
import statistics
import time

import adbc_driver_postgresql.dbapi as adbc
import numpy as np
import psycopg
from psycopg import sql

from migration_assets.engine.names import target_table
from migration_assets.engine.options import LoadOptions
from migration_assets.engine.rejects import orphan_sql
from migration_assets.registry import ENTITIES, entity

BATCH = 10_000


def search_s(conn: psycopg.Connection, e) -> float:
    statements = orphan_sql(e, target_table(e, "public"), False, LoadOptions())
    started = time.perf_counter()
    conn.execute(statements.search)
    took = time.perf_counter() - started
    conn.rollback()
    return took


def parent_bitmap(conn: psycopg.Connection, parent: str) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    with conn.cursor().copy(sql.SQL("COPY (SELECT (metadata->>'legacy_id')::bigint FROM {}) TO STDOUT "
                                    "(FORMAT binary)").format(target_table(entity(parent), "public"))) as cp:
        data = b"".join(cp)
    # binary COPY: 19-byte header, per row int16 field count, int32 length, int64 value; trailer
    rows = np.frombuffer(data[19:-2], dtype=np.dtype([("n", ">i2"), ("len", ">i4"), ("v", ">i8")]))
    ids = rows["v"].astype(np.int64)
    present = np.zeros(int(ids.max()) + 1 if len(ids) else 1, bool)
    present[ids] = True
    conn.rollback()
    return present, time.perf_counter() - started


def references(legacy: str, e) -> list[np.ndarray]:
    cols = sql.SQL(", ").join(sql.Identifier(c.legacy_name) for c in e.foreign_keys)
    with adbc.connect(legacy) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT {} FROM {}").format(cols, sql.Identifier(e.legacy_table)).as_string(None))
        table = cur.fetch_arrow_table()
    return [np.asarray(table.column(i).fill_null(-1).to_numpy(), np.int64) for i in range(table.num_columns)]


def lookup_s(refs: list[np.ndarray], bitmaps: list[np.ndarray]) -> float:
    started = time.perf_counter()
    for start in range(0, len(refs[0]), BATCH):
        for values, present in zip(refs, bitmaps):
            v = values[start:start + BATCH]
            inside = (v >= 0) & (v < len(present))
            missing = (v >= 0) & ~inside
            missing[inside] = ~present[v[inside]]
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("legacy")
    p.add_argument("target")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    tables = [e for e in ENTITIES if e.foreign_keys and all(c.parent != e.name for c in e.foreign_keys)]
    rows, totals = [], {"search": 0.0, "parents": 0.0, "parents once per run": 0.0, "lookup": 0.0}
    seen_parents: set[str] = set()
    with psycopg.connect(a.target) as conn:
        conn.execute("SET jit = off")
        for e in tables:
            search = statistics.median(search_s(conn, e) for _ in range(a.rounds))
            reads = []
            bitmaps = []
            for c in e.foreign_keys:
                times = []
                for _ in range(a.rounds):
                    present, took = parent_bitmap(conn, c.parent)
                    times.append(took)
                bitmaps.append(present)
                reads.append(statistics.median(times))
            refs = references(a.legacy, e)
            lookup = statistics.median(lookup_s(refs, bitmaps) for _ in range(a.rounds))
            parents = sum(reads)
            once = sum(t for c, t in zip(e.foreign_keys, reads) if c.parent not in seen_parents)
            seen_parents.update(c.parent for c in e.foreign_keys)
            rows.append((e.name, len(refs[0]), search, parents, lookup))
            for k, v in (("search", search), ("parents", parents), ("parents once per run", once), ("lookup", lookup)):
                totals[k] += v
    rows.sort(key=lambda r: -r[2])
    print("| table | rows | search s | parents' ids read s | lookup s | saving read per table s |")
    print("|---|---|---|---|---|---|")
    for name, n, search, parents, lookup in rows[:10]:
        print(f"| {name} | {n:,} | {search:.3f} | {parents:.3f} | {lookup:.3f} | {search - parents - lookup:.3f} |")
    print(f"| all {len(rows)} tables with foreign keys | | {totals['search']:.2f} | {totals['parents']:.2f} "
          f"(once per parent per run: {totals['parents once per run']:.2f}) | {totals['lookup']:.2f} | "
          f"{totals['search'] - totals['parents'] - totals['lookup']:.2f} |")


if __name__ == "__main__":
    main()
