"""Targets set up by an earlier history upgrade with today's ``setup`` (target_schema.py,
migrations.py): the released files of 2c904f4 and a load on them, then today's files, then a
migration whose checks pass; and a file generated from a registry change, applied to a target
that holds rows, leaves it exactly as a fresh target built from the whole history."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

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
from .unit.test_schema_history import DAY, INVOICES, RELEASED_2C904F4, _with_columns, version
from migration_assets.registry import text


def _folder(tmp_path, names) -> str:
    folder = tmp_path / "released"
    folder.mkdir()
    for name in names:
        shutil.copy(ts.MIGRATIONS_DIR / name, folder / name)
    return folder


RELEASED = "2c904f4"

# The released commit's own engine loads every table, as a deployment of it did.
_RELEASED_MIGRATION = """
import sys
from migration_assets.engine.load import migrate_entity
from migration_assets.engine.options import LoadOptions
from migration_assets.registry import topological_order
for e in topological_order():
    migrate_entity(sys.argv[1], sys.argv[2], e.name, LoadOptions(run_id="released"))
"""


def _released_code(tmp_path):
    """The package as released by 2c904f4 (from this clone's history), or a skip saying why not."""
    folder = tmp_path / "code"
    folder.mkdir()
    archive = subprocess.run(["git", "-C", str(ts.PROJECT_DIR), "archive", RELEASED, "migration_assets"],
                             capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"commit {RELEASED} is not in this clone's history (a shallow clone?): the released engine "
                    f"cannot load the upgrade test's target: {archive.stderr.decode()[:200]}")
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def test_a_target_set_up_and_migrated_by_the_released_files_upgrades_and_migrates(databases, legacy, monkeypatch,
                                                                                   tmp_path):
    code = _released_code(tmp_path)
    target = databases.new("released")
    assert apply_migrations(target, _folder(tmp_path, RELEASED_2C904F4)) == sorted(
        n.partition("_")[0] for n in RELEASED_2C904F4)
    env = {**os.environ, "PYTHONPATH": str(code)}
    loaded = subprocess.run([sys.executable, "-c", _RELEASED_MIGRATION, legacy, target], cwd=code, env=env,
                            capture_output=True, text=True, timeout=600)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert query(target, "SELECT count(DISTINCT entity) FROM migration_control.migration_runs "
                         "WHERE run_id = 'released' AND status = 'COMPLETED'") == [(len(ENTITIES),)]

    upgraded = apply_migrations(target)  # today's setup
    assert upgraded == sorted(p.stem.partition("_")[0] for p in ts.MIGRATIONS_DIR.glob("*.sql")
                              if p.name not in RELEASED_2C904F4)
    fresh = databases.new("fresh")
    apply_migrations(fresh)
    assert schema_fingerprint(target) == schema_fingerprint(fresh)
    monkeypatch.setenv("SOURCE_DB_URL", legacy)
    monkeypatch.setenv("TARGET_DB_URL", target)
    monkeypatch.setenv("MIGRATION_MODE", "differential")  # the sensor's refresh on the upgraded target
    again = materialize(table_assets(), resources=build_resources(), instance=DagsterInstance.ephemeral())
    assert again.success
    checks = again.get_asset_check_evaluations()
    assert len(checks) == sum(5 + bool(e.email_columns) for e in ENTITIES)
    assert [c for c in checks if not c.passed and c.severity.value == "ERROR"] == []


def test_a_generated_file_upgrades_a_loaded_target_to_what_a_fresh_one_is(databases, legacy, tmp_path):
    root = tmp_path / "supabase"
    shutil.copytree(ts.PROJECT_DIR / "supabase", root, ignore=shutil.ignore_patterns(".temp", ".branches"))
    fax = text("fax", "office_code", required=True)  # a column the legacy table has: the walkthrough's load
    registry = _with_columns("offices", lambda cols: cols + (fax,)) + (INVOICES,)
    written = ts.write_pending(root, registry, DAY)
    assert [p.name for p in written] == [f"{version(1)}_add_offices_fax_and_1_more.sql",
                                         f"{version(2)}_app_ready_add_offices_fax_and_1_more.sql"]

    loaded = databases.new("loaded")
    apply_migrations(loaded)
    migrate_entity(legacy, loaded, "offices", LoadOptions(run_id="before"))
    (offices_rows,) = query(loaded, "SELECT count(*) FROM public.offices")[0]
    assert offices_rows > 0
    assert apply_migrations(loaded, root / "migrations") == [version(1)]
    fresh = databases.new("fresh_history")
    apply_migrations(fresh, root / "migrations")
    assert schema_fingerprint(loaded) == schema_fingerprint(fresh)
    # the rows loaded before keep a NULL fax; a row written from now on must have one
    assert query(loaded, "SELECT count(*) FROM public.offices WHERE fax IS NULL") == [(offices_rows,)]
    with psycopg.connect(loaded) as conn, pytest.raises(psycopg.errors.CheckViolation, match="offices_fax_not_null"):
        conn.execute("UPDATE public.offices SET name = name || '' WHERE id = (SELECT id FROM public.offices LIMIT 1)")
    assert query(loaded, "SELECT to_regclass('public.invoices') IS NOT NULL, relrowsecurity FROM pg_class "
                         "WHERE oid = 'public.invoices'::regclass") == [(True, True)]
    # the next refresh with the registry's new entry re-reads the table (its transform version
    # changed) and fills the column in every row: the table equals a fresh target's
    offices = next(e for e in registry if e.name == "offices")
    refreshed = _load(legacy, loaded, offices, LoadOptions(run_id="after", mode="differential"))
    assert refreshed.mode == "full" and refreshed.updated == offices_rows
    _load(legacy, fresh, offices, LoadOptions(run_id="fresh"))
    assert query(loaded, "SELECT count(*) FROM public.offices WHERE fax IS NULL") == [(0,)]
    assert _table(loaded, "offices") == _table(fresh, "offices")


def _load(legacy: str, target: str, e, opts):
    """One load of entity ``e`` as given (a registry entry being changed), committed."""
    from migration_assets import connections
    from migration_assets.engine.commit import commit_load
    from migration_assets.engine.stream import LegacyStream

    stream = LegacyStream(legacy, e, opts)
    try:
        with connections.borrowed(target, "load") as conn:
            return commit_load(conn, stream, opts.run_id)
    finally:
        stream.close()


def _table(target: str, name: str) -> tuple:
    return query(target, f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t.id)) FROM public.{name} t")[0] + \
        query(target, "SELECT md5(string_agg(q.legacy_id || q.reason || q.detail, '|' ORDER BY q.legacy_id)) "
                      "FROM migration_control.quarantine q WHERE entity = %s AND NOT resolved", [name])[0]


