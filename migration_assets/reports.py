"""Markdown reports written from the audit trail (``migration_control``), reproducibly.

``FINAL_DIFFERENTIAL_MIGRATION_REPORT.md``: per entity, what the latest refresh did (rows read,
inserted, updated, deleted, newly quarantined, descendants affected) and the difference that
remains *now*: legacy rows - (target rows + open quarantine rows), measured on both databases
when the report is written. After a final refresh on a quiet source every difference is 0.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
from psycopg import sql

from .registry import topological_order
from .target_schema import CONTROL_SCHEMA

DIFFERENTIAL_REPORT = "FINAL_DIFFERENTIAL_MIGRATION_REPORT.md"


def remaining_differences(source: str, target: str, soft_deleted_excluded: bool = True) -> dict[str, tuple[int, int, int]]:
    """entity -> (legacy rows, target rows, open quarantine rows), counted now."""
    with psycopg.connect(source) as src, psycopg.connect(target) as tgt:
        legacy = dict(src.execute(sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}::text, count(*) FROM {}").format(sql.Literal(e.name), sql.Identifier(e.legacy_table))
            for e in topological_order())).fetchall())
        live = sql.SQL(" WHERE NOT (metadata ? 'deleted_at_source')") if soft_deleted_excluded else sql.SQL("")
        loaded = dict(tgt.execute(sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}::text, count(*) FROM {}{}").format(
                sql.Literal(e.name), sql.Identifier("public", e.target_table), live)
            for e in topological_order())).fetchall())
        quarantined = dict(tgt.execute(sql.SQL(
            "SELECT entity, count(*) FROM {} WHERE NOT resolved GROUP BY entity").format(
            sql.Identifier(CONTROL_SCHEMA, "quarantine"))).fetchall())
    return {e.name: (legacy[e.name], loaded[e.name], quarantined.get(e.name, 0)) for e in topological_order()}


def latest_loads(target: str) -> dict[str, dict]:
    """The most recent successful load of every entity, with its quarantine rows first seen in it."""
    with psycopg.connect(target) as conn:
        rows = conn.execute(sql.SQL(
            "SELECT DISTINCT ON (r.entity) r.entity, r.run_id, r.mode, r.status, r.records_read, r.inserted, r.updated, "
            "r.deleted, r.quarantined, r.duration_ms, r.finished_at, r.details, "
            "(SELECT count(*) FROM {q} q WHERE q.entity = r.entity AND q.first_run_id = r.run_id) AS new_quarantined "
            "FROM {runs} r WHERE r.status <> 'FAILED' ORDER BY r.entity, r.id DESC").format(
            q=sql.Identifier(CONTROL_SCHEMA, "quarantine"),
            runs=sql.Identifier(CONTROL_SCHEMA, "migration_runs"))).fetchall()
    keys = ("run_id", "mode", "status", "read", "inserted", "updated", "deleted", "quarantined", "duration_ms",
            "finished_at", "details", "new_quarantined")
    return {r[0]: dict(zip(keys, r[1:])) for r in rows}


def differential_report(source: str, target: str) -> tuple[str, int]:
    """(markdown, total remaining difference)."""
    loads = latest_loads(target)
    now = remaining_differences(source, target)
    lines = [
        "# Final differential migration report",
        "",
        f"Written {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC from `{CONTROL_SCHEMA}.migration_runs`, "
        "the quarantine, and row counts taken on both databases while writing it.",
        "",
        "Per entity, the latest refresh: rows read from the legacy database, rows inserted, updated and deleted in "
        "the target, rows quarantined for the first time, rows of descendant tables moved to quarantine or "
        "detached because a parent went away; then the remaining difference now = legacy rows - (target rows + "
        "open quarantine rows). It must be 0 after a final refresh on a quiet source.",
        "",
        "| level | entity | mode | read | inserted | updated | deleted | newly quarantined | descendants affected "
        "| legacy rows | target rows | open quarantine | remaining difference |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    totals = [0] * 10
    for e in topological_order():
        load = loads.get(e.name)
        legacy, loaded, quarantined = now[e.name]
        diff = legacy - loaded - quarantined
        if load is None:
            cells = ["(never loaded)", "", "", "", "", "", ""]
            values = [0] * 6
        else:
            cascaded = sum((load["details"] or {}).get("cascaded", {}).values())
            values = [load["read"], load["inserted"], load["updated"], load["deleted"], load["new_quarantined"], cascaded]
            cells = [load["mode"]] + [f"{v:,}" for v in values]
        for i, v in enumerate(values + [legacy, loaded, quarantined, diff]):
            totals[i] += v
        lines.append(f"| {e.level} | {e.name} | " + " | ".join(cells) +
                     f" | {legacy:,} | {loaded:,} | {quarantined:,} | {diff:,} |")
    lines.append("| | **total** | | " + " | ".join(f"**{v:,}**" for v in totals) + " |")
    remaining = sum(abs(legacy - loaded - q) for legacy, loaded, q in now.values())
    lines += ["", f"**Remaining difference: {remaining:,} rows** "
                  + ("(source and target reconcile exactly)." if remaining == 0 else
                     "(the legacy database changed after the last refresh, or a refresh is still due).")]
    return "\n".join(lines) + "\n", remaining


def write_differential_report(source: str, target: str, folder: Path) -> tuple[Path, int]:
    text, remaining = differential_report(source, target)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DIFFERENTIAL_REPORT
    path.write_text(text)
    return path, remaining
