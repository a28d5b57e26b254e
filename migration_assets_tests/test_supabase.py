"""The target as a Supabase project really is: behind a transaction or session pooler.

Supabase shows the transaction pooler (Supavisor, port 6543) first. A transaction-mode pooler
hands each transaction to whichever server connection is free, so nothing may outlive a
transaction: no server-side prepared statements, no session ``SET``, no session advisory lock.
The test starts a real PgBouncer (Debian's package) on a free loopback port in front of the
test server, with a pool smaller than the connections the run opens (so server connections
are shared between them), and runs the whole life of a migration through it: set-up, migrate,
migrate again, a live-system mutation, a differential refresh, status.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
from dagster import DagsterInstance, materialize
from psycopg import conninfo as pg_conninfo

from migration_assets.assets import MODE_TAG
from migration_assets.reports import status
from migration_assets.simulator import generate, mutate
from migration_assets.migrations import apply_migrations

from .conftest import query, table_locked

PGBOUNCER = shutil.which("pgbouncer") or next((p for p in ("/usr/sbin/pgbouncer",) if os.path.exists(p)), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgBouncer:
    """A PgBouncer of the test's own, in front of the server of ``admin``, in ``mode``."""

    def __init__(self, admin: str, mode: str):
        server = pg_conninfo.conninfo_to_dict(admin)
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ma_pgbouncer_"))
        host = server.get("host", "127.0.0.1")
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(f"""[databases]
* = host={host} port={server.get('port', 5432)} user={server.get('user', 'postgres')}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = any
pool_mode = {mode}
default_pool_size = 3
max_client_conn = 200
server_reset_query = DISCARD ALL
ignore_startup_parameters = extra_float_digits
logfile = {self.dir}/pgbouncer.log
pidfile = {self.dir}/pgbouncer.pid
""")
        cmd = [PGBOUNCER, str(ini)]
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # it refuses to run as root
            shutil.chown(self.dir, "postgres")
            os.chmod(self.dir, 0o755)
            cmd = [PGBOUNCER, "-u", "postgres", str(ini)]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not start: {self.process.stderr.read().decode(errors='replace')[-500:]}")

    def url(self, dbname: str) -> str:
        return pg_conninfo.make_conninfo(host="127.0.0.1", port=str(self.port), dbname=dbname, user="postgres",
                                         application_name="migration_assets")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(params=["transaction", "session"])
def pooler(request, admin):
    if PGBOUNCER is None:
        pytest.skip("pgbouncer is not installed (Debian package pgbouncer; .ci/run installs it where apt can)")
    bouncer = PgBouncer(admin, request.param)
    yield bouncer
    bouncer.stop()


def _dbname(conninfo: str) -> str:
    return pg_conninfo.conninfo_to_dict(conninfo)["dbname"]


def test_migrate_twice_mutate_refresh_and_status_through_a_pooler(pooler, databases, monkeypatch):
    from migration_assets.definitions import build_resources, table_assets

    legacy = databases.new("legacy_pooled")
    generate(legacy, scale=0.005, seed=29, log=lambda *_: None)
    target = pooler.url(_dbname(databases.new("target_pooled")))
    assert apply_migrations(target)  # set-up through the pooler
    assert apply_migrations(target) == []  # and again: nothing left to apply, no lock left behind
    monkeypatch.setenv("SOURCE_DB_URL", legacy)
    monkeypatch.setenv("TARGET_DB_URL", target)
    # this seed's cascades put a fifth of tasks in quarantine: the budget's warning (above 10%)
    # is not what a pooler changes
    monkeypatch.setenv("QUARANTINE_WARN_PERCENT", "50")
    for mode in ("full", "full", None):  # first load (fast path), a re-run, then after the mutation
        if mode is None:
            mutate(legacy, fraction=0.02, log=lambda *_: None)
            mode = "differential"
        result = materialize(table_assets(), resources=build_resources(), instance=DagsterInstance.ephemeral(),
                             tags={MODE_TAG: mode}, raise_on_error=False)
        failures = [e.message for e in result.all_events if e.is_failure]
        assert result.success, failures[:3]
        checks = result.get_asset_check_evaluations()
        assert checks and all(c.passed for c in checks), [c.asset_check_key for c in checks if not c.passed]
    rows, healthy = status(legacy, target)
    assert healthy, [r for r in rows if r["state"] != "OK"]
    # nothing the run did stayed behind on the server connections the pooler shares
    with psycopg.connect(pooler.url(_dbname(target)), autocommit=True, prepare_threshold=None) as conn:
        assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0


# ------------------------------------------------------------------ migration history and roles

CLI_ROW = ("20240101000000", ["CREATE TABLE public.app_own_table (id int)"], "app_init")


