-- Change capture by logical decoding (MIGRATION_CHANGE_SOURCE=logical, engine/changes.py): the
-- position in the legacy server's WAL that a table's last load read its changes up to, written
-- in the load's transaction; the slot is advanced to the lowest of them.
ALTER TABLE migration_control.watermarks ADD COLUMN IF NOT EXISTS logical_lsn pg_lsn;
