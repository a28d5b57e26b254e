"""The keys of a first migration's empty tables, set aside for the whole run and restored in one
transaction after its last table.

Why: a Supabase project runs PostgREST's schema watch, an event trigger that makes PostgREST
reload its schema cache after every committed transaction holding an ``ALTER TABLE`` (or another
watched command) outside ``pg_temp``. The fast path (load.py) drops a table's keys and adds them
back in that table's own load transaction, so a first migration made PostgREST reload once per
table. Here the drops of every table go into one transaction before the first load and the
additions into one after the last; in between, a table's load builds the indexes (``CREATE
INDEX``, which the watch ignores) and commits no watched command. A first migration therefore
makes PostgREST reload twice. Fewer is not possible while each table commits on its own (its
transaction is what a crash loses and a retry repeats): the keys must be gone before the first
table's rows go in and back after the last table's, in two transactions apart from every
table's own.

Flow, with the state in the control schema (``keys_set_aside``, ``key_runs``) so that every step
of a run, in any process, sees it:
  1. :func:`prepare`, at each load step's pre-flight (one transaction, under an advisory lock, at
     most once per run): a run that ends with the ``target_keys`` step sets aside the primary
     keys, unique constraints, indexes and foreign keys of the empty tables it loads (and the
     foreign keys to them), recording each definition; a table the fast path cannot take
     (copy.fast_path_blocker) keeps its keys. A run that does not end with that step restores
     what an earlier run left aside first, so keys are never left aside by a run that would not
     restore them.
  2. each table's load (load.py), on a table whose keys are set aside: the fast path without the
     drop, then :func:`build_indexes_sql`: the indexes as they were, the primary key's and the
     unique constraints' under the constraints' names. A refresh of a table that loaded this way
     (a resumed run) merges on those unique indexes.
  3. :func:`restore` (the ``target_keys`` asset, or step 1 of a run without it; one
     transaction, after any load still writing one of the tables): each primary key and unique
     constraint attached to its index (``ADD CONSTRAINT ... USING INDEX``: no rebuild) or built
     where its table never loaded, the missing indexes built, every foreign key added (which
     validates every row: the loads moved the orphans to the quarantine). A failure rolls all
     of it back and names the key; the keys stay aside until a run restores them.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import psycopg.errors
from psycopg import sql

from ..errors import PermanentError
from ..registry import Entity
from .copy import BUILD_ORDER, DROP_ORDER, fast_path_blocker
from .names import KEY_RUNS, KEYS_SET_ASIDE, SLICE_LOADS, target_table

LOCK = "SELECT pg_advisory_xact_lock(hashtext('migration_assets.keys_set_aside'))"


@dataclass(frozen=True)
class Key:
    """A key or index set aside: its table, name, kind (p, u, i, f), definition
    (``pg_get_constraintdef``, or ``pg_get_indexdef`` for an index) and, for a primary key or
    unique constraint, its index's definition."""

    schema: str
    table: str
    name: str
    kind: str
    definition: str
    index_definition: str | None = None

    @property
    def relation(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table)


class KeysNotRestored(PermanentError):
    """A key set aside could not be restored (its rows break it); the keys stay aside."""

    kind = "KEYS"
    recovery = ("fix the rows the message names, then materialize target_keys (or re-run the migration): it "
                "restores every key set aside")


# Fully qualified definitions (search_path empty while they are read), so that they mean the same
# in any later session.
_CAPTURE = """
    WITH t AS (SELECT unnest(%(tables)s::regclass[]) AS oid)
    SELECT n.nspname::text, r.relname::text, c.conname::text, c.contype::text, pg_get_constraintdef(c.oid),
           CASE WHEN c.contype IN ('p', 'u') THEN pg_get_indexdef(c.conindid) END
    FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid JOIN pg_namespace n ON n.oid = r.relnamespace
    WHERE (c.conrelid IN (SELECT oid FROM t) AND c.contype IN ('p', 'u', 'f'))
       OR (c.confrelid IN (SELECT oid FROM t) AND c.contype = 'f')
    UNION ALL
    SELECT n.nspname::text, r.relname::text, x.relname::text, 'i', pg_get_indexdef(i.indexrelid), NULL
    FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid JOIN pg_class r ON r.oid = i.indrelid
         JOIN pg_namespace n ON n.oid = r.relnamespace
    WHERE i.indrelid IN (SELECT oid FROM t)
      AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid)"""


