"""Targets set up by an earlier history upgrade with today's ``setup`` (target_schema.py,
migrations.py): the released files of 2c904f4 and a load on them, then today's files, then a
migration whose checks pass; and a file generated from a registry change, applied to a target
that holds rows, leaves it exactly as a fresh target built from the whole history."""

from __future__ import annotations

import shutil

import psycopg
import pytest
from dagster import DagsterInstance, materialize

from migration_assets import target_schema as ts
from migration_assets.definitions import build_resources, table_assets
from migration_assets.engine.commit import migrate_entity
from migration_assets.engine.options import LoadOptions
from migration_assets.migrations import apply_migrations, schema_fingerprint
from migration_assets.registry import ENTITIES

from .conftest import query
from .unit.test_schema_history import DAY, INVOICES, RELEASED_2C904F4, _with_columns
from migration_assets.registry import text


def _folder(tmp_path, names) -> str:
    folder = tmp_path / "released"
    folder.mkdir()
    for name in names:
        shutil.copy(ts.MIGRATIONS_DIR / name, folder / name)
    return folder


def test_a_target_set_up_and_migrated_by_the_released_files_upgrades_and_migrates(databases, legacy, monkeypatch,
                                                                                   tmp_path):
    target = databases.new("released")
    assert apply_migrations(target, _folder(tmp_path, RELEASED_2C904F4)) == sorted(
        n.partition("_")[0] for n in RELEASED_2C904F4)
    monkeypatch.setenv("SOURCE_DB_URL", legacy)
    monkeypatch.setenv("TARGET_DB_URL", target)
    first = materialize(table_assets(), resources=build_resources(), instance=DagsterInstance.ephemeral())
    assert first.success

    upgraded = apply_migrations(target)  # today's setup
    assert upgraded == sorted(p.stem.partition("_")[0] for p in ts.MIGRATIONS_DIR.glob("*.sql")
                              if p.name not in RELEASED_2C904F4)
    fresh = databases.new("fresh")
    apply_migrations(fresh)
    assert schema_fingerprint(target) == schema_fingerprint(fresh)
    again = materialize(table_assets(), resources=build_resources(), instance=DagsterInstance.ephemeral())
    assert again.success
    checks = again.get_asset_check_evaluations()
    assert len(checks) == sum(5 + bool(e.email_columns) for e in ENTITIES)
    assert [c for c in checks if not c.passed and c.severity.value == "ERROR"] == []


def test_a_generated_file_upgrades_a_loaded_target_to_what_a_fresh_one_is(databases, legacy, tmp_path):
    root = tmp_path / "supabase"
    shutil.copytree(ts.PROJECT_DIR / "supabase", root, ignore=shutil.ignore_patterns(".temp", ".branches"))
    registry = _with_columns("offices", lambda cols: cols + (text("fax", required=True),)) + (INVOICES,)
    written = ts.write_pending(root, registry, DAY)
    assert [p.name for p in written] == ["20270115000012_add_offices_fax_and_1_more.sql",
                                         "20270115000013_app_ready_add_offices_fax_and_1_more.sql"]

    loaded = databases.new("loaded")
    apply_migrations(loaded)
    migrate_entity(legacy, loaded, "offices", LoadOptions(run_id="before"))
    (offices,) = query(loaded, "SELECT count(*) FROM public.offices")[0]
    assert offices > 0
    assert apply_migrations(loaded, root / "migrations") == ["20270115000012"]
    fresh = databases.new("fresh_history")
    apply_migrations(fresh, root / "migrations")
    assert schema_fingerprint(loaded) == schema_fingerprint(fresh)
    # the rows loaded before keep a NULL fax; a row written from now on must have one
    assert query(loaded, "SELECT count(*) FROM public.offices WHERE fax IS NULL") == [(offices,)]
    with psycopg.connect(loaded) as conn, pytest.raises(psycopg.errors.CheckViolation, match="offices_fax_not_null"):
        conn.execute("UPDATE public.offices SET name = name || '' WHERE id = (SELECT id FROM public.offices LIMIT 1)")
    assert query(loaded, "SELECT to_regclass('public.invoices') IS NOT NULL, relrowsecurity FROM pg_class "
                         "WHERE oid = 'public.invoices'::regclass") == [(True, True)]
