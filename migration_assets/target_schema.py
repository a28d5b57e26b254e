"""The Supabase target schema: ordered SQL migration files, generated from the registry, applied
idempotently.

    python -m migration_assets.target_schema --write     # regenerate supabase/migrations/*.sql
    python -m migration_assets.target_schema --apply     # apply what is not applied yet

The files under ``supabase/migrations`` are committed (reviewable, usable by ``supabase db push``)
and a unit test keeps them equal to what the registry generates. :func:`apply_migrations` records
each applied file with its checksum in ``migration_control.schema_migrations``, all pending files
in one transaction under an advisory lock; a file edited after it was applied is refused rather
than silently diverging. It never writes the Supabase CLI's history (see apply_migrations). The
statements themselves are idempotent (IF NOT EXISTS, guarded role creation), so a database whose
schema came from ``supabase db push`` of these same files, or was set up by hand, converges.

Nothing here needs an extension: UUIDs come from the loader (RFC 4122 v3 via md5, built in).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from psycopg import sql

from .config import PROJECT_DIR
from .connections import connect, set_statement_timeout
from .engine.names import CONTROL_SCHEMA
from .errors import PermanentError
from .settings import DEFAULTS
from .registry import ENTITIES, Entity, topological_order
from .transforms import EMAIL_REGEX, NAMESPACE_BYTES, Kind

MIGRATIONS_DIR = PROJECT_DIR / "supabase" / "migrations"
ROLES = ("anon", "authenticated", "service_role")
DEFAULT_TIMEOUT_MS = DEFAULTS["migration_timeout_ms"]
_ADVISORY_LOCK = 7_318_221


def _q(name: str) -> str:
    """Quote an identifier for a static .sql file (the files are SQL text, not composed at run time)."""
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def constraint_names(e: Entity) -> dict[str, str]:
    """Names of the target constraints and indexes of ``e`` (used by the loader and the checks)."""
    t = e.target_table
    names = {"pkey": f"{t}_pkey"}
    for c in e.unique_columns:
        names[f"unique:{c.target}"] = f"{t}_{c.target}_key"
    for c in e.foreign_keys:
        names[f"fk:{c.target}"] = f"{t}_{c.target}_fkey"
        names[f"fkidx:{c.target}"] = f"{t}_{c.target}_idx"
    for c in e.email_columns:
        names[f"email:{c.target}"] = f"{t}_{c.target}_email_format"
    return names


def table_sql(e: Entity) -> str:
    names = constraint_names(e)
    lines = ["  id uuid NOT NULL"]
    for c in e.columns:
        null = " NOT NULL" if c.required else ""
        lines.append(f"  {_q(c.target)} {c.target_type}{null}")
    lines.append("  metadata jsonb NOT NULL DEFAULT '{}'::jsonb")
    lines.append(f"  CONSTRAINT {_q(names['pkey'])} PRIMARY KEY (id)")
    for c in e.unique_columns:
        lines.append(f"  CONSTRAINT {_q(names['unique:' + c.target])} UNIQUE ({_q(c.target)})")
    for c in e.email_columns:
        lines.append(f"  CONSTRAINT {_q(names['email:' + c.target])} CHECK ({_q(c.target)} ~ {_lit(EMAIL_REGEX)})")
    for c in e.columns:
        if c.kind in (Kind.CODE_INT, Kind.CODE_CHAR):
            allowed = ", ".join(_lit(v) for v in dict.fromkeys(c.codes.values()))
            lines.append(f"  CONSTRAINT {_q(e.target_table + '_' + c.target + '_check')} CHECK ({_q(c.target)} IN ({allowed}))")
    for c in e.foreign_keys:
        lines.append(f"  CONSTRAINT {_q(names['fk:' + c.target])} FOREIGN KEY ({_q(c.target)}) "
                     f"REFERENCES public.{_q(c.parent)} (id)")
    out = [f"-- {e.name}: {e.description} Legacy table {e.legacy_table}; level {e.level}, {e.priority}.",
           f"CREATE TABLE IF NOT EXISTS public.{_q(e.target_table)} (\n" + ",\n".join(lines) + "\n);"]
    for c in e.foreign_keys:
        out.append(f"CREATE INDEX IF NOT EXISTS {_q(names['fkidx:' + c.target])} "
                   f"ON public.{_q(e.target_table)} ({_q(c.target)});")
    out.append(f"ALTER TABLE public.{_q(e.target_table)} ENABLE ROW LEVEL SECURITY;")
    out.append(f"COMMENT ON TABLE public.{_q(e.target_table)} IS {_lit(e.description)};")
    return "\n".join(out)


def migration_files() -> dict[str, str]:
    """File name -> SQL text, in application order."""
    roles = "\n".join(
        f"  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {_lit(r)}) THEN\n"
        f"    CREATE ROLE {_q(r)} NOLOGIN NOINHERIT{' BYPASSRLS' if r == 'service_role' else ''};\n  END IF;"
        for r in ROLES)
    prefix = NAMESPACE_BYTES.decode("ascii")
    setup = f"""-- Supabase roles (present on a Supabase project, created here on a plain PostgreSQL),
