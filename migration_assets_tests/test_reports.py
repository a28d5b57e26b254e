"""Reports and the status command, against a migration whose numbers are known independently."""

import re
from decimal import Decimal

import psycopg
import pytest
from dagster import DagsterInstance, materialize

from migration_assets.registry import ENTITIES, entity
from migration_assets.simulator import rows_at_scale

from .conftest import query

SCALE = 0.005


@pytest.fixture()
def reported(private_migration, tmp_path, monkeypatch):
    from migration_assets.assets import migration_reports
    from migration_assets.definitions import build_resources

    legacy, target, result = private_migration(scale=SCALE, seed=21)
    monkeypatch.setenv("MIGRATION_REPORTS_DIR", str(tmp_path))
    # regenerated on its own, from the audit trail
    report_run = materialize([migration_reports], resources=build_resources(), instance=DagsterInstance.ephemeral())
    assert report_run.success
    return legacy, target, result, tmp_path, report_run


def _number(text: str, label: str) -> int:
    return int(re.search(re.escape(label) + r" \*\*([\d,]+)", text).group(1).replace(",", ""))


def test_comprehensive_report_has_the_known_numbers(reported):
    legacy, target, _, folder, report_run = reported
    text = (folder / "COMPREHENSIVE_MIGRATION_REPORT.md").read_text()
    expected_rows = sum(rows_at_scale(e, SCALE) for e in ENTITIES)
    assert _number(text, "Legacy records:") == expected_rows
    loaded = sum(query(target, f"SELECT count(*) FROM public.{e.name}")[0][0] for e in ENTITIES)
    held = query(target, "SELECT count(*) FROM migration_control.quarantine WHERE NOT resolved")[0][0]
    assert _number(text, "Migrated to the target:") == loaded
    assert _number(text, "In quarantine with a reason:") == held
    assert loaded + held == expected_rows and "100.00%** of the legacy records - nothing lost" in text
    for section in ("## Entities by dependency level", "## Performance", "## Error analysis", "## Business impact"):
        assert section in text
    # financial totals, computed here from the legacy rows, reconcile to the cent
    e = entity("payments")
    legacy_total = query(legacy, f'SELECT sum(amt_cents)::numeric / 100 FROM "{e.legacy_table}"')[0][0]
    line = next(x for x in text.splitlines() if x.startswith("| payments | amount |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert Decimal(cells[2].replace(",", "")) == legacy_total
    assert Decimal(cells[3].replace(",", "")) + Decimal(cells[4].replace(",", "")) == legacy_total
    assert cells[5] == "0.00"
    clinical = text.split("Clinical records preserved")[1]
    for name in ("patients", "cases", "treatment_plans"):
        row = next(x for x in clinical.splitlines() if x.startswith(f"| {name} | "))
        assert row.rstrip().endswith("| yes |")
    # the asset links the files and repeats the headline figures
    meta = report_run.asset_materializations_for_node("migration_reports")[0].metadata
    assert meta["comprehensive_report"].value.endswith("COMPREHENSIVE_MIGRATION_REPORT.md")
    assert meta["legacy_rows"].value == expected_rows and meta["remaining_difference"].value == 0


def test_validation_report_lists_every_check(reported):
    _, _, result, folder, _ = reported
    text = (folder / "POST_MIGRATION_VALIDATION_REPORT.md").read_text()
    n = len(result.get_asset_check_evaluations())
    assert f"checks passed: **{n:,} of {n:,}**" in text
    assert f"entities with every check passing: **{len(ENTITIES)} of {len(ENTITIES)}**" in text
    assert text.count("| content_checksum | PASS |") == len(ENTITIES)
    assert "**FAIL**" not in text


def test_status_command_exit_code_says_whether_all_is_healthy(reported, monkeypatch, capsys):
    from migration_assets.cli import main

    legacy, target, _, _, _ = reported
    assert main(["status"]) == 0
    assert "HEALTHY" in capsys.readouterr().out
    with psycopg.connect(target) as conn:
        conn.execute("SET session_replication_role = replica")  # a bad script, behind the constraints
        conn.execute("DELETE FROM public.jaws WHERE (metadata->>'legacy_id')::bigint = 2")
        conn.commit()
    assert main(["status"]) == 1
    out = capsys.readouterr().out
    assert "NOT HEALTHY" in out and re.search(r"jaws .* difference \+1", out)
    monkeypatch.setenv("TARGET_DB_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert main(["status"]) == 2
