"""Error classification, secrets hygiene, and the embedded-server path."""

import psycopg
import pytest
from psycopg import errors as pgerr

from migration_assets.errors import classify


def test_real_server_errors_are_classified_by_sqlstate_and_constraint(target):
    """What the server itself raises: a statement timeout (not an operator's cancel), the email
    rule of a registry table (its constraint's name), a foreign key of the registry."""
    with psycopg.connect(target) as conn:
        conn.execute("SET statement_timeout = 50")
        with pytest.raises(pgerr.QueryCanceled) as timed_out:
            conn.execute("SELECT pg_sleep(1)")
    assert classify(timed_out.value).name == "TIMEOUT"
    with psycopg.connect(target) as conn:
        with pytest.raises(pgerr.CheckViolation) as bad_email:
            conn.execute("INSERT INTO public.offices (id, name, code, email, is_active, created_at, updated_at) "
                         "VALUES (gen_random_uuid(), 'x', 'x', 'not an address', true, now(), now())")
    assert classify(bad_email.value).name == "EMAIL_FORMAT"
    with psycopg.connect(target) as conn:
        with pytest.raises(pgerr.ForeignKeyViolation) as orphan:
            conn.execute("INSERT INTO public.doctors (id, profile_id, license_number, specialty, is_active, "
                         "updated_at) VALUES (gen_random_uuid(), gen_random_uuid(), 'x', 'general', true, now())")
    kind = classify(orphan.value)
    assert (kind.name, kind.recovery) == ("FOREIGN_KEY", "materialize the parent entity first; orphans are quarantined")


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
