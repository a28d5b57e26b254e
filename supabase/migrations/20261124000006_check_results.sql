-- Asset check results, kept next to the audit trail for the reports and the status command.

CREATE TABLE IF NOT EXISTS migration_control.check_results (
  id bigserial PRIMARY KEY,
  run_id text NOT NULL,
  entity text NOT NULL,
  check_name text NOT NULL,
  passed boolean NOT NULL,
  severity text NOT NULL,
  description text,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  checked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS check_results_latest_idx ON migration_control.check_results (entity, check_name, id DESC);
