"""The Supabase target schema: ordered SQL migration files, generated from the registry, applied
idempotently.

    python -m migration_assets.target_schema --write     # regenerate supabase/migrations/*.sql
    python -m migration_assets.target_schema --apply     # apply what is not applied yet

The files under ``supabase/migrations`` are committed (reviewable, usable by ``supabase db push``)
and a unit test keeps them equal to what the registry generates; migrations.py applies them. The
statements themselves are idempotent (IF NOT EXISTS, guarded role creation), so a database whose
schema came from ``supabase db push`` of these same files, or was set up by hand, converges.

Nothing here needs an extension: UUIDs come from the loader (RFC 4122 v3 via md5, built in).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .config import PROJECT_DIR
from .engine.names import CONTROL_SCHEMA
from .registry import ENTITIES, Entity, topological_order
from .transforms import EMAIL_REGEX, NAMESPACE_BYTES, Kind

MIGRATIONS_DIR = PROJECT_DIR / "supabase" / "migrations"
ROLES = ("anon", "authenticated", "service_role")


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
        "20261206000010_supabase_advisors.sql": f"""-- What Supabase's advisors (supabase db advisors) ask of the project's own objects: the key
-- function runs with a fixed search_path (function_search_path_mutable), so nothing created in a
-- schema on a caller's path can stand in for what it calls, and only the project executes it (the
-- loads compute the same expression inline: engine/names.py); every table has a primary key
-- (no_primary_key). Access to the registry's tables is applied by setup (access.py).
ALTER FUNCTION {CONTROL_SCHEMA}.legacy_uuid(text, bigint) SET search_path = '';
REVOKE EXECUTE ON FUNCTION {CONTROL_SCHEMA}.legacy_uuid(text, bigint) FROM PUBLIC;
ALTER TABLE {CONTROL_SCHEMA}.slice_rejects ADD COLUMN IF NOT EXISTS id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;
""",
        "20261207000011_cutovers.sql": f"""-- The cutover (migration-assets cutover, cutover.py): when the target became the application's, by
-- which run, what its final refresh changed and how long writes had to be frozen. Once a row is
-- here, loads refuse to run (MIGRATION_AFTER_CUTOVER overrides).
CREATE TABLE IF NOT EXISTS {CONTROL_SCHEMA}.cutovers (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  run_id text NOT NULL,
  refresh_started_at timestamptz NOT NULL,
  cut_over_at timestamptz NOT NULL DEFAULT now(),
  refresh_seconds numeric NOT NULL,
  cutover_seconds numeric NOT NULL,
  inserted bigint NOT NULL,
  updated bigint NOT NULL,
  deleted bigint NOT NULL,
  quarantined bigint NOT NULL,
  app_ready text[] NOT NULL
);
""",
    }


CUTOVER_DIR = PROJECT_DIR / "supabase" / "cutover"


def app_ready_sql() -> str:
    """The app-ready migration, applied at cutover only (cutover.py): what an application's first
    writes need, and nothing that changes a migrated value. ``id`` defaults to
    ``gen_random_uuid()`` (built into PostgreSQL 13+), ``created_at`` and the change column to
    ``now()`` (a ``date`` column to ``current_date``), and a BEFORE UPDATE trigger sets the change
    column on every update that leaves ``metadata`` as it was (the application's; a load rewrites
    the metadata and keeps the legacy timestamp). During the migration a trigger that stamped
    every update would rewrite the legacy timestamps on every merge and content_checksum would
    fail."""
    stamps = ("created_at", "created_on")
    lines = [f"""-- Applied by migration-assets cutover, never by setup: defaults for the application's inserts and
-- an updated_at trigger. Nothing here rewrites a migrated value.

-- Sets the column named by the trigger's argument to now() on every update of the application.
-- A load (allowed after cutover by MIGRATION_AFTER_CUTOVER only) writes a legacy row's own
-- values, its change column included, and always rewrites the row's metadata (source hash,
-- recoveries): such an update keeps its values. A fixed, empty search_path (what Supabase's
-- advisors ask of every function): everything it calls is in pg_catalog. Triggers run it
-- whoever updates; nobody calls it directly.
CREATE OR REPLACE FUNCTION {CONTROL_SCHEMA}.set_updated_at() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $fn$
BEGIN
  IF NEW.metadata IS NOT DISTINCT FROM OLD.metadata THEN
    NEW := jsonb_populate_record(NEW, jsonb_build_object(TG_ARGV[0], now()));
  END IF;
  RETURN NEW;
END
$fn$;
REVOKE EXECUTE ON FUNCTION {CONTROL_SCHEMA}.set_updated_at() FROM PUBLIC;
"""]
    for e in topological_order():
        t = f"public.{_q(e.target_table)}"
        parts = [f"ALTER COLUMN id SET DEFAULT gen_random_uuid()"]
        for c in e.columns:
            if c.target in stamps or c.target == e.change_column:
                now = "current_date" if c.target_type == "date" else "now()"
                parts.append(f"ALTER COLUMN {_q(c.target)} SET DEFAULT {now}")
        lines.append(f"ALTER TABLE {t}\n  " + ",\n  ".join(parts) + ";")
        change = e.column(e.change_column)
        if change.target_type == "timestamptz":
            lines.append(f"CREATE OR REPLACE TRIGGER ma_set_{change.target} BEFORE UPDATE ON {t} FOR EACH ROW "
                         f"EXECUTE FUNCTION {CONTROL_SCHEMA}.set_updated_at({_lit(change.target)});")
    return "\n".join(lines) + "\n"


def cutover_files() -> dict[str, str]:
    """File name -> SQL text of ``supabase/cutover``, applied by ``migration-assets cutover``."""
    return {"20261207000001_app_ready.sql": app_ready_sql()}


def write_migrations(directory: Path = MIGRATIONS_DIR, cutover_directory: Path = CUTOVER_DIR) -> list[Path]:
    written = []
    for folder, files in ((directory, migration_files()), (cutover_directory, cutover_files())):
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            path = folder / name
            path.write_text(text)
            written.append(path)
    return written


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

        from .migrations import apply_migrations

        print("applied:", apply_migrations(resolve_databases().target.conninfo()) or "nothing (up to date)")


if __name__ == "__main__":
    main()
