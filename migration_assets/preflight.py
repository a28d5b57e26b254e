"""Pre-flight: both schemas against the registry, before anything loads.

Legacy side: every table and column the registry reads exists, with a type of the family its
transform expects (a legacy ``varchar`` where ``text`` is expected is fine, ``text`` where an
integer key is expected is not). Target side: every table, column and exact type the loads
write, the primary key on ``id``, one foreign key per registry reference to the right parent, and
the unique constraints (those a sliced load in progress dropped, or a first migration set aside,
excepted: the sliced load's last step, or the run's target_keys step, restores them). One
catalog query per database; the result names table and column. Warnings that do not stop the
run: a legacy server that is not UTF-8 (what will be done about it) or whose time zone is not
LEGACY_TIMEZONE, and triggers someone added to the registry's tables (what they will do to
refreshes).

The first asset step of a run validates every entity (once per process and run), so a mismatch
stops the run before any table loads, with ``Failure(allow_retries=False)``.
"""

from __future__ import annotations

import difflib

import psycopg
from psycopg import sql

from . import connections
from .cutover import CutOver, refuse_loads
from .engine.keys import tables_set_aside
from .errors import PermanentError
from .redaction import first_line
from .registry import ENTITIES
from .settings import DEFAULTS
from .transforms import Kind

FAMILIES = {
    "integer": "int", "bigint": "int", "smallint": "int",
    "text": "text", "character varying": "text", "character": "text",
    "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamp",
}

TARGET_TYPES = {
    "uuid": "uuid", "text": "text", "integer": "integer", "bigint": "bigint", "boolean": "boolean",
    "numeric(14,2)": "numeric", "timestamptz": "timestamp with time zone", "date": "date", "jsonb": "jsonb",
}

_COLUMNS = ("SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema()")
_TARGET_COLUMNS = "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = %s"
_CONSTRAINTS = """
    SELECT r.relname::text, c.contype, coalesce(p.relname, ''),
           array_agg(a.attname::text ORDER BY a.attname)
    FROM pg_constraint c
    JOIN pg_class r ON r.oid = c.conrelid
    JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)
    LEFT JOIN pg_class p ON p.oid = c.confrelid
    WHERE c.connamespace = %s::regnamespace AND c.contype IN ('p', 'u', 'f')
    GROUP BY 1, 2, 3, c.oid"""


def _family(data_type: str) -> str:
    return FAMILIES.get(data_type, data_type)


def _legacy_type(kind: Kind) -> str:
    base = kind.legacy_type.split("(")[0]
    return {"varchar": "character varying", "char": "character", "timestamp": "timestamp without time zone"}.get(base, base)


def _columns(conn: psycopg.Connection, query: str, params: list | None = None) -> dict[str, dict[str, str]]:
    """table -> column -> data type, from one information_schema query."""
    found: dict[str, dict[str, str]] = {}
    for table, column, data_type in conn.execute(query, params):
        found.setdefault(table, {})[column] = data_type
    return found


def legacy_problems(conn: psycopg.Connection, zone: str = "UTC") -> list[str]:
    found = _columns(conn, _COLUMNS)
    problems = []
    if not conn.execute("SELECT EXISTS (SELECT FROM pg_timezone_names WHERE name = %s)", [zone]).fetchone()[0]:
        problems.append(f"the legacy server does not know the time zone LEGACY_TIMEZONE={zone} (its pg_timezone_names)")
    for e in ENTITIES:
        cols = found.get(e.legacy_table)
        if cols is None:
            problems.append(f"legacy table {e.legacy_table} (entity {e.name}) does not exist")
            continue
        expected = [(e.legacy_pk, Kind.PK)] + [(c.legacy_name, c.kind) for c in e.columns]
        mapped = {name for name, _ in expected}
        for (name, kind), target in zip(expected, ["id"] + [c.target for c in e.columns]):
            want = _legacy_type(kind)
            where = f"Column {target!r} of entity {e.name} in registry.py"
            if name not in cols:
                # the unmapped columns of its type family, the most similar name first
                alike = difflib.get_close_matches(name, [c for c, t in cols.items()
                                                         if c not in mapped and _family(t) == _family(want)], 5, 0)
                hint = (f"if it was renamed to {' or '.join(alike)}, set legacy='{alike[0]}' on {where}" if alike
                        else f"restore it on the legacy side, or change {where}")
                problems.append(f"legacy column {e.legacy_table}.{name} (-> {e.name}.{target}) does not exist: {hint}")
            elif _family(cols[name]) != _family(want):
                problems.append(f"legacy column {e.legacy_table}.{name} (-> {e.name}.{target}) is {cols[name]}, "
                                f"expected {want}: give {where} the Kind that reads {cols[name]}, or convert the "
                                "legacy column back")
            elif cols[name] == "timestamp with time zone" and zone != "UTC":
                # its values are instants already: reading them in another zone would shift them
                problems.append(f"legacy column {e.legacy_table}.{name} (-> {e.name}) is timestamp with time zone, "
                                f"which LEGACY_TIMEZONE={zone} would shift: that setting is for timestamps without "
                                "time zone; leave it at UTC for this database")
    return problems


