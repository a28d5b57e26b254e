-- A run stopped by a signal records the table it interrupted as CANCELED (its load was rolled
-- back and is not retried).
ALTER TABLE migration_control.migration_runs DROP CONSTRAINT IF EXISTS migration_runs_status_check;
ALTER TABLE migration_control.migration_runs ADD CONSTRAINT migration_runs_status_check
  CHECK (status IN ('COMPLETED', 'SKIPPED', 'FAILED', 'ALREADY_MIGRATED', 'CANCELED'));
