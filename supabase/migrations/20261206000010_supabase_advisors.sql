-- What Supabase's advisors (supabase db advisors) ask of the project's own objects: the key
-- function runs with a fixed search_path (function_search_path_mutable), so nothing created in a
-- schema on a caller's path can stand in for what it calls, and only the project executes it (the
-- loads compute the same expression inline: engine/names.py); every table has a primary key
-- (no_primary_key). Access to the registry's tables is applied by setup (access.py).
ALTER FUNCTION migration_control.legacy_uuid(text, bigint) SET search_path = '';
REVOKE EXECUTE ON FUNCTION migration_control.legacy_uuid(text, bigint) FROM PUBLIC;
ALTER TABLE migration_control.slice_rejects ADD COLUMN IF NOT EXISTS id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;
