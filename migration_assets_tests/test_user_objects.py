"""A target that holds the user's own objects next to the migrated tables (Supabase teams add
views, tables, columns, triggers): no command changes what the project does not own, and none of
those objects stops a load."""

from __future__ import annotations

import psycopg
import pytest

from migration_assets import cli
from migration_assets.engine.commit import migrate_entity
from migration_assets.engine.options import LoadOptions
from migration_assets.simulator import generate, mutate
from migration_assets.migrations import apply_migrations

from .conftest import query
from .test_operator import _isolated

USER_OBJECTS = [
    "CREATE TABLE public.server_secrets (id int PRIMARY KEY, api_key text)",
    "REVOKE ALL ON public.server_secrets FROM PUBLIC",
    "CREATE TABLE public.app_notes (id int, body text)",
    "GRANT SELECT ON public.app_notes TO PUBLIC",
    "COMMENT ON TABLE public.app_notes IS 'the app''s own notes'",
    "CREATE VIEW public.note_count AS SELECT count(*) AS n FROM public.app_notes",
]


def _privileges(conninfo: str) -> list[tuple]:
    return query(conninfo, """
        SELECT c.relname, a.grantee::regrole::text, a.privilege_type, obj_description(c.oid, 'pg_class')
        FROM pg_class c CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
        WHERE c.relname IN ('server_secrets', 'app_notes', 'note_count') ORDER BY 1, 2, 3""")


def test_setup_grants_and_comments_nothing_on_the_users_own_tables_and_views(databases):
    target = databases.new("target_user_objects")
    with psycopg.connect(target) as conn:
        for statement in ["DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN "
                          "CREATE ROLE authenticated NOLOGIN; END IF; END $$"] + USER_OBJECTS:
            conn.execute(statement)
    before = _privileges(target)
    assert not [p for p in before if p[0] == "server_secrets" and p[1] in ("authenticated", "anon", "service_role")]
    assert apply_migrations(target)
    assert _privileges(target) == before
    # the registry's own tables got theirs: what access.py declares (by default the service role only)
    assert query(target, "SELECT has_table_privilege('authenticated', 'public.profiles', 'SELECT'), "
                         "has_table_privilege('service_role', 'public.profiles', 'DELETE')") == [(False, True)]


def test_setup_refuses_a_quickstart_profiles_table_and_changes_nothing(databases, monkeypatch, tmp_path, capsys,
                                                                       legacy):
    """Supabase's quickstart creates public.profiles keyed to auth.users: setup must not adopt it."""
    target = databases.new("target_quickstart")
    quickstart = ("CREATE TABLE public.profiles (id uuid PRIMARY KEY, updated_at timestamptz, username text UNIQUE, "
                  "full_name text, avatar_url text, website text)")
    with psycopg.connect(target) as conn:
        conn.execute(quickstart)
        conn.execute("COMMENT ON TABLE public.profiles IS 'the app''s profiles'")
    _isolated(monkeypatch, tmp_path, SOURCE_DB_URL=legacy, TARGET_DB_URL=target)
    assert cli.main(["setup"]) == 2
    err = capsys.readouterr().err
    assert "public.profiles already exists and is not the registry's profiles table" in err
    assert "email (missing)" in err and "rename or move that table" in err
    assert query(target, "SELECT obj_description('public.profiles'::regclass, 'pg_class'), "
                         "to_regclass('public.offices'), to_regclass('migration_control.schema_migrations')") \
        == [("the app's profiles", None, None)]


def _content(conninfo: str, table: str, columns: list[str]) -> str:
    from psycopg import sql

    return query(conninfo, sql.SQL("SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) FROM (SELECT {} FROM {}) t")
                 .format(sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier("public", table)))[0][0]


