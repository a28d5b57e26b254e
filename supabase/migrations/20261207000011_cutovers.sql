-- The cutover (migration-assets cutover, cutover.py): when the target became the application's, by
-- which run, what its final refresh changed and how long writes had to be frozen. Once a row is
-- here, loads refuse to run (MIGRATION_AFTER_CUTOVER overrides).
CREATE TABLE IF NOT EXISTS migration_control.cutovers (
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
