-- The transform version a table's rows were loaded with (engine/source_sql.hash_salt: the
-- registry entry, the engine's version and the settings that change a converted value): a load
-- whose version differs re-reads the table in full mode instead of differentially
-- (engine/load.py), so a corrected transform reaches every row.
ALTER TABLE migration_control.watermarks ADD COLUMN IF NOT EXISTS transform_version bigint;
