"""Logical mode (MIGRATION_CHANGE_SOURCE=logical, engine/changes.py) on a legacy server of the
test's own with wal_level=logical: a refresh reads exactly the changed rows from the slot and
equals a fresh migration, after live changes, after a refresh killed with SIGKILL, and after the
slot was dropped; the slot advances only to what every table committed; pre-flight refuses a
server that cannot decode."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid

import psycopg
import pytest
from dagster import DagsterInstance, RunRequest, SkipReason, build_sensor_context, materialize

from migration_assets.definitions import build_resources, table_assets
from migration_assets.engine import changes
from migration_assets.preflight import SchemaMismatch, validate
from migration_assets.registry import ENTITIES, children
from migration_assets.sensors import legacy_changes
from migration_assets.simulator import generate, mutate

from . import servers
from .conftest import kill_when, query
from .test_plan_and_deletes import assert_equal_to_fresh


@pytest.fixture(scope="module")
def logical_server():
    if (why := servers.available()) is not None:
        pytest.skip(why)
    server = servers.TempServer(conf={"wal_level": "logical", "max_replication_slots": "8", "max_wal_senders": "8"})
    yield server
    server.stop()


@pytest.fixture()
def live(logical_server, databases, monkeypatch):
    """A legacy database on the logical server, a target, and the environment of logical mode
    with a slot of the test's own."""
    name = f"legacy_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(logical_server.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    legacy = logical_server.url(name)
    generate(legacy, scale=0.005, seed=101, log=lambda *_: None)
    target = databases.new("logical_target")
    from migration_assets.migrations import apply_migrations

    apply_migrations(target)
    slot = f"ma_{uuid.uuid4().hex[:10]}"
    for key, value in {"SOURCE_DB_URL": legacy, "TARGET_DB_URL": target, "MIGRATION_CHANGE_SOURCE": "logical",
                       "MIGRATION_SLOT": slot, "QUARANTINE_MAX_PERCENT": "100"}.items():
        monkeypatch.setenv(key, value)
    yield legacy, target, slot
    changes.drop(legacy, slot)


def _run(mode: str, instance=None):
    os.environ["MIGRATION_MODE"] = mode
    try:
        result = materialize(table_assets(), resources=build_resources(), instance=instance or
                             DagsterInstance.ephemeral())
    finally:
        os.environ.pop("MIGRATION_MODE", None)
    assert result.success
    return result


def _positions(target: str) -> set[str]:
    return {lsn for (lsn,) in query(target, "SELECT logical_lsn::text FROM migration_control.watermarks")}


def test_a_logical_refresh_reads_exactly_the_changes_and_equals_a_fresh_migration(live, databases):
    legacy, target, slot = live
    _run("full")
    with psycopg.connect(legacy) as conn:
        assert changes.slot_state(conn, slot) is not None  # created before the first snapshot
    resources = {k: v for k, v in build_resources().items() if k in ("legacy", "target", "settings")}

    def tick():
        with build_sensor_context(resources=resources) as context:
            return legacy_changes(context)

    for round_no in (1, 2):
        mutate(legacy, 0.03, round_no, log=lambda *_: None)
        pending = changes.peek(legacy, slot)
        # the sensor wakes on the slot's pending changes and asks for every table
        request = tick()
        assert isinstance(request, RunRequest) and request.run_key == f"logical-{pending.upto}"
        assert len(request.asset_selection) == len(ENTITIES) + 1
        assert request.tags["migration/changes"] == str(pending.count)
        result = _run("differential")
        run_id = result.run_id
        paths = query(target, "SELECT entity, mode, load_path, records_read FROM migration_control.migration_runs "
                              "WHERE run_id = %s", [run_id])
        assert len(paths) == len(ENTITIES)
        for entity, mode, path, read in paths:
            assert mode == "differential" and path.startswith("merge (logical: "), (entity, path)
        touched = sum(len(ids) for ids in pending.ids.values())
        assert 0 < sum(read for *_, read in paths) <= touched + 200  # the changed rows (and retries), no table scan
        assert_equal_to_fresh(databases, legacy, target)
        # every table recorded the same position, and the slot was advanced to it
        (position,) = _positions(target)
        with psycopg.connect(legacy) as conn:
            assert changes.slot_state(conn, slot).confirmed == position
    # nothing changed since: the sensor sleeps, and a refresh reads nothing but the retries
    assert isinstance(tick(), SkipReason)
    quiet = _run("differential")
    read = query(target, "SELECT sum(records_read) FROM migration_control.migration_runs WHERE run_id = %s",
                 [quiet.run_id])[0][0]
    assert read <= 200


