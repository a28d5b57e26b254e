"""Every value of every legacy type lands or is quarantined: a test generated from the registry.

For every column of every entity, legacy rows are added that copy a clean row and put one limit
or special value of the column's legacy type in that column (NULL, empty and blank text, the
type's minimum and maximum, zero, negative values, infinities, BC and year-9999 timestamps,
almost-valid text dates, orphan keys next to the integer limits, references to parents at them);
every entity also gets rows whose own ids sit at int4's limits and at 0 and -1. The expected
outcome of each row is computed here, independently of the engine, from the README's rules:
loaded with the documented value, or quarantined with the documented reason and the column
named. Then: every table loads (no value fails a load), a second run writes nothing, and after
the special values are moved between the rows and the rows at the id limits are deleted, a
differential and a full run give exactly what a fresh migration of the changed source gives.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from migration_assets.engine.commit import migrate_entity
from migration_assets.engine.options import LoadOptions
from migration_assets.registry import ENTITIES, Entity, topological_order
from migration_assets.simulator import DirtyRates, generate
from migration_assets.migrations import apply_migrations
from migration_assets.transforms import Column, Kind, legacy_uuid

from .test_plan_and_deletes import assert_equal_to_fresh

INT4_MIN, INT4_MAX = -2**31, 2**31 - 1
INT8_MIN, INT8_MAX = -2**63, 2**63 - 1
LOAD, Q = "load", "quarantine"

# (legacy literal, expected) per kind; expected is (LOAD, target value as text) or (Q, reason).
# A None literal is SQL NULL, a None target text is a NULL in the target; "missing" marks the
# values that count as absent (NULL or blank), whose outcome depends on required/default.
MISSING = "missing"


def domain(c: Column) -> list[tuple[object, tuple]]:
    k = c.kind
    inv = (Q, "INVALID_VALUE")
    if k in (Kind.TEXT, Kind.LONG_TEXT):
        longest = "x" * (200 if k is Kind.TEXT else 5000)
        return [(None, MISSING), ("", MISSING), ("   ", MISSING), ("  padded {tag}  ", (LOAD, "padded {tag}")),
                ("é ✓ {tag}", (LOAD, "é ✓ {tag}")), (longest[:-12] + "{tag}", (LOAD, longest[:-12] + "{tag}"))]
    if k is Kind.EMAIL:
        own = "invalid+{ent}.{col}.{id}@invalid.example.com"  # the placeholder of this row
        return [(None, MISSING), ("", MISSING), ("   ", MISSING),
                (" Edge.{tag}@Example.COM ", (LOAD, "edge.{tag}@example.com")),
                # a legacy address equal to the next row's placeholder, then that row
                ("invalid+{ent}.{col}.{next}@invalid.example.com", (LOAD, own)),
                ("not an address {tag}", (LOAD, own))]
    if k is Kind.INTEGER:
        return [(None, MISSING)] + [(v, (LOAD, str(v))) for v in (0, -1, INT4_MIN, INT4_MAX)]
    if k is Kind.BIGINT:
        return [(None, MISSING)] + [(v, (LOAD, str(v))) for v in (0, -1, INT8_MIN, INT8_MAX)]
    if k is Kind.YN:
        return [(None, MISSING), ("Y", (LOAD, "true")), ("n", (LOAD, "false")), ("", inv), ("x", inv), ("1", inv)]
    if k is Kind.CODE_INT:
        first = next(iter(c.codes))
        return [(None, MISSING), (first, (LOAD, c.codes[first]))] + \
            [(v, inv) for v in (0, -1, -32768, 32767) if v not in c.codes]
    if k is Kind.CODE_CHAR:
        first = next(iter(c.codes))
        return [(None, MISSING), (first, (LOAD, c.codes[first])), ("", inv), ("~", inv)]
    if k is Kind.CENTS:
        return [(None, MISSING), (0, (LOAD, "0.00")), (-1, (LOAD, "-0.01")),
                (999_999_999_999, (LOAD, "9999999999.99")), (-999_999_999_999, (LOAD, "-9999999999.99")),
                (1_000_000_000_000, inv), (-1_000_000_000_000, inv), (INT8_MIN, inv), (INT8_MAX, inv)]
    if k is Kind.EPOCH:
        return [(None, MISSING), (0, (LOAD, "1970-01-01 00:00:00+00")), (4102444800, (LOAD, "2100-01-01 00:00:00+00")),
                (-1, inv), (4102444801, inv), (INT8_MIN, inv), (INT8_MAX, inv)]
    if k is Kind.TEXT_DATE:
        return [(None, MISSING), ("", MISSING), ("   ", MISSING), ("2021-01-05", (LOAD, "2021-01-05")),
                (" 2021-1-5 ", inv),
                ("1900-01-01", (LOAD, "1900-01-01")), ("2099-12-31", (LOAD, "2099-12-31")),
                ("1899-12-31", inv), ("2100-01-01", inv), ("2021-02-30", inv), ("2021-1-5", inv),
                ("0000-00-00", inv), ("9999-12-31", inv), ("20210105", inv)]
    if k is Kind.TIMESTAMP:
        return [(None, MISSING), ("-infinity", inv), ("infinity", inv),
                ("4713-01-01 00:00:00 BC", (LOAD, "4713-01-01 00:00:00+00 BC")),
                ("0001-01-01 00:00:00", (LOAD, "0001-01-01 00:00:00+00")),
                ("1970-01-01 00:00:00", (LOAD, "1970-01-01 00:00:00+00")),
                ("9999-12-31 23:59:59.999999", (LOAD, "9999-12-31 23:59:59.999999+00")),
                ("10000-01-01 00:00:00", inv), ("294276-12-31 23:59:59", inv)]
    if k is Kind.FK:  # every parent has rows at the int4 limits (below); no parent has the others
        return [(None, MISSING), (INT4_MAX, (LOAD, str(legacy_uuid(c.parent, INT4_MAX)))),
                (INT4_MIN, (LOAD, str(legacy_uuid(c.parent, INT4_MIN))))] + \
            [(v, "orphan") for v in (-2, INT4_MIN + 1, INT4_MAX - 1)]
    raise AssertionError(k)


def expected(c: Column, outcome) -> tuple:
    if outcome == MISSING:
        if not c.required:
            return (LOAD, None)
        if c.default is not None:  # ERROR_RECOVERY_ENABLED (the default): the registry's default
            return (LOAD, "default")
        return (Q, "REQUIRED_NULL")
    if outcome == "orphan":
        return (Q, "ORPHAN_FK") if c.required else (LOAD, None)  # recovery sets an optional orphan NULL
    return outcome


def edge_rows(e: Entity, next_id: int) -> list[dict]:
    """The special rows of ``e``: (legacy id, column or None, legacy value, expected)."""
    rows = []
    for c in e.columns:
        for value, outcome in domain(c):
            keys = {"tag": f"{e.name[:6]}{next_id}", "id": next_id, "next": next_id + 1, "ent": e.name,
                    "col": c.target}
            rows.append({"id": next_id, "column": c, "value": value.format(**keys) if isinstance(value, str) else value,
                         "expected": expected(c, outcome if isinstance(outcome, str) else
                                              (outcome[0], outcome[1].format(**keys) if outcome[1] else None))})
            next_id += 1
    for pk in (INT4_MAX, INT4_MIN, 0, -1):
        rows.append({"id": pk, "column": None, "value": None, "expected": (LOAD, None)})
    return rows


def insert_edge_rows(conn: psycopg.Connection, e: Entity) -> list[dict]:
    """Copies of ``e``'s lowest-id legacy row, each with a fresh id, fresh unique values and one
    special value in the column under test."""
    t, pk = sql.Identifier(e.legacy_table), sql.Identifier(e.legacy_pk)
    base_id, top = conn.execute(sql.SQL("SELECT min({pk}), max({pk}) FROM {t}").format(pk=pk, t=t)).fetchone()
    rows = edge_rows(e, top + 1)
    for r in rows:
        values, params = [sql.Placeholder()], [r["id"]]
        for c in e.columns:
            if c is r["column"]:
                values.append(sql.SQL("{}::{}").format(sql.Placeholder(), sql.SQL(c.kind.legacy_type)))
                params.append(r["value"])
            elif c.unique:  # another row's natural key would make this one a duplicate
                unique = f"edge{r['id']}@example.com" if c.kind is Kind.EMAIL else f"edge{r['id']}"
                values.append(sql.Placeholder())
                params.append(unique)
            else:
                values.append(sql.Identifier(c.legacy_name))
        conn.execute(sql.SQL("INSERT INTO {t} ({cols}) SELECT {vals} FROM {t} WHERE {pk} = {base}").format(
            t=t, pk=pk, base=sql.Literal(base_id), vals=sql.SQL(", ").join(values),
            cols=sql.SQL(", ").join([pk] + [sql.Identifier(c.legacy_name) for c in e.columns])), params)
    return rows


def migrate_all(legacy: str, target: str, run_id: str, mode: str = "full") -> dict:
    return {e.name: migrate_entity(legacy, target, e.name, LoadOptions(run_id=run_id, mode=mode))
            for e in topological_order()}


def outcome_of(conn, e: Entity, r: dict) -> tuple:
    c = r["column"]
    col = sql.SQL("{}::text").format(sql.Identifier(c.target)) if c is not None else sql.SQL("NULL::text")
    row = conn.execute(sql.SQL("SELECT {col} FROM {t} WHERE metadata->>'legacy_id' = %s").format(
        col=col, t=sql.Identifier("public", e.name)), [str(r["id"])]).fetchone()
    q = conn.execute("SELECT reason, detail FROM migration_control.quarantine "
                     "WHERE entity = %s AND legacy_id = %s AND NOT resolved", [e.name, r["id"]]).fetchone()
    assert row is None or q is None, f"{e.name} {r['id']}: both in the target and in quarantine"
    if row is not None:
        return (LOAD, row[0])
    assert q is not None, f"{e.name} legacy id {r['id']}: in neither the target nor the quarantine"
    if q[0] in ("REQUIRED_NULL", "INVALID_VALUE"):
        assert c is not None and c.legacy_name in q[1], f"{e.name} {r['id']}: detail {q[1]!r} names no column"
    return (Q, q[0])


@pytest.fixture(scope="module")
def edge_source(databases):
    legacy = databases.new("legacy_edges")
    generate(legacy, scale=0.002, seed=11, rates=DirtyRates.clean(), log=lambda *_: None)
    with psycopg.connect(legacy, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        rows = {e.name: insert_edge_rows(conn, e) for e in ENTITIES}
    return legacy, rows


def test_every_value_loads_or_is_quarantined(databases, edge_source):
    legacy, rows = edge_source
    target = databases.new("target_edges")
    apply_migrations(target)
    first = migrate_all(legacy, target, "edges-1")  # raises if any table fails
    wrong = []
    with psycopg.connect(target) as conn:
        conn.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'")
        for e in ENTITIES:
            for r in rows[e.name]:
                got, want = outcome_of(conn, e, r), r["expected"]
                if want == (LOAD, "default"):
                    ok = got[0] == LOAD and got[1] is not None
                else:
                    ok = got == want
                if not ok:
                    col = r["column"].legacy_name if r["column"] is not None else "(id)"
                    wrong.append(f"{e.name}.{col} = {r['value']!r} (id {r['id']}): expected {want}, got {got}")
    assert wrong == []
    assert all(res.remaining_difference == 0 for res in first.values())
    second = migrate_all(legacy, target, "edges-2")
    assert {n: (r.inserted, r.updated, r.deleted) for n, r in second.items() if r.inserted or r.updated or r.deleted} \
        == {}


def test_changed_special_values_refresh_equals_fresh_migration(databases, edge_source):
    legacy, rows = edge_source
    target = databases.new("target_edges_refresh")
    apply_migrations(target)
    migrate_all(legacy, target, "edges-before")
    # move every special value to the next row of its column: rows that loaded now fail and the
    # other way round, in the same run; delete rows at the id limits (their children cascade)
    with psycopg.connect(legacy) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        for e in ENTITIES:
            by_col: dict[str, list[dict]] = {}
            for r in rows[e.name]:
                if r["column"] is not None:
                    by_col.setdefault(r["column"].target, []).append(r)
            for col_rows in by_col.values():
                c = col_rows[0]["column"]
                for i, r in enumerate(col_rows):
                    value = col_rows[(i + 1) % len(col_rows)]["value"]
                    conn.execute(sql.SQL("UPDATE {t} SET {c} = %s::{ty} WHERE {pk} = %s").format(
                        t=sql.Identifier(e.legacy_table), c=sql.Identifier(c.legacy_name),
                        ty=sql.SQL(c.kind.legacy_type), pk=sql.Identifier(e.legacy_pk)), [value, r["id"]])
            # rows at int4's limits leave the source: the search for deleted ids runs at the limits
            conn.execute(sql.SQL("DELETE FROM {t} WHERE {pk} IN (%s, %s)").format(
                t=sql.Identifier(e.legacy_table), pk=sql.Identifier(e.legacy_pk)), [INT4_MAX, -1])
    migrate_all(legacy, target, "edges-differential", mode="differential")  # deletes only: no change marks moved
    migrate_all(legacy, target, "edges-after", mode="full")
    assert_equal_to_fresh(databases, legacy, target)
