"""psycopg connections kept open between the steps of a run, per process, database and role.

A run materializes its tables one after the other; without reuse every load, legacy stream and
check opened fresh connections. A fresh connection costs more than its handshake: its new
backend also has to load the catalog entries (tables, indexes, functions, types) of every
statement it runs, which a warm backend has cached (BENCHMARKS.md, design measurements).

Not psycopg_pool: it opens connections in a background thread, so an unreachable server shows up
as a PoolTimeout after the pool's wait instead of libpq's own error at once; these steps connect
synchronously, one connection per role at a time, and only keep the ones they are done with.

Every connection of the project is opened by :func:`connect`, which turns off psycopg's
server-side prepared statements: behind a transaction-mode pooler (Supabase's Supavisor on port
6543, PgBouncer) consecutive transactions run on different server connections, where a prepared
statement is missing or, worse, another client's of the same name already exists. For the same
reason nothing relies on session state across transactions on the target: settings are ``SET
LOCAL`` at the start of the transaction that needs them, locks are transaction-level advisory
locks and temporary tables are ``ON COMMIT DROP``.

Roles keep connections with different session state apart: ``setup`` runs once on a new
connection (time zone, JIT, isolation level...), so every connection of a role has the same
set-up; settings of one load are ``SET LOCAL``. A connection comes back rolled back; before it
is handed out again it must be idle, younger than IDLE_S since its last use and answer an empty
query (the server may have closed it). At most KEEP_TOTAL idle connections per process. Keyed
by process id: a forked executor process never uses its parent's sockets. All close at exit.

The Arrow readers of the legacy stream (ADBC connections, which read the server's type catalog
when they open) are kept the same way, at most two: :data:`readers`.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import sql
from psycopg.pq import TransactionStatus

KEEP = 2  # idle connections kept per (process, database, role)
KEEP_TOTAL = 8  # idle connections kept per process, all databases and roles together
IDLE_S = 60.0  # an idle connection older than this is closed instead of reused

_idle: dict[tuple[int, str, str], list[tuple[psycopg.Connection, float]]] = {}
_lock = threading.Lock()


def _usable(conn: psycopg.Connection, since: float) -> bool:
    if conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
        return False
    if time.monotonic() - since > IDLE_S:
        return False
    autocommit = conn.autocommit
    try:
        conn.autocommit = True  # so that the probe opens no transaction
        conn.execute("")  # one round trip: the server may have closed the connection meanwhile
        conn.autocommit = autocommit
        return True
    except psycopg.Error:
        return False


CLIENT_ENCODING = "UTF8"


def connect(conninfo: str, **kwargs) -> psycopg.Connection:
    """``psycopg.connect`` without server-side prepared statements (pooler-safe, see above), in
    UTF-8 whatever the server's encoding (a LATIN1 or WIN1252 legacy server converts its text)."""
    kwargs.setdefault("client_encoding", CLIENT_ENCODING)
    return psycopg.connect(conninfo, prepare_threshold=None, **kwargs)


def utf8_conninfo(conninfo: str) -> str:
    """``conninfo`` with the client encoding set to UTF-8: for the Arrow readers (ADBC), which
    otherwise receive a LATIN1 server's bytes as they are stored and pass them on unchecked."""
    return pg_conninfo.make_conninfo(conninfo, client_encoding=CLIENT_ENCODING)


def set_statement_timeout(conn: psycopg.Connection, timeout_ms: int) -> None:
    """MIGRATION_TIMEOUT for the rest of ``conn``'s current transaction (LOCAL: a connection kept
    for the next step, or one a transaction pooler shares, carries nothing over)."""
    conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(int(timeout_ms))))


