"""The same assets on other executors (executors.py): a run under the multiprocess executor, and
one under the Celery executor with two workers started here against this machine's RabbitMQ,
leave the target exactly as an in-process migration does: an md5 per table over its rows ordered
by id, and the open quarantine.

The runs materialize levels 1 and 2 (11 tables, complete with their parents), three of them in
slices of 20 legacy rows, each slice its own step (assets.build_sliced_asset): every step under
these executors pays a process start or a task round trip, and this is a test of correctness, not
of speed (bench.run measures that)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from migration_assets.assets import KEYS_ASSET
from migration_assets.config import PROJECT_DIR, DbSettings, sqlalchemy_url
from migration_assets.registry import ENTITIES

from .conftest import migrated_in_process, query
from .test_keys import CATALOG, TABLES
from .test_plan_and_deletes import open_quarantine, table_checksums

SUBSET = [e for e in ENTITIES if e.level <= 2]
SLICED = ("profiles", "patients", "addresses")  # unique emails and foreign keys across slices
SLICE_ROWS = 20
VENV_BIN = Path(sys.executable).parent


def _broker_answers(host: str = "127.0.0.1", port: int = 5672) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def reference(databases, legacy) -> str:
    """The subset migrated in process by the engine itself."""
    return migrated_in_process(databases, legacy, SUBSET, "executor_ref")


def _same(target: str, reference: str) -> None:
    names = {e.name for e in SUBSET}
    ours, theirs = table_checksums(target), table_checksums(reference)
    assert {n: ours[n] for n in names} == {n: theirs[n] for n in names}
    assert [r for r in open_quarantine(target) if r[0] in names] == \
        [r for r in open_quarantine(reference) if r[0] in names]


@pytest.fixture()
def instance_env(databases, legacy, target, tmp_path, monkeypatch):
    """A persistent Dagster instance (PostgreSQL, as dagster.yaml) that step processes and
    workers share, and the databases, in this process's environment."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT_DIR / "dagster.yaml").read_text())
    instance_db = DbSettings(url=databases.new("dagster"))
    env = {"DAGSTER_HOME": str(home), "DAGSTER_PG_URL": sqlalchemy_url(instance_db),
           "SOURCE_DB_URL": legacy, "TARGET_DB_URL": target,
           # three tables in slices of 20 legacy rows (4 to 9 slices each at the test scale)
           "MIGRATION_SLICE_ROWS": str(SLICE_ROWS), "MIGRATION_SLICED_TABLES": ",".join(SLICED)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # as `migration-assets setup` does before workers start: the instance's storage, created once
    from migration_assets.cli import prepare_instance
    from migration_assets.config import Databases

    assert prepare_instance(Databases(DbSettings(url=legacy), DbSettings(url=target), instance_db))
    return env


def _run_subset(executor: str, monkeypatch) -> str:
    """Execute full_migration restricted to the subset and target_keys with ``executor``, as the
    code location defines it (reconstructable: step processes and workers load it by module): the
    first step to start sets the keys of the subset's tables aside for every other step process."""
    from dagster import AssetKey, DagsterInstance, execute_job
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    monkeypatch.setenv("MIGRATION_EXECUTOR", executor)  # undone after the test, for the tests that follow
    repo = ReconstructableRepository.for_module("migration_assets.definitions", "defs",
                                                working_directory=str(PROJECT_DIR))
    with DagsterInstance.get() as instance:
        result = execute_job(repo.get_reconstructable_job("full_migration"), instance,
                             asset_selection=[AssetKey(e.name) for e in SUBSET] + [AssetKey(KEYS_ASSET)])
        assert result.success, [ev.message for ev in result.all_events if ev.is_failure][:3]
        return result.run_id


def _wait_ready(workers, names, logs, env, timeout_s: float = 120) -> None:
    """Both workers answer a ping through the broker, or the test fails with a worker's log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for w, log in zip(workers, logs):
            assert w.poll() is None, f"a Celery worker exited: {log.read_text()[-3000:]}"
        ping = subprocess.run([str(VENV_BIN / "celery"), "-A", "dagster_celery.app", "inspect", "ping", "--timeout",
                               "2"], env=env, capture_output=True, text=True, timeout=60)
        if all(name in ping.stdout for name in names):
            return
        time.sleep(1)
    raise AssertionError(f"the Celery workers did not answer within {timeout_s:.0f} s: {logs[0].read_text()[-3000:]}")


def _slices_of(target: str, run_id: str) -> dict[str, tuple[int, set[str]]]:
    """Per sliced table of the run: its slices, and the processes that loaded them."""
    rows = query(target, "SELECT entity, count(*), array_agg(DISTINCT worker) FROM migration_control.slices "
                         "WHERE run_id = %s AND status = 'COMPLETED' GROUP BY entity", [run_id])
    return {name: (n, set(workers)) for name, n, workers in rows}


def test_a_multiprocess_run_equals_an_in_process_migration(instance_env, target, reference, monkeypatch):
    monkeypatch.setenv("MIGRATION_MAX_CONCURRENT", "2")
    as_set_up = query(target, CATALOG, {"t": TABLES})
    run_id = _run_subset("multiprocess", monkeypatch)
    paths = dict(query(target, "SELECT entity, load_path FROM migration_control.migration_runs WHERE run_id = %s",
                       [run_id]))
    assert len(paths) == len(SUBSET)  # one audit row per table, the sliced ones' naming their slices
    assert {p for e, p in paths.items() if e not in SLICED} == {
        "fast (keys set aside for the run: bulk load, then build indexes)"}
    # the keys restored after the last table, as the schema files made them (the tables the
    # subset references or is referenced by included)
    assert query(target, CATALOG, {"t": TABLES}) == as_set_up
    slices = _slices_of(target, run_id)
    assert set(slices) == set(SLICED)
    # each slice was its own step: its own process
    assert all(n > 1 and len(workers) == n for n, workers in slices.values()), slices
    _same(target, reference)


def test_a_celery_run_with_two_workers_equals_an_in_process_migration(instance_env, target, reference, tmp_path,
                                                                      monkeypatch):
    if not _broker_answers():
        pytest.skip("no Celery broker answers on 127.0.0.1:5672 (RabbitMQ, guest/guest): the Celery run was "
                    "not tested")
    # as the README starts them: the project's venv on PATH (the worker runs `celery`), the same
    # databases and instance, one process each
    env = dict(os.environ, **instance_env, MIGRATION_EXECUTOR="celery",
               PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    names = [f"migration-test-{i}-{os.getpid()}" for i in range(2)]
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [subprocess.Popen([str(VENV_BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                                 "-n", name, "--", "-c", "1"], env=env, cwd=tmp_path, stdout=log.open("w"),
                                stderr=subprocess.STDOUT, start_new_session=True)
               for name, log in zip(names, logs)]
    try:
        _wait_ready(workers, names, logs, env)
        run_id = _run_subset("celery", monkeypatch)
        from dagster import DagsterInstance

        with DagsterInstance.get() as instance:
            events = " ".join(str(e.dagster_event.engine_event_data) for e in instance.all_logs(run_id)
                              if e.dagster_event is not None and e.dagster_event.is_engine_event)
        assert all(name in events for name in names)  # both workers executed steps
        audited = query(target, "SELECT entity, status, error_class, error FROM migration_control.migration_runs "
                                "WHERE run_id = %s ORDER BY id", [run_id])
        assert len(audited) == len(SUBSET), audited  # one row each: no step failed and was retried
        slices = _slices_of(target, run_id)
        assert set(slices) == set(SLICED) and all(n > 1 for n, _ in slices.values())
        # the slices of the tables ran on both workers' processes
        assert len(set().union(*(workers for _, workers in slices.values()))) >= 2, slices
        _same(target, reference)
    finally:
        for w in workers:
            if w.poll() is None:
                os.killpg(w.pid, 15)
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(w.pid, 9)