def logical_problems(conn: psycopg.Connection, slot: str) -> list[str]:
    """What logical mode (MIGRATION_CHANGE_SOURCE=logical, engine/changes.py) needs of the legacy
    server and its role, each with what to do: wal_level=logical, the REPLICATION attribute, a
    free slot, a replica identity on every table (publishing a table without one would make the
    legacy application's own UPDATEs and DELETEs on it fail), and the right to publish the
    tables the publication lacks."""
    problems = []
    (level,) = conn.execute("SHOW wal_level").fetchone()
    if level != "logical":
        problems.append(f"MIGRATION_CHANGE_SOURCE=logical needs wal_level=logical on the legacy server (it is {level}): "
                        "ALTER SYSTEM SET wal_level = logical and a restart (on a managed PostgreSQL, its logical "
                        "replication setting), or MIGRATION_CHANGE_SOURCE=watermark")
    user, replication, superuser = conn.execute(
        "SELECT current_user, rolreplication, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if not (replication or superuser):
        problems.append(f"the legacy role {user} lacks REPLICATION, which a logical slot needs: ALTER ROLE {user} "
                        "REPLICATION (as a superuser; on RDS: GRANT rds_replication TO the role)")
    exists, used, limit = conn.execute(
        "SELECT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = %s), (SELECT count(*) FROM "
        "pg_replication_slots), current_setting('max_replication_slots')::int", [slot]).fetchone()
    if not exists and used >= limit:
        problems.append(f"the legacy server has no free replication slot ({used} of max_replication_slots={limit} "
                        "used): raise max_replication_slots or drop an unused slot")
    tables = [e.legacy_table for e in ENTITIES]
    for table, identity, has_pk, owned in conn.execute("""
            SELECT c.relname, c.relreplident,
                   EXISTS (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
                   pg_has_role(c.relowner, 'USAGE')
            FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY(%s)
              AND NOT EXISTS (SELECT FROM pg_publication_tables p WHERE p.pubname = %s
                              AND p.schemaname = current_schema() AND p.tablename = c.relname)
            ORDER BY 1""", [tables, slot]):
        if identity == "n" or (identity == "d" and not has_pk):
            problems.append(f"legacy table {table} has no primary key or replica identity: published, the legacy "
                            f"application's UPDATE and DELETE on it would fail; ALTER TABLE {table} REPLICA IDENTITY "
                            "FULL (or give it a primary key) first")
        elif not (owned or superuser):
            problems.append(f"the legacy role {user} cannot publish {table} (not its owner): as its owner, CREATE "
                            f"PUBLICATION {slot} FOR TABLE ... (or ALTER PUBLICATION {slot} ADD TABLE {table})")
    return problems


_BASE_TABLES = ("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
                "AND table_type = 'BASE TABLE'")
SIMULATOR_MARK = "_simulator"  # the table simulator.py marks the databases it fills with


def legacy_drift(conn: psycopg.Connection) -> tuple[dict[str, list[str]], list[str]]:
    """What the legacy schema holds that the registry does not map: per entity, the columns of
    its legacy table no Column reads ("name (type)"); and the tables no entity reads."""
    found = _columns(conn, _COLUMNS)
    columns = {}
    for e in ENTITIES:
        if extra := unmapped_columns(e, list(found.get(e.legacy_table, {}).items())):
            columns[e.name] = extra
    read = {e.legacy_table for e in ENTITIES} | {SIMULATOR_MARK}
    tables = sorted(t for (t,) in conn.execute(_BASE_TABLES) if t not in read)
    return columns, tables


UNMAPPED_OF_TABLE = sql.SQL("SELECT column_name, data_type FROM information_schema.columns "
                            "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position")


def unmapped_columns(e, rows: list[tuple[str, str]]) -> list[str]:
    """Of the legacy table's (column, type) ``rows`` (UNMAPPED_OF_TABLE), those no Column of
    ``e`` reads, as "name (type)"."""
    mapped = {e.legacy_pk} | {c.legacy_name for c in e.columns}
    return [f"{name} ({kind})" for name, kind in rows if name not in mapped]


def drift_warnings(columns: dict[str, list[str]], tables: list[str]) -> list[str]:
    by_name = {e.name: e for e in ENTITIES}
    out = [f"legacy table {by_name[name].legacy_table} has columns the registry does not map (entity {name}): "
           f"{', '.join(extra)}: their values are not migrated; map one with a Column in registry.py, or leave it"
           for name, extra in columns.items()]
    if tables:
        out.append(f"legacy tables no entity maps: {', '.join(tables)}: their rows are not migrated; add an Entity "
                   "in registry.py, or leave them")
    return out


def target_problems(conn: psycopg.Connection, schema: str) -> list[str]:
    """How the registry's tables in ``schema`` differ from the registry: a table, a column, a
    type, a key or a foreign key missing."""
    found = _columns(conn, _TARGET_COLUMNS, [schema])
    constraints = {(table, kind, parent, tuple(cols))
                   for table, kind, parent, cols in conn.execute(_CONSTRAINTS, [schema])}
    # A table whose sliced load is unfinished has its keys, and the foreign keys to it, dropped
    # until its last step rebuilds them from the definitions it recorded (engine/slices.py).
    keyless = set()
    if conn.execute("SELECT to_regclass('migration_control.slice_loads')").fetchone()[0]:
        keyless = {name for (name,) in conn.execute("SELECT entity FROM migration_control.slice_loads "
                                                    "WHERE finished_at IS NULL")}
    # Likewise the keys a first migration set aside until its target_keys step (engine/keys.py):
    # recorded under the table that holds them (a foreign key under the referencing table).
    if conn.execute("SELECT to_regclass('migration_control.keys_set_aside')").fetchone()[0]:
        aside = tables_set_aside(conn, schema)
        keyless |= {e.name for e in ENTITIES if e.target_table in aside}
    problems = []
    for e in ENTITIES:
        cols = found.get(e.target_table)
        if cols is None:
            problems.append(f"target table {schema}.{e.target_table} does not exist (apply the migrations: setup, "
                            f"with MIGRATION_TARGET_SCHEMA={schema})")
            continue
        expected = [("id", "uuid"), ("metadata", "jsonb")] + [(c.target, c.target_type) for c in e.columns]
        for name, target_type in expected:
            want = TARGET_TYPES[target_type]
            if name not in cols:
                problems.append(f"target column {schema}.{e.target_table}.{name} does not exist")
            elif cols[name] != want:
                problems.append(f"target column {schema}.{e.target_table}.{name} is {cols[name]}, expected {want}")
        if e.name in keyless:
            continue
        if (e.target_table, "p", "", ("id",)) not in constraints:
            problems.append(f"target table {schema}.{e.target_table} has no primary key on id")
        for c in e.foreign_keys:
            if (e.target_table, "f", c.parent, (c.target,)) not in constraints and c.parent not in keyless:
                problems.append(f"target column {schema}.{e.target_table}.{c.target} has no foreign key to {c.parent}")
        for c in e.unique_columns:
            if (e.target_table, "u", "", (c.target,)) not in constraints:
                problems.append(f"target column {schema}.{e.target_table}.{c.target} has no unique constraint")
    return problems


_USER_TRIGGERS = """
    SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE NOT t.tgisinternal AND c.relnamespace = %s::regnamespace AND c.relname = ANY(%s)
      AND t.tgfoid <> coalesce(to_regprocedure('migration_control.set_updated_at()'), 0)
    ORDER BY 1, 2"""


# Whether two zones showed the same wall clock on every day of the last two years (UTC and
# Etc/UTC, Europe/Berlin and Europe/Paris do): names alone would warn about aliases.
_SAME_CLOCK = """
    SELECT bool_and((t AT TIME ZONE %(a)s) = (t AT TIME ZONE %(b)s))
    FROM generate_series(now() - interval '2 years', now(), interval '1 day') AS t"""


def legacy_warnings(conn: psycopg.Connection, zone: str = "UTC") -> list[str]:
    """What the run will do about the legacy server's text encoding, when it is not UTF-8, and a
    legacy server whose own time zone is not LEGACY_TIMEZONE (the zone its sessions start in:
    an application that writes ``now()`` into timestamps without time zone writes that clock)."""
    warnings = []
    server_zone = conn.execute("SELECT reset_val FROM pg_settings WHERE name = 'TimeZone'").fetchone()[0]
    known = conn.execute("SELECT EXISTS (SELECT FROM pg_timezone_names WHERE name = %s)", [zone]).fetchone()[0]
    if known and not conn.execute(_SAME_CLOCK, {"a": server_zone, "b": zone}).fetchone()[0]:
        warnings.append(f"the legacy server's time zone is {server_zone} but LEGACY_TIMEZONE is {zone}: timestamps "
                        f"without time zone are read as {zone} time; if the legacy application writes its server's "
                        f"local time, set LEGACY_TIMEZONE={server_zone} (a change re-migrates every row)")
    encoding = conn.info.parameter_status("server_encoding") or ""
    if encoding in ("UTF8", ""):
        return warnings
    if encoding == "SQL_ASCII":
        return warnings + [
            "the legacy server's encoding is SQL_ASCII (bytes with no declared encoding): its text is decoded as "
            "LEGACY_TEXT_ENCODING (default utf8); a value that does not decode is quarantined as INVALID_VALUE "
            "naming the column"]
    return warnings + [f"the legacy server's encoding is {encoding}: its text is read as UTF-8 (the server converts it)"]


def target_warnings(conn: psycopg.Connection, schema: str) -> list[str]:
    """Triggers someone added to the registry's tables in ``schema``, except the cutover's own
    updated_at trigger, which leaves a load's rows alone: they fire on every row a load or refresh
    writes, and one that changes the row (a ``moddatetime(updated_at)``) makes the table differ
    from a fresh migration and fails content_checksum."""
    return [f"trigger {name} on {schema}.{table} ({definition.split(' ON ')[0].removeprefix('CREATE ')}) is not the "
            "project's: it fires on every row a load or refresh writes; a trigger that changes the row (such as "
            "moddatetime on updated_at) makes the table differ from its legacy rows and fails content_checksum. "
            "Such triggers belong after cutover (docs/supabase.md, 'Your own objects in public')"
            for table, name, definition in conn.execute(_USER_TRIGGERS, [schema, [e.target_table for e in ENTITIES]])]


class SchemaMismatch(PermanentError):
    """The legacy or target schema does not match the registry (permanent: fix the schema)."""

    kind = "SCHEMA"
    recovery = "align the schema with the registry (apply the migrations), then re-run"


def validate(source, target, zone: str = "UTC", *, after_cutover: bool = True,
             logical_slot: str | None = None, schema: str = DEFAULTS["target_schema"]) -> list[str]:
    """``source``/``target``: conninfo strings, or callables returning a connection (the resources'
    ``connect``, whose errors name the server without any secret); ``zone``: LEGACY_TIMEZONE;
    ``after_cutover`` false: a target that was cut over is refused (cutover.CutOver: the loads'
    pre-flight); ``logical_slot``: logical mode's slot, whose needs are checked (logical_problems);
    ``schema``: MIGRATION_TARGET_SCHEMA. Raises on a mismatch; returns the warnings
    (legacy_warnings, target_warnings, the legacy columns and tables the registry does not map) for
    the run's log."""
    def connect(x):
        return x() if callable(x) else connections.connect(x)

    def reach(x, which: str):
        try:
            return connect(x)
        except psycopg.OperationalError as exc:
            raise DatabaseUnreachable(f"the {which} database does not answer: {first_line(exc)}") from None

    with reach(source, "legacy") as src, reach(target, "target") as tgt:
        refuse_loads(tgt, after_cutover)
        problems = legacy_problems(src, zone) + target_problems(tgt, schema)
        if logical_slot is not None:
            problems += logical_problems(src, logical_slot)
        warnings = legacy_warnings(src, zone) + target_warnings(tgt, schema) + drift_warnings(*legacy_drift(src))
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise SchemaMismatch("schema does not match the registry: " + "; ".join(problems[:10]) + more)
    return warnings


class DatabaseUnreachable(PermanentError):
    """A database does not answer or refuses the login (permanent for the run: the next steps
    would meet the same; the message names the database and the cause, never a password)."""

    kind = "UNREACHABLE"
    recovery = "check the database's address, credentials and that it is running; then re-run"


_validated: dict[str, BaseException | None] = {}


def validate_once(run_id: str, source, target, zone: str = "UTC", *, after_cutover: bool = True,
                  logical_slot: str | None = None, schema: str = DEFAULTS["target_schema"]) -> list[str]:
    """Validate at the first step of a run (in-process executor: one process per run). A failure
    is remembered for the run, so the other steps fail at once with the same one line instead of
    each reaching for an unreachable server. Returns the warnings at the first call only."""
    if run_id in _validated:
        if _validated[run_id] is not None:
            raise _validated[run_id]
        return []
    try:
        warnings = validate(source, target, zone, after_cutover=after_cutover, logical_slot=logical_slot, schema=schema)
    except (SchemaMismatch, DatabaseUnreachable, CutOver) as exc:
        _validated[run_id] = exc
        raise
    _validated[run_id] = None
    return warnings