-- the migration_control schema, and the legacy-id UUID function used by the checks.
DO $$
BEGIN
{roles}
END
$$;

CREATE SCHEMA IF NOT EXISTS {CONTROL_SCHEMA};

-- RFC 4122 version-3 UUID of (entity, legacy id) in namespace {prefix!r}: equal to Python's
-- uuid.uuid3(uuid.UUID(bytes=b'{prefix}'), entity || ':' || legacy_id).
CREATE OR REPLACE FUNCTION {CONTROL_SCHEMA}.legacy_uuid(entity text, legacy_id bigint)
RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $fn$
  SELECT (left(h, 12) || '3' || substr(h, 14, 3)
          || translate(substr(h, 17, 1), '0123456789abcdef', '89ab89ab89ab89ab') || right(h, 15))::uuid
  FROM (SELECT md5({_lit(prefix)} || entity || ':' || legacy_id::text) AS h) s
$fn$;
"""
    tables = "-- The 45 target tables in dependency order (parents first).\n\n" + "\n\n".join(
        table_sql(e) for e in topological_order())
    tables += "\n\nGRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;\n" \
              "GRANT ALL ON ALL TABLES IN SCHEMA public TO service_role;\n" \
              "GRANT SELECT ON ALL TABLES IN SCHEMA public TO authenticated;\n"
    control = f"""-- Audit trail, quarantine and watermarks of the migration.

CREATE TABLE IF NOT EXISTS {CONTROL_SCHEMA}.migration_runs (
  id bigserial PRIMARY KEY,
  run_id text NOT NULL,
  entity text NOT NULL,
  status text NOT NULL CHECK (status IN ('COMPLETED', 'SKIPPED', 'FAILED', 'ALREADY_MIGRATED')),
  mode text NOT NULL DEFAULT 'full',
  load_path text,
  records_read bigint NOT NULL DEFAULT 0,
  existing_records bigint NOT NULL DEFAULT 0,
  inserted bigint NOT NULL DEFAULT 0,
  updated bigint NOT NULL DEFAULT 0,
  unchanged bigint NOT NULL DEFAULT 0,
  quarantined bigint NOT NULL DEFAULT 0,
  deleted bigint NOT NULL DEFAULT 0,
  duration_ms bigint NOT NULL DEFAULT 0,
  started_at timestamptz NOT NULL,
  finished_at timestamptz,
  error_class text,
  error text,
  recovery text,
  details jsonb NOT NULL DEFAULT '{{}}'::jsonb
);
CREATE INDEX IF NOT EXISTS migration_runs_entity_idx ON {CONTROL_SCHEMA}.migration_runs (entity, started_at DESC);
CREATE INDEX IF NOT EXISTS migration_runs_run_idx ON {CONTROL_SCHEMA}.migration_runs (run_id);

CREATE TABLE IF NOT EXISTS {CONTROL_SCHEMA}.quarantine (
  entity text NOT NULL,
  legacy_id bigint NOT NULL,
  reason text NOT NULL,
  detail text NOT NULL,
  raw jsonb,
  first_run_id text NOT NULL,
  last_run_id text NOT NULL,
  first_seen_at timestamptz NOT NULL DEFAULT now(),
  last_seen_at timestamptz NOT NULL DEFAULT now(),
  resolved boolean NOT NULL DEFAULT false,
  resolved_at timestamptz,
  resolved_run_id text,
  PRIMARY KEY (entity, legacy_id)
);
CREATE INDEX IF NOT EXISTS quarantine_open_idx ON {CONTROL_SCHEMA}.quarantine (entity, reason) WHERE NOT resolved;

