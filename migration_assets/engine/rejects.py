"""Rows the target cannot take, found set-based on the target side, and the quarantine they go to.

After the COPY (into the staging table, or on the fast path into the table itself), in the load's
transaction: rows whose foreign key finds no parent (:func:`reject_orphans`: one scan joined to
every parent) are moved to the temp table ``_quarantine`` as ORPHAN_FK, or, for an optional key
with recovery on, keep the row with the key set NULL and the old value and a retry mark in
``metadata.recovered``; then rows that would break a unique key lose to the lowest legacy id
holding the value (:func:`reject_target_side`). :func:`upsert_quarantine_sql` writes a load's
rejects to the control schema's quarantine (a row seen again is reopened).

The statements are built by ``*_sql`` functions that return SQL and run by the functions without
the suffix, which also read the row counts the load reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from psycopg import sql

from ..registry import Entity
from ..transforms import Column, Kind
from .names import (DUPLICATE_KEY, ORPHAN_FK, ORPHAN_FK_SET_NULL, QUARANTINE, SWAP_DOMAIN, legacy_id_of,
                    legacy_uuid_sql, table_named, target_table)
from .options import LoadOptions


def upsert_quarantine_sql(rows: sql.Composable) -> sql.Composable:
    """Insert or refresh quarantine rows. ``rows`` selects (entity, legacy_id, reason, detail, raw,
    source_hash, run_id), one row per (entity, legacy_id). A resolved row seen again is reopened; an
    open row is rewritten only when its reason, detail, raw row or source changed, so a re-run that
    meets the same rejects again (the duplicates every run re-reads) writes nothing: ``last_run_id``
    and ``last_seen_at`` are the last run that changed the row."""
    return sql.SQL(
        "INSERT INTO {q} AS q (entity, legacy_id, reason, detail, raw, source_hash, first_run_id, last_run_id) "
        "SELECT entity, legacy_id, reason, detail, raw, source_hash, run_id, run_id FROM ({rows}) AS r "
        "ON CONFLICT (entity, legacy_id) DO UPDATE SET reason = EXCLUDED.reason, detail = EXCLUDED.detail, "
        "raw = EXCLUDED.raw, source_hash = EXCLUDED.source_hash, last_run_id = EXCLUDED.last_run_id, "
        "last_seen_at = now(), resolved = false, resolved_at = NULL, resolved_run_id = NULL, resolution = NULL "
        "WHERE q.resolved OR (q.reason, q.detail, q.raw, q.source_hash) IS DISTINCT FROM "
        "(EXCLUDED.reason, EXCLUDED.detail, EXCLUDED.raw, EXCLUDED.source_hash)").format(q=QUARANTINE, rows=rows)


def upsert_quarantine(conn, rows: sql.Composable) -> None:
    conn.execute(upsert_quarantine_sql(rows))


def set_null_note_sql(c: Column, parent: str) -> sql.Composable:
    """The ``metadata.recovered`` entry of a reference set NULL (alias ``s``): the rule, the missing
    parent and the value it had (what the retry and the content checksum read back)."""
    return sql.SQL("jsonb_build_object({k}, jsonb_build_object('rule', {rule}, "
                   "'missing_parent', {p}::text, 'was', s.{col}))").format(
        k=sql.Literal(c.target), rule=sql.Literal(ORPHAN_FK_SET_NULL), p=sql.Literal(parent),
        col=sql.Identifier(c.target))


def recovered_with_retry_sql(notes: sql.Composable) -> sql.Composable:
    """``s.metadata`` with ``notes`` merged into ``recovered`` and the retry mark set."""
    return sql.SQL("jsonb_set(s.metadata, '{{recovered}}', coalesce(s.metadata->'recovered', '{{}}'::jsonb) "
                   "|| {} || '{{\"retry\": true}}'::jsonb)").format(notes)


def set_fk_null_sql(table: sql.Composable, c: Column, parent: str, where: sql.Composable) -> sql.Composable:
    """The optional-orphan recovery: set the reference NULL where ``where`` holds (alias ``s``),
    recording the value it had and a retry mark in metadata.recovered."""
    return sql.SQL("UPDATE {t} AS s SET {col} = NULL, metadata = {meta} WHERE {where}").format(
        t=table, col=sql.Identifier(c.target), meta=recovered_with_retry_sql(set_null_note_sql(c, parent)),
        where=where)


def set_fk_null(conn, table: sql.Composable, c: Column, parent: str, where: sql.Composable) -> int:
    """Run :func:`set_fk_null_sql`; the rows changed."""
    return conn.execute(set_fk_null_sql(table, c, parent, where)).rowcount


def parent_joins(e: Entity, alias: str, schema: str, relation: Callable[[Column], sql.Composable] | None = None
                 ) -> tuple[sql.Composable, list[sql.Composable]]:
    """LEFT JOINs of the rows ``alias`` to each foreign key's parent, as p0, p1... in
    ``e.foreign_keys`` order, and per foreign key the flag of a reference that found no parent.
    ``relation(c)``: what to join for column ``c`` (default: the parent's table in ``schema``). The
    load's orphan search and the checks' scans both build their joins here.

    A NULL reference joins on the row's own id instead (never a parent's: another entity's name
    is hashed into it): when the planner hashes the rows rather than a larger parent (a right
    join), PostgreSQL 15 keeps NULL-keyed rows in one hash bucket that no batch split can
    divide, and a mostly-NULL optional reference turned the join into a crawl (BENCHMARKS.md,
    design measurements)."""
    joins, flags = [], []
    for i, c in enumerate(e.foreign_keys):
        col, p = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c.target)), sql.Identifier(f"p{i}")
        rel = relation(c) if relation is not None else table_named(c.parent, schema)
        joins.append(sql.SQL("LEFT JOIN {rel} AS {p} ON {p}.id = coalesce({col}, {a}.id)").format(
            rel=rel, p=p, col=col, a=sql.Identifier(alias)))
        flags.append(sql.SQL("({col} IS NOT NULL AND {p}.id IS NULL)").format(col=col, p=p))
    return sql.SQL(" ").join(joins), flags


def orphan_detail(c: Column) -> str:
    """The quarantine detail of an ORPHAN_FK row. One text whether the parent never existed, was
    quarantined or was deleted at the source, so that a refresh writes what a fresh migration
    writes (the run's audit row says which parents were removed and why)."""
    return f"{c.target} references a missing {c.parent} row"


@dataclass(frozen=True)
class OrphanStatements:
    """The orphan search of one table, in up to three statements run in order: ``search`` records
    the rows with a missing parent in the temp table ``_missing`` (one flag per foreign key);
    ``quarantine`` moves those with a required (or, without recovery, any) missing reference to
    ``_quarantine``; ``set_null`` sets the optional ones NULL and returns how many it set."""

    search: sql.Composable
    quarantine: sql.Composable | None
    set_null: sql.Composable | None


def orphan_sql(e: Entity, table: sql.Composable, staged: bool, opts: LoadOptions) -> OrphanStatements:
    """Rows of ``table`` whose foreign keys point at a missing parent, found in one pass.

    One scan of the rows, left-joined to every parent's keys (hash joins), records which
    references are missing for the few rows concerned, by row address. Then a required missing
    reference moves the row to ``_quarantine`` as ORPHAN_FK naming the first such column; an
    optional one is set NULL, the value and a retry mark kept in ``metadata.recovered``, all of a
    row's columns in one update (an update moves the row, so its old address must not be used
    twice). The row addresses are matched with ``ctid = ANY(ARRAY(...))``: a TID scan, not a scan
    of the table."""
    fks = e.foreign_keys
    flags = [sql.Identifier(f"m{i}") for i in range(len(fks))]
    joins, missing = parent_joins(e, "s", opts.target_schema)
    search = sql.SQL(
        "CREATE TEMP TABLE _missing ON COMMIT DROP AS SELECT s.ctid AS rid, {flags} FROM {t} AS s {joins} "
        "WHERE {any}").format(
        flags=sql.SQL(", ").join(sql.SQL("{} AS {}").format(m, f) for m, f in zip(missing, flags)),
        t=table, joins=joins, any=sql.SQL(" OR ").join(missing))

    def any_of(chosen):
        return sql.SQL(" OR ").join(sql.SQL("m.{}").format(flags[i]) for i, _ in chosen)

    quarantine = set_null = None
    blocking = [(i, c) for i, c in enumerate(fks) if c.required or not opts.error_recovery]
    if blocking:
        detail = sql.SQL("CASE {} END").format(sql.SQL(" ").join(
            sql.SQL("WHEN m.{} THEN {}").format(flags[i], sql.Literal(orphan_detail(c))) for i, c in blocking))
        quarantine = sql.SQL(
            "WITH gone AS (DELETE FROM {t} AS s USING _missing m WHERE s.ctid = m.rid AND ({any}) "
            "AND s.ctid = ANY(ARRAY(SELECT rid FROM _missing m WHERE {any})) "
            "RETURNING {lid} AS legacy_id, {detail} AS detail, (s.metadata->>'source_hash')::bigint AS h) "
            "INSERT INTO _quarantine (legacy_id, reason, detail, source_hash) "
            "SELECT legacy_id, {reason}, detail, h FROM gone").format(
            t=table, any=any_of(blocking), lid=legacy_id_of("s", staged), detail=detail,
            reason=sql.Literal(ORPHAN_FK))
    optional = [(i, c) for i, c in enumerate(fks) if not c.required and opts.error_recovery]
    if optional:
        sets = [sql.SQL("{col} = CASE WHEN m.{f} THEN NULL ELSE s.{col} END").format(
            col=sql.Identifier(c.target), f=flags[i]) for i, c in optional]
        notes = sql.SQL(" || ").join(sql.SQL("CASE WHEN m.{} THEN {} ELSE '{{}}'::jsonb END").format(
            flags[i], set_null_note_sql(c, c.parent)) for i, c in optional)
        set_null = sql.SQL(
            "WITH changed AS (UPDATE {t} AS s SET {sets}, metadata = {meta} FROM _missing m "
            "WHERE s.ctid = m.rid AND ({any}) AND s.ctid = ANY(ARRAY(SELECT rid FROM _missing m WHERE {any})) "
            "RETURNING {counts}) SELECT {total} FROM changed").format(
            t=table, sets=sql.SQL(", ").join(sets), meta=recovered_with_retry_sql(notes), any=any_of(optional),
            counts=sql.SQL(", ").join(sql.SQL("m.{}::int AS {}").format(flags[i], flags[i]) for i, _ in optional),
            total=sql.SQL(" + ").join(sql.SQL("coalesce(sum({}), 0)").format(flags[i]) for i, _ in optional))
    return OrphanStatements(search, quarantine, set_null)


def reject_orphans(conn, e: Entity, table: sql.Composable, staged: bool, opts: LoadOptions,
                   recoveries: dict) -> None:
    """Run :func:`orphan_sql`; count the references set NULL in ``recoveries``."""
    statements = orphan_sql(e, table, staged, opts)
    conn.execute("DROP TABLE IF EXISTS pg_temp._missing")
    if not conn.execute(statements.search).rowcount:
        return
    if statements.quarantine is not None:
        conn.execute(statements.quarantine)
    if statements.set_null is not None:
        (n,) = conn.execute(statements.set_null).fetchone()
        if n:
            recoveries[ORPHAN_FK_SET_NULL] = recoveries.get(ORPHAN_FK_SET_NULL, 0) + int(n)


def duplicates_sql(e: Entity, c: Column, table: sql.Composable, staged: bool, schema: str) -> sql.Composable:
    """Move the rows of ``table`` that lose unique column ``c`` to ``_quarantine`` as DUPLICATE_KEY.

    One rule for a fresh migration and a refresh: among the rows that hold a value, the lowest
    legacy id wins. The competitors are the rows of this load and, on the merge path (``staged``),
    the target rows this load does not rewrite (a rewritten row competes with its new value, a
    row this load quarantines does not compete). Losers of this load are quarantined, never sent
    to the database; a target row that loses to a newcomer with a lower id goes to
    ``_quarantine`` too, and leaves the target before the merge with its children (the eviction
    of re-quarantined rows)."""
    col = sql.Identifier(c.target)
    held = sql.SQL(
        "UNION ALL SELECT NULL::tid, x.id, (x.metadata->>'legacy_id')::bigint, x.{col}, "
        "(x.metadata->>'source_hash')::bigint FROM {tt} AS x "
        "WHERE x.{col} IN (SELECT s.{col} FROM {t} AS s WHERE s.{col} IS NOT NULL) "
        "AND NOT EXISTS (SELECT 1 FROM {t} AS s WHERE s.id = x.id) "
        "AND NOT EXISTS (SELECT 1 FROM _quarantine AS q "
        "                WHERE q.legacy_id = (x.metadata->>'legacy_id')::bigint)").format(
        tt=target_table(e, schema), t=table, col=col) if staged else sql.SQL("")
    return sql.SQL(
        "WITH cand AS (SELECT s.ctid AS rid, s.id, {lid} AS legacy_id, s.{col} AS v, "
        "  (s.metadata->>'source_hash')::bigint AS h FROM {t} AS s WHERE s.{col} IS NOT NULL {held}), "
        "losers AS (SELECT rid, legacy_id, v, h FROM (SELECT cand.*, "
        "  row_number() OVER (PARTITION BY v ORDER BY legacy_id) AS rn FROM cand) r WHERE rn > 1), "
        "gone AS (DELETE FROM {t} AS s USING losers WHERE s.ctid = losers.rid RETURNING losers.legacy_id, "
        "losers.v, losers.h) "
        "INSERT INTO _quarantine (legacy_id, reason, detail, source_hash) "
        "SELECT legacy_id, {reason}, {msg} || v, h FROM gone "
        "UNION ALL SELECT legacy_id, {reason}, {msg} || v, h FROM losers WHERE rid IS NULL").format(
        t=table, col=col, lid=legacy_id_of("s", staged), reason=sql.Literal(DUPLICATE_KEY),
        msg=sql.Literal(f"duplicate {c.target}: "), held=held)


def reject_target_side(conn, e: Entity, table: sql.Composable, staged: bool, opts: LoadOptions,
                       recoveries: dict) -> None:
    """Move rows that the target cannot take from ``table`` (staging or, on the fast path, the target
    table itself) into the temp table ``_quarantine``: orphans, then unique-key duplicates."""
    if e.foreign_keys:
        reject_orphans(conn, e, table, staged, opts, recoveries)
    for c in e.unique_columns:
        conn.execute(duplicates_sql(e, c, table, staged, opts.target_schema))


def unique_swap_sql(e: Entity, schema: str) -> list[sql.Composable]:
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
            t=target_table(e, schema), col=col, free=free))
    return out