def _history(conninfo: str) -> list[str]:
    with psycopg.connect(conninfo) as conn:
        return [v for (v,) in conn.execute("SELECT version FROM migration_control.schema_migrations ORDER BY 1")]


def _files() -> list[str]:
    from migration_assets.target_schema import MIGRATIONS_DIR

    return sorted(p.stem.partition("_")[0] for p in MIGRATIONS_DIR.glob("*.sql"))


def test_setup_beside_the_supabase_cli_history_leaves_it_alone(databases):
    """A project whose history the Supabase CLI (or Studio) wrote: the project's migrations apply
    and are recorded in migration_control; the CLI's table keeps exactly its own rows."""
    target = databases.new("target_cli_history")
    with psycopg.connect(target) as conn:
        conn.execute("CREATE SCHEMA supabase_migrations")
        conn.execute("CREATE TABLE supabase_migrations.schema_migrations "
                     "(version text PRIMARY KEY, statements text[], name text)")
        conn.execute("INSERT INTO supabase_migrations.schema_migrations VALUES (%s, %s, %s)", CLI_ROW)
    assert apply_migrations(target) == _files()
    assert apply_migrations(target) == []
    assert _history(target) == _files()
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT version, statements, name FROM supabase_migrations.schema_migrations").fetchall() \
            == [CLI_ROW]


def test_setup_without_a_cli_history_creates_none(target):
    assert _history(target) == _files()
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT to_regnamespace('supabase_migrations')").fetchone()[0] is None


def test_an_earlier_versions_history_is_adopted(databases):
    """Earlier versions wrote their history (with a checksum column) into supabase_migrations: it
    moves to migration_control, nothing is applied twice, and the CLI's place is free again."""
    target = databases.new("target_old_history")
    apply_migrations(target)
    with psycopg.connect(target) as conn:
        conn.execute("CREATE SCHEMA supabase_migrations")
        conn.execute("CREATE TABLE supabase_migrations.schema_migrations (version text PRIMARY KEY, name text, "
                     "checksum text, applied_at timestamptz DEFAULT now())")
        conn.execute("INSERT INTO supabase_migrations.schema_migrations "
                     "SELECT * FROM migration_control.schema_migrations")
        conn.execute("DROP TABLE migration_control.schema_migrations")
    assert apply_migrations(target) == []
    assert _history(target) == _files()
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT to_regclass('supabase_migrations.schema_migrations')").fetchone()[0] is None


def test_missing_roles_name_the_statement_a_superuser_must_run(databases, admin, monkeypatch, tmp_path):
    """A plain PostgreSQL whose owner is not a superuser: the roles migration stops with what is
    missing and the statement to run, not PostgreSQL's raw permission error."""
    import uuid

    from psycopg import sql as psql

    from migration_assets import migrations

    owner, missing = f"ma_owner_{uuid.uuid4().hex[:8]}", f"ma_role_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(psql.SQL("CREATE ROLE {} LOGIN").format(psql.Identifier(owner)))
    try:
        dbname = _dbname(databases.new("target_no_roles"))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(psql.SQL("ALTER DATABASE {} OWNER TO {}").format(psql.Identifier(dbname),
                                                                           psql.Identifier(owner)))
        params = pg_conninfo.conninfo_to_dict(admin)
        params.update(dbname=dbname, user=owner)
        (tmp_path / "20990101000001_roles.sql").write_text(f'CREATE ROLE "{missing}" NOLOGIN;\n')
        monkeypatch.setattr(migrations, "ROLES", ("anon", missing))
        with pytest.raises(migrations.SetupError) as err:
            migrations.apply_migrations(pg_conninfo.make_conninfo(**params), tmp_path)
        assert missing in str(err.value) and "CREATEROLE" in str(err.value)
        assert f'CREATE ROLE "{missing}" NOLOGIN NOINHERIT' in str(err.value)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(psql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psql.Identifier(dbname)))
            conn.execute(psql.SQL("DROP ROLE IF EXISTS {}").format(psql.Identifier(owner)))


def test_a_check_that_times_out_is_a_timeout_and_never_reloads_its_table(databases, target, monkeypatch):
    """MIGRATION_TIMEOUT bounds the checks' statements too. A check that runs into it (here: its
    results table locked by another session) fails the step as a TIMEOUT naming the table, at
    once: the table was loaded and committed (its COMPLETED row), and a retry would load it
    again; the step's failure hook adds the FAILED row with the TIMEOUT."""
    from migration_assets.definitions import build_resources, table_assets

    legacy = databases.new("legacy_check_timeout")
    generate(legacy, scale=0.002, seed=41, log=lambda *_: None)
    monkeypatch.setenv("SOURCE_DB_URL", legacy)
    monkeypatch.setenv("TARGET_DB_URL", target)
    monkeypatch.setenv("MIGRATION_TIMEOUT", "1000")
    offices = [a for a in table_assets() if a.key.path[-1] == "offices"]
    with table_locked(target, "migration_control.check_results"):
        result = materialize(offices, resources=build_resources(), instance=DagsterInstance.ephemeral(),
                             raise_on_error=False)
    assert not result.success
    failure = next(ev for ev in result.all_events if ev.is_step_failure)
    text = str(failure.event_specific_data.error)
    assert "offices" in text and "TIMEOUT" in text
    assert not any(ev.event_type_value == "STEP_UP_FOR_RETRY" for ev in result.all_events)
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT status, error_class, count(*) FROM migration_control.migration_runs "
                            "WHERE entity = 'offices' GROUP BY 1, 2 ORDER BY 1").fetchall() == [
            ("COMPLETED", None, 1), ("FAILED", "TIMEOUT", 1)]