CREATE TABLE IF NOT EXISTS {CONTROL_SCHEMA}.watermarks (
  entity text PRIMARY KEY,
  change_hwm timestamptz,
  max_legacy_id bigint,
  legacy_rows bigint,
  run_id text,
  updated_at timestamptz NOT NULL DEFAULT now()
);
"""
    return {
        "20261124000001_roles_and_control_schema.sql": setup,
        "20261124000002_target_tables.sql": tables,
        "20261124000003_migration_control.sql": control,
        "20261124000004_quarantine_source_hash.sql":
            "-- Hash of the raw legacy row each quarantine row came from: lets a re-run skip unchanged rows.\n"
            f"ALTER TABLE {CONTROL_SCHEMA}.quarantine ADD COLUMN IF NOT EXISTS source_hash bigint;\n",
        "20261124000005_differential_refresh.sql": f"""-- Differential refresh: how a quarantine row was resolved, and what a watermark covers.

ALTER TABLE {CONTROL_SCHEMA}.quarantine ADD COLUMN IF NOT EXISTS resolution text;
ALTER TABLE {CONTROL_SCHEMA}.watermarks ADD COLUMN IF NOT EXISTS min_legacy_id bigint;
ALTER TABLE {CONTROL_SCHEMA}.watermarks ADD COLUMN IF NOT EXISTS mode text;

-- The same key function as a single expression, so that the planner inlines it (a SQL function
-- with a FROM clause is called row by row): used to find target rows by legacy id.
CREATE OR REPLACE FUNCTION {CONTROL_SCHEMA}.legacy_uuid(entity text, legacy_id bigint)
RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $fn$
  SELECT encode(set_byte(set_byte(
    decode(md5('migration_assets' || entity || ':' || legacy_id::text), 'hex'),
    6, (get_byte(decode(md5('migration_assets' || entity || ':' || legacy_id::text), 'hex'), 6) & 15) | 48),
    8, (get_byte(decode(md5('migration_assets' || entity || ':' || legacy_id::text), 'hex'), 8) & 63) | 128),
    'hex')::uuid
$fn$;

-- Rows loaded with an optional foreign key set NULL (parent missing) are retried on every run;
-- this small partial index finds them without reading every row's metadata.
""" + "".join(
            f'CREATE INDEX IF NOT EXISTS "{e.target_table}_retry_idx" ON public."{e.target_table}" (id) '
            f"WHERE (metadata -> 'recovered') ? 'retry';\n"
            for e in ENTITIES if any(not c.required for c in e.foreign_keys)),
        "20261124000006_check_results.sql": f"""-- Asset check results, kept next to the audit trail for the reports and the status command.

