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
from migration_assets.target_schema import apply_migrations

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
    for mode in ("full", "full", None):  # first load (fast path), a re-run, then after the mutation
        if mode is None:
            mutate(legacy, fraction=0.02, log=lambda *_: None)
            mode = "differential"
        result = materialize(table_assets, resources=build_resources(), instance=DagsterInstance.ephemeral(),
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
