"""A target shaped like a Supabase project, reached over TLS as ``postgres`` (not a superuser):
its roles (``supabase_admin`` the superuser owning the extensions, ``anon``, ``authenticated``,
``service_role``, ``authenticator``), its ``auth``, ``storage`` and ``extensions`` schemas, and
the default privileges that give the API roles every new table in ``public``. On it: setup,
migrate, refresh and cutover; and a team's ``supabase db push`` of the migration files followed
by setup and migrate."""

from __future__ import annotations

import shutil
import subprocess

import psycopg
import pytest

from migration_assets import cli
from migration_assets.registry import ENTITIES
from migration_assets.simulator import generate, mutate
from migration_assets.target_schema import MIGRATIONS_DIR

from . import servers
from .conftest import query
from .test_access import _supabase_cli
from .test_keys import CATALOG, TABLES
from .test_operator import _isolated

# Supabase's roles (the postgres role: LOGIN CREATEROLE CREATEDB REPLICATION BYPASSRLS, not a superuser)
CLUSTER = """
CREATE ROLE postgres LOGIN CREATEROLE CREATEDB REPLICATION BYPASSRLS;
CREATE ROLE anon NOLOGIN NOINHERIT;
CREATE ROLE authenticated NOLOGIN NOINHERIT;
CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
CREATE ROLE authenticator LOGIN NOINHERIT;
CREATE ROLE supabase_auth_admin LOGIN NOINHERIT CREATEROLE;
GRANT anon, authenticated, service_role TO authenticator;
GRANT anon, authenticated, service_role TO postgres;
"""

# a database as a Supabase project's: the schemas and the grants (run by supabase_admin)
DATABASE = """
GRANT ALL ON DATABASE {db} TO postgres;
CREATE SCHEMA extensions;
CREATE EXTENSION pgcrypto WITH SCHEMA extensions;
CREATE EXTENSION "uuid-ossp" WITH SCHEMA extensions;
GRANT USAGE ON SCHEMA extensions TO postgres, anon, authenticated, service_role;
CREATE SCHEMA auth AUTHORIZATION supabase_auth_admin;
CREATE TABLE auth.users (
  instance_id uuid, id uuid PRIMARY KEY, aud varchar(255), role varchar(255), email varchar(255),
  encrypted_password varchar(255), email_confirmed_at timestamptz, raw_app_meta_data jsonb,
  raw_user_meta_data jsonb, created_at timestamptz, updated_at timestamptz);
ALTER TABLE auth.users OWNER TO supabase_auth_admin;
GRANT ALL ON ALL TABLES IN SCHEMA auth TO postgres;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS
  $$ SELECT (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid $$;
GRANT USAGE ON SCHEMA auth TO postgres, anon, authenticated, service_role;
CREATE SCHEMA storage;
GRANT ALL ON SCHEMA public TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
"""


@pytest.fixture(scope="module")
def supabase():
    if (why := servers.available()) is not None:
        pytest.skip(why)
    server = servers.TempServer(superuser="supabase_admin")
    try:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute(CLUSTER)
            conn.execute("CREATE DATABASE push")
            conn.execute("CREATE DATABASE auth")
            conn.execute("CREATE DATABASE clinic")
        for db in ("postgres", "push", "auth", "clinic"):
            with psycopg.connect(server.url(db), autocommit=True) as conn:
                conn.execute(DATABASE.format(db=db))
        yield server
    finally:
        server.stop()


@pytest.fixture()
def private_legacy(databases):
    legacy = databases.new("legacy_shaped")
    generate(legacy, scale=0.005, seed=97, log=lambda *_: None)
    return legacy


def test_setup_migrate_refresh_and_cutover_as_postgres_over_tls(supabase, private_legacy, monkeypatch, tmp_path,
                                                                 capsys):
    target = supabase.url("postgres", user="postgres")
    with psycopg.connect(target) as conn:  # as Supabase's postgres: no superuser, over TLS
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(supabase.url("postgres", user="postgres", sslmode="disable"))
    _isolated(monkeypatch, tmp_path, SOURCE_DB_URL=private_legacy, TARGET_DB_URL=target,
              QUARANTINE_MAX_PERCENT="100")  # a legacy database of 0.5%: the budget is not this test's
    assert cli.main(["setup"]) == 0
    # the project's default privileges would hand every new table to the API roles: setup takes them back
    grants = query(target, "SELECT count(*) FROM information_schema.role_table_grants WHERE table_schema = 'public' "
                           "AND grantee IN ('anon', 'authenticated')")
    assert grants == [(0,)]
    assert cli.main(["migrate"]) == 0
    mutate(private_legacy, 0.02, 1, log=lambda *_: None)
    assert cli.main(["refresh"]) == 0
    assert "remaining difference: 0 rows" in capsys.readouterr().out
    assert cli.main(["cutover"]) == 0
    assert "the target was cut over at" in capsys.readouterr().out
    with psycopg.connect(target) as conn:
        conn.execute("SET ROLE service_role")
        (new_id,) = conn.execute("INSERT INTO public.offices (name, code, is_active) VALUES ('Cut over', 'CUT-1', "
                                 "true) RETURNING id").fetchone()
    assert new_id is not None
    assert cli.main(["refresh"]) == 2
    assert "the target was cut over at" in capsys.readouterr().err