CREATE TABLE IF NOT EXISTS {CONTROL_SCHEMA}.check_results (
  id bigserial PRIMARY KEY,
  run_id text NOT NULL,
  entity text NOT NULL,
  check_name text NOT NULL,
  passed boolean NOT NULL,
  severity text NOT NULL,
  description text,
  metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,
  checked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS check_results_latest_idx ON {CONTROL_SCHEMA}.check_results (entity, check_name, id DESC);
""",
        "20261124000007_change_summary.sql": f"""-- The per-bucket change summary a full-mode load leaves behind (bucket of 1,024 legacy ids,
-- rows, sum of the rows' source hashes modulo 2^64): what target + open quarantine hold after
-- that load, written in its transaction. The next full-mode load compares the legacy table
-- with it instead of re-reading every target row's metadata; NULL after a differential load.
ALTER TABLE {CONTROL_SCHEMA}.watermarks ADD COLUMN IF NOT EXISTS summary_buckets bigint[];
ALTER TABLE {CONTROL_SCHEMA}.watermarks ADD COLUMN IF NOT EXISTS summary_rows bigint[];
ALTER TABLE {CONTROL_SCHEMA}.watermarks ADD COLUMN IF NOT EXISTS summary_hashes numeric[];
""",
        "20261201000008_canceled_status.sql": f"""-- A run stopped by a signal records the table it interrupted as CANCELED (its load was rolled
-- back and is not retried).
ALTER TABLE {CONTROL_SCHEMA}.migration_runs DROP CONSTRAINT IF EXISTS migration_runs_status_check;
ALTER TABLE {CONTROL_SCHEMA}.migration_runs ADD CONSTRAINT migration_runs_status_check
  CHECK (status IN ('COMPLETED', 'SKIPPED', 'FAILED', 'ALREADY_MIGRATED', 'CANCELED'));
""",
        "20261201000009_slices.sql": f"""-- A large empty table loaded in id-range slices, each its own step (engine/slices.py): the
-- plan and the keys its first step dropped (rebuilt by its last step), one row per slice (which
-- run and which worker loaded it, when), and the rows the slices rejected until the last step
-- quarantines them. A plan stays after its table is finished, as the record of its slices.
CREATE TABLE IF NOT EXISTS {CONTROL_SCHEMA}.slice_loads (
  entity text PRIMARY KEY,
  run_id text NOT NULL,
  constraints jsonb NOT NULL,
  legacy_rows bigint NOT NULL,
  min_legacy_id bigint,
  max_legacy_id bigint,
  change_hwm text,
  created_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  finished_run_id text
);
CREATE TABLE IF NOT EXISTS {CONTROL_SCHEMA}.slices (
  entity text NOT NULL REFERENCES {CONTROL_SCHEMA}.slice_loads ON DELETE CASCADE,
  slice integer NOT NULL,
  lo bigint NOT NULL,
  hi bigint NOT NULL,
  status text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'COMPLETED')),
  run_id text,
  worker text,
  rows_read bigint,
  rejected bigint,
  recoveries jsonb,
  duration_ms bigint,
  finished_at timestamptz,
  PRIMARY KEY (entity, slice)
);
CREATE TABLE IF NOT EXISTS {CONTROL_SCHEMA}.slice_rejects (
  entity text NOT NULL,
  slice integer NOT NULL,
  legacy_id bigint NOT NULL,
  reason text NOT NULL,
  detail text,
  raw jsonb,
  source_hash bigint,
  FOREIGN KEY (entity, slice) REFERENCES {CONTROL_SCHEMA}.slices ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS slice_rejects_entity_idx ON {CONTROL_SCHEMA}.slice_rejects (entity, slice);
""",
    }


def write_migrations(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in migration_files().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


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
    WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
      AND NOT (c.relname = ANY(%s))""")
_PRIVILEGES = {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"}


def _others_privileges(conn) -> set[tuple[str, int, str]]:
    """(relation, grantee oid, privilege) on every relation in ``public`` the registry does not own."""
    return set(conn.execute(_OTHER_RELATIONS_PRIVILEGES, [[e.target_table for e in ENTITIES]]).fetchall())


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


def _keep_others_privileges(conn, before: set[tuple[str, int, str]]) -> list[str]:
    """Take back what the files just granted on relations the project does not own.

    The released file ``20261124000002_target_tables.sql`` ends with ``GRANT ... ON ALL TABLES IN
    SCHEMA public``, which also reaches a user's own tables and views (a table whose SELECT was
    revoked from ``authenticated`` became readable by every signed-in user). Applied files are never
    edited (their checksums are the history), so the runner undoes that statement's effect on
    every relation outside the registry, in the same transaction. Returns the relations restored."""
    added = _others_privileges(conn) - before
    if not added:
        return []
    roles = dict(conn.execute("SELECT oid::bigint, rolname FROM pg_roles WHERE oid = ANY(%s)",
                              [[g for _, g, _ in added if g]]).fetchall())
    for statement in revoke_added_sql(added, roles):
        conn.execute(statement)
    return sorted({relation for relation, _, _ in added})


_TABLE_CREATED_BY = "20261124000002"  # the file that creates the registry's tables (CREATE TABLE IF NOT EXISTS)


def foreign_shape_problems(conn) -> list[str]:
    """Registry tables that already exist in ``public`` with another shape, before this project
    created them (a Supabase quickstart's ``profiles``, say). ``CREATE TABLE IF NOT EXISTS`` would
    keep such a table, comment it and wire foreign keys to it, and the loads would fail later."""
    existing: dict[str, dict[str, str]] = {}
    for table, column, data_type in conn.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_class c "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%s)",
            [[e.target_table for e in ENTITIES]]):
        existing.setdefault(table, {})[column] = data_type
    problems = []
    for e in ENTITIES:
        have = existing.get(e.target_table)
        if have is None:
            continue
        want = {"id": "uuid", "metadata": "jsonb"} | {c.target: c.target_type for c in e.columns}
        differing = [f"{name} ({'missing' if name not in have else have[name] + ', expected ' + kind})"
                     for name, kind in want.items() if have.get(name) != _canonical_type(kind)]
        if differing:
            problems.append(f"public.{e.target_table} already exists and is not the registry's {e.name} table: "
                            f"{', '.join(differing[:6])}{' ...' if len(differing) > 6 else ''}")
    return problems


