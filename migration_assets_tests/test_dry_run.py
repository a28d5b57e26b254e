"""A dry run rehearses the real load of every table in one target transaction and rolls it back:
it predicts what the migration, then a refresh after live changes, actually do (per table:
rows read, inserted, updated, unchanged, deleted, evicted, quarantined by reason), and leaves
the target and the legacy database exactly as they were."""

from __future__ import annotations

from psycopg import sql

from migration_assets import cli
from migration_assets.engine.commit import migrate_entity
from migration_assets.engine.options import LoadOptions
from migration_assets.engine.rehearsal import rehearse
from migration_assets.migrations import apply_migrations, schema_fingerprint
from migration_assets.registry import ENTITIES, topological_order
from migration_assets.simulator import generate, mutate

from .conftest import query
from .test_checks_only import _content
from .test_operator import _isolated

PREDICTED = ("entity", "records_read", "inserted", "updated", "unchanged", "deleted", "evicted", "quarantined",
             "quarantine_by_reason")


def _legacy_content(legacy: str) -> dict[str, str]:
    return {e.legacy_table: query(legacy, sql.SQL("SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {} t")
                                  .format(sql.Identifier(e.legacy_table)))[0][0] for e in ENTITIES}


def _predicted(results) -> list[tuple]:
    return [tuple(getattr(r, k) for k in PREDICTED) for r in results]


def _migrate(legacy: str, target: str, mode: str) -> list:
    return [migrate_entity(legacy, target, e.name, LoadOptions(run_id=f"real-{mode}", mode=mode, overlap_s=0))
            for e in topological_order()]


def test_a_dry_run_predicts_the_migration_and_the_refresh_and_changes_nothing(databases, monkeypatch, tmp_path,
                                                                              capsys):
    legacy = databases.new("legacy_dry_run")
    generate(legacy, scale=0.01, seed=51, log=lambda *_: None)
    target = databases.new("target_dry_run")
    apply_migrations(target)
    _isolated(monkeypatch, tmp_path, SOURCE_DB_URL=legacy, TARGET_DB_URL=target, DIFFERENTIAL_OVERLAP_SECONDS="0")

    for mode, command in (("full", "migrate"), ("differential", "refresh")):
        before, schema, source = _content(target), schema_fingerprint(target), _legacy_content(legacy)
        assert cli.main([command, "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert f"dry run ({mode}) in " in out and "nothing was written" in out
        report = (tmp_path / "reports" / "DRY_RUN_REPORT.md").read_text()
        assert report.startswith(f"# Dry run ({mode})") and all(f"| {e.name} | " in report for e in ENTITIES)
        rehearsal = rehearse(legacy, target, LoadOptions(run_id="rehearsal", mode=mode, overlap_s=0))
        assert (_content(target), schema_fingerprint(target), _legacy_content(legacy)) == (before, schema, source)
        real = _migrate(legacy, target, mode)
        # per table, children judged against their parents' would-be state (cascades included)
        assert _predicted(rehearsal) == _predicted(real), mode
        assert sum(r.inserted for r in real) > 0 and sum(r.quarantined for r in real) > 0
        if mode == "full":  # live changes before the refresh's rehearsal: updates, inserts, deletes
            mutate(legacy, fraction=0.05, round_no=1, seed=51, log=lambda *_: None)
    assert sum(r.deleted for r in real) > 0 and sum(r.updated for r in real) > 0


def test_the_dry_run_job_reports_in_the_run_and_changes_nothing(private_migration, monkeypatch, tmp_path):
    """The UI's way: the dry_run job, in refresh mode by its run tag, after live changes."""
    from dagster import DagsterInstance

    from migration_assets.assets import MODE_TAG
    from migration_assets.definitions import build_resources
    from migration_assets.jobs import dry_run

    legacy, target, _ = private_migration(scale=0.005, seed=53)
    mutate(legacy, fraction=0.05, round_no=1, seed=53, log=lambda *_: None)
    monkeypatch.setenv("MIGRATION_REPORTS_DIR", str(tmp_path))
    before = _content(target)
    result = dry_run.execute_in_process(resources=build_resources(), instance=DagsterInstance.ephemeral(),
                                        tags={MODE_TAG: "differential"})
    assert result.success and _content(target) == before
    (output,) = [ev for ev in result.all_events if ev.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata
    assert metadata["updated"].value > 0 and metadata["deleted"].value > 0
    assert metadata["report"].value.startswith("# Dry run (differential)")
