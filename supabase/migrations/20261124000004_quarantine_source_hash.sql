-- Hash of the raw legacy row each quarantine row came from: lets a re-run skip unchanged rows.
ALTER TABLE migration_control.quarantine ADD COLUMN IF NOT EXISTS source_hash bigint;