def _canonical_type(kind: str) -> str:
    return {"timestamptz": "timestamp with time zone"}.get(kind, kind)


def apply_migrations(conninfo: str, directory: Path = MIGRATIONS_DIR, *,
                     timeout_ms: int = DEFAULT_TIMEOUT_MS) -> list[str]:
    """Apply the migration files not yet applied; return the versions applied now.

    The history is ``migration_control.schema_migrations`` (version, name, checksum): a file edited
    after it was applied is refused. The Supabase CLI's own history
    (``supabase_migrations.schema_migrations``) is left alone: rows of ours there would be versions
    missing from the project's own ``supabase/migrations``, and ``supabase db push`` refuses to run
    until they are repaired away. One transaction under a transaction-level advisory lock:
    concurrent set-ups wait for each other, the lock cannot outlive the transaction (a session
    lock would stay on whichever server connection a transaction pooler gave it), and a failing
    file leaves nothing applied. ``timeout_ms`` (MIGRATION_TIMEOUT) bounds every statement."""
    files = sorted(directory.glob("*.sql"))
    if not files:
        raise FileNotFoundError(f"no migration files in {directory}")
    applied_now = []
    with connect(conninfo) as conn:
        set_statement_timeout(conn, timeout_ms)
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK])
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(CONTROL_SCHEMA)))
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (version text PRIMARY KEY, name text, checksum text, "
                             "applied_at timestamptz DEFAULT now())").format(HISTORY))
        _adopt_old_history(conn)
        done = dict(conn.execute(sql.SQL("SELECT version, checksum FROM {}").format(HISTORY)).fetchall())
        if _TABLE_CREATED_BY not in done and (problems := foreign_shape_problems(conn)):
            raise SetupError("cannot set up the target: " + "; ".join(problems) + ". Ways out: rename or move that "
                             "table (ALTER TABLE public.<name> RENAME TO ..., or SET SCHEMA), or migrate into a "
                             "database without it; nothing was changed")
        others_before = _others_privileges(conn)
        for path in files:
            version, _, name = path.stem.partition("_")
            text = path.read_text()
            if version in done:
                if done[version] and done[version] != _checksum(text):
                    raise MigrationDrift(f"migration {path.name} changed after it was applied")
                continue
            if "CREATE ROLE" in text and (problem := _roles_problem(conn, ROLES)):
                raise SetupError(f"cannot apply {path.name}: {problem}")
            conn.execute(text)  # the file is static, reviewed SQL: no parameters
            conn.execute(sql.SQL("INSERT INTO {} (version, name, checksum) VALUES (%s, %s, %s)").format(HISTORY),
                         [version, name, _checksum(text)])
            applied_now.append(version)
        _keep_others_privileges(conn, others_before)
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m migration_assets.target_schema")
    p.add_argument("--write", action="store_true", help="regenerate supabase/migrations from the registry")
    p.add_argument("--apply", action="store_true", help="apply pending migrations to the target database")
    a = p.parse_args(argv)
    if a.write:
        for path in write_migrations():
            print(f"wrote {path.relative_to(PROJECT_DIR)}")
    if a.apply:
        from .config import resolve_databases

        print("applied:", apply_migrations(resolve_databases().target.conninfo()) or "nothing (up to date)")


if __name__ == "__main__":
    main()