def first_missing_parent_sql(e: Entity, opts: LoadOptions) -> sql.Composable | None:
    """Rewrite the detail of ``e``'s open ORPHAN_FK rows to name the first required reference, in
    the registry's order, whose parent is missing now: the one a fresh migration names, whichever
    removal quarantined the row (a row moved to quarantine for its file may have lost its case
    since, or been reached through its file first). None when ``e`` has fewer than two such
    references (nothing can differ). Only rows that name a later reference than the first are
    looked at, tested on the short detail before the raw row is read."""
    blocking = [c for c in e.foreign_keys if c.required or not opts.error_recovery]
    if len(blocking) < 2:
        return None
    first_missing = sql.SQL("CASE {} END").format(sql.SQL(" ").join(
        sql.SQL("WHEN NOT EXISTS (SELECT 1 FROM {p} AS p WHERE p.id = {uuid}) THEN {d}").format(
            p=table_named(c.parent, opts.target_schema), d=sql.Literal(orphan_detail(c)),
            uuid=legacy_uuid_sql(c.parent, sql.SQL("(q.raw->>{})::bigint").format(sql.Literal(c.legacy_name))))
        for c in blocking))
    return sql.SQL(
        "WITH d AS MATERIALIZED (SELECT q.legacy_id, {first} AS detail FROM {q} AS q "
        "  WHERE q.entity = {ent} AND NOT q.resolved AND q.reason = {orphan} AND q.raw IS NOT NULL "
        "  AND q.detail = ANY({later})) "
        "UPDATE {q} AS q SET detail = d.detail FROM d "
        "WHERE q.entity = {ent} AND q.legacy_id = d.legacy_id AND d.detail IS NOT NULL "
        "AND d.detail IS DISTINCT FROM q.detail").format(
        q=QUARANTINE, first=first_missing, ent=sql.Literal(e.name), orphan=sql.Literal(ORPHAN_FK),
        later=sql.Literal([orphan_detail(c) for c in blocking[1:]]))


def name_first_missing_parent(conn, e: Entity, opts: LoadOptions) -> None:
    """Run :func:`first_missing_parent_sql`: by ``e``'s own load, after its parents' loads of the
    same run, so once per table, not once per removal."""
    statement = first_missing_parent_sql(e, opts)
    if statement is not None:
        conn.execute(statement)
