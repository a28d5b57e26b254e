"""The Supabase target schema as an append-only history of SQL files, the next one generated from
the registry.

    python -m migration_assets.target_schema --write     # write the registry's changes as a new file
    python -m migration_assets.target_schema --apply     # apply what is not applied yet

``supabase/migrations`` holds the history every target runs (``setup``: migrations.py; or
``supabase db push``); ``supabase/cutover`` what ``migration-assets cutover`` applies. A file in
either never changes once committed: targets set up by it exist, and ``setup`` refuses one whose
checksum changed (MIGRATION_DRIFT). ``supabase/schema_state.json`` records each file's checksum
and the registry's tables as the files leave them (their columns, constraints, indexes,
comments). ``--write`` compares the registry with that state and writes what differs as one new,
idempotent file, ``<version>_<what>.sql`` (a new table, a column added, dropped or retyped, a
constraint or index changed, a table removed), plus, for a new table, its app-ready statements as
a new cutover file, and records them; a file written by hand (a change to the control schema) is
recorded by the same command. Unit tests keep the files equal to the state and the state
equal to the registry.

The files name the target schema ``public``, only as ``public."table"`` and ``SCHEMA public``:
``setup`` maps both to MIGRATION_TARGET_SCHEMA (migrations.in_schema), and a unit test holds
every file to those forms.

Columns added to an existing table arrive without NOT NULL (the table has rows): a required one
gets a ``CHECK (column IS NOT NULL) NOT VALID`` instead, enforced on every row written from then
on and on none written before; the table is re-read by its next load (its transform version
changed, assets.code_version), which writes the column in every row. A target column renamed in
the registry is a column dropped and one added (the re-read fills it): after a cutover, when the
application owns the rows, write a ``RENAME COLUMN`` file by hand instead.

Nothing here needs an extension: UUIDs come from the loader (RFC 4122 v3 via md5, built in).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
from pathlib import Path

from .config import PROJECT_DIR
from .engine.names import CONTROL_SCHEMA
from .registry import ENTITIES, Entity
from .transforms import EMAIL_REGEX, Kind

MIGRATIONS_DIR = PROJECT_DIR / "supabase" / "migrations"
CUTOVER_DIR = PROJECT_DIR / "supabase" / "cutover"
STATE_PATH = PROJECT_DIR / "supabase" / "schema_state.json"
ROLES = ("anon", "authenticated", "service_role")


def _q(name: str) -> str:
    """Quote an identifier for a static .sql file (the files are SQL text, not composed at run time)."""
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def constraint_names(e: Entity) -> dict[str, str]:
    """Names of the target constraints and indexes of ``e`` (used by the loader and the checks)."""
    t = e.target_table
    names = {"pkey": f"{t}_pkey"}
    for c in e.unique_columns:
        names[f"unique:{c.target}"] = f"{t}_{c.target}_key"
    for c in e.foreign_keys:
        names[f"fk:{c.target}"] = f"{t}_{c.target}_fkey"
        names[f"fkidx:{c.target}"] = f"{t}_{c.target}_idx"
    for c in e.email_columns:
        names[f"email:{c.target}"] = f"{t}_{c.target}_email_format"
    return names


# ------------------------------------------------------------------ a table as the files leave it


def dependency_order(entities) -> list[tuple[Entity, int]]:
    """``entities`` parents first, each with its level (1 + its parents' highest), computed from
    the list given (a registry being changed, not only the registry's own)."""
    level: dict[str, int] = {}
    out, left = [], list(entities)
    while left:
        ready = [e for e in left if all(p in level for p in e.parents)]
        if not ready:
            names = {e.name for e in left}
            missing = sorted({f"{e.name} -> {p}" for e in left for p in e.parents if p not in names and p not in level})
            raise ValueError(f"foreign keys to entities that do not exist: {missing}" if missing else
                             f"a foreign-key cycle among {sorted(names)}")
        ready.sort(key=lambda e: (1 + max((level[p] for p in e.parents), default=0), e.name))
        e = ready[0]
        level[e.name] = 1 + max((level[p] for p in e.parents), default=0)
        out.append((e, level[e.name]))
        left.remove(e)
    return out


def table_model(e: Entity, level: int) -> dict:
    """Table ``e`` as the registry wants it: columns (name -> type, ``NOT NULL`` when required),
    constraints and indexes (name -> definition), comment. The order is the files' order."""
    names = constraint_names(e)
    columns = {"id": "uuid NOT NULL"}
    columns |= {c.target: c.target_type + (" NOT NULL" if c.required else "") for c in e.columns}
    columns["metadata"] = "jsonb NOT NULL DEFAULT '{}'::jsonb"
    constraints = {names["pkey"]: "PRIMARY KEY (id)"}
    constraints |= {names["unique:" + c.target]: f"UNIQUE ({_q(c.target)})" for c in e.unique_columns}
    constraints |= {names["email:" + c.target]: f"CHECK ({_q(c.target)} ~ {_lit(EMAIL_REGEX)})"
                    for c in e.email_columns}
    for c in e.columns:
        if c.kind in (Kind.CODE_INT, Kind.CODE_CHAR):
            allowed = ", ".join(_lit(v) for v in dict.fromkeys(c.codes.values()))
            constraints[f"{e.target_table}_{c.target}_check"] = f"CHECK ({_q(c.target)} IN ({allowed}))"
    constraints |= {names["fk:" + c.target]: f"FOREIGN KEY ({_q(c.target)}) REFERENCES public.{_q(c.parent)} (id)"
                    for c in e.foreign_keys}
    indexes = {names["fkidx:" + c.target]: f"({_q(c.target)})" for c in e.foreign_keys}
    if any(not c.required for c in e.foreign_keys):
        # rows loaded with an optional reference set NULL are retried on every run (engine/rejects.py)
        indexes[f"{e.target_table}_retry_idx"] = "(id) WHERE (metadata -> 'recovered') ? 'retry'"
    header = f"{e.name}: {e.description} Legacy table {e.legacy_table}; level {level}, {e.priority}."
    return {"columns": columns, "constraints": constraints, "indexes": indexes, "comment": e.description,
            "header": header}


def registry_tables(entities=None) -> dict[str, dict]:
    return {e.target_table: table_model(e, level) for e, level in dependency_order(ENTITIES if entities is None
                                                                                   else entities)}


def _not_null_check(table: str, column: str) -> str:
    return f"{table}_{column}_not_null"


def create_table_sql(table: str, m: dict) -> str:
    """A new table, whole: its columns, constraints, indexes, row level security and comment."""
    lines = [f"  {name if name in ('id', 'metadata') else _q(name)} {kind}" for name, kind in m["columns"].items()]
    lines += [f"  CONSTRAINT {_q(name)} {definition}" for name, definition in m["constraints"].items()]
    out = [f"-- {m['header']}",
           f"CREATE TABLE IF NOT EXISTS public.{_q(table)} (\n" + ",\n".join(lines) + "\n);"]
    out += [f"CREATE INDEX IF NOT EXISTS {_q(name)} ON public.{_q(table)} {definition};"
            for name, definition in m["indexes"].items()]
    out.append(f"ALTER TABLE public.{_q(table)} ENABLE ROW LEVEL SECURITY;")
    out.append(f"COMMENT ON TABLE public.{_q(table)} IS {_lit(m['comment'])};")
    return "\n".join(out)


def changes(have: dict[str, dict], want: dict[str, dict]) -> tuple[list[str], list[str], dict[str, dict]]:
    """What turns the tables the files leave (``have``) into the registry's (``want``): the SQL
    statements (idempotent, in an order PostgreSQL accepts: what goes away first, then what
    comes), short names of the changes for the file's name, and the state after them (``want``,
    except that a column added to an existing table is nullable with a NOT VALID check)."""
    drops, dropped_tables, creates, adds, what = [], [], [], [], []
    after: dict[str, dict] = {}
    for table in [t for t in reversed(list(have)) if t not in want]:  # children before parents
        dropped_tables.append(f"DROP TABLE IF EXISTS public.{_q(table)};")  # after the keys that reference it
        what.append(f"drop_{table}")
    for table, w in want.items():
        t = f"public.{_q(table)}"
        if table not in have:
            creates.append(create_table_sql(table, w))
            what.append(f"add_{table}")
            after[table] = w
            continue
        h = have[table]
        now = {"columns": {}, "constraints": {}, "indexes": {}, "comment": w["comment"], "header": w["header"]}
        nn_h = {c for c in h["columns"] if _not_null_check(table, c) in h["constraints"]}
        for name, kind in h["constraints"].items():
            if name not in w["constraints"] or w["constraints"][name] != kind:
                if name.removeprefix(table + "_").removesuffix("_not_null") in nn_h:
                    continue  # a NOT VALID not-null check: decided with its column below
                drops.append(f"ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {_q(name)};")
                what.append(f"drop_{name}")
        for name in h["indexes"]:
            if name not in w["indexes"] or w["indexes"][name] != h["indexes"][name]:
                drops.append(f"DROP INDEX IF EXISTS public.{_q(name)};")
        for name in h["columns"]:
            if name not in w["columns"]:
                drops.append(f"ALTER TABLE {t} DROP COLUMN IF EXISTS {_q(name)};")
                what.append(f"drop_{table}_{name}")
        for name, kind in w["columns"].items():
            wtype, required = kind.removesuffix(" NOT NULL"), kind.endswith(" NOT NULL")
            check = _not_null_check(table, name)
            if name not in h["columns"]:
                adds.append(f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {_q(name)} {wtype};")
                what.append(f"add_{table}_{name}")
                now["columns"][name] = wtype
                if required:
                    adds.append(f"ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {_q(check)};")
                    adds.append(f"ALTER TABLE {t} ADD CONSTRAINT {_q(check)} CHECK ({_q(name)} IS NOT NULL) NOT VALID;")
                    now["constraints"][check] = f"CHECK ({_q(name)} IS NOT NULL) NOT VALID"
                continue
            hkind = h["columns"][name]
            htype, hnotnull = hkind.removesuffix(" NOT NULL"), hkind.endswith(" NOT NULL")
            if htype != wtype:
                adds.append(f"ALTER TABLE {t} ALTER COLUMN {_q(name)} TYPE {wtype} USING {_q(name)}::{wtype};")
                what.append(f"retype_{table}_{name}")
            now["columns"][name] = wtype + (" NOT NULL" if hnotnull else "")
            has_check = name in nn_h
            if required and not (hnotnull or has_check):
                adds.append(f"ALTER TABLE {t} ADD CONSTRAINT {_q(check)} CHECK ({_q(name)} IS NOT NULL) NOT VALID;")
                now["constraints"][check] = f"CHECK ({_q(name)} IS NOT NULL) NOT VALID"
                what.append(f"require_{table}_{name}")
            elif required and has_check:
                now["constraints"][check] = h["constraints"][check]
            elif not required and hnotnull:
                adds.append(f"ALTER TABLE {t} ALTER COLUMN {_q(name)} DROP NOT NULL;")
                now["columns"][name] = wtype
                what.append(f"optional_{table}_{name}")
            elif not required and has_check:
                drops.append(f"ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {_q(check)};")
                what.append(f"optional_{table}_{name}")
        for name, kind in w["constraints"].items():
            if h["constraints"].get(name) != kind:
                adds.append(f"ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {_q(name)};")
                adds.append(f"ALTER TABLE {t} ADD CONSTRAINT {_q(name)} {kind};")
                what.append(f"add_{name}")
            now["constraints"][name] = kind
        for name, kind in w["indexes"].items():
            if h["indexes"].get(name) != kind:
                adds.append(f"CREATE INDEX IF NOT EXISTS {_q(name)} ON {t} {kind};")
            now["indexes"][name] = kind
        if h["comment"] != w["comment"]:
            adds.append(f"COMMENT ON TABLE {t} IS {_lit(w['comment'])};")
        after[table] = now
    return drops + dropped_tables + creates + adds, list(dict.fromkeys(what)), after


# ------------------------------------------------------------------ the cutover's files


def app_ready_sql(entities) -> str:
    """The app-ready statements of ``entities``, applied at cutover only (cutover.py): what an
    application's first writes need, and nothing that changes a migrated value. ``id`` defaults
    to ``gen_random_uuid()`` (built into PostgreSQL 13+), ``created_at`` and the change column to
    ``now()`` (a ``date`` column to ``current_date``), and a BEFORE UPDATE trigger sets the change
    column on every update that leaves ``metadata`` as it was (the application's; a load rewrites
    the metadata and keeps the legacy timestamp). During the migration a trigger that stamped
    every update would rewrite the legacy timestamps on every merge and content_checksum would
    fail."""
    stamps = ("created_at", "created_on")
    lines = []
    for e in entities:
        t = f"public.{_q(e.target_table)}"
        parts = ["ALTER COLUMN id SET DEFAULT gen_random_uuid()"]
        for c in e.columns:
            if c.target in stamps or c.target == e.change_column:
                now = "current_date" if c.target_type == "date" else "now()"
                parts.append(f"ALTER COLUMN {_q(c.target)} SET DEFAULT {now}")
        lines.append(f"ALTER TABLE {t}\n  " + ",\n  ".join(parts) + ";")
        change = e.column(e.change_column)
        if change.target_type == "timestamptz":
            lines.append(f"CREATE OR REPLACE TRIGGER ma_set_{change.target} BEFORE UPDATE ON {t} FOR EACH ROW "
                         f"EXECUTE FUNCTION {CONTROL_SCHEMA}.set_updated_at({_lit(change.target)});")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the history and its state


def read_state(path: Path = STATE_PATH) -> dict:
    return json.loads(path.read_text())


def _next_version(versions: list[str], today: dt.date) -> str:
    """``YYYYMMDD`` of today and a counter that continues the history's (20261124000001 ...)."""
    counter = max(int(v[8:]) for v in versions) + 1 if versions else 1
    version = f"{today:%Y%m%d}{counter:06d}"
    return version if not versions or version > max(versions) else f"{max(versions)[:8]}{counter:06d}"


def pending(state: dict, entities=None, today: dt.date | None = None) -> tuple[dict[str, str], dict]:
    """The files (folder/name -> text) that bring the history from ``state`` to the registry
    (``entities``), and the state after them; none when nothing changed."""
    entities = list(ENTITIES if entities is None else entities)
    statements, what, after = changes(state["tables"], registry_tables(entities))
    if not statements:
        return {}, state
    today = today or dt.datetime.now(dt.timezone.utc).date()
    versions = [name.split("/")[-1].partition("_")[0] for name in state["files"]]
    version = _next_version(versions, today)
    slug = what[0][:60] + (f"_and_{len(what) - 1}_more" if len(what) > 1 else "")
    body = (f"-- Generated by python -m migration_assets.target_schema --write from the registry's changes: "
            f"{', '.join(what)}.\n-- Never edited once committed (targets have applied it): a later change is a "
            f"later file.\n\n" + "\n".join(statements) + "\n")
    files = {f"migrations/{version}_{slug}.sql": body}
    new_tables = [e for e, _ in dependency_order(entities) if e.target_table not in state["tables"]]
    if new_tables:  # the next version: one history records both folders' files
        cutover_version = _next_version(versions + [version], today)
        files[f"cutover/{cutover_version}_app_ready_{slug}.sql"] = (
            f"-- The app-ready statements of the tables added by migrations/{version}_{slug}.sql (cutover.py).\n"
            + app_ready_sql(new_tables))
    new_state = {"files": {**state["files"], **{name: checksum(text) for name, text in files.items()}},
                 "tables": after}
    return files, new_state


def history_files(root: Path = PROJECT_DIR / "supabase") -> dict[str, str]:
    """folder/name -> text of every file of the history on disk."""
    return {f"{p.parent.name}/{p.name}": p.read_text()
            for folder in ("migrations", "cutover") for p in sorted((root / folder).glob("*.sql"))}


def write_pending(root: Path = PROJECT_DIR / "supabase", entities=None, today: dt.date | None = None) -> list[Path]:
    """Record the files written by hand since (the control schema's changes: a new file, never an
    edit), then write the files :func:`pending` finds and the new state. Refuse when a recorded
    file differs from its checksum or is gone (restore it: the change belongs in a new file)."""
    state = read_state(root / STATE_PATH.name)
    on_disk = history_files(root)
    edited = sorted(n for n, text in on_disk.items() if n in state["files"] and state["files"][n] != checksum(text))
    missing = sorted(set(state["files"]) - set(on_disk))
    if edited or missing:
        raise SystemExit(f"the history differs from {STATE_PATH.name}: edited {edited}, missing {missing}; restore "
                         "them (git checkout supabase/) and put the change in a new file")
    added = {n: checksum(text) for n, text in on_disk.items() if n not in state["files"]}
    if added:
        later = [n for n in added if n.split("/")[-1] < max(f.split("/")[-1] for f in state["files"])]
        if later:
            raise SystemExit(f"{later} sort before files already recorded: targets have applied those; give the new "
                             "file a later version")
        state = {**state, "files": {**state["files"], **added}}
        (root / STATE_PATH.name).write_text(json.dumps(state, indent=1) + "\n")
    files, new_state = pending(state, entities, today)
    written = []
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    if files:
        (root / STATE_PATH.name).write_text(json.dumps(new_state, indent=1) + "\n")
    return written


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m migration_assets.target_schema")
    p.add_argument("--write", action="store_true", help="write the registry's changes as a new migration file")
    p.add_argument("--apply", action="store_true", help="apply pending migrations to the target database")
    a = p.parse_args(argv)
    if a.write:
        before = set(read_state()["files"])
        written = write_pending()
        for name in sorted(set(read_state()["files"]) - before - {f"{p.parent.name}/{p.name}" for p in written}):
            print(f"recorded supabase/{name} (written by hand)")
        for path in written:
            print(f"wrote {path.relative_to(PROJECT_DIR)}")
        if not written:
            print("the registry and supabase/migrations agree: nothing to write")
    if a.apply:
        from .config import resolve_databases

        from .migrations import apply_migrations

        from .settings import load

        print("applied:", apply_migrations(resolve_databases().target.conninfo(), schema=load().target_schema)
              or "nothing (up to date)")


if __name__ == "__main__":
    main()
