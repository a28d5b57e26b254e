"""What an operator meets: the demo never destroys a real database, bad settings are refused by
name before anything runs, a real signal stops a real run, exit codes tell the truth, an
unreachable database is one line, and no password is ever printed or stored."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from migration_assets import cli
from migration_assets.settings import SettingsError, load
from migration_assets.simulator import NotASimulatedDatabase, generate, mutate

from .conftest import query

PROJECT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def _isolated(monkeypatch, tmp_path, **env):
    """A CLI environment of the test's own: no DAGSTER_HOME (ephemeral instance), .env and the
    reports in tmp_path."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setattr(cli, "PROJECT_DIR", tmp_path)
    monkeypatch.setenv("MIGRATION_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.chdir(tmp_path)  # the code location's settings may predate the variable: relative to here
    for k, v in env.items():
        monkeypatch.setenv(k, v)


@pytest.mark.parametrize("name,value,allowed", [
    ("BATCH_SIZE", "0", "integer 1..1,000,000"),
    ("BATCH_SIZE", "abc", "integer 1..1,000,000"),
    ("BATCH_SIZE", "-5", "integer 1..1,000,000"),
    ("ERROR_RECOVERY_ENABLED", "maybe", "true/false"),
    ("MAX_RETRY_ATTEMPTS", "-1", "integer 0..20"),
    ("MIGRATION_MODE", "fast", "full, differential"),
    ("TARGET_ENV", "prod", "local, remote"),
    ("DELETE_POLICY", "purge", "hard, soft"),
    ("MIGRATION_TIMEOUT", "10s", "integer"),
])
def test_a_bad_setting_stops_the_command_naming_variable_value_and_what_is_allowed(
        name, value, allowed, monkeypatch, tmp_path, capsys, legacy, target):
    with pytest.raises(SettingsError) as err:
        load({name: value})
    assert f"{name}={value!r}" in str(err.value) and allowed in str(err.value)
    _isolated(monkeypatch, tmp_path, SOURCE_DB_URL=legacy, TARGET_DB_URL=target, **{name: value})
    assert cli.main(["migrate"]) == 2
    assert name in capsys.readouterr().err
    assert query(target, "SELECT count(*) FROM migration_control.migration_runs")[0][0] == 0  # nothing ran


def test_batch_size_zero_never_takes_a_lock(legacy, target, tmp_path):
    """It looped forever holding ACCESS EXCLUSIVE on the table being loaded: now the command
    refuses it at once, and no session of it ever held a lock on the target."""
    env = dict(os.environ, SOURCE_DB_URL=legacy, TARGET_DB_URL=target, BATCH_SIZE="0")
    env.pop("DAGSTER_HOME", None)
    proc = subprocess.Popen([str(VENV_BIN / "migration-assets"), "migrate"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dbname = psycopg.conninfo.conninfo_to_dict(target)["dbname"]
    locks = 0
    while proc.poll() is None:
        locks += query(target, "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                               "WHERE a.datname = %s AND a.application_name = 'migration_assets' "
                               "AND l.mode = 'AccessExclusiveLock'", [dbname])[0][0]
        time.sleep(0.05)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "BATCH_SIZE='0'" in err and locks == 0


def test_the_same_database_as_source_and_target_is_refused(legacy, monkeypatch, tmp_path, capsys):
    _isolated(monkeypatch, tmp_path, SOURCE_DB_URL=legacy, TARGET_DB_URL=legacy)
    assert cli.main(["migrate"]) == 2
    assert "same database" in capsys.readouterr().err
    assert query(legacy, "SELECT to_regclass('migration_control.migration_runs')")[0][0] is None


def test_the_simulator_never_touches_a_database_it_did_not_create(databases):
    real = databases.new("real_legacy")
    dbname = psycopg.conninfo.conninfo_to_dict(real)["dbname"]
    with psycopg.connect(real) as conn:
        conn.execute("CREATE TABLE users (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO users VALUES (1, 'a real customer')")
    with pytest.raises(NotASimulatedDatabase, match=f"--force {dbname}"):
        generate(real, scale=0.001, log=lambda *_: None)
    with pytest.raises(NotASimulatedDatabase):
        mutate(real, log=lambda *_: None)
    assert query(real, "SELECT name FROM users") == [("a real customer",)]
    generate(real, scale=0.001, log=lambda *_: None, force=dbname)  # told so explicitly, by name
    generate(real, scale=0.001, log=lambda *_: None)  # now it is the simulator's


def test_setup_writes_a_private_env_file_and_no_other_command_writes_it(legacy, target, monkeypatch, tmp_path):
    _isolated(monkeypatch, tmp_path, SOURCE_DB_URL=legacy, TARGET_DB_URL=target)
    assert cli.main(["setup"]) == 0
    env_file = tmp_path / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    before = env_file.read_text()
    monkeypatch.setenv("TARGET_DB_URL", legacy)  # a one-off override that fails
    assert cli.main(["migrate"]) == 2
    monkeypatch.setenv("TARGET_DB_URL", target)
    assert cli.main(["summary"]) == 0
    assert env_file.read_text() == before


@pytest.mark.parametrize("command", ["migrate", "status"])
def test_unreachable_or_missing_databases_are_one_line_at_once(command, legacy, target, monkeypatch, tmp_path,
                                                               capsys):
    """Which database, and whether it did not answer or refused the login (an unknown role is the
    refusal this trust-auth server can give; a wrong password is refused the same way)."""
    for variable, url, which, what in (
            ("SOURCE_DB_URL", "host=127.0.0.1 port=1 dbname=x user=x", "legacy", "does not answer"),
            ("TARGET_DB_URL", target.replace("dbname=", "dbname=no_such_"), "target", "refused the connection"),
            ("TARGET_DB_URL", target.replace("user=", "user=no_such_"), "target", "refused the connection")):
        _isolated(monkeypatch, tmp_path, SOURCE_DB_URL=legacy, TARGET_DB_URL=target)
        monkeypatch.setenv(variable, url)
        started = time.monotonic()
        assert cli.main([command]) == 2
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert time.monotonic() - started < 15
        assert len(err.splitlines()) == 1 and "Traceback" not in err and captured.out == ""
        assert err.startswith(f"migration-assets {command}: the {which} database (") and f") {what}: " in err, err


def test_failed_error_checks_make_the_command_fail(private_migration, monkeypatch, tmp_path, capsys):
    legacy, target, _ = private_migration(scale=0.005, seed=31)
    _isolated(monkeypatch, tmp_path, SOURCE_DB_URL=legacy, TARGET_DB_URL=target)
    assert cli.main(["migrate"]) == 0
    with psycopg.connect(target) as conn:  # a bad script edits a loaded row behind the engine's back
        conn.execute("UPDATE public.offices SET name = 'edited by hand' "
                     "WHERE id = (SELECT id FROM public.offices ORDER BY id LIMIT 1)")
    assert cli.main(["migrate"]) == 1
    out = capsys.readouterr().out
    assert "FAILURE" in out and "offices.content_checksum" in out


def test_no_password_is_printed_whatever_the_shape_of_the_url(legacy, monkeypatch, tmp_path, capsys):
    secret = f"se/cr?t-{uuid.uuid4().hex[:6]}"
    for url in (f"postgresql://postgres:{secret}@127.0.0.1:1/db",  # unencoded '/': libpq would misread it
                f"host=127.0.0.1 port=1 dbname=db user=postgres password={secret}"):
        _isolated(monkeypatch, tmp_path, SOURCE_DB_URL=legacy, TARGET_DB_URL=url)
        for command in (["migrate"], ["status"], ["report"]):
            assert cli.main(command) == 2
            captured = capsys.readouterr()
            text = captured.out + captured.err
            assert secret not in text and "cr?t" not in text, (command, text)


def test_resources_hold_environment_bindings_only(databases, monkeypatch, admin):
    """MIGRATION_PG_URL with a password, no SOURCE/TARGET variables: the resources bind the resolved
    databases by variable name, so no connection string is ever a resource config value (Dagster
    keeps those in run snapshots)."""
    from dagster import EnvVar

    from migration_assets.definitions import build_resources

    prefix = f"ma_test_envvar_{uuid.uuid4().hex[:6]}"
    params = psycopg.conninfo.conninfo_to_dict(admin)
    params["password"] = "pw-" + uuid.uuid4().hex  # trust auth: ignored by the server
    for name in ("SOURCE_DB_URL", "TARGET_DB_URL", "DAGSTER_PG_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MIGRATION_PG_URL", psycopg.conninfo.make_conninfo(**params))
    monkeypatch.setenv("MIGRATION_DB_PREFIX", prefix)
    try:
        resources = build_resources()
        for key in ("legacy", "target"):
            assert isinstance(resources[key].url, EnvVar)
        assert params["password"] not in repr(resources) + str(resources["settings"])
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for suffix in ("legacy", "target", "dagster"):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(f"{prefix}_{suffix}")))


def test_a_real_signal_stops_a_real_run(databases, target, tmp_path):
    """SIGTERM while a table loads: the table rolls back, nothing is retried, the audit trail and
    Dagster say CANCELED, the command exits 130."""
    from dagster import DagsterInstance, DagsterRunStatus

    legacy = databases.new("legacy_signal")
    generate(legacy, scale=0.05, seed=37, log=lambda *_: None)
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = dict(os.environ, SOURCE_DB_URL=legacy, TARGET_DB_URL=target, DAGSTER_HOME=str(home))
    proc = subprocess.Popen([str(VENV_BIN / "migration-assets"), "migrate"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    dbname = psycopg.conninfo.conninfo_to_dict(target)["dbname"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        copying = query(target, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
                                "AND query LIKE 'COPY %%FROM STDIN%%'", [dbname])[0][0]
        if copying:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before any table was copying"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:]
    assert "RETRY" not in out.upper().replace("NOTHING IS RETRIED", "").replace("NOTHING WAS RETRIED", "")
    assert "CANCELED" in out
    statuses = dict(query(target, "SELECT status, count(*) FROM migration_control.migration_runs GROUP BY 1"))
    assert set(statuses) <= {"COMPLETED", "CANCELED"}
    loaded = statuses.get("COMPLETED", 0)
    assert loaded < 45
    os.environ["DAGSTER_HOME"], saved = str(home), os.environ.get("DAGSTER_HOME")
    try:
        instance = DagsterInstance.get()
        runs = instance.get_runs()
        assert [r.status for r in runs] == [DagsterRunStatus.CANCELED]
    finally:
        if saved is None:
            os.environ.pop("DAGSTER_HOME")
        else:
            os.environ["DAGSTER_HOME"] = saved


def test_only_source_and_target_configured_runs_without_a_dagster_database(legacy, target, monkeypatch, tmp_path,
                                                                            capsys):
    """The README's first database option sets SOURCE_DB_URL and TARGET_DB_URL only: the instance
    in DAGSTER_HOME (dagster.yaml names DAGSTER_PG_URL) cannot open; the run still happens, and one
    line says it is not kept for the UI."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT / "dagster.yaml").read_text())
    _isolated(monkeypatch, tmp_path, SOURCE_DB_URL=legacy, TARGET_DB_URL=target, DAGSTER_HOME=str(home))
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    monkeypatch.delenv("MIGRATION_PG_URL", raising=False)
    assert cli.main(["migrate"]) == 0
    err = capsys.readouterr().err
    assert "not kept for the UI" in err and "Traceback" not in err


def test_every_command_reads_the_env_file_and_the_environment_wins(legacy, target, monkeypatch, tmp_path, capsys):
    """.env (written by setup) fills in what the environment does not set, for every command; a
    variable set in the environment wins over the file; no embedded server is started."""
    _isolated(monkeypatch, tmp_path, TARGET_DB_URL=target, MIGRATION_HOME=str(tmp_path))
    monkeypatch.delenv("SOURCE_DB_URL", raising=False)
    cli.write_dotenv({"SOURCE_DB_URL": legacy, "TARGET_DB_URL": "host=127.0.0.1 port=1 dbname=stale user=x"})
    assert cli.main(["summary"]) == 0
    assert capsys.readouterr().err == (f"migration-assets summary: settings the environment does not set read from "
                                       f"{tmp_path / '.env'}\n")
    assert os.environ["SOURCE_DB_URL"] == legacy and os.environ["TARGET_DB_URL"] == target
    assert not (tmp_path / ".pgdata").exists()