def take(conninfo: str, role: str, setup: Callable[[psycopg.Connection], None] | None = None,
         opener: Callable[[], psycopg.Connection] | None = None, autocommit: bool = False) -> psycopg.Connection:
    """An idle ``role`` connection to ``conninfo``, or a new one from ``opener`` (default:
    ``connect(conninfo, autocommit=autocommit)``) set up by ``setup``, which must leave it
    idle. A role's connections are all opened the same way."""
    key = (os.getpid(), conninfo, role)
    while True:
        with _lock:
            idle = _idle.get(key)
            conn, since = idle.pop() if idle else (None, 0.0)
        if conn is None:
            break
        if _usable(conn, since):
            return conn
        conn.close()
    conn = opener() if opener is not None else connect(conninfo, autocommit=autocommit)
    try:
        if setup is not None:
            setup(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def give_back(conn: psycopg.Connection, conninfo: str, role: str) -> None:
    """Return a connection taken with :func:`take`: rolled back and kept, or closed."""
    if conn.closed or conn.broken:
        conn.close()
        return
    try:
        if conn.info.transaction_status != TransactionStatus.IDLE:
            conn.rollback()
    except psycopg.Error:
        conn.close()
        return
    if conn.info.transaction_status != TransactionStatus.IDLE:
        conn.close()
        return
    key = (os.getpid(), conninfo, role)
    now = time.monotonic()
    with _lock:
        idle = _idle.setdefault(key, [])
        if len(idle) < KEEP:
            idle.append((conn, now))
            conn = None
        surplus = _evict(now)
    for c in ([conn] if conn is not None else []) + surplus:
        c.close()


def _evict(now: float) -> list[psycopg.Connection]:
    """Take out (under the lock) the idle connections to close: the ones idle longer than IDLE_S,
    then the oldest beyond KEEP_TOTAL (a process that works on many databases, a test session
    say, must not keep connections to all of them)."""
    pid = os.getpid()  # never another process's entries: closing them would end its sessions
    kept = sorted(((since, key, conn) for key, idle in _idle.items() if key[0] == pid for conn, since in idle),
                  key=lambda item: item[0], reverse=True)
    out = [conn for i, (since, _, conn) in enumerate(kept) if i >= KEEP_TOTAL or now - since > IDLE_S]
    if out:
        gone = {id(c) for c in out}
        for key in [k for k in _idle if k[0] == pid]:
            _idle[key] = [(c, since) for c, since in _idle[key] if id(c) not in gone]
            if not _idle[key]:
                del _idle[key]
    return out


@contextmanager
def borrowed(conninfo: str, role: str, setup: Callable[[psycopg.Connection], None] | None = None,
             opener: Callable[[], psycopg.Connection] | None = None,
             autocommit: bool = False) -> Iterator[psycopg.Connection]:
    """``with borrowed(...) as conn``: :func:`take`, then :func:`give_back` whatever happens (the
    caller commits what it wants kept)."""
    conn = take(conninfo, role, setup, opener, autocommit)
    try:
        yield conn
    finally:
        give_back(conn, conninfo, role)


@atexit.register
def close_all() -> None:
    """Close this process's idle connections, the Arrow readers included."""
    with _lock:
        mine = [_idle.pop(k) for k in [k for k in _idle if k[0] == os.getpid()]]
    for idle in mine:
        for conn, _ in idle:
            conn.close()
    readers.close_all()


class ArrowReaders:
    """Reader connections kept open between loads (at most two in all, the last ones used).

    Opening an ADBC connection makes the driver read the server's type catalog, which costs more
    than a whole small table's load; every load of a run would pay it. A connection comes
    back only after a read that ended cleanly, its transaction rolled back; any error closes it.
    """

    def __init__(self, keep: int = 2):
        self._idle: list[tuple[str, object]] = []  # (conninfo, connection), oldest first
        self._lock = threading.Lock()
        self._keep = keep
        self._inherited: list = []  # a forked child's copies of its parent's connections: never used, never closed

    def after_fork_in_child(self) -> None:
        """A forked process (a process pool, a Celery prefork worker) must neither use nor close the
        connections it inherited: they are its parent's sockets, and two processes reading one
        socket garble both reads; closing would end the parent's session. They are set aside."""
        self._lock = threading.Lock()
        self._inherited.extend(self._idle)
        self._idle = []

    def take(self, conninfo: str):
        with self._lock:
            for i in range(len(self._idle) - 1, -1, -1):
                if self._idle[i][0] == conninfo:
                    return self._idle.pop(i)[1]
        return self.open(conninfo)

    @staticmethod
    def open(conninfo: str):
        """A new reader connection, in UTF-8 (utf8_conninfo), autocommit."""
        import adbc_driver_postgresql.dbapi as adbc

        return adbc.connect(utf8_conninfo(conninfo), autocommit=True)  # libpq takes key=value or a URI

    def give_back(self, conninfo: str, conn) -> None:
        try:
            cur = conn.cursor()
            cur.execute("ROLLBACK")  # end the read-only snapshot transaction
            cur.close()
        except Exception:
            conn.close()
            return
        with self._lock:
            self._idle.append((conninfo, conn))
            surplus = self._idle[:-self._keep]
            del self._idle[:-self._keep]
        for _, c in surplus:  # a process that reads many databases (tests) keeps only the latest
            c.close()

    def close_all(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, c in idle:
            try:
                c.close()
            except Exception:  # the server or the driver may be gone at exit
                pass



readers = ArrowReaders()
os.register_at_fork(after_in_child=readers.after_fork_in_child)