def capture(conn: psycopg.Connection, tables: list[str]) -> list[Key]:
    """The keys and indexes of ``tables`` (qualified names) and the foreign keys to them."""
    conn.execute("SET LOCAL search_path = ''")
    try:
        return [Key(*row) for row in conn.execute(_CAPTURE, {"tables": tables})]
    finally:
        conn.execute("RESET search_path")


def drop_sql(keys: list[Key]) -> list[sql.Composable]:
    """Set ``keys`` aside: the foreign keys first (they depend on the keys), then the indexes, the
    unique constraints and the primary keys."""
    out = []
    for k in sorted(keys, key=lambda k: DROP_ORDER[k.kind]):
        if k.kind == "i":
            out.append(sql.SQL("DROP INDEX {}").format(sql.Identifier(k.schema, k.name)))
        else:
            out.append(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(k.relation, sql.Identifier(k.name)))
    return out


def build_indexes_sql(keys: list[Key]) -> list[sql.Composable]:
    """The indexes of a table whose keys are set aside, built by its load (``CREATE INDEX``, which
    PostgREST's watch ignores): each as it was, the primary key's and unique constraints' under
    the constraint's name (what :func:`restore_sql` attaches)."""
    return [sql.SQL(k.index_definition if k.kind in ("p", "u") else k.definition)
            for k in sorted(keys, key=lambda k: BUILD_ORDER[k.kind]) if k.kind in ("p", "u", "i")]


def _deferrable(definition: str) -> sql.Composable:
    clauses = [c for c in ("DEFERRABLE", "INITIALLY DEFERRED") if c in definition]
    return sql.SQL("".join(" " + c for c in clauses))


def restore_sql(keys: list[Key], built: set[tuple[str, str]]) -> list[tuple[Key, sql.Composable]]:
    """Restore ``keys``; ``built``: the (schema, name) of the indexes that exist. A primary key or
    unique constraint takes its built index (``USING INDEX``), else is built; an index is built
    unless it exists; foreign keys come last (each validates its rows)."""
    out = []
    for k in sorted(keys, key=lambda k: BUILD_ORDER[k.kind]):
        exists = (k.schema, k.name) in built
        if k.kind in ("p", "u") and exists:
            out.append((k, sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} USING INDEX {}{}").format(
                k.relation, sql.Identifier(k.name), sql.SQL("PRIMARY KEY" if k.kind == "p" else "UNIQUE"),
                sql.Identifier(k.name), _deferrable(k.definition))))
        elif k.kind == "i":
            if not exists:
                out.append((k, sql.SQL(k.definition)))
        else:
            out.append((k, sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                k.relation, sql.Identifier(k.name), sql.SQL(k.definition))))
    return out


_COLUMNS = sql.SQL("table_schema, table_name, name, kind, definition, index_definition")


def set_aside_of(conn: psycopg.Connection, e: Entity, schema: str) -> list[Key]:
    """What is set aside of ``e``'s table in ``schema`` (its own keys, indexes and foreign keys)."""
    return [Key(*row) for row in conn.execute(
        sql.SQL("SELECT {} FROM {} WHERE table_schema = %s AND table_name = %s").format(_COLUMNS, KEYS_SET_ASIDE),
        [schema, e.target_table])]


def tables_set_aside(conn: psycopg.Connection, schema: str) -> set[str]:
    """The tables in ``schema`` with something set aside (a foreign key counts for the table that
    holds it): the pre-flight excuses their keys, ``status`` names them."""
    return {t for (t,) in conn.execute(sql.SQL("SELECT DISTINCT table_name FROM {} WHERE table_schema = %s").format(
        KEYS_SET_ASIDE), [schema])}


def everything_set_aside(conn: psycopg.Connection) -> list[Key]:
    return [Key(*row) for row in conn.execute(
        sql.SQL("SELECT {} FROM {} ORDER BY 1, 2, 3").format(_COLUMNS, KEYS_SET_ASIDE))]