def test_a_corrected_transform_reaches_every_row_of_its_table_and_equals_a_fresh_migration(databases, legacy):
    import dataclasses

    from migration_assets.registry import BY_NAME

    target = databases.new("retransform")
    apply_migrations(target)
    for name in ("offices", "roles"):
        migrate_entity(legacy, target, name, LoadOptions(run_id="before"))
    roles_before = _table(target, "roles")
    # the legacy team's phone numbers moved: the registry now reads another column into phone
    corrected = dataclasses.replace(BY_NAME["offices"], columns=tuple(
        dataclasses.replace(c, legacy="office_code") if c.target == "phone" else c for c in BY_NAME["offices"].columns))
    refresh = LoadOptions(run_id="after", mode="differential")
    result = _load(legacy, target, corrected, refresh)
    (rows, _, _), = [_table(target, "offices")]
    assert result.mode == "full" and result.records_read == rows + query(
        target, "SELECT count(*) FROM migration_control.quarantine WHERE entity = 'offices' AND NOT resolved")[0][0]
    assert query(target, "SELECT count(*) FROM public.offices WHERE phone IS DISTINCT FROM code") == [(0,)]
    fresh = databases.new("retransform_fresh")
    apply_migrations(fresh)
    _load(legacy, fresh, corrected, LoadOptions(run_id="fresh"))
    assert _table(target, "offices") == _table(fresh, "offices")
    # only the changed table: roles keeps its differential refresh (the rows at its watermark, no change)
    roles = _load(legacy, target, BY_NAME["roles"], refresh)
    assert roles.mode == "differential" and roles.records_read < 5 and roles.updated == roles.inserted == 0
    assert _table(target, "roles") == roles_before
    # recorded: the next refresh of the corrected table is differential again
    again = _load(legacy, target, corrected, LoadOptions(run_id="again", mode="differential"))
    assert again.mode == "differential" and again.records_read < 5 and again.updated == again.inserted == 0


def test_migrate_select_full_re_reads_one_table_on_demand(legacy, target, monkeypatch, tmp_path, capsys):
    from migration_assets import cli

    from .test_operator import _isolated

    _isolated(monkeypatch, tmp_path, SOURCE_DB_URL=legacy, TARGET_DB_URL=target)
    assert cli.main(["migrate"]) == 0
    assert cli.main(["migrate", "--select", "offices", "--full"]) == 0
    out = capsys.readouterr().out
    (run_id,) = query(target, "SELECT run_id FROM migration_control.migration_runs ORDER BY id DESC LIMIT 1")[0]
    assert f"run {run_id}: SUCCESS" in out
    audited = query(target, "SELECT entity, mode, records_read, inserted, updated FROM "
                            "migration_control.migration_runs WHERE run_id = %s", [run_id])
    (legacy_rows,) = query(legacy, "SELECT count(*) FROM tbl_office")[0]
    assert audited == [("offices", "full", legacy_rows, 0, 0)]  # every row read and compared, none differed
    checks = query(target, "SELECT DISTINCT entity FROM migration_control.check_results WHERE run_id = %s", [run_id])
    assert checks == [("offices",)]
