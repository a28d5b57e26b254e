"""Every setting of the project, declared once in :data:`SETTINGS`: variable, attribute, default,
kind, bounds, effect. From that one declaration derive the frozen :data:`Settings` value, the
fields of the ``MigrationSettings`` resource (with their bounds, and the same checks for a run's
configuration: resources.py), the fields of ``engine.options.LoadOptions`` (the settings marked
``engine``), the validation, and the README's settings table (``python -m
migration_assets.settings``; a test keeps the two equal). Adding a setting is one entry here.

The definitions (at import) and the command line (at start) call :func:`load` once; it reads
the environment, checks every value and returns one :data:`Settings`, or raises
:class:`SettingsError` naming every bad variable with its value and what is allowed, before
anything connects or runs.

Database locations (``SOURCE_DB_*``, ``TARGET_DB_*``, ``MIGRATION_PG_URL``, ``DAGSTER_PG_URL``)
are resolved by config.py; their URLs are checked here for shape only (a URL libpq would misread
is refused without echoing it: it may hold a password) and the same database as source and
target is refused once both are known (:func:`refuse_same_database`).
"""

from __future__ import annotations

import os
import re
import zoneinfo
from dataclasses import dataclass, make_dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from psycopg import conninfo as pg_conninfo

from .redaction import register_secret


class SettingsError(ValueError):
    """One or more settings are invalid; the message names each variable and what is allowed."""


@dataclass(frozen=True)
class Budget:
    """A share of a table's legacy rows, in percent: a default and per-table overrides, written
    ``2,operations=20`` (2% for every table, 20% for operations)."""

    default: float
    tables: tuple[tuple[str, float], ...] = ()

    def of(self, name: str) -> float:
        return dict(self.tables).get(name, self.default)

    def __str__(self) -> str:
        return ",".join([f"{self.default:g}"] + [f"{name}={pct:g}" for name, pct in self.tables])

    @classmethod
    def parse(cls, text: str) -> "Budget":
        default, tables = None, []
        for item in (x.strip() for x in text.split(",") if x.strip()):
            name, _, value = item.rpartition("=")
            try:
                pct = float(value)
            except ValueError:
                raise ValueError(f"not a percentage ({item!r})") from None
            if name.strip():
                tables.append((name.strip(), pct))
            elif default is None:
                default = pct
            else:
                raise ValueError("not one default percentage followed by table=percentage overrides")
        if default is None:
            raise ValueError("not one default percentage followed by table=percentage overrides")
        return cls(default, tuple(tables))

    def check(self) -> None:
        from .registry import BY_NAME  # the registry knows nothing of the settings

        if not all(0 <= pct <= 100 for pct in [self.default, *(p for _, p in self.tables)]):
            raise ValueError("out of range")
        unknown = [n for n, _ in self.tables if n not in BY_NAME]
        if unknown:
            raise ValueError(f"naming no table of the registry ({', '.join(unknown)})")


