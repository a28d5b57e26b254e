-- Audit trail, quarantine and watermarks of the migration.

CREATE TABLE IF NOT EXISTS migration_control.migration_runs (
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
  details jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS migration_runs_entity_idx ON migration_control.migration_runs (entity, started_at DESC);
CREATE INDEX IF NOT EXISTS migration_runs_run_idx ON migration_control.migration_runs (run_id);

CREATE TABLE IF NOT EXISTS migration_control.quarantine (
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
CREATE INDEX IF NOT EXISTS quarantine_open_idx ON migration_control.quarantine (entity, reason) WHERE NOT resolved;

CREATE TABLE IF NOT EXISTS migration_control.watermarks (
  entity text PRIMARY KEY,
  change_hwm timestamptz,
  max_legacy_id bigint,
  legacy_rows bigint,
  run_id text,
  updated_at timestamptz NOT NULL DEFAULT now()
);