def set_aside_since(conn: psycopg.Connection) -> tuple[int, int, object, str] | None:
    """What is set aside, for ``status``: how many keys, of how many tables, since when, by which
    run; None when nothing is."""
    row = conn.execute(sql.SQL("SELECT count(*), count(DISTINCT (table_schema, table_name)), min(set_aside_at), "
                               "min(run_id) FROM {}").format(KEYS_SET_ASIDE)).fetchone()
    return row if row[0] else None


@dataclass(frozen=True)
class Prepared:
    set_aside: int = 0  # keys and indexes this call set aside
    tables: tuple[str, ...] = ()  # the tables whose keys it set aside
    restored: int = 0  # keys an earlier run left aside, restored by this call (a run without target_keys)


def prepare(conn: psycopg.Connection, run_id: str, entities: list[Entity], schema: str, *, finishing: bool,
            fast_path: bool = True) -> Prepared:
    """Step 1, in the caller's transaction (the caller commits): ``finishing``, the run ends with
    the restoring step: set aside the keys of the empty tables of ``entities`` (once per run);
    otherwise restore whatever is set aside. ``fast_path`` false (MIGRATION_FAST_PATH): nothing is
    set aside."""
    conn.execute(LOCK)
    if not finishing:
        return Prepared(restored=restore(conn))
    first = conn.execute(sql.SQL("INSERT INTO {} (run_id) VALUES (%s) ON CONFLICT DO NOTHING").format(KEY_RUNS),
                         [run_id]).rowcount
    if not first or not fast_path:
        return Prepared()
    aside = {(k.schema, k.table) for k in everything_set_aside(conn)}
    sliced = {n for (n,) in conn.execute(sql.SQL("SELECT entity FROM {} WHERE finished_at IS NULL").format(
        SLICE_LOADS))}
    tables = []
    for e in entities:
        target = target_table(e, schema)
        if (schema, e.target_table) in aside or e.name in sliced:
            continue
        if conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(target)).fetchone()[0]:
            continue
        if fast_path_blocker(conn, e, schema) is None:
            tables.append(e)
    if not tables:
        return Prepared()
    keys = capture(conn, [target_table(e, schema).as_string(conn) for e in tables])
    with conn.cursor() as cur:
        cur.executemany(sql.SQL("INSERT INTO {} ({}, run_id) VALUES (%s, %s, %s, %s, %s, %s, %s)").format(
            KEYS_SET_ASIDE, _COLUMNS), [(k.schema, k.table, k.name, k.kind, k.definition, k.index_definition, run_id)
                                       for k in keys])
    for statement in drop_sql(keys):
        conn.execute(statement)
    conn.execute(sql.SQL("UPDATE {} SET set_aside = %s WHERE run_id = %s").format(KEY_RUNS), [len(keys), run_id])
    return Prepared(len(keys), tuple(e.name for e in tables))


def restore(conn: psycopg.Connection) -> int:
    """Step 3, in the caller's transaction (the caller commits): restore every key set aside, then
    forget them. Returns how many; raises :class:`KeysNotRestored` naming the key that fails."""
    conn.execute(LOCK)
    keys = everything_set_aside(conn)
    if not keys:
        return 0
    # a load still writing one of the tables (a run that does not restore, started beside one that
    # set the keys aside) finishes first, so the indexes it builds are seen as built
    tables = sorted({(k.schema, k.table) for k in keys})
    conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(
        sql.SQL(", ").join(sql.Identifier(*t) for t in tables)))
    built = {(s, n) for s, n in conn.execute(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'i' AND (n.nspname, c.relname) IN (SELECT unnest(%s::text[]), unnest(%s::text[]))",
        [[k.schema for k in keys], [k.name for k in keys]])}
    for key, statement in restore_sql(keys, built):
        try:
            conn.execute(statement)
        except psycopg.errors.IntegrityError as exc:  # the rows break it; any other error is the failure's own kind
            raise KeysNotRestored(f"{key.name} on {key.schema}.{key.table} could not be restored: "
                                  f"{str(exc).splitlines()[0]}; every key set aside stays aside "
                                  f"({len(keys)}, in migration_control.keys_set_aside)") from None
    conn.execute(sql.SQL("DELETE FROM {}").format(KEYS_SET_ASIDE))
    conn.execute(sql.SQL("UPDATE {} SET restored = set_aside, restored_at = now() WHERE restored_at IS NULL "
                         "AND set_aside > 0").format(KEY_RUNS))
    return len(keys)