@dataclass(frozen=True)
class Setting:
    """One setting: its variable, the attribute it becomes (of :data:`Settings`, of the
    ``MigrationSettings`` resource and, with ``engine``, of ``engine.options.LoadOptions``), its
    default, kind, bounds and effect. Everything else about it derives from this."""

    env: str  # environment variable
    field: str  # attribute of Settings
    default: Any
    # "int", "bool", "choice", "path", "tables" (comma-separated entity names), "zone" (IANA time
    # zone), "budget" (a percentage with per-table overrides: Budget), "name" (a replication slot's:
    # lower-case letters, digits, underscores), "schema" (a schema's: the same, not starting with a
    # digit, not pg_..., none of ``reserved``)
    kind: str
    effect: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    engine: bool = False  # an option of every load (LoadOptions), not only of the Dagster side
    reserved: tuple[str, ...] = ()  # names a "schema" setting may not take

    @property
    def python_type(self) -> type:
        return {"int": int, "bool": bool, "path": Path, "tables": tuple, "budget": Budget}.get(self.kind, str)

    @property
    def config_type(self) -> type:
        """The type of the value in a run's configuration (the resource's field)."""
        return {"path": str, "budget": str, "tables": list[str]}.get(self.kind, self.python_type)

    def to_config(self, value: Any) -> Any:
        """``value`` as a run's configuration holds it (a path or a budget as text, tables as a list)."""
        return str(value) if self.kind in ("path", "budget") else list(value) if self.kind == "tables" else value

    def from_config(self, value: Any) -> Any:
        """The inverse of :meth:`to_config`."""
        if self.kind == "path":
            return Path(value)
        if self.kind == "budget":
            return self.parse(value) if isinstance(value, str) else value
        return tuple(value) if self.kind == "tables" else value

    def allowed(self) -> str:
        if self.kind == "bool":
            return "true/false (also 1/0, yes/no, on/off)"
        if self.kind == "choice":
            return ", ".join(self.choices)
        if self.kind == "int":
            low = "" if self.minimum is None else f"{self.minimum:_}".replace("_", ",")
            high = "" if self.maximum is None else f"{self.maximum:_}".replace("_", ",")
            return f"integer {low}..{high}" if high else f"integer >= {low}"
        if self.kind == "tables":
            return "comma-separated table names of the registry (assets)"
        if self.kind == "zone":
            return "an IANA time zone name (UTC, America/New_York, Europe/Paris...)"
        if self.kind == "budget":
            return "a percentage 0..100, then table=percentage overrides (2,operations=20)"
        if self.kind == "name":
            return "lower-case letters, digits and underscores, at most 63"
        if self.kind == "schema":
            return ("lower-case letters, digits and underscores, at most 63, not starting with a digit or pg_"
                    + (f", none of {', '.join(self.reserved)}" if self.reserved else ""))
        return "a folder path"

    def parse(self, raw: str) -> Any:
        """The value of the variable's text ``raw``; ValueError saying what is wrong with it."""
        value = raw.strip()
        if self.kind == "int":
            try:
                number = int(value)
            except ValueError:
                raise ValueError("not an integer") from None
            return self.check(number)
        if self.kind == "bool":
            lowered = value.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("not a boolean")
        if self.kind == "choice":
            return self.check(value.lower())
        if self.kind == "tables":
            return self.check(tuple(n.strip() for n in value.split(",") if n.strip()))
        if self.kind == "path":
            return self.check(Path(value) if value else value)
        if self.kind == "budget":
            return self.check(Budget.parse(value))
        return self.check(value)

    def check(self, value: Any) -> Any:
        """``value`` if it is one this setting allows, else ValueError saying why: the test of a
        value already typed (a resource's run configuration, a LoadOptions built by hand)."""
        if self.kind == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError("not an integer")
            if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
                raise ValueError("out of range")
        elif self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError("not a boolean")
        elif self.kind == "choice":
            if value not in self.choices:
                raise ValueError("not allowed")
        elif self.kind == "zone":
            zone_name(value)
        elif self.kind == "name":
            if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9_]{1,63}", value):
                raise ValueError("not a slot name")
        elif self.kind == "schema":
            if not isinstance(value, str) or not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
                raise ValueError("not a schema name")
            if value in self.reserved or value.startswith("pg_"):
                raise ValueError("reserved")
        elif self.kind == "budget":
            if not isinstance(value, Budget):
                raise ValueError("not a budget")
            value.check()
        elif self.kind == "tables":
            from .registry import BY_NAME  # the registry knows nothing of the settings

            unknown = [n for n in value if n not in BY_NAME]
            if unknown:
                raise ValueError(f"naming no table of the registry ({', '.join(unknown)})")
        elif not value:
            raise ValueError("empty")
        return value

    def problem(self, value: Any) -> str | None:
        """The line naming this setting that refuses ``value``, or None."""
        try:
            self.check(value)
        except ValueError as why:
            shown = str(value) if isinstance(value, Budget) else value
            return f"{self.env}={shown!r} is {why}: allowed {self.allowed()}"
        return None

    def config_problem(self, value: Any) -> str | None:
        """:meth:`problem` of a value as a run's configuration holds it."""
        try:
            return self.problem(self.from_config(value))
        except ValueError as why:
            return f"{self.env}={value!r} is {why}: allowed {self.allowed()}"


