"""A PostgreSQL server of a test's own, with settings the session's server does not have (TLS, a
Supabase-shaped cluster, wal_level=logical): ``initdb`` into a temporary folder owned by
``postgres`` and ``pg_ctl`` on a free loopback port, with Debian's PostgreSQL 15 binaries."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> str | None:
    """Why a server of the test's own cannot start here, or None."""
    if not (BIN / "initdb").exists():
        return f"PostgreSQL's initdb is not in {BIN} (Debian's postgresql-15; PG_BIN names another folder)"
    if not shutil.which("openssl"):
        return "openssl is not installed (it makes the server's TLS certificate)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TempServer:
    """A server on 127.0.0.1:``port``, its superuser ``superuser`` (trust), TLS on with a
    self-signed certificate and connections without TLS over TCP refused (``tls`` false: plain
    connections only); ``conf``: more settings."""

    def __init__(self, superuser: str = "postgres", conf: dict[str, str] | None = None, tls: bool = True):
        self.tls = tls
        self.superuser, self.port = superuser, _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ma_pg_"))
        self.data = self.dir / "data"
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self._as = as_postgres
        self._run([str(BIN / "initdb"), "-D", str(self.data), "-U", superuser, "-A", "trust", "--no-sync", "-E", "UTF8",
                   "--locale=C.UTF-8"])
        if tls:
            self._run(["openssl", "req", "-new", "-x509", "-days", "2", "-nodes", "-subj", "/CN=127.0.0.1",
                       "-keyout", str(self.data / "server.key"), "-out", str(self.data / "server.crt")])
            os.chmod(self.data / "server.key", 0o600)
        settings = {"port": str(self.port), "listen_addresses": "'127.0.0.1'", "unix_socket_directories": f"'{self.dir}'",
                    "ssl": "on" if tls else "off", "fsync": "off", "max_connections": "40", **(conf or {})}
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("".join(f"{k} = {v}\n" for k, v in settings.items()))
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n" if tls
            else "local all all trust\nhost all all 127.0.0.1/32 trust\n")
        self._run([str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "60", "start"])

    def _run(self, cmd: list[str]) -> None:
        if cmd[0] != "openssl":
            cmd = self._as + cmd
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            log = (self.dir / "log").read_text()[-1500:] if (self.dir / "log").exists() else ""
            raise RuntimeError(f"{' '.join(cmd[:4])} failed: {out.stderr[-1500:]} {log}")
        if os.geteuid() == 0 and cmd[0] == "openssl":
            for name in ("server.key", "server.crt"):
                shutil.chown(self.data / name, "postgres")

    def url(self, dbname: str = "postgres", user: str | None = None, sslmode: str | None = None) -> str:
        sslmode = sslmode or ("require" if self.tls else "disable")
        return (f"postgresql://{user or self.superuser}@127.0.0.1:{self.port}/{dbname}?sslmode={sslmode}"
                "&application_name=migration_assets")

    def stop(self) -> None:
        subprocess.run(self._as + [str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