KILLED_REFRESH = [sys.executable, "-m", "migration_assets.cli", "refresh"]


def test_a_logical_refresh_killed_mid_run_loses_nothing_and_applies_nothing_twice(live, databases, tmp_path):
    legacy, target, slot = live
    _run("full")
    mutate(legacy, 0.05, 1, log=lambda *_: None)
    with psycopg.connect(legacy) as conn:
        before = changes.slot_state(conn, slot).confirmed
    started = query(target, "SELECT coalesce(max(id), 0) FROM migration_control.migration_runs")[0][0]
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"} | {"MIGRATION_REPORTS_DIR": str(tmp_path)}
    worker = subprocess.Popen(KILLED_REFRESH, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    kill_when(worker, lambda: query(target, "SELECT count(*) FROM migration_control.migration_runs WHERE id > %s "
                                            "AND mode = 'differential'", [started])[0][0] >= 10,
              "the refresh", timeout=180)
    done = query(target, "SELECT count(DISTINCT entity) FROM migration_control.migration_runs WHERE id > %s "
                         "AND status = 'COMPLETED'", [started])[0][0]
    assert 10 <= done < len(ENTITIES)  # killed mid-run
    with psycopg.connect(legacy) as conn:  # not every table has the new position: the slot stayed
        assert changes.slot_state(conn, slot).confirmed == before
    _run("differential")  # the tables done re-read their changes (the same rows), the others read theirs
    assert_equal_to_fresh(databases, legacy, target)
    (position,) = _positions(target)
    with psycopg.connect(legacy) as conn:
        assert changes.slot_state(conn, slot).confirmed == position


class _Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_dropped_slot_makes_the_next_refresh_compare_in_full_with_a_warning(live, databases):
    legacy, target, slot = live
    _run("full")
    mutate(legacy, 0.03, 1, log=lambda *_: None)
    assert changes.drop(legacy, slot)
    warnings = _Warnings()
    engine_log = logging.getLogger("migration_assets.engine.load")
    engine_log.addHandler(warnings)
    try:
        result = _run("differential")
    finally:
        engine_log.removeHandler(warnings)
    assert sum(f"the replication slot {slot} was missing and was created now: a full-mode pass" in m
               for m in warnings.messages) == 1  # the first table's load created it; the others found it
    modes = query(target, "SELECT DISTINCT mode FROM migration_control.migration_runs WHERE run_id = %s",
                  [result.run_id])
    assert modes == [("full",)]
    assert_equal_to_fresh(databases, legacy, target)
    mutate(legacy, 0.03, 2, log=lambda *_: None)  # and from then on the slot's changes again
    again = _run("differential")
    assert query(target, "SELECT DISTINCT mode FROM migration_control.migration_runs WHERE run_id = %s",
                 [again.run_id]) == [("differential",)]
    assert_equal_to_fresh(databases, legacy, target)


def test_preflight_names_what_logical_mode_needs(legacy, target):
    with pytest.raises(SchemaMismatch, match=r"MIGRATION_CHANGE_SOURCE=logical needs wal_level=logical on the legacy "
                                             r"server \(it is replica\)"):
        validate(legacy, target, logical_slot="ma_preflight")


def test_a_truncated_legacy_table_is_compared_in_full(live, databases):
    legacy, target, slot = live
    _run("full")
    leaf = next(e for e in ENTITIES if not children(e.name) and e.expected_rows > 1000)
    with psycopg.connect(legacy) as conn:
        conn.execute(f'TRUNCATE "{leaf.legacy_table}"')
    mutate(legacy, 0.02, 1, log=lambda *_: None)
    result = _run("differential")
    modes = dict(query(target, "SELECT entity, mode FROM migration_control.migration_runs WHERE run_id = %s",
                       [result.run_id]))
    assert modes[leaf.name] == "full" and query(target, f'SELECT count(*) FROM public."{leaf.name}"') == [(0,)]
    assert_equal_to_fresh(databases, legacy, target)
