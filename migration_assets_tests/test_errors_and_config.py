"""Error classification, secrets hygiene, and the embedded-server path."""

import psycopg
import pytest
from psycopg import errors as pgerr

from migration_assets.config import DbSettings
from migration_assets.errors import classify
from migration_assets.resources import PostgresResource


def test_transient_and_permanent_errors_are_told_apart():
    assert classify(psycopg.OperationalError("server closed the connection unexpectedly")).transient
    assert classify(Exception("Cannot use a pool after calling end")).name == "CONNECTION_POOL"
    assert not classify(pgerr.UndefinedColumn("column x does not exist")).transient
    assert classify(Exception('duplicate key value violates unique constraint "p_key"')).name == "DUPLICATE_KEY"
    assert classify(Exception('violates check constraint "profiles_email_email_format"')).name == "EMAIL_FORMAT"
    assert classify(Exception("insert violates foreign key constraint")).name == "FOREIGN_KEY"
    assert classify(TimeoutError("MIGRATION_TIMEOUT of 5s exceeded")).name == "TIMEOUT"
    assert classify(ValueError("something else")).name == "UNKNOWN"


def test_passwords_never_show():
    db = DbSettings(host="db.example", port=5433, dbname="legacy", user="app", password="s3cret-pw")
    assert "s3cret-pw" not in repr(db) and "s3cret-pw" not in str(db) and "s3cret-pw" not in db.describe()
    assert "s3cret-pw" in db.conninfo()  # only handed to the driver
    res = PostgresResource(host="db.example", user="app", password="s3cret-pw", database="legacy")
    assert "s3cret-pw" not in repr(res) and "s3cret-pw" not in str(res)
    with pytest.raises(psycopg.OperationalError) as info:
        PostgresResource(host="127.0.0.1", port=1, user="app", password="s3cret-pw", database="x").connect(
            connect_timeout=2)
    assert "s3cret-pw" not in str(info.value)
    assert "app@127.0.0.1:1/x" in str(info.value)
    assert "s3cret-pw" not in classify(psycopg.OperationalError("x password=s3cret-pw")).message


def test_unreachable_target_fails_clearly_then_completes_once_it_is_back(monkeypatch, legacy, target):
    from dagster import DagsterInstance, materialize

    from migration_assets.definitions import build_resources, table_assets

    monkeypatch.setenv("SOURCE_DB_URL", legacy)
    monkeypatch.setenv("TARGET_DB_URL", "host=127.0.0.1 port=1 dbname=nowhere user=x connect_timeout=2")
    monkeypatch.setenv("MAX_RETRY_ATTEMPTS", "0")
    offices = [a for a in table_assets() if a.key.path[-1] == "offices"]
    result = materialize(offices, resources=build_resources(), instance=DagsterInstance.ephemeral(),
                         raise_on_error=False)
    assert not result.success
    failure = [ev for ev in result.all_events if ev.is_step_failure][0]
    text = str(failure.event_specific_data.error)
    assert "cannot connect to x@127.0.0.1:1/nowhere" in text
    # the target is back (here: the right address): the same materialization completes
    monkeypatch.setenv("TARGET_DB_URL", target)
    again = materialize(offices, resources=build_resources(), instance=DagsterInstance.ephemeral())
    assert again.success
    (n,) = psycopg.connect(target).execute("SELECT count(*) FROM public.offices").fetchone()
    assert n > 0


def test_embedded_server_starts_and_answers(tmp_path, monkeypatch):
    pytest.importorskip("pgserver", reason="pgserver is a declared dependency; install it")
    monkeypatch.setenv("MIGRATION_HOME", str(tmp_path))
    from migration_assets.config import embedded_server_url, stop_embedded_server

    from migration_assets.cli import main

    url = embedded_server_url()
    try:
        with psycopg.connect(url) as conn:
            version = conn.execute("SHOW server_version_num").fetchone()[0]
            wal = conn.execute("SHOW max_wal_size").fetchone()[0]
        assert int(version) >= 150000 and wal == "128MB"  # a scratch server keeps its WAL small
        assert main(["server", "status"]) == 0
    finally:
        assert main(["server", "stop"]) == 0
    assert not (tmp_path / ".pgdata" / "postmaster.pid").exists()
