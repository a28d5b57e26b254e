"""Issue 38's third lever, measured: what each key build of the fast path and its ANALYZE cost, per
kind and per table, on a target a full migration wrote (``bench.migrate_once``). Per table, in a
transaction rolled back: the keys dropped as the fast path drops them (copy.capture_constraints,
drop_constraints_sql), then rebuilt statement by statement as it rebuilds them
(restore_constraints_sql) under the load's settings (load.SESSION_SQL), and the load's ANALYZE of
the columns its orphan and duplicate searches join on.

    .venv/bin/python -m bench.experiments.key_builds TARGET_URL [--rounds 2]"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import psycopg
from psycopg import sql

from migration_assets.engine.copy import capture_constraints, drop_constraints_sql, restore_constraints_sql
from migration_assets.engine.load import SESSION_SQL
from migration_assets.engine.names import column_list, target_table
from migration_assets.registry import ENTITIES


# a foreign key of a child to the table: rebuilt by the fast path too, but in a first migration the
# children load after their parents and are still empty then; here they are full
CHILDS = "a child's foreign key to the table (children full here, empty in a first migration)"


def kind_of(statement: str, table: str) -> str:
    if "PRIMARY KEY" in statement:
        return "primary key"
    if " UNIQUE " in statement:
        return "unique key"
    if "FOREIGN KEY" in statement:
        return "foreign key validated" if statement.startswith(f"ALTER TABLE {table} ") else CHILDS
    if "WHERE" in statement:
        return "retry index (partial)"
    return "index on a reference"


def one_table(conn: psycopg.Connection, e) -> dict[str, float]:
    conn.execute(SESSION_SQL)
    table = target_table(e, "public")
    saved = capture_constraints(conn, e, "public")
    regclass = conn.execute("SELECT %s::regclass::text", [table.as_string(conn)]).fetchone()[0]
    for statement in drop_constraints_sql(saved, "public"):
        conn.execute(statement)
    spent: dict[str, float] = defaultdict(float)
    for statement in restore_constraints_sql(saved):
        text = statement.as_string(conn)
        started = time.perf_counter()
        conn.execute(statement)
        spent[kind_of(text, regclass)] += time.perf_counter() - started
    stat_cols = [c.target for c in e.foreign_keys + e.unique_columns]
    if stat_cols:
        started = time.perf_counter()
        conn.execute(sql.SQL("ANALYZE {} ({})").format(table, column_list(stat_cols)))
        spent["analyze"] += time.perf_counter() - started
    conn.rollback()
    return spent


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("target")
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    per_table: dict[str, dict[str, float]] = {}
    with psycopg.connect(a.target) as conn:
        for e in ENTITIES:
            rounds = [one_table(conn, e) for _ in range(a.rounds)]
            per_table[e.name] = {k: statistics.median(r.get(k, 0.0) for r in rounds) for k in rounds[0]}
    kinds: dict[str, float] = defaultdict(float)
    for spent in per_table.values():
        for k, v in spent.items():
            kinds[k] += v
    total = sum(v for k, v in kinds.items() if k != CHILDS)
    print(f"all {len(per_table)} tables, as a first migration builds them: {total:.2f} s")
    print("| kind | seconds | share |\n|---|---|---|")
    for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v:.2f} | {'-' if k == CHILDS else f'{v / total:.0%}'} |")
    print("| table | seconds | largest |\n|---|---|---|")
    for name, spent in per_table.items():
        spent.pop(CHILDS, None)
    for name, spent in sorted(per_table.items(), key=lambda kv: -sum(kv[1].values()))[:6]:
        big = sorted(spent.items(), key=lambda kv: -kv[1])[:3]
        print(f"| {name} | {sum(spent.values()):.2f} | {', '.join(f'{k} {v:.2f}' for k, v in big)} |")


if __name__ == "__main__":
    main()
