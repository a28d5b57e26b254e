"""Access for the app, declared not guessed (access.py): after setup each API role reads and
writes exactly what the specification gives it, through row level security, as PostgREST
would run its queries (SET ROLE with request.jwt.claims), the control schema is closed to them,
and Supabase's own advisors find nothing to warn about."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
from psycopg import errors as pgerr

from migration_assets import access
from migration_assets.access import Access
from migration_assets.engine.commit import migrate_entity
from migration_assets.engine.options import LoadOptions
from migration_assets.migrations import apply_migrations
from migration_assets.simulator import generate

from .conftest import query

TABLES = ("offices", "profiles")


@pytest.fixture(scope="module")
def migrated(databases):
    legacy = databases.new("legacy_access")
    generate(legacy, scale=0.005, seed=59, log=lambda *_: None)
    target = databases.new("target_access")
    apply_migrations(target)
    for name in TABLES:
        migrate_entity(legacy, target, name, LoadOptions(run_id="access"))
    return legacy, target


def _as(target: str, role: str, statement: str, claims: dict | None = None):
    """``statement`` run as ``role`` the way PostgREST runs a request (role and JWT claims set
    for the transaction); the rows, or the error's class name."""
    with psycopg.connect(target) as conn:
        conn.execute("SELECT set_config('request.jwt.claims', %s, true)", [json.dumps(claims or {"role": role})])
        conn.execute(f"SET LOCAL ROLE {role}")
        try:
            return conn.execute(statement).fetchall()
        except psycopg.Error as exc:
            return type(exc).__name__


def test_by_default_only_the_service_role_reaches_the_tables_and_no_api_role_the_control_schema(migrated):
    _, target = migrated
    (offices,) = query(target, "SELECT count(*) FROM public.offices")[0]
    assert offices > 0
    assert _as(target, "service_role", "SELECT count(*) FROM public.offices") == [(offices,)]
    for role in ("anon", "authenticated"):
        assert _as(target, role, "SELECT count(*) FROM public.offices") == "InsufficientPrivilege", role
        for statement in ("SELECT count(*) FROM migration_control.quarantine",
                          "SELECT migration_control.legacy_uuid('offices', 1)"):
            assert _as(target, role, statement) == "InsufficientPrivilege", (role, statement)
    assert _as(target, "service_role", "SELECT count(*) FROM migration_control.quarantine") == "InsufficientPrivilege"
    policies = query(target, "SELECT tablename, policyname, roles::text, cmd FROM pg_policies "
                             "WHERE schemaname = 'public' AND tablename = 'offices' ORDER BY 2")
    assert policies == [("offices", f"ma_service_role_{c}", "{service_role}", c.upper())
                        for c in ("delete", "insert", "select", "update")]
    assert query(target, "SELECT count(*) FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace "
                         "AND c.relkind = 'r' AND c.relrowsecurity AND NOT EXISTS "
                         "(SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid)") == [(0,)]


def test_a_declared_access_is_exactly_what_the_role_gets(migrated, monkeypatch):
    _, target = migrated
    with psycopg.connect(target) as conn:  # a policy of the team's own is never touched
        conn.execute("CREATE POLICY team_audit ON public.profiles FOR SELECT TO service_role USING (true)")
    monkeypatch.setitem(access.ACCESS, "offices", (
        Access("authenticated", ("SELECT", "UPDATE"), using="is_active", check="name <> ''"),
        Access("service_role", ("SELECT",))))
    apply_migrations(target)
    active = query(target, "SELECT count(*) FROM public.offices WHERE is_active")[0][0]
    assert 0 < active < query(target, "SELECT count(*) FROM public.offices")[0][0]
    claims = {"role": "authenticated", "sub": "5b9a0d1e-0000-4000-8000-000000000000"}
    assert _as(target, "authenticated", "SELECT count(*) FROM public.offices", claims) == [(active,)]
    updated = _as(target, "authenticated", "UPDATE public.offices SET name = name RETURNING id", claims)
    assert isinstance(updated, list) and len(updated) == active  # the rows it sees, no other
    assert _as(target, "authenticated", "UPDATE public.offices SET name = '' RETURNING id", claims) == \
        "InsufficientPrivilege"  # WITH CHECK refuses the new row
    assert _as(target, "authenticated", "DELETE FROM public.offices RETURNING id", claims) == "InsufficientPrivilege"
    assert _as(target, "anon", "SELECT count(*) FROM public.offices") == "InsufficientPrivilege"
    assert _as(target, "service_role", "DELETE FROM public.offices RETURNING id") == "InsufficientPrivilege"
    assert query(target, "SELECT policyname FROM pg_policies WHERE tablename = 'profiles' ORDER BY 1")[0] == (
        "ma_service_role_delete",)
    assert ("team_audit",) in query(target, "SELECT policyname FROM pg_policies WHERE tablename = 'profiles'")
    monkeypatch.delitem(access.ACCESS, "offices")
    apply_migrations(target)  # back to the default: nothing of the declared access is left
    assert _as(target, "authenticated", "SELECT count(*) FROM public.offices") == "InsufficientPrivilege"


def _supabase_cli() -> str | None:
    found = os.environ.get("SUPABASE_CLI") or shutil.which("supabase")
    cached = Path(os.environ.get("SUPABASE_CLI_DIR", "/tmp/migration-assets-supabase")) / "node_modules" / ".bin" / \
        "supabase"
    return found or (str(cached) if cached.exists() else None)


def advisor_findings(target: str, folder: Path) -> set[tuple[str, str]]:
    """(level, name) of what ``supabase db advisors`` (every type, every level) reports on
    ``target``; skips the test where the CLI is not installed."""
    cli = _supabase_cli()
    if cli is None:
        pytest.skip("the Supabase CLI is not installed (npm i -E supabase@2.117.0; .ci/run installs it where npm "
                    "is): its advisors were not run")
    params = psycopg.conninfo.conninfo_to_dict(target)
    url = (f"postgresql://{params['user']}@{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}/"
           f"{params['dbname']}?sslmode=disable")
    out = subprocess.run([cli, "db", "advisors", "--db-url", url, "--type", "all", "--level", "info", "-o", "json"],
                         capture_output=True, text=True, timeout=180, cwd=folder)  # it writes supabase/.temp
    assert out.returncode == 0, out.stderr[-2000:]
    return {(f.get("level"), f.get("name")) for f in json.loads(out.stdout or "[]")}


def test_supabase_advisors_find_nothing_to_warn_about(migrated, tmp_path):
    _, target = migrated
    names = advisor_findings(target, tmp_path)
    assert not [n for n in names if n[0] in ("WARN", "ERROR")], names
    assert ("INFO", "rls_enabled_no_policy") not in names and ("INFO", "no_primary_key") not in names, names