def test_a_users_views_and_identity_and_generated_columns_never_stop_a_load_or_a_refresh(databases):
    """A view grouping by the primary key (PostgreSQL ties it to the key) used to make the fast
    path's key drop fail on every run; an identity column a user added broke every merge (the
    staging table copied its NOT NULL). Both tables now load, refresh, and equal a target without
    the user's objects, and the objects keep working."""
    from migration_assets.registry import entity

    legacy = databases.new("legacy_user_views")
    generate(legacy, scale=0.002, seed=47, log=lambda *_: None)
    target, reference = databases.new("target_user_views"), databases.new("target_user_views_ref")
    for db in (target, reference):
        apply_migrations(db)
    with psycopg.connect(target) as conn:
        conn.execute("CREATE VIEW public.office_names AS SELECT o.id, o.name, count(*) AS n FROM public.offices o "
                     "GROUP BY o.id")
        conn.execute("CREATE MATERIALIZED VIEW public.office_codes AS SELECT o.id, o.code, count(*) AS n "
                     "FROM public.offices o GROUP BY o.id WITH NO DATA")
        conn.execute("ALTER TABLE public.offices ADD COLUMN app_seq bigint GENERATED ALWAYS AS IDENTITY")
        conn.execute("ALTER TABLE public.offices ADD COLUMN app_label text GENERATED ALWAYS AS (upper(code)) STORED")
    columns = ["id"] + [c.target for c in entity("offices").columns] + ["metadata"]
    for round_no in (0, 1, 2):
        if round_no:
            mutate(legacy, fraction=0.2, round_no=round_no, entities=["offices"], log=lambda *_: None)
        opts = LoadOptions(run_id=f"user-objects-{round_no}", mode="differential" if round_no == 2 else "full")
        result = migrate_entity(legacy, target, "offices", opts)
        migrate_entity(legacy, reference, "offices", opts)
        if round_no == 0:
            assert result.load_path == ("merge (fast path not possible: its keys are used by materialized view "
                                        "public.office_codes, view public.office_names)")
        else:
            assert result.inserted + result.updated > 0
        assert result.remaining_difference == 0
        assert _content(target, "offices", columns) == _content(reference, "offices", columns)
    with psycopg.connect(target) as conn:
        conn.execute("REFRESH MATERIALIZED VIEW public.office_codes")
        rows, with_seq, labels_right, viewed, materialized = conn.execute(
            "SELECT count(*), count(app_seq), count(*) FILTER (WHERE app_label = upper(code)), "
            "(SELECT count(*) FROM public.office_names), (SELECT count(*) FROM public.office_codes) "
            "FROM public.offices").fetchone()
    assert rows > 0 and rows == with_seq == labels_right == viewed == materialized


def test_a_legacy_delete_blocked_by_the_users_foreign_key_names_it_as_the_users_and_stores_no_values(databases):
    from migration_assets.errors import classify

    legacy = databases.new("legacy_user_fk")
    generate(legacy, scale=0.002, seed=53, log=lambda *_: None)
    target = databases.new("target_user_fk")
    apply_migrations(target)
    migrate_entity(legacy, target, "offices", LoadOptions(run_id="user-fk-1"))
    (office_id,) = query(target, "SELECT id FROM public.offices WHERE metadata->>'legacy_id' = "
                                 "(SELECT min((metadata->>'legacy_id')::bigint)::text FROM public.offices)")[0]
    with psycopg.connect(target) as conn:
        conn.execute("CREATE TABLE public.app_visits (office_id uuid REFERENCES public.offices (id))")
        conn.execute("INSERT INTO public.app_visits VALUES (%s)", [office_id])
    with psycopg.connect(legacy) as conn:
        conn.execute("DELETE FROM tbl_office WHERE office_id = (SELECT min(office_id) FROM tbl_office)")
    with pytest.raises(psycopg.errors.ForeignKeyViolation) as err:
        migrate_entity(legacy, target, "offices", LoadOptions(run_id="user-fk-2"))
    kind = classify(err.value)
    assert (kind.name, kind.transient) == ("FOREIGN_KEY", False)
    assert kind.recovery.startswith("your own foreign key app_visits_office_id_fkey on public.app_visits (not the "
                                    "registry's) still references a row the legacy side deleted")
    assert str(office_id) in str(err.value) and str(office_id) not in kind.message
    assert "Key (id)=(values not shown) is still referenced from table \"app_visits\"" in kind.message


def test_preflight_names_a_users_trigger_on_a_migrated_table_and_what_it_does_to_refreshes(databases, legacy):
    from migration_assets.preflight import validate

    target = databases.new("target_user_trigger")
    apply_migrations(target)
    assert validate(legacy, target) == []
    with psycopg.connect(target) as conn:
        conn.execute("CREATE FUNCTION public.app_touch() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN NEW.name := NEW.name || ' (edited)'; RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER app_touch BEFORE UPDATE ON public.offices FOR EACH ROW "
                     "EXECUTE FUNCTION public.app_touch()")
    assert validate(legacy, target) == [
        "trigger app_touch on public.offices (TRIGGER app_touch BEFORE UPDATE) is not the project's: it fires on "
        "every row a load or refresh writes; a trigger that changes the row (such as moddatetime on updated_at) "
        "makes the table differ from its legacy rows and fails content_checksum. Such triggers belong after "
        "cutover (docs/supabase.md, 'Your own objects in public')"]
