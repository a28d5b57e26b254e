"""Connections kept open between steps (connections.py), on a real server: reused, rolled back
when given back, replaced when the server closed them, capped per process."""

import signal
import time

import psycopg
import pytest

from migration_assets import connections


def _pid(conn) -> int:
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


@pytest.fixture()
def db(databases):
    return databases.new("conn")


def test_a_connection_given_back_is_reused_rolled_back_and_keeps_its_setup(db):
    def setup(conn):
        conn.execute("SET application_name = 'migration-test'")
        conn.commit()

    with connections.borrowed(db, "test-role", setup) as conn:
        first = _pid(conn)
        conn.execute("CREATE TEMP TABLE scratch (x int) ON COMMIT DROP")  # left uncommitted
    with connections.borrowed(db, "test-role", setup) as conn:
        assert _pid(conn) == first
        assert conn.execute("SELECT to_regclass('pg_temp.scratch') IS NULL").fetchone()[0]  # rolled back
        assert conn.execute("SHOW application_name").fetchone()[0] == "migration-test"
    with connections.borrowed(db, "other-role") as conn:  # another role never gets it
        assert _pid(conn) != first


def test_a_connection_the_server_closed_is_replaced(db, admin):
    with connections.borrowed(db, "test-role") as conn:
        old = _pid(conn)
    with psycopg.connect(admin, autocommit=True) as a:
        a.execute("SELECT pg_terminate_backend(%s)", [old])
    with connections.borrowed(db, "test-role") as conn:
        assert _pid(conn) != old
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_an_error_inside_leaves_a_usable_connection(db):
    with pytest.raises(psycopg.errors.DivisionByZero):
        with connections.borrowed(db, "test-role") as conn:
            pid = _pid(conn)
            conn.execute("SELECT 1 / 0")
    with connections.borrowed(db, "test-role") as conn:
        assert _pid(conn) == pid
        assert conn.execute("SELECT 2").fetchone()[0] == 2


def test_idle_connections_are_capped_per_process(databases, admin):
    dbs = [databases.new("conn") for _ in range(connections.KEEP_TOTAL // 2 + 2)]
    for db in dbs:
        for role in ("a", "b"):
            with connections.borrowed(db, role) as conn:
                conn.execute("SELECT 1")
    assert sum(len(v) for v in connections._idle.values()) <= connections.KEEP_TOTAL
    names = [psycopg.conninfo.conninfo_to_dict(db)["dbname"] for db in dbs]
    with psycopg.connect(admin, autocommit=True) as a:
        open_sessions = a.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = ANY(%s)", [names]).fetchone()[0]
    assert open_sessions <= connections.KEEP_TOTAL
    connections.close_all()
    with psycopg.connect(admin, autocommit=True) as a:  # a backend leaves the view once it has exited
        for _ in range(50):
            left = a.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = ANY(%s)", [names]).fetchone()[0]
            if left == 0:
                break
            time.sleep(0.1)
    assert left == 0


def _reader_backend(conninfo: str, query: str = "SELECT pg_backend_pid()") -> tuple:
    """The row ``query`` gives on a kept Arrow reader connection (taken and given back)."""
    reader = connections.readers.take(conninfo)
    cur = reader.cursor()
    cur.execute(query)
    row = cur.fetchone()
    cur.close()
    connections.readers.give_back(conninfo, reader)
    return row


def test_a_forked_process_opens_its_own_arrow_reader_and_leaves_the_parents_alone(db):
    """A process pool or a Celery prefork worker forks after the parent has read: the child must
    not read on the parent's kept ADBC connection (two processes on one socket garbled a slice's
    read: 'Expected field with one byte but found field with 148237 bytes')."""
    import multiprocessing

    (parent_pid,) = _reader_backend(db)
    # the children take the default SIGTERM back (the test process may hold Dagster's handler,
    # which only sets a flag): a child that hangs is then ended by the pool, and the test fails
    # on its timeout instead of waiting forever
    with multiprocessing.get_context("fork").Pool(2, initializer=signal.signal,
                                                  initargs=(signal.SIGTERM, signal.SIG_DFL)) as pool:
        children = pool.map_async(_reader_backend, [db, db]).get(timeout=60)
    assert parent_pid not in {pid for (pid,) in children}
    # the parent's connection, still in step with its server
    assert _reader_backend(db, "SELECT pg_backend_pid(), 1") == (parent_pid, 1)