def test_supabase_db_push_then_setup_and_migrate(supabase, private_legacy, monkeypatch, tmp_path, capsys):
    tool = _supabase_cli()
    if tool is None:
        pytest.skip("the Supabase CLI is not installed (npm i -E supabase@2.117.0; .ci/run installs it where npm "
                    "is): supabase db push was not run")
    project = tmp_path / "app"
    shutil.copytree(MIGRATIONS_DIR, project / "supabase" / "migrations")
    target = supabase.url("push", user="postgres")
    pushed = subprocess.run([tool, "db", "push", "--db-url", target, "--yes"], cwd=project, capture_output=True,
                            text=True, timeout=300)
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    versions = sorted(p.stem.partition("_")[0] for p in MIGRATIONS_DIR.glob("*.sql"))
    cli_history = query(target, "SELECT version FROM supabase_migrations.schema_migrations ORDER BY version")
    assert [v for (v,) in cli_history] == versions

    _isolated(monkeypatch, tmp_path, SOURCE_DB_URL=private_legacy, TARGET_DB_URL=target,
              QUARANTINE_MAX_PERCENT="100")
    assert cli.main(["setup"]) == 0  # records the files the CLI applied in its own history, changes nothing else
    assert query(target, "SELECT count(*) FROM migration_control.schema_migrations") == [(len(versions),)]
    assert query(target, "SELECT version FROM supabase_migrations.schema_migrations ORDER BY version") == cli_history
    assert cli.main(["migrate"]) == 0
    loaded = query(target, "SELECT count(DISTINCT entity) FROM migration_control.migration_runs "
                           "WHERE status = 'COMPLETED'")
    assert loaded == [(len(ENTITIES),)]


# what a Supabase app keeps in public: the quickstart's profiles, a server-only table, a view
APP_OBJECTS = """
CREATE TABLE public.profiles (id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE, updated_at timestamptz,
  username text UNIQUE, full_name text, avatar_url text, website text);
ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public.profiles IS 'the app''s profiles';
CREATE POLICY "Public profiles are viewable by everyone." ON public.profiles FOR SELECT USING (true);
CREATE TABLE public.server_secrets (id int PRIMARY KEY, api_key text);
REVOKE ALL ON public.server_secrets FROM anon, authenticated;
CREATE VIEW public.profile_names AS SELECT id, username FROM public.profiles;
"""

_PUBLIC_STATE = """
    SELECT c.relname, c.relkind, obj_description(c.oid, 'pg_class'),
           (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
           (SELECT array_agg(g ORDER BY g) FROM (SELECT x.grantee::regrole::text || ' ' || x.privilege_type AS g
            FROM aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) x) s),
           (SELECT array_agg(polname::text ORDER BY polname) FROM pg_policy WHERE polrelid = c.oid),
           (SELECT array_agg(conname::text ORDER BY conname) FROM pg_constraint WHERE conrelid = c.oid),
           (SELECT array_agg(tgname::text ORDER BY tgname) FROM pg_trigger WHERE tgrelid = c.oid)
    FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1"""


