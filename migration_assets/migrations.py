"""Applying ``supabase/migrations`` to a target (``migration-assets setup``), once and safely.

:func:`apply_migrations` records each applied file with its checksum in
``migration_control.schema_migrations``, all pending files in one transaction under an advisory
lock; a file edited after it was applied is refused (:class:`MigrationDrift`) rather than silently
diverging. It never writes the Supabase CLI's history. It changes only what the project owns:
before the first file that creates the registry's tables it refuses a registry table name that
already exists with another shape (:func:`foreign_shape_problems`, :class:`SetupError`), and
after the pending files it takes back any privilege they gave on a relation of the target schema
the registry does not own (the released ``GRANT ... ON ALL TABLES IN SCHEMA public``).

The target schema is MIGRATION_TARGET_SCHEMA (default ``public``). The files name it ``public``
in two forms only, a table ``public."name"`` and ``SCHEMA public`` (a unit test holds every file
to that); for another schema :func:`in_schema` maps both forms as a file is applied. The file
and its recorded checksum stay as released: the history is the same whatever the schema.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import psycopg
from psycopg import sql

from .access import all_access_sql
from .connections import connect, set_statement_timeout
from .engine.names import CONTROL_SCHEMA
from .errors import PermanentError
from .registry import ENTITIES
from .settings import DEFAULTS
from .target_schema import MIGRATIONS_DIR, ROLES

DEFAULT_TIMEOUT_MS = DEFAULTS["migration_timeout_ms"]
_ADVISORY_LOCK = 7_318_221


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class MigrationDrift(PermanentError):
    """An applied migration file was edited afterwards (a permanent error: fix the files)."""

    kind = "MIGRATION_DRIFT"
    recovery = "restore the applied file as released; put the change in a new migration file"


HISTORY = sql.Identifier(CONTROL_SCHEMA, "schema_migrations")


class SetupError(PermanentError):
    """The target cannot be set up as it is; the message says what to do (a permanent error)."""

    kind = "SETUP"
    recovery = "see the message: it names what to change on the target"


def _adopt_old_history(conn) -> None:
    """Earlier versions kept this history in ``supabase_migrations.schema_migrations`` with a
    ``checksum`` column, a shape the Supabase CLI never writes. Such a table is ours: its rows
    move to ``migration_control`` and it is dropped, so the CLI can create its own there."""
    (ours,) = conn.execute(
        "SELECT count(*) = 4 FROM information_schema.columns WHERE table_schema = 'supabase_migrations' "
        "AND table_name = 'schema_migrations' AND column_name IN ('version', 'name', 'checksum', 'applied_at')"
    ).fetchone()
    (cli_columns,) = conn.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'supabase_migrations' "
        "AND table_name = 'schema_migrations' AND column_name NOT IN ('version', 'name', 'checksum', 'applied_at')"
    ).fetchone()
    if not ours or cli_columns:
        return
    conn.execute(sql.SQL("INSERT INTO {} (version, name, checksum, applied_at) SELECT version, name, checksum, "
                         "applied_at FROM supabase_migrations.schema_migrations ON CONFLICT DO NOTHING"
                         ).format(HISTORY))
    conn.execute("DROP TABLE supabase_migrations.schema_migrations")


def _roles_problem(conn, roles: tuple[str, ...]) -> str | None:
    """Why migration 1 cannot create the Supabase roles here, with the statements a superuser can
    run instead (a Supabase project has them; a plain PostgreSQL needs them once)."""
    missing = [r for (r,) in conn.execute("SELECT r FROM unnest(%s::text[]) AS r WHERE NOT EXISTS "
                                          "(SELECT FROM pg_roles WHERE rolname = r)", [list(roles)])]
    if not missing:
        return None
    user, superuser, createrole = conn.execute(
        "SELECT current_user, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user").fetchone()
    needs_super = "service_role" in missing  # BYPASSRLS: only a superuser can grant it
    if superuser or (createrole and not needs_super):
        return None
    statements = "; ".join(f'CREATE ROLE "{r}" NOLOGIN NOINHERIT{" BYPASSRLS" if r == "service_role" else ""}'
                           for r in missing)
    return (f"the Supabase roles {', '.join(missing)} do not exist and {user} cannot create them "
            f"({'BYPASSRLS needs a superuser' if needs_super else 'it lacks CREATEROLE'}); "
            f"run as a superuser: {statements}; then run setup again")


_OTHER_RELATIONS_PRIVILEGES = sql.SQL("""
    SELECT c.oid::regclass::text, a.grantee, a.privilege_type
    FROM pg_class c CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
    WHERE c.relnamespace = %s::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
      AND NOT (c.relname = ANY(%s))""")
_PRIVILEGES = {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"}


def _others_privileges(conn, schema: str) -> set[tuple[str, int, str]]:
    """(relation, grantee oid, privilege) on every relation in ``schema`` the registry does not own."""
    return set(conn.execute(_OTHER_RELATIONS_PRIVILEGES, [schema, [e.target_table for e in ENTITIES]]).fetchall())


def revoke_added_sql(added: set[tuple[str, int, str]], role_names: dict[int, str]) -> list[sql.Composable]:
    """REVOKE statements taking back exactly the privileges in ``added`` ((relation as regclass
    text, grantee oid, privilege); grantee 0 is PUBLIC)."""
    out = []
    for relation, grantee, privilege in sorted(added):
        if privilege not in _PRIVILEGES:
            raise ValueError(f"unexpected privilege {privilege!r} on {relation}")
        who = sql.SQL("PUBLIC") if grantee == 0 else sql.Identifier(role_names[grantee])
        # relation: regclass text from the catalog, already quoted and qualified as needed
        out.append(sql.SQL("REVOKE {} ON TABLE {} FROM {}").format(sql.SQL(privilege), sql.SQL(relation), who))
    return out


def _keep_others_privileges(conn, schema: str, before: set[tuple[str, int, str]]) -> list[str]:
    """Take back what the files just granted on relations the project does not own.

    The released file ``20261124000002_target_tables.sql`` ends with ``GRANT ... ON ALL TABLES IN
    SCHEMA public``, which also reaches a user's own tables and views (a table whose SELECT was
    revoked from ``authenticated`` became readable by every signed-in user). Applied files are never
    edited (their checksums are the history), so the runner undoes that statement's effect on
    every relation outside the registry, in the same transaction. Returns the relations restored."""
    added = _others_privileges(conn, schema) - before
    if not added:
        return []
    roles = dict(conn.execute("SELECT oid::bigint, rolname FROM pg_roles WHERE oid = ANY(%s)",
                              [[g for _, g, _ in added if g]]).fetchall())
    for statement in revoke_added_sql(added, roles):
        conn.execute(statement)
    return sorted({relation for relation, _, _ in added})


_TABLE_CREATED_BY = "20261124000002"  # the file that creates the registry's tables (CREATE TABLE IF NOT EXISTS)


_ENTITY_OF = {e.target_table: e.name for e in ENTITIES}


def _shapes(conn, schema: str) -> dict[str, list[str]]:
    """Per registry table present in ``schema``: how its columns differ from the registry's (empty:
    the registry's shape)."""
    existing: dict[str, dict[str, str]] = {}
    for table, column, data_type in conn.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_class c "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE c.relnamespace = to_regnamespace(%s) AND c.relname = ANY(%s)",
            [schema, [e.target_table for e in ENTITIES]]):
        existing.setdefault(table, {})[column] = data_type
    out = {}
    for e in ENTITIES:
        if (have := existing.get(e.target_table)) is not None:
            want = {"id": "uuid", "metadata": "jsonb"} | {c.target: c.target_type for c in e.columns}
            out[e.target_table] = [f"{name} ({'missing' if name not in have else have[name] + ', expected ' + kind})"
                                   for name, kind in want.items() if have.get(name) != _canonical_type(kind)]
    return out


