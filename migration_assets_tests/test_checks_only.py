"""QA's workflow: the checks evaluated on the target as it is, without loading a row (the
``asset_checks`` job, ``migration-assets check``, the UI's "Execute" on a table's checks), and
the sign-off against a quarantine budget: a share of each table's legacy rows, a warning above
QUARANTINE_WARN_PERCENT, a blocking error above QUARANTINE_MAX_PERCENT."""

from __future__ import annotations

from psycopg import sql

from migration_assets import cli
from migration_assets.registry import ENTITIES

from .conftest import query
from .test_operator import _isolated


def _content(target: str) -> dict[str, str]:
    """md5 of every target table's rows, the quarantine and the watermarks (what a load would change)."""
    out = {}
    for name in [e.target_table for e in ENTITIES]:
        out[name] = query(target, sql.SQL("SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) FROM {} t").format(
            sql.Identifier("public", name)))[0][0]
    for name in ("quarantine", "watermarks", "migration_runs"):
        out[name] = query(target, sql.SQL("SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {} t").format(
            sql.Identifier("migration_control", name)))[0][0]
    return out


def _shares(target: str) -> dict[str, float]:
    """Open quarantine rows / legacy rows per entity, in percent, from the watermarks."""
    return {name: 100 * held / rows for name, rows, held in query(target, """
        SELECT w.entity, w.legacy_rows, (SELECT count(*) FROM migration_control.quarantine q
                                         WHERE q.entity = w.entity AND NOT q.resolved)
        FROM migration_control.watermarks w WHERE w.legacy_rows > 0""")}


def test_check_evaluates_every_table_without_loading_and_signs_off_against_the_budget(
        private_migration, monkeypatch, tmp_path, capsys):
    legacy, target, result = private_migration(scale=0.01, seed=41)
    budget = {c.asset_key.to_user_string(): c for c in result.get_asset_check_evaluations()
              if c.check_name == "quarantine_within_budget"}
    assert len(budget) == len(ENTITIES) and all(c.passed for c in budget.values())  # the defaults hold
    _isolated(monkeypatch, tmp_path, SOURCE_DB_URL=legacy, TARGET_DB_URL=target)
    before = _content(target)
    recorded = query(target, "SELECT count(*) FROM migration_control.check_results")[0][0]

    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert "SUCCESS" in out and "quarantine budget: every table within it" in out
    assert _content(target) == before  # nothing loaded, nothing written but the check results
    written = query(target, "SELECT count(*) FROM migration_control.check_results")[0][0] - recorded
    assert written == sum(5 + bool(e.email_columns) for e in ENTITIES)  # every check of every table, once

    # a budget the simulator's data exceeds: exit 1, the tables named with their share and reasons
    shares = _shares(target)
    monkeypatch.setenv("QUARANTINE_WARN_PERCENT", "0.05")
    monkeypatch.setenv("QUARANTINE_MAX_PERCENT", "0.1")
    monkeypatch.setenv("QUARANTINE_MIN_ROWS", "0")  # no floor: every share counts
    assert cli.main(["check"]) == 1
    out = capsys.readouterr().out
    over = sorted(name for name, share in shares.items() if share > 0.1)
    assert over, shares
    for name in over:
        assert f"  ERROR  {name}: {round(shares[name], 3)}% of " in out, name
    assert _content(target) == before
    assert cli.main(["status"]) == 1
    status = capsys.readouterr().out
    for name in over:
        assert f"quarantine {round(shares[name], 3)}% over its maximum of 0.1%" in status, name
    assert cli.main(["report"]) == 0
    report = (tmp_path / "reports" / "POST_MIGRATION_VALIDATION_REPORT.md").read_text()
    sign_off = report.split("## Sign-off")[1].split("## Totals")[0]
    assert "- verdict: **not ready**" in sign_off
    assert all(f"  - ERROR: {name}: " in sign_off for name in over)

    # one table's checks, with an override for it: the others are not evaluated
    worst = max(over, key=shares.get)
    monkeypatch.setenv("QUARANTINE_MAX_PERCENT", f"0.1,{worst}=100")
    monkeypatch.setenv("QUARANTINE_WARN_PERCENT", f"0.05,{worst}=100")
    mark = query(target, "SELECT max(id) FROM migration_control.check_results")[0][0]
    assert cli.main(["check", "--select", worst]) == 0
    assert query(target, "SELECT DISTINCT entity FROM migration_control.check_results WHERE id > %s",
                 [mark]) == [(worst,)]
    assert _content(target) == before


def test_a_budget_between_warning_and_maximum_is_a_warning_with_its_reasons(private_migration, monkeypatch):
    from migration_assets.checks import run_checks
    from migration_assets.engine.accounting import CheckOptions
    from migration_assets.registry import entity
    from migration_assets.settings import Budget

    legacy, target, _ = private_migration(scale=0.01, seed=43)
    shares = _shares(target)
    recorded = query(target, "SELECT count(*) FROM migration_control.check_results")
    name = max(shares, key=shares.get)
    share = shares[name]
    opts = CheckOptions(quarantine_warn=Budget(share / 2), quarantine_max=Budget(share * 2), quarantine_min_rows=0)
    (r,) = [r for r in run_checks(legacy, target, entity(name), opts=opts) if r.check_name == "quarantine_within_budget"]
    assert (r.passed, r.severity.value) == (False, "WARN")
    held = query(target, "SELECT reason, count(*) FROM migration_control.quarantine WHERE entity = %s AND NOT resolved "
                         "GROUP BY 1", [name])
    assert r.metadata["by_reason"].value == dict(held)
    assert r.metadata["percent"].value == round(share, 3)
    opts = CheckOptions(quarantine_warn=Budget(share / 4), quarantine_max=Budget(share / 2), quarantine_min_rows=0)
    (r,) = [r for r in run_checks(legacy, target, entity(name), opts=opts) if r.check_name == "quarantine_within_budget"]
    assert (r.passed, r.severity.value) == (False, "ERROR")
    # a table with no more quarantined rows than QUARANTINE_MIN_ROWS is within budget whatever its share
    floor = sum(n for _, n in held)
    opts = CheckOptions(quarantine_warn=Budget(share / 4), quarantine_max=Budget(share / 2), quarantine_min_rows=floor)
    (r,) = [r for r in run_checks(legacy, target, entity(name), opts=opts) if r.check_name == "quarantine_within_budget"]
    assert r.passed and r.metadata["percent"].value == round(share, 3)
    opts = CheckOptions(quarantine_warn=Budget(share / 4), quarantine_max=Budget(share / 2),
                        quarantine_min_rows=floor - 1)
    (r,) = [r for r in run_checks(legacy, target, entity(name), opts=opts) if r.check_name == "quarantine_within_budget"]
    assert (r.passed, r.severity.value) == (False, "ERROR")
    assert query(target, "SELECT count(*) FROM migration_control.check_results") == recorded  # no run id: not kept