def test_a_schema_of_the_projects_own_leaves_the_apps_public_tables_alone(supabase, private_legacy, monkeypatch,
                                                                          tmp_path, capsys):
    """MIGRATION_TARGET_SCHEMA=clinic on a project whose public holds the quickstart's profiles:
    setup, migrate, status, refresh, link-auth and cutover all work in clinic, and nothing in
    public changes (the default public would refuse that profiles table, see test_user_objects)."""
    target = supabase.url("clinic", user="postgres")
    with psycopg.connect(target) as conn:
        conn.execute(APP_OBJECTS)
    public_before = query(target, _PUBLIC_STATE)
    assert [r[0] for r in public_before] == ["profile_names", "profiles", "profiles_pkey",
                                             "profiles_username_key", "server_secrets", "server_secrets_pkey"]
    _isolated(monkeypatch, tmp_path, SOURCE_DB_URL=private_legacy, TARGET_DB_URL=target,
              MIGRATION_TARGET_SCHEMA="clinic", QUARANTINE_MAX_PERCENT="100")
    assert cli.main(["setup"]) == 0
    assert cli.main(["migrate"]) == 0
    assert query(target, "SELECT count(*) FROM pg_class WHERE relnamespace = 'clinic'::regnamespace "
                         "AND relkind = 'r'") == [(len(ENTITIES),)]
    capsys.readouterr()
    assert cli.main(["status"]) == 0  # every ERROR check passed, legacy = target + quarantine, in clinic
    assert "profiles" in capsys.readouterr().out
    mutate(private_legacy, 0.02, 1, log=lambda *_: None)
    assert cli.main(["refresh"]) == 0
    assert "remaining difference: 0 rows" in capsys.readouterr().out
    assert cli.main(["link-auth"]) == 0
    assert query(target, "SELECT count(*) > 0 FROM clinic.profiles WHERE auth_user_id IS NOT NULL") == [(True,)]
    assert cli.main(["cutover"]) == 0
    with psycopg.connect(target) as conn:
        conn.execute("SET ROLE service_role")
        (new_id,) = conn.execute("INSERT INTO clinic.offices (name, code, is_active) VALUES ('Cut over', 'CUT-1', "
                                 "true) RETURNING id").fetchone()
        assert new_id is not None
        # the declared access, in clinic: the API roles get what access.py says (service role only)
        assert conn.execute("SELECT has_table_privilege('authenticated', 'clinic.offices', 'SELECT'), "
                            "has_table_privilege('service_role', 'clinic.offices', 'DELETE')").fetchone() == (False, True)
    assert query(target, _PUBLIC_STATE) == public_before

    # the tables are in clinic: a setup told public refuses, naming where they are
    monkeypatch.setenv("MIGRATION_TARGET_SCHEMA", "public")
    capsys.readouterr()
    assert cli.main(["setup"]) == 2
    assert "the target's tables were set up in clinic, not in public" in capsys.readouterr().err
    assert query(target, _PUBLIC_STATE) == public_before


def test_link_auth_links_profiles_to_auth_users_idempotently_and_quarantines_what_it_cannot(
        supabase, private_legacy, monkeypatch, tmp_path, capsys):
    from migration_assets import access
    from migration_assets.access import Access
    from migration_assets.migrations import apply_migrations

    from .test_access import _as

    target = supabase.url("auth", user="postgres")
    _isolated(monkeypatch, tmp_path, SOURCE_DB_URL=private_legacy, TARGET_DB_URL=target,
              QUARANTINE_MAX_PERCENT="100")
    assert cli.main(["migrate"]) == 0
    with psycopg.connect(target) as conn:  # what the email recovery writes for an address it cannot repair
        conn.execute("UPDATE public.profiles SET email = 'user-' || (metadata->>'legacy_id') || '@invalid.example.com' "
                     "WHERE id IN (SELECT id FROM public.profiles ORDER BY id DESC LIMIT 3)")
    profiles = query(target, "SELECT id, email FROM public.profiles ORDER BY id")
    placeholders = sum(email.endswith("@invalid.example.com") for _, email in profiles)
    assert placeholders >= 3
    (first_id, first_email), (second_id, second_email) = [p for p in profiles if "@invalid." not in p[1]][:2]
    with psycopg.connect(target) as conn:  # an Auth user who signed up already, the email in capitals
        conn.execute("INSERT INTO auth.users (id, email, aud, role) VALUES (gen_random_uuid(), upper(%s), "
                     "'authenticated', 'authenticated')", [first_email])
    capsys.readouterr()
    assert cli.main(["link-auth"]) == 0
    valid = len(profiles) - placeholders
    assert f"profiles linked to Supabase Auth users: {valid:,} (1 matched to existing users now, {valid - 1:,} users " \
           f"created without a password); in quarantine: {placeholders:,}" in capsys.readouterr().out
    assert query(target, "SELECT count(*), count(*) FILTER (WHERE encrypted_password IS NULL) FROM auth.users") == \
        [(valid, valid)]
    assert query(target, "SELECT lower(u.email) = p.email FROM public.profiles p JOIN auth.users u "
                         "ON u.id = p.auth_user_id WHERE p.id = %s", [first_id]) == [(True,)]
    assert query(target, "SELECT reason, count(*) FROM migration_control.quarantine WHERE entity = "
                         "'profiles_auth_link' AND NOT resolved GROUP BY 1") == [("AUTH_EMAIL_INVALID", placeholders)]
    before = query(target, "SELECT id, auth_user_id FROM public.profiles ORDER BY id")
    assert cli.main(["link-auth"]) == 0  # idempotent
    assert query(target, "SELECT id, auth_user_id FROM public.profiles ORDER BY id") == before
    assert query(target, "SELECT count(*) FROM auth.users") == [(valid,)]

    # an email whose Auth user belongs to another profile: quarantined as taken
    with psycopg.connect(target) as conn:
        conn.execute("UPDATE public.profiles SET email = 'moved.' || email WHERE id = %s", [first_id])
        conn.execute("UPDATE public.profiles SET email = %s, auth_user_id = NULL WHERE id = %s",
                     [first_email, second_id])
    assert cli.main(["link-auth"]) == 0
    assert ("AUTH_EMAIL_TAKEN", 1) in query(target, "SELECT reason, count(*) FROM migration_control.quarantine "
                                                    "WHERE entity = 'profiles_auth_link' AND NOT resolved GROUP BY 1")
    # a policy on auth.uid(): a signed-in user reads their own profile, and only it
    (user_id,) = query(target, "SELECT auth_user_id FROM public.profiles WHERE id = %s", [first_id])[0]
    monkeypatch.setitem(access.ACCESS, "profiles", (
        Access("authenticated", ("SELECT",), using="auth_user_id = (select auth.uid())"),
        Access("service_role", ("SELECT", "INSERT", "UPDATE", "DELETE"))))
    apply_migrations(target)
    claims = {"role": "authenticated", "sub": str(user_id)}
    assert _as(target, "authenticated", "SELECT id FROM public.profiles", claims) == [(first_id,)]
    # deleting the Auth user keeps the profile, unlinked
    with psycopg.connect(target) as conn:
        conn.execute("DELETE FROM auth.users WHERE id = %s", [user_id])
    assert query(target, "SELECT auth_user_id FROM public.profiles WHERE id = %s", [first_id]) == [(None,)]
    assert cli.main(["report"]) == 0 and cli.main(["status"]) in (0, 1)