def test_a_table_owned_by_another_role_that_references_a_target_table_turns_off_its_fast_path(databases, admin):
    """Like Supabase's auth or storage tables referencing public ones: the loading role (the
    tables' owner, no superuser) cannot drop that foreign key, so the table loads through the
    merge instead, and says so."""
    import uuid

    from psycopg import sql as psql

    from migration_assets.engine.commit import migrate_entity
    from migration_assets.engine.options import LoadOptions

    owner, other = f"ma_owner_{uuid.uuid4().hex[:8]}", f"ma_other_{uuid.uuid4().hex[:8]}"
    legacy = databases.new("legacy_foreign_owner")
    generate(legacy, scale=0.002, seed=43, log=lambda *_: None)
    dbname = _dbname(databases.new("target_foreign_owner"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(psql.SQL("CREATE ROLE {} LOGIN").format(psql.Identifier(owner)))
        conn.execute(psql.SQL("CREATE ROLE {} NOLOGIN").format(psql.Identifier(other)))
        conn.execute(psql.SQL("ALTER DATABASE {} OWNER TO {}").format(psql.Identifier(dbname), psql.Identifier(owner)))
    params = pg_conninfo.conninfo_to_dict(admin)
    try:
        params.update(dbname=dbname, user=owner)
        as_owner = pg_conninfo.make_conninfo(**params)
        with psycopg.connect(as_owner) as conn:
            conn.execute("ALTER SCHEMA public OWNER TO CURRENT_USER")
        apply_migrations(as_owner)
        params["user"] = pg_conninfo.conninfo_to_dict(admin).get("user", "postgres")
        with psycopg.connect(pg_conninfo.make_conninfo(**params)) as conn:  # as a superuser: another role's table
            conn.execute("CREATE SCHEMA storage_like")
            conn.execute("CREATE TABLE storage_like.objects (office_id uuid REFERENCES public.offices (id))")
            conn.execute(psql.SQL("ALTER TABLE storage_like.objects OWNER TO {}").format(psql.Identifier(other)))
        result = migrate_entity(legacy, as_owner, "offices", LoadOptions(run_id="foreign-owner"))
        assert result.load_path.startswith("merge (fast path not possible: storage_like.objects, owned by")
        assert result.inserted > 0 and result.remaining_difference == 0
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(psql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psql.Identifier(dbname)))
            for role in (owner, other):
                conn.execute(psql.SQL("DROP ROLE IF EXISTS {}").format(psql.Identifier(role)))


def test_two_setups_creating_the_same_role_at_once_both_succeed(databases):
    """Roles are the cluster's, the set-up lock one database's: the second of two set-ups that
    both found a role missing waits on the first's CREATE ROLE, fails on its commit, and runs
    the file again (migrations._execute_file)."""
    import threading

    from migration_assets.migrations import _execute_file

    first, second = databases.new("role_race_1"), databases.new("role_race_2")
    role = f"ma_race_{os.getpid()}"
    text = (f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN "
            f"CREATE ROLE {role} NOLOGIN; END IF; END $$; CREATE TABLE ran_here (x int)")
    errors = []
    try:
        with psycopg.connect(first) as a, psycopg.connect(second) as b:
            (b_pid,) = b.execute("SELECT pg_backend_pid()").fetchone()  # both in a transaction, as under setup's lock
            a.execute("SELECT 1")
            _execute_file(a, text, creates_roles=True)  # the role is created, not committed yet

            def other():
                try:
                    _execute_file(b, text, creates_roles=True)
                    b.commit()
                except Exception as exc:  # reported below
                    errors.append(exc)

            worker = threading.Thread(target=other)
            worker.start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not query(
                    first, "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", [b_pid])[0][0]:
                time.sleep(0.05)
            a.commit()  # the second's CREATE ROLE now fails on the unique role name, then runs again
            blocked = time.monotonic() < deadline
            worker.join(30)
        assert blocked and errors == []
        assert query(second, "SELECT to_regclass('ran_here') IS NOT NULL") == [(True,)]
    finally:
        with psycopg.connect(first, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")
