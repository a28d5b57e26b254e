-- A first migration sets the keys of its empty tables aside in one transaction at its start and
-- builds them back in one transaction after its last table (engine/keys.py), so that Supabase's
-- PostgREST reloads its schema cache twice for the whole migration instead of once per table.
-- One row per primary key, unique constraint, index or foreign key set aside, until it is built
-- back; one row per run that set keys aside (when, how many, when they were restored).
CREATE TABLE IF NOT EXISTS migration_control.keys_set_aside (
  table_schema text NOT NULL,
  table_name text NOT NULL,
  name text NOT NULL,
  kind "char" NOT NULL CHECK (kind IN ('p', 'u', 'i', 'f')),
  definition text NOT NULL,
  index_definition text,
  run_id text NOT NULL,
  set_aside_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (table_schema, table_name, name)
);
CREATE TABLE IF NOT EXISTS migration_control.key_runs (
  run_id text PRIMARY KEY,
  set_aside integer NOT NULL DEFAULT 0,
  prepared_at timestamptz NOT NULL DEFAULT now(),
  restored integer,
  restored_at timestamptz
);