def foreign_shape_problems(conn, schema: str) -> list[str]:
    """Registry tables that already exist in ``schema`` with another shape, before this project
    created them (a Supabase quickstart's ``profiles``, say). ``CREATE TABLE IF NOT EXISTS`` would
    keep such a table, comment it and wire foreign keys to it, and the loads would fail later."""
    return [f"{schema}.{table} already exists and is not the registry's {_ENTITY_OF[table]} table: "
            f"{', '.join(differing[:6])}{' ...' if len(differing) > 6 else ''}"
            for table, differing in _shapes(conn, schema).items() if differing]


def _tables_elsewhere(conn, schema: str) -> str | None:
    """When the history says the registry's tables were created but none of the registry's shape
    is in ``schema`` (MIGRATION_TARGET_SCHEMA changed after the first setup): the error to give,
    naming where they are."""
    if any(not differing for differing in _shapes(conn, schema).values()):
        return None
    found = [n for (n,) in conn.execute(
        "SELECT DISTINCT relnamespace::regnamespace::text FROM pg_class WHERE relname = %s AND relkind IN ('r', 'p') "
        "AND relnamespace <> to_regnamespace(%s) ORDER BY 1", [ENTITIES[0].target_table, schema])]
    return (f"the target's tables were set up in {' or '.join(found) or 'another schema (now gone)'}, not in {schema} "
            f"(MIGRATION_TARGET_SCHEMA={schema}): set MIGRATION_TARGET_SCHEMA to the schema they were set up in, or "
            "set up a database of its own for that schema; nothing was changed")


