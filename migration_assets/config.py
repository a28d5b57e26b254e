"""Where the databases are: the seed's environment variables, or a server we start ourselves.

Resolution order, for the command line, the tests and the Dagster definitions alike:

1. ``SOURCE_DB_URL`` or ``SOURCE_DB_HOST``/``PORT``/``NAME``/``USER``/``PASSWORD`` (and the same with
   ``TARGET_DB_``): use exactly those databases.
2. ``MIGRATION_PG_URL``: an administrative URL of a PostgreSQL server; the databases
   ``<prefix>_legacy``, ``<prefix>_target`` and ``<prefix>_dagster`` are created on it when missing
   (prefix ``MIGRATION_DB_PREFIX``, default ``migration``).
3. Neither: an embedded PostgreSQL (the ``pgserver`` package, PostgreSQL 16) in
   ``$MIGRATION_HOME/.pgdata`` (default: the project folder), started when not running, left
   running for ``dagster dev`` and the next command.

Passwords live in :class:`DbSettings` and only leave it inside a libpq conninfo string handed to
the driver: ``repr``/``str`` and :meth:`DbSettings.describe` never show them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from psycopg import conninfo as pg_conninfo
from psycopg import sql

from .connections import connect
from .redaction import redact, register_secret
from .settings import SettingsError, url_problem

PROJECT_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class DbSettings:
    """One database. ``url`` wins over the discrete fields when given."""

    url: str | None = None
    host: str | None = None
    port: int | None = None
    dbname: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    sslmode: str | None = None  # used when the URL sets none (TARGET_ENV=remote: require)

    def __post_init__(self) -> None:
        register_secret(self.password)

    def conninfo(self, **overrides) -> str:
        if self.url and (why := url_problem(self.url)):
            raise SettingsError(f"a database URL is not valid (value not shown: it may hold a password): {why}")
        params = pg_conninfo.conninfo_to_dict(self.url) if self.url else {}
        register_secret(params.get("password"))
        for key in ("host", "port", "dbname", "user", "password"):
            value = getattr(self, key)
            if value not in (None, ""):
                params[key] = str(value)
        params.update({k: str(v) for k, v in overrides.items()})
        params.setdefault("application_name", "migration_assets")
        if self.sslmode:
            params.setdefault("sslmode", self.sslmode)
        return pg_conninfo.make_conninfo(**params)

    def params(self) -> dict[str, str]:
        return pg_conninfo.conninfo_to_dict(self.conninfo())

    def describe(self) -> str:
        """host:port/dbname as user, never the password (for logs, metadata, reports)."""
        try:
            p = self.params()
        except Exception:
            return "(a database whose URL is not valid)"
        host = p.get("host", "localhost")
        return redact(f"{p.get('user', '')}@{host}:{p.get('port', 5432)}/{p.get('dbname', '')}")

    def __str__(self) -> str:
        return f"DbSettings({self.describe()})"

    @classmethod
    def from_env(cls, prefix: str, env=os.environ) -> "DbSettings | None":
        url = env.get(f"{prefix}_URL")
        host = env.get(f"{prefix}_HOST")
        if not url and not host:
            return None
        port = env.get(f"{prefix}_PORT")
        return cls(url=url, host=host, port=int(port) if port else None, dbname=env.get(f"{prefix}_NAME"),
                   user=env.get(f"{prefix}_USER"), password=env.get(f"{prefix}_PASSWORD"))


@dataclass(frozen=True)
class Databases:
    source: DbSettings
    target: DbSettings
    dagster: DbSettings | None
    embedded: bool = False

    def env(self) -> dict[str, str]:
        """Environment variables that make child processes (dagster) resolve the same databases."""
        out = {"SOURCE_DB_URL": self.source.conninfo(), "TARGET_DB_URL": self.target.conninfo()}
        if self.dagster is not None:
            out["DAGSTER_PG_URL"] = sqlalchemy_url(self.dagster)
        return out


def sqlalchemy_url(db: DbSettings) -> str:
    """SQLAlchemy URL for dagster-postgres. The driver is named: SQLAlchemy 2.1 would otherwise pick
    psycopg 3 for postgresql://, whose server-side binding breaks dagster-postgres's
    ``NOTIFY run_events, %(id)s``."""
    if db.url and db.url.startswith("postgresql+"):
        return db.url  # DAGSTER_PG_URL as given: already a SQLAlchemy URL
    p = pg_conninfo.conninfo_to_dict(db.conninfo())
    from urllib.parse import quote

    auth = quote(p.get("user", "postgres"), safe="")
    if p.get("password"):
        auth += ":" + quote(p["password"], safe="")
    host = p.get("host", "localhost")
    query = ""
    if host.startswith("/"):
        query, host = "?host=" + quote(host, safe=""), ""
    return f"postgresql+psycopg2://{auth}@{host}:{p.get('port', 5432)}/{p.get('dbname', '')}{query}"


def embedded_pgdata(home: Path | None = None) -> Path:
    """The embedded server's data folder: ``$MIGRATION_HOME/.pgdata`` (default: the project's)."""
    return Path(os.environ.get("MIGRATION_HOME", home or PROJECT_DIR)) / ".pgdata"


def embedded_server_url(home: Path | None = None) -> str:
    """Start (or reuse) the embedded PostgreSQL and return its admin URL."""
    import pgserver

    pgdata = embedded_pgdata(home)
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode=None)  # keep running for dagster dev and later commands
    url = server.get_uri("postgres")
    _keep_wal_small(url)
    return url


def _keep_wal_small(url: str) -> None:
    """The embedded server is a scratch database: checkpoints by a small WAL size instead of the
    default 1 GB (the tests' .pgdata held 961 MB of WAL), set once with ALTER SYSTEM."""
    with connect(url, autocommit=True) as conn:
        (current,) = conn.execute("SELECT setting FROM pg_settings WHERE name = 'max_wal_size'").fetchone()
        if current != "128":  # MB
            conn.execute("ALTER SYSTEM SET max_wal_size = '128MB'")
            conn.execute("ALTER SYSTEM SET min_wal_size = '32MB'")
            conn.execute("SELECT pg_reload_conf()")
            conn.execute("CHECKPOINT")


def embedded_server_status(home: Path | None = None) -> str | None:
    """The embedded server's data folder when it is running, None when not."""
    pgdata = embedded_pgdata(home)
    return str(pgdata) if (pgdata / "postmaster.pid").exists() else None


def stop_embedded_server(home: Path | None = None) -> None:
    """Stop the embedded PostgreSQL of ``home`` (pg_ctl stop, as pgserver's system user under root)."""
    import pgserver

    if embedded_server_status(home) is None:
        return
    pgdata = embedded_pgdata(home)
    user = "pgserver" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    pgserver.pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=user)


