"""The access specification's statements (access.py), rendered without a database."""

from __future__ import annotations

import hashlib

import pytest

from migration_assets.access import ACCESS, Access, _digest, access_sql, control_sql
from migration_assets.registry import BY_NAME

from .conftest import render


def test_the_specification_names_registry_tables_only():
    assert set(ACCESS) <= set(BY_NAME)


def test_by_default_a_table_is_the_service_roles_only_with_every_grant_taken_back_first():
    drops = [f'DROP POLICY IF EXISTS "ma_{r}_{c}" ON "public"."roles"'
             for r in ("anon", "authenticated", "service_role") for c in ("select", "insert", "update", "delete")]
    digest = _digest(ACCESS.get("roles", (Access("service_role", ("SELECT",)),))[0])
    assert [render(s) for s in access_sql(BY_NAME["roles"], "public")] == [
        'ALTER TABLE "public"."roles" ENABLE ROW LEVEL SECURITY',
        'REVOKE ALL ON "public"."roles" FROM "anon", "authenticated", "service_role"',
        *drops,
        'GRANT SELECT, INSERT, UPDATE, DELETE ON "public"."roles" TO "service_role"',
        'CREATE POLICY "ma_service_role_select" ON "public"."roles" AS PERMISSIVE FOR SELECT TO "service_role" '
        'USING (true)',
        f'COMMENT ON POLICY "ma_service_role_select" ON "public"."roles" IS \'{digest}\'',
        'CREATE POLICY "ma_service_role_insert" ON "public"."roles" AS PERMISSIVE FOR INSERT TO "service_role" '
        'WITH CHECK (true)',
        f'COMMENT ON POLICY "ma_service_role_insert" ON "public"."roles" IS \'{digest}\'',
        'CREATE POLICY "ma_service_role_update" ON "public"."roles" AS PERMISSIVE FOR UPDATE TO "service_role" '
        'USING (true) WITH CHECK (true)',
        f'COMMENT ON POLICY "ma_service_role_update" ON "public"."roles" IS \'{digest}\'',
        'CREATE POLICY "ma_service_role_delete" ON "public"."roles" AS PERMISSIVE FOR DELETE TO "service_role" '
        'USING (true)',
        f'COMMENT ON POLICY "ma_service_role_delete" ON "public"."roles" IS \'{digest}\'',
    ]
    # the comment is a digest of the predicates: setup compares it, not PostgreSQL's rewritten text
    assert digest == "migration_assets " + hashlib.sha256(b"true\x00true").hexdigest()[:16]
    other = _digest(Access("service_role", ("SELECT",), using="is_active"))
    assert other != digest
    assert [render(s) for s in control_sql()] == [
        'REVOKE ALL ON SCHEMA "migration_control" FROM PUBLIC, "anon", "authenticated", "service_role"'] + [
        f'REVOKE ALL ON ALL {k} IN SCHEMA "migration_control" FROM PUBLIC, "anon", "authenticated", "service_role"'
        for k in ("TABLES", "SEQUENCES", "FUNCTIONS")]


@pytest.mark.parametrize("role, commands", [("postgres", ("SELECT",)), ("anon", ("TRUNCATE",)), ("anon", ())])
def test_an_access_names_an_api_role_and_its_commands(role, commands):
    with pytest.raises(ValueError):
        Access(role, commands)