def _canonical_type(kind: str) -> str:
    return {"timestamptz": "timestamp with time zone"}.get(kind, kind)


def lock_history(conn) -> None:
    """Take the set-up's transaction-level advisory lock and make sure the history table exists:
    concurrent set-ups (and a cutover) wait for each other, and the lock cannot outlive the
    transaction (a session lock would stay on whichever server connection a transaction pooler
    gave it)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK])
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(CONTROL_SCHEMA)))
    conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (version text PRIMARY KEY, name text, checksum text, "
                         "applied_at timestamptz DEFAULT now())").format(HISTORY))
    _adopt_old_history(conn)


def applied_versions(conn) -> dict[str, str]:
    """version -> checksum of every file applied (setup's and the cutover's)."""
    return dict(conn.execute(sql.SQL("SELECT version, checksum FROM {}").format(HISTORY)).fetchall())


_PUBLIC_TABLE = re.compile(r'\bpublic\."')
_PUBLIC_SCHEMA = re.compile(r"\bSCHEMA public\b")


def in_schema(text: str, schema: str) -> str:
    """A file's SQL with its target schema ``public`` (the forms ``public."table"`` and ``SCHEMA
    public``) made ``schema``."""
    if schema == "public":
        return text
    quoted = '"' + schema.replace('"', '""') + '"'
    return _PUBLIC_SCHEMA.sub(f"SCHEMA {quoted}", _PUBLIC_TABLE.sub(f'{quoted}."', text))


def _execute_file(conn, text: str, creates_roles: bool) -> None:
    """Run one file's SQL (static, reviewed: no parameters). Roles belong to the cluster, and the
    advisory lock of :func:`lock_history` to one database: two set-ups of two databases on one
    server can both find a role missing, and the second ``CREATE ROLE`` then fails on the first's
    committed role. Such a file runs in a savepoint and once more after that failure, when its
    ``IF NOT EXISTS`` finds the role."""
    if not creates_roles:
        conn.execute(text)
        return
    try:
        with conn.transaction():
            conn.execute(text)
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.constraint_name != "pg_authid_rolname_index":
            raise
        conn.execute(text)


def apply_files(conn, files: list[Path], schema: str) -> list[str]:
    """Apply, in the caller's transaction (under :func:`lock_history`), those of ``files`` not in
    the history, into target schema ``schema`` (:func:`in_schema`), recording each with the
    checksum of the file; refuse an applied file that changed since (:class:`MigrationDrift`).
    Returns the versions applied now."""
    done = applied_versions(conn)
    applied_now = []
    for path in files:
        version, _, name = path.stem.partition("_")
        text = path.read_text()
        if version in done:
            if done[version] and done[version] != _checksum(text):
                raise MigrationDrift(f"migration {path.name} changed after it was applied")
            continue
        creates_roles = "CREATE ROLE" in text
        if creates_roles and (problem := _roles_problem(conn, ROLES)):
            raise SetupError(f"cannot apply {path.name}: {problem}")
        _execute_file(conn, in_schema(text, schema), creates_roles)
        conn.execute(sql.SQL("INSERT INTO {} (version, name, checksum) VALUES (%s, %s, %s)").format(HISTORY),
                     [version, name, _checksum(text)])
        applied_now.append(version)
    return applied_now


def apply_migrations(conninfo: str, directory: Path = MIGRATIONS_DIR, *, timeout_ms: int = DEFAULT_TIMEOUT_MS,
                     schema: str = DEFAULTS["target_schema"]) -> list[str]:
    """Apply the migration files not yet applied; return the versions applied now.

    The history is ``migration_control.schema_migrations`` (version, name, checksum): a file edited
    after it was applied is refused. The Supabase CLI's own history
    (``supabase_migrations.schema_migrations``) is left alone: rows of ours there would be versions
    missing from the project's own ``supabase/migrations``, and ``supabase db push`` refuses to run
    until they are repaired away. One transaction under :func:`lock_history`'s lock: a failing
    file leaves nothing applied. ``timeout_ms`` (MIGRATION_TIMEOUT) bounds every statement;
    ``schema`` (MIGRATION_TARGET_SCHEMA) is where the registry's tables are, created if missing."""
    files = sorted(directory.glob("*.sql"))
    if not files:
        raise FileNotFoundError(f"no migration files in {directory}")
    with connect(conninfo) as conn:
        set_statement_timeout(conn, timeout_ms)
        lock_history(conn)
        if _TABLE_CREATED_BY in applied_versions(conn):
            if problem := _tables_elsewhere(conn, schema):
                raise SetupError(problem)
        else:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            if problems := foreign_shape_problems(conn, schema):
                raise SetupError("cannot set up the target: " + "; ".join(problems) + ". Ways out: rename or move "
                                 f"that table (ALTER TABLE {schema}.<name> RENAME TO ..., or SET SCHEMA), migrate into "
                                 "a schema of the project's own (MIGRATION_TARGET_SCHEMA) or into a database without "
                                 "it; nothing was changed")
        others_before = _others_privileges(conn, schema)
        applied_now = apply_files(conn, files, schema)
        _keep_others_privileges(conn, schema, others_before)
        for statement in all_access_sql(schema, conn=conn):  # every setup: the declared access, nothing else
            conn.execute(statement)
        conn.commit()
    return applied_now


def schema_fingerprint(conninfo: str) -> str:
    """md5 of the public and migration_control schemas' columns and constraints (for tests)."""
    with connect(conninfo) as conn:
        return conn.execute(sql.SQL("""
            SELECT md5(string_agg(x, '|' ORDER BY x)) FROM (
              SELECT table_schema || '.' || table_name || '.' || column_name || ':' || data_type || ':' || is_nullable
                     AS x FROM information_schema.columns WHERE table_schema IN ('public', {})
              UNION ALL
              SELECT conrelid::regclass::text || ':' || conname || ':' || pg_get_constraintdef(oid)
              FROM pg_constraint WHERE connamespace IN ('public'::regnamespace, {}::regnamespace)
              UNION ALL
              SELECT schemaname || ':' || indexname || ':' || indexdef FROM pg_indexes
              WHERE schemaname IN ('public', {})) s""").format(
            sql.Literal(CONTROL_SCHEMA), sql.Literal(CONTROL_SCHEMA), sql.Literal(CONTROL_SCHEMA))).fetchone()[0]
