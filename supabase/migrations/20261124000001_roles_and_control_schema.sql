-- Supabase roles (present on a Supabase project, created here on a plain PostgreSQL),
-- the migration_control schema, and the legacy-id UUID function used by the checks.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
    CREATE ROLE "anon" NOLOGIN NOINHERIT;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
    CREATE ROLE "authenticated" NOLOGIN NOINHERIT;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN
    CREATE ROLE "service_role" NOLOGIN NOINHERIT BYPASSRLS;
  END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS migration_control;

-- RFC 4122 version-3 UUID of (entity, legacy id) in namespace 'migration_assets': equal to Python's
-- uuid.uuid3(uuid.UUID(bytes=b'migration_assets'), entity || ':' || legacy_id).
CREATE OR REPLACE FUNCTION migration_control.legacy_uuid(entity text, legacy_id bigint)
RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $fn$
  SELECT (left(h, 12) || '3' || substr(h, 14, 3)
          || translate(substr(h, 17, 1), '0123456789abcdef', '89ab89ab89ab89ab') || right(h, 15))::uuid
  FROM (SELECT md5('migration_assets' || entity || ':' || legacy_id::text) AS h) s
$fn$;