SETTINGS: tuple[Setting, ...] = (
    Setting("BATCH_SIZE", "batch_size", 10_000, "int", "rows per Arrow record batch; bounds the memory of a load",
            minimum=1, maximum=1_000_000, engine=True),
    Setting("MAX_RETRY_ATTEMPTS", "max_retry_attempts", 3, "int",
            "retries of a table whose load failed for a transient reason (exponential backoff, jitter)",
            minimum=0, maximum=20),
    Setting("MIGRATION_TIMEOUT", "migration_timeout_ms", 1_800_000, "int",
            "ms: statement_timeout on the target (loads, checks, reports, status, set-up) and of the sensor's "
            "ticks, and time limit of a table's load",
            minimum=1_000, maximum=86_400_000),
    Setting("ERROR_RECOVERY_ENABLED", "error_recovery", True, "bool",
            "fix what can be fixed (emails, required NULLs with a default, optional orphan references); "
            "false sends those rows to quarantine", engine=True),
    Setting("TARGET_ENV", "target_env", "local", "choice",
            "remote: connections to the target require TLS (sslmode=require unless the URL sets sslmode); "
            "local: libpq's default", choices=("local", "remote")),
    Setting("MIGRATION_FAST_PATH", "fast_path", True, "bool",
            "load an empty table with its keys dropped, then rebuild and validate them", engine=True),
    Setting("MIGRATION_MODE", "mode", "full", "choice",
            "full: compare every row with bucket summaries; differential: read rows changed since the watermark "
            "(a run's migration/mode tag overrides it)", choices=("full", "differential"), engine=True),
    Setting("DELETE_POLICY", "delete_policy", "hard", "choice",
            "what a legacy row deleted at the source does to its target row: removed, or kept and marked",
            choices=("hard", "soft"), engine=True),
    Setting("DIFFERENTIAL_OVERLAP_SECONDS", "overlap_s", 300, "int",
            "how far before the watermark a differential refresh re-reads (clock skew, late commits)",
            minimum=0, maximum=31_536_000, engine=True),
    Setting("MIGRATION_ASSET_CHECKS", "asset_checks", True, "bool",
            "evaluate the checks of every table right after its load (engine/checks.py, CHECKS)"),
    Setting("CONTENT_CHECKSUM_SAMPLE_ABOVE", "sample_above", -1, "int",
            "tables with more legacy rows compare a sample of ids in content_checksum (-1: never sample, every "
            "row's content is compared)",
            minimum=-1),
    Setting("CONTENT_CHECKSUM_SAMPLE_EVERY", "sample_every", 50, "int",
            "content_checksum of a sampled table compares the ids divisible by this", minimum=1, maximum=1_000_000),
    Setting("UUID_CHECK_EVERY", "uuid_every", 50, "int",
            "content_checksum recomputes the primary key's UUID for the ids divisible by this (1: every row)",
            minimum=1, maximum=1_000_000),
    Setting("MIGRATION_REPORTS_DIR", "reports_dir", Path("reports"), "path",
            "folder of the three markdown reports (relative: to the working directory)"),
    Setting("MIGRATION_EXECUTOR", "executor", "in_process", "choice",
            "how a run's steps execute: in_process (one process); multiprocess (a process per step); celery "
            "(steps queued to dagster-celery workers at CELERY_BROKER_URL, extra [celery]); k8s (a Kubernetes "
            "job per step, dagster-k8s, extra [k8s]); docs/executors.md",
            choices=("in_process", "multiprocess", "celery", "k8s")),
    Setting("MIGRATION_MAX_CONCURRENT", "max_concurrent", 2, "int",
            "steps at a time under the multiprocess executor", minimum=1, maximum=256),
    Setting("MIGRATION_SLICE_ROWS", "slice_rows", 0, "int",
            "legacy rows per slice: an empty sliced table loads in id ranges of about this many rows, each its "
            "own step, keys built once after the last (0: no table is sliced); docs/executors.md",
            minimum=0, maximum=1_000_000_000),
    Setting("LEGACY_TEXT_ENCODING", "text_encoding", "utf8", "choice",
            "how the text of a SQL_ASCII legacy database (bytes with no declared encoding) is decoded: utf8 (a value "
            "that is not valid UTF-8 is quarantined as INVALID_VALUE naming the column), latin1 or win1252 "
            "(transcoded); a legacy server with a declared encoding (UTF8, LATIN1, WIN1252...) converts its own "
            "text and this is not used", choices=("utf8", "latin1", "win1252"), engine=True),
    Setting("LEGACY_TIMEZONE", "legacy_timezone", "UTC", "zone",
            "the time zone of the legacy database's timestamps without time zone (its application's clock): how "
            "they become instants in the target, and the clock the change-tracking column is compared with; "
            "changing it re-migrates every row", engine=True),
    Setting("QUARANTINE_WARN_PERCENT", "quarantine_warn", Budget(10.0), "budget",
            "the quarantine_within_budget check warns when more than this share of a table's legacy rows is in "
            "quarantine"),
    Setting("QUARANTINE_MAX_PERCENT", "quarantine_max", Budget(50.0), "budget",
            "above this share of a table's legacy rows in quarantine, quarantine_within_budget fails as an ERROR "
            "and blocks the table's children; status and check exit 1"),
    Setting("QUARANTINE_MIN_ROWS", "quarantine_min_rows", 25, "int",
            "a table with at most this many rows in quarantine is within its quarantine budget whatever its share "
            "(a small table's share moves by whole rows)", minimum=0, maximum=1_000_000_000),
    Setting("MIGRATION_CHANGE_SOURCE", "change_source", "watermark", "choice",
            "what a differential refresh reads: watermark (rows whose change column moved, ids above the highest "
            "seen; a deleted row found by counting) or logical (the legacy server's logical decoding: exactly the rows "
            "inserted, updated and deleted since the last refresh; needs wal_level=logical and a role with "
            "REPLICATION; README, 'Change capture')", choices=("watermark", "logical"), engine=True),
    Setting("MIGRATION_SLOT", "slot", "migration_assets", "name",
            "name of the logical replication slot and of the publication on the legacy server (logical mode); one "
            "per target migrated from the same legacy database", engine=True),
    Setting("MIGRATION_TARGET_SCHEMA", "target_schema", "public", "schema",
            "the target schema of the registry's tables: setup creates them there (the files' public is mapped to "
            "it), every command reads and writes them there; a schema of your own keeps the project's tables apart "
            "from an app's public ones (supabase db push applies the files as written, into public)", engine=True,
            reserved=("migration_control", "information_schema", "auth", "storage", "extensions", "realtime",
                      "graphql", "graphql_public", "vault", "net", "supabase_functions", "supabase_migrations")),
    Setting("MIGRATION_AFTER_CUTOVER", "after_cutover", False, "bool",
            "let loads run on a target that was cut over (migration-assets cutover): they overwrite what the "
            "application changed in migrated rows with the legacy values; false refuses them"),
    Setting("MIGRATION_SLICED_TABLES", "sliced_tables", (), "tables",
            "the tables loaded in slices when MIGRATION_SLICE_ROWS is set; empty: every table whose registry size "
            "(expected rows at scale 1.0) is at least MIGRATION_SLICE_ROWS"),
)