# PostgREST's documented finer-grained schema-cache watch (what a Supabase project runs): a
# NOTIFY pgrst for DDL on anything but temporary objects
PGRST_WATCH = """
CREATE FUNCTION extensions.pgrst_ddl_watch() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE cmd record;
BEGIN
  FOR cmd IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
    IF cmd.command_tag IN ('CREATE SCHEMA', 'ALTER SCHEMA', 'CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO',
                           'ALTER TABLE', 'CREATE VIEW', 'ALTER VIEW', 'CREATE FUNCTION', 'ALTER FUNCTION',
                           'CREATE TRIGGER', 'CREATE TYPE', 'ALTER TYPE', 'CREATE RULE', 'COMMENT')
       AND cmd.schema_name IS DISTINCT FROM 'pg_temp' THEN
      NOTIFY pgrst, 'reload schema';
    END IF;
  END LOOP;
END $$;
CREATE EVENT TRIGGER pgrst_ddl_watch ON ddl_command_end EXECUTE FUNCTION extensions.pgrst_ddl_watch();
"""


def _reloads(target: str, action) -> int:
    """The schema-cache reloads PostgREST would make while ``action`` runs (its NOTIFYs received)."""
    with psycopg.connect(target, autocommit=True) as listener:
        listener.execute("LISTEN pgrst")
        action()
        return sum(1 for _ in listener.notifies(timeout=1.0))


def test_postgrest_reloads_its_schema_twice_for_a_first_migration_and_never_on_a_refresh(
        supabase, private_legacy, monkeypatch, tmp_path):
    with psycopg.connect(supabase.url("postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE pgrst")
    with psycopg.connect(supabase.url("pgrst"), autocommit=True) as conn:
        conn.execute(DATABASE.format(db="pgrst") + PGRST_WATCH)
    target = supabase.url("pgrst", user="postgres")
    _isolated(monkeypatch, tmp_path, SOURCE_DB_URL=private_legacy, TARGET_DB_URL=target,
              QUARANTINE_MAX_PERCENT="100")
    assert _reloads(target, lambda: cli.main(["setup"])) == 1  # every file in one transaction
    as_set_up = query(target, CATALOG, {"t": TABLES})
    # the keys of every table set aside in one transaction, restored in one after the last table
    assert _reloads(target, lambda: cli.main(["migrate"])) == 2
    assert query(target, "SELECT count(*) FROM migration_control.migration_runs "
                         "WHERE load_path LIKE 'fast (keys set aside%'") == [(len(TABLES),)]
    assert query(target, CATALOG, {"t": TABLES}) == as_set_up
    mutate(private_legacy, 0.02, 1, log=lambda *_: None)
    assert _reloads(target, lambda: cli.main(["refresh"])) == 0  # a merge uses temporary tables only