def _is_embedded(db: DbSettings) -> bool:
    try:
        return db.params().get("host", "") == str(embedded_pgdata())
    except Exception:
        return False


def admin_url() -> tuple[str, bool]:
    url = os.environ.get("MIGRATION_PG_URL")
    if url:
        return url, False
    return embedded_server_url(), True


def ensure_database(admin: str, name: str) -> DbSettings:
    with connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = pg_conninfo.conninfo_to_dict(admin)
    params["dbname"] = name
    return DbSettings(url=pg_conninfo.make_conninfo(**params))


def resolve_databases(env=os.environ) -> Databases:
    source, target = DbSettings.from_env("SOURCE_DB", env), DbSettings.from_env("TARGET_DB", env)
    dagster = DbSettings(url=env["DAGSTER_PG_URL"]) if env.get("DAGSTER_PG_URL") else None
    if source and target:
        if any(_is_embedded(d) for d in (source, target)):
            embedded_server_url()  # .env from an earlier setup points at the embedded server: start it
        return Databases(source, target, dagster)
    admin, embedded = admin_url()
    prefix = env.get("MIGRATION_DB_PREFIX", "migration")
    return Databases(
        source or ensure_database(admin, f"{prefix}_legacy"),
        target or ensure_database(admin, f"{prefix}_target"),
        dagster or ensure_database(admin, f"{prefix}_dagster"),
        embedded,
    )
