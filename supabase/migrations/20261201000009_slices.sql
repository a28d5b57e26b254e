-- A large empty table loaded in id-range slices, each its own step (engine/slices.py): the
-- plan and the keys its first step dropped (rebuilt by its last step), one row per slice (which
-- run and which worker loaded it, when), and the rows the slices rejected until the last step
-- quarantines them. A plan stays after its table is finished, as the record of its slices.
CREATE TABLE IF NOT EXISTS migration_control.slice_loads (
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
CREATE TABLE IF NOT EXISTS migration_control.slices (
  entity text NOT NULL REFERENCES migration_control.slice_loads ON DELETE CASCADE,
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
CREATE TABLE IF NOT EXISTS migration_control.slice_rejects (
  entity text NOT NULL,
  slice integer NOT NULL,
  legacy_id bigint NOT NULL,
  reason text NOT NULL,
  detail text,
  raw jsonb,
  source_hash bigint,
  FOREIGN KEY (entity, slice) REFERENCES migration_control.slices ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS slice_rejects_entity_idx ON migration_control.slice_rejects (entity, slice);
