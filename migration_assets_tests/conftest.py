"""Fixtures: throw-away legacy and target databases on a real PostgreSQL.

The server is MIGRATION_PG_URL when set (CI sets it to this machine's PostgreSQL), the embedded
pgserver otherwise. Each test session creates its own databases and drops them at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Callable

import psycopg
import pytest
from psycopg import sql

from migration_assets.config import DbSettings, admin_url, ensure_database
from migration_assets.simulator import generate
from migration_assets.migrations import apply_migrations

TEST_SCALE = float(os.environ.get("TEST_SCALE", "0.01"))


@pytest.fixture(scope="session")
def admin() -> str:
    url, _ = admin_url()
    return url


class TempDatabases:
    def __init__(self, admin: str):
        self.admin = admin
        self.created: list[str] = []

    def new(self, label: str) -> str:
        name = f"ma_test_{label}_{uuid.uuid4().hex[:8]}"
        self.created.append(name)
        return ensure_database(self.admin, name).conninfo()

    def drop_all(self) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            for name in self.created:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def databases(admin):
    dbs = TempDatabases(admin)
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session")
def legacy(databases) -> str:
    """A dirty legacy database at TEST_SCALE, generated once per session (read-only for tests)."""
    conninfo = databases.new("legacy")
    generate(conninfo, scale=TEST_SCALE, seed=7, log=lambda *_: None)
    return conninfo


@pytest.fixture()
def target(databases) -> str:
    """A fresh target database with the schema applied."""
    conninfo = databases.new("target")
    apply_migrations(conninfo)
    return conninfo


@pytest.fixture()
def dagster_env(monkeypatch, legacy, target):
    """Point the Dagster definitions at the test databases."""
    monkeypatch.setenv("SOURCE_DB_URL", legacy)
    monkeypatch.setenv("TARGET_DB_URL", target)
    return DbSettings(url=legacy), DbSettings(url=target)


@contextmanager
def table_locked(conninfo: str, table: str):
    """Another session holds ``table`` (schema-qualified) in ACCESS EXCLUSIVE mode until the block ends."""
    locked, release = threading.Event(), threading.Event()

    def hold():
        with psycopg.connect(conninfo) as conn:
            conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(*table.split("."))))
            locked.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(10)
        yield
    finally:
        release.set()
        holder.join()


def migrated_in_process(databases, legacy: str, entities, label: str) -> str:
    """A new target with ``entities`` migrated one after the other by the engine itself (the
    reference the executor and slice tests compare with)."""
    from migration_assets.engine.commit import migrate_entity
    from migration_assets.engine.options import LoadOptions

    target = databases.new(label)
    apply_migrations(target)
    for e in sorted(entities, key=lambda e: e.level):
        migrate_entity(legacy, target, e.name, LoadOptions(run_id="reference"))
    return target


def kill_when(worker: subprocess.Popen, ready: Callable[[], bool], what: str, timeout: float = 120,
              before: Callable[[], None] | None = None) -> None:
    """SIGKILL ``worker`` as soon as ``ready()`` holds (``before()`` first, to check the moment):
    the test fails if ``what`` ends or ``timeout`` seconds pass before, and the worker never
    outlives the call."""
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert worker.poll() is None, f"{what} ended before it was killed"
            assert time.monotonic() < deadline, f"{what} never got there"
            time.sleep(0.05)
        if before is not None:
            before()
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == -signal.SIGKILL


def query(conninfo: str, q, params=None):
    with psycopg.connect(conninfo) as conn:
        return conn.execute(q, params).fetchall()


@pytest.fixture()
def private_migration(databases, target, monkeypatch):
    """Factory: a legacy database of the test's own (for tests that change the source or need
    clean data), fully migrated through Dagster into ``target``. Returns (legacy, target, result)."""

    def make(scale: float = 0.01, seed: int = 7, rates=None):
        from dagster import DagsterInstance, materialize

        from migration_assets.definitions import build_resources, table_assets
        from migration_assets.simulator import DirtyRates

        legacy = databases.new("legacy_private")
        generate(legacy, scale=scale, seed=seed, rates=rates or DirtyRates(), log=lambda *_: None)
        monkeypatch.setenv("SOURCE_DB_URL", legacy)
        monkeypatch.setenv("TARGET_DB_URL", target)
        result = materialize(table_assets(), resources=build_resources(), instance=DagsterInstance.ephemeral())
        assert result.success
        return legacy, target, result

    return make
