"""Legacy drift (preflight.py): what the legacy team added and the registry does not map is
reported (a warning in the run, the table's materialization metadata, the validation report),
and a mapped column renamed or retyped stops the run before anything is written, naming the
table, the column and what to change in the registry."""

from __future__ import annotations

import logging

import psycopg
import pytest
from dagster import AssetKey, DagsterInstance, TableColumnDep, materialize

from migration_assets.definitions import build_resources, table_assets
from migration_assets.preflight import SchemaMismatch, validate
from migration_assets.registry import ENTITIES
from migration_assets.reports import validation_report
from migration_assets.simulator import generate

from .conftest import query


@pytest.fixture()
def drifted(databases, target):
    legacy = databases.new("legacy_drift")
    generate(legacy, scale=0.002, seed=83, log=lambda *_: None)
    with psycopg.connect(legacy) as conn:
        conn.execute("ALTER TABLE tbl_office ADD COLUMN fax varchar(40)")
        conn.execute("CREATE TABLE tbl_invoice (invoice_id integer PRIMARY KEY, total numeric)")
    return legacy, target


def test_unmapped_legacy_columns_and_tables_are_reported_everywhere_and_still_migrate(drifted, monkeypatch):
    legacy, target = drifted
    monkeypatch.setenv("SOURCE_DB_URL", legacy)
    monkeypatch.setenv("TARGET_DB_URL", target)
    monkeypatch.setenv("QUARANTINE_MAX_PERCENT", "100")  # a tiny legacy database: the budget is not this test's
    instance = DagsterInstance.ephemeral()
    result = materialize(table_assets(), resources=build_resources(), instance=instance)
    assert result.success
    warnings = [entry.user_message for entry in instance.all_logs(result.run_id)
                if entry.level == logging.WARNING and "pre-flight:" in entry.user_message]
    assert any("legacy table tbl_office has columns the registry does not map (entity offices): fax (character "
               "varying): their values are not migrated; map one with a Column in registry.py, or leave it" in w
               for w in warnings), warnings
    assert any("legacy tables no entity maps: tbl_invoice: their rows are not migrated" in w for w in warnings)
    unmapped = {m.asset_key.path[-1]: m.metadata["legacy_unmapped_columns"].value
                for m in result.get_asset_materialization_events() for m in [m.materialization]}
    # the catalog's column lineage starts at the legacy table (an external asset upstream)
    (offices,) = [ev.materialization for ev in result.get_asset_materialization_events()
                  if ev.materialization.asset_key == AssetKey("offices")]
    lineage = offices.metadata["dagster/column_lineage"].value.deps_by_column
    assert lineage["phone"] == [TableColumnDep(asset_key=AssetKey(["legacy", "tbl_office"]), column_name="phone_no")]
    assert lineage["id"] == [TableColumnDep(asset_key=AssetKey(["legacy", "tbl_office"]), column_name="office_id")]
    assert unmapped["offices"] == ["fax (character varying)"]
    assert all(v == [] for name, v in unmapped.items() if name != "offices") and len(unmapped) == len(ENTITIES)
    text, _, _ = validation_report(target, legacy)
    section = text.split("## Legacy data the registry does not map\n\n")[1].split("\n\n")[0]
    assert section.splitlines() == [
        "- legacy table tbl_office has columns the registry does not map (entity offices): fax (character varying): "
        "their values are not migrated; map one with a Column in registry.py, or leave it",
        "- legacy tables no entity maps: tbl_invoice: their rows are not migrated; add an Entity in registry.py, or "
        "leave them"]


def _counts(target: str) -> int:
    return sum(query(target, f'SELECT count(*) FROM public."{e.target_table}"')[0][0] for e in ENTITIES)


def test_a_renamed_or_retyped_mapped_column_stops_the_run_naming_what_to_change(drifted, monkeypatch):
    legacy, target = drifted
    with psycopg.connect(legacy) as conn:
        conn.execute("ALTER TABLE tbl_office RENAME COLUMN phone_no TO phone_number")
        conn.execute("ALTER TABLE users ALTER COLUMN first_nm TYPE integer USING length(first_nm)")
    with pytest.raises(SchemaMismatch) as err:
        validate(legacy, target)
    message = str(err.value)
    assert ("legacy column tbl_office.phone_no (-> offices.phone) does not exist: if it was renamed to "
            "phone_number or fax, set legacy='phone_number' on Column 'phone' of entity offices in registry.py"
            ) in message
    assert ("legacy column users.first_nm (-> profiles.first_name) is integer, expected character varying: give "
            "Column 'first_name' of entity profiles in registry.py the Kind that reads integer, or convert the "
            "legacy column back") in message
    monkeypatch.setenv("SOURCE_DB_URL", legacy)
    monkeypatch.setenv("TARGET_DB_URL", target)
    result = materialize(table_assets(), resources=build_resources(), instance=DagsterInstance.ephemeral(),
                         raise_on_error=False)
    assert not result.success
    assert _counts(target) == 0  # stopped before anything was written