def zone_name(value: str) -> str:
    """``value`` if it names a time zone of the IANA database (zoneinfo: the system's, or the
    ``tzdata`` package), else ValueError. Only such names: PostgreSQL also takes POSIX strings
    such as ``EST5EDT`` or ``UTC+5``, whose sign is the opposite of ISO 8601's."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError("not a time zone of the IANA database") from None
    return value


DEFAULTS: dict[str, Any] = {s.field: s.default for s in SETTINGS}  # by Settings field
BY_FIELD: dict[str, Setting] = {s.field: s for s in SETTINGS}
BY_ENV: dict[str, Setting] = {s.env: s for s in SETTINGS}


def _sliced(self, name: str, expected_rows: int) -> bool:
    """Whether table ``name`` (registry size ``expected_rows``) is a sliced asset."""
    if self.slice_rows <= 0:
        return False
    return name in self.sliced_tables if self.sliced_tables else expected_rows >= self.slice_rows


# The values of SETTINGS, one attribute each (``settings.batch_size``...), frozen: built from the
# declarations above, so a setting is declared once.
Settings = make_dataclass("Settings", [(x.field, x.python_type) for x in SETTINGS], frozen=True,
                          namespace={"sliced": _sliced, "__module__": __name__,
                                     "__doc__": "The values of SETTINGS, one attribute each."})


DB_URL_VARIABLES = ("SOURCE_DB_URL", "TARGET_DB_URL", "MIGRATION_PG_URL", "DAGSTER_PG_URL")
BROKER_URL_VARIABLE = "CELERY_BROKER_URL"  # the Celery executor's broker (dagster-celery's default when unset)


def url_problem(url: str) -> str | None:
    """What is wrong with a connection URL's shape, or None. Never quotes the URL."""
    if url.startswith(("postgres://", "postgresql://", "postgresql+psycopg2://")):
        rest = url.split("://", 1)[1].split("?", 1)[0]
        authority, _, path = rest.partition("/")
        if "@" in path:
            return ("its user or password contains an unencoded '/', '?' or '#', so the password would be "
                    "read as host, port or database: percent-encode it (/ as %2F, ? as %3F, # as %23, @ as %40)")
        if authority.count("@") > 1:
            return "its password contains an unencoded '@': percent-encode it as %40"
        if url.startswith("postgresql+psycopg2://"):
            return None
    try:
        pg_conninfo.conninfo_to_dict(url)
    except Exception:
        return "libpq cannot parse it (check quoting and percent-encoding)"
    return None


