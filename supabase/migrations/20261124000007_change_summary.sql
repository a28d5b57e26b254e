-- The per-bucket change summary a full-mode load leaves behind (bucket of 1,024 legacy ids,
-- rows, sum of the rows' source hashes modulo 2^64): what target + open quarantine hold after
-- that load, written in its transaction. The next full-mode load compares the legacy table
-- with it instead of re-reading every target row's metadata; NULL after a differential load.
ALTER TABLE migration_control.watermarks ADD COLUMN IF NOT EXISTS summary_buckets bigint[];
ALTER TABLE migration_control.watermarks ADD COLUMN IF NOT EXISTS summary_rows bigint[];
ALTER TABLE migration_control.watermarks ADD COLUMN IF NOT EXISTS summary_hashes numeric[];
