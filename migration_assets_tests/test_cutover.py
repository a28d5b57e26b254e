"""The cutover (cutover.py, ``migration-assets cutover``, the ``cutover`` job): refused by name
until the migration is complete and its checks pass; then a final refresh, the app-ready
migration and the record, after which the application can write and the loads refuse to run."""

from __future__ import annotations

import psycopg
import pytest
from dagster import DagsterInstance, materialize

from migration_assets import cli
from migration_assets.definitions import build_resources, table_assets
from migration_assets.migrations import apply_migrations
from migration_assets.registry import ENTITIES
from migration_assets.simulator import mutate

from .conftest import query
from .test_access import advisor_findings
from .test_operator import _isolated


def test_cutover_is_refused_by_name_while_the_migration_is_incomplete(legacy, target, monkeypatch, tmp_path,
                                                                       capsys):
    apply_migrations(target)
    _isolated(monkeypatch, tmp_path, SOURCE_DB_URL=legacy, TARGET_DB_URL=target)
    assert cli.main(["cutover"]) == 2
    err = capsys.readouterr().err
    assert "cutover refused: offices: never loaded; offices: no checks recorded; profiles: never loaded" in err
    assert "nothing was changed" in err
    assert query(target, "SELECT count(*) FROM migration_control.cutovers") == [(0,)]
    assert query(target, "SELECT column_default FROM information_schema.columns WHERE table_schema = 'public' "
                         "AND table_name = 'offices' AND column_name = 'id'") == [(None,)]


def _defaults(target: str) -> dict[tuple[str, str], str]:
    return {(t, c): d for t, c, d in query(target, "SELECT table_name, column_name, column_default FROM "
                                                   "information_schema.columns WHERE table_schema = 'public' "
                                                   "AND column_default IS NOT NULL AND column_name <> 'metadata'")}


def _as_service_role(target: str, statement: str, params=None):
    with psycopg.connect(target) as conn:
        conn.execute("SET LOCAL ROLE service_role")
        return conn.execute(statement, params).fetchall()


def test_cutover_refreshes_applies_the_app_ready_migration_records_it_and_stops_the_loads(
        private_migration, monkeypatch, tmp_path, capsys):
    legacy, target, _ = private_migration(scale=0.01, seed=67)
    _isolated(monkeypatch, tmp_path, SOURCE_DB_URL=legacy, TARGET_DB_URL=target)
    assert _defaults(target) == {}
    mutate(legacy, 0.02, 1, log=lambda *_: None)  # the last writes before the legacy side stopped

    assert cli.main(["cutover"]) == 0
    out = capsys.readouterr().out
    (run_id, inserted, updated, deleted, window, applied), = query(target, """
        SELECT run_id, inserted, updated, deleted, extract(epoch FROM cut_over_at - refresh_started_at), app_ready
        FROM migration_control.cutovers""")
    assert f"the target was cut over at " in out and f"by run {run_id}: final refresh" in out
    assert inserted > 0 and updated > 0 and deleted > 0 and window > 0 and applied == ["20261207000001"]
    # the final refresh loaded every table in the cutover's own run, and left no difference
    assert query(target, "SELECT count(DISTINCT entity) FROM migration_control.migration_runs WHERE run_id = %s "
                         "AND status IN ('COMPLETED', 'ALREADY_MIGRATED')", [run_id]) == [(len(ENTITIES),)]
    # the app-ready migration changed no migrated value: every check still passes, loading nothing
    assert cli.main(["check"]) == 0
    capsys.readouterr()

    defaults = _defaults(target)
    for e in ENTITIES:
        assert defaults[(e.name, "id")] == "gen_random_uuid()"
        assert defaults[(e.name, "updated_at")] == "now()"
    assert defaults[("profiles", "created_on")] == "CURRENT_DATE"
    # the application's first writes: an insert without id or timestamps, an update stamps updated_at
    (new_id, created, stamped), = _as_service_role(
        target, "INSERT INTO public.offices (name, code, is_active) VALUES ('New office', 'NEW-1', true) "
                "RETURNING id, created_at, updated_at")
    assert new_id is not None and created == stamped
    (some_id, before), = query(target, "SELECT id, updated_at FROM public.offices WHERE id <> %s LIMIT 1", [new_id])
    ((after, now),) = _as_service_role(target, "UPDATE public.offices SET phone = '555-0100' WHERE id = %s "
                                                "RETURNING updated_at, now()", [some_id])
    assert after == now and after > before

    # the loads refuse, naming the cutover (exit 2), from the command line and from Dagster
    for command in (["refresh"], ["migrate"], ["cutover"]):
        assert cli.main(command) == 2, command
        err = capsys.readouterr().err
        assert f"the target was cut over at " in err and f"by run {run_id}" in err, command
        assert command == ["cutover"] or "set MIGRATION_AFTER_CUTOVER=true (or pass --after-cutover)" in err
    result = materialize(table_assets(), resources=build_resources(), instance=DagsterInstance.ephemeral(),
                         raise_on_error=False)
    failures = [ev.step_failure_data.error.message for ev in result.all_events if ev.is_step_failure]
    assert failures and all("CUT_OVER" in m and "the target was cut over" in m for m in failures)
    assert query(target, "SELECT count(*) FROM public.offices WHERE id = %s", [new_id]) == [(1,)]
    assert cli.main(["status"]) in (0, 1)
    assert f"CUT OVER: the target was cut over at " in capsys.readouterr().out

    # Supabase's advisors judge the cut-over target as they judged the migrated one
    names = advisor_findings(target, tmp_path)
    assert not [n for n in names if n[0] in ("WARN", "ERROR")], names
    assert ("INFO", "rls_enabled_no_policy") not in names, names


def test_after_cutover_lets_a_refresh_run(private_migration, monkeypatch, tmp_path, capsys):
    legacy, target, _ = private_migration(scale=0.005, seed=71)
    _isolated(monkeypatch, tmp_path, SOURCE_DB_URL=legacy, TARGET_DB_URL=target)
    assert cli.main(["cutover"]) == 0
    mutate(legacy, 0.02, 1, log=lambda *_: None)
    capsys.readouterr()
    assert cli.main(["refresh", "--after-cutover"]) == 0
    out = capsys.readouterr().out
    assert "remaining difference: 0 rows" in out