def _password_of(url: str) -> str | None:
    """The password in a URL or conninfo, even in one libpq would misread (for redaction only)."""
    if "://" in url:
        userinfo = url.split("://", 1)[1].rsplit("@", 1)
        if len(userinfo) == 2 and ":" in userinfo[0]:
            return userinfo[0].split(":", 1)[1]
        return None
    try:
        return pg_conninfo.conninfo_to_dict(url).get("password")
    except Exception:
        return None


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Parse and check every setting; raise SettingsError naming all the bad ones."""
    env = os.environ if env is None else env
    values, problems = {}, []
    for s in SETTINGS:
        raw = env.get(s.env)
        if raw is None or raw.strip() == "":
            continue
        try:
            values[s.field] = s.parse(raw)
        except ValueError as why:
            problems.append(f"{s.env}={raw!r} is {why}: allowed {s.allowed()}")
    for name in DB_URL_VARIABLES + (BROKER_URL_VARIABLE,) + tuple(f"{p}_PASSWORD" for p in ("SOURCE_DB", "TARGET_DB")):
        if env.get(name):
            secret = env[name] if name.endswith("_PASSWORD") else _password_of(env[name])
            if secret:
                register_secret(secret)
    for name in DB_URL_VARIABLES:
        if env.get(name) and (why := url_problem(env[name])):
            problems.append(f"{name} is not a valid PostgreSQL URL (value not shown: it may hold a password): {why}")
    if env.get("DAGSTER_PG_URL", "").startswith(("postgresql://", "postgres://")):
        # dagster.yaml hands it to dagster-postgres as it is, in every process (a Celery worker
        # too): SQLAlchemy 2.1 picks psycopg 3 for a driverless URL, which breaks dagster-postgres
        # (its NOTIFY takes no bound parameter)
        problems.append("DAGSTER_PG_URL names no driver, which dagster-postgres needs: write it as "
                        "postgresql+psycopg2://... (value not shown: it may hold a password)")
    for prefix in ("SOURCE_DB", "TARGET_DB"):
        port = env.get(f"{prefix}_PORT")
        if port and not (port.strip().isdigit() and 0 < int(port) < 65536):
            problems.append(f"{prefix}_PORT={port!r} is not a port: allowed integer 1..65535")
    warn, high = (values.get(f, DEFAULTS[f]) for f in ("quarantine_warn", "quarantine_max"))
    crossed = [n for n in sorted({"*", *dict(warn.tables), *dict(high.tables)})
               if warn.of(n) > high.of(n)]
    if crossed:
        problems.append("QUARANTINE_WARN_PERCENT is above QUARANTINE_MAX_PERCENT for "
                        + ", ".join("the default" if n == "*" else n for n in crossed))
    if values.get("sliced_tables") and not values.get("slice_rows"):
        problems.append("MIGRATION_SLICED_TABLES is set but MIGRATION_SLICE_ROWS is not: set the rows per slice "
                        "(an integer >= 1)")
    if problems:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))
    return Settings(**{s.field: values.get(s.field, s.default) for s in SETTINGS})


def refuse_same_database(source: Callable[[], Mapping[str, str]], target: Callable[[], Mapping[str, str]]) -> None:
    """Refuse a source and a target that are the same database (host, port and name), which would
    migrate the legacy tables into their own database."""
    s, t = source(), target()
    key = lambda p: (p.get("host") or "localhost", str(p.get("port") or 5432), p.get("dbname") or p.get("user"))
    if key(s) == key(t):
        raise SettingsError(f"the source and the target are the same database ({key(t)[2]} on {key(t)[0]}:"
                            f"{key(t)[1]}): point TARGET_DB_URL (or TARGET_DB_NAME) at the Supabase database")


def markdown_table() -> str:
    rows = ["| variable | default | allowed | effect |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = str(s.default).lower() if isinstance(s.default, bool) else (
            f"{s.default:_}".replace("_", ",") if isinstance(s.default, int) else
            ", ".join(s.default) if isinstance(s.default, tuple) else str(s.default))
        rows.append(f"| `{s.env}` | `{default}` | {s.allowed()} | {s.effect} |")
    return "\n".join(rows)



if __name__ == "__main__":
    print(markdown_table())
