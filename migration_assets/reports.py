"""The three markdown reports, written from the audit trail (``migration_control``), reproducibly.

- ``FINAL_DIFFERENTIAL_MIGRATION_REPORT.md``: per entity, what the latest refresh did (rows read,
  inserted, updated, deleted, newly quarantined, descendants affected) and the difference that
  remains *now*: legacy rows - (target rows + open quarantine rows), measured on both databases
  when the report is written. After a final refresh on a quiet source every difference is 0.
- ``POST_MIGRATION_VALIDATION_REPORT.md``: the latest result of every asset check of every entity
  (``check_results``), with its figures;
- ``COMPREHENSIVE_MIGRATION_REPORT.md``: legacy, migrated and quarantined rows (counted on both
  databases while writing), the loads recorded, recoveries applied, checks passed.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
from psycopg import sql

from .connections import connect, set_statement_timeout
from .preflight import drift_warnings, legacy_drift
from .registry import ENTITIES, entity, topological_order
from .settings import DEFAULTS
from .transforms import Kind
from .engine.checks import CHECKS
from .engine.keys import tables_set_aside
from .engine.names import (CHECK_RESULTS, CONTROL_SCHEMA, MIGRATION_RUNS, QUARANTINE, not_soft_deleted_sql,
                           target_table)

DIFFERENTIAL_REPORT = "FINAL_DIFFERENTIAL_MIGRATION_REPORT.md"
DEFAULT_SCHEMA = DEFAULTS["target_schema"]
DEFAULT_TIMEOUT_MS = DEFAULTS["migration_timeout_ms"]


def _connect(conninfo: str, timeout_ms: int) -> psycopg.Connection:
    """A connection for the reports' and the status's queries, bounded by ``timeout_ms`` (the
    caller's MIGRATION_TIMEOUT): aggregates over whole tables, run once, which JIT compilation
    only makes slower."""
    conn = connect(conninfo)
    conn.execute("SET LOCAL jit = off")  # the reports read in one transaction
    set_statement_timeout(conn, timeout_ms)
    return conn


def remaining_differences(source: str, target: str, soft_deleted_excluded: bool = True, *,
                          timeout_ms: int = DEFAULT_TIMEOUT_MS, schema: str = DEFAULT_SCHEMA) -> dict[str, tuple[int, int, int]]:
    """entity -> (legacy rows, target rows in ``schema``, open quarantine rows), counted now."""
    with _connect(source, timeout_ms) as src, _connect(target, timeout_ms) as tgt:
        legacy = dict(src.execute(sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}::text, count(*) FROM {}").format(sql.Literal(e.name), sql.Identifier(e.legacy_table))
            for e in topological_order())).fetchall())
        live = sql.SQL(" WHERE {}").format(not_soft_deleted_sql()) if soft_deleted_excluded else sql.SQL("")
        loaded = dict(tgt.execute(sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}::text, count(*) FROM {}{}").format(
                sql.Literal(e.name), target_table(e, schema), live)
            for e in topological_order())).fetchall())
        quarantined = dict(tgt.execute(sql.SQL(
            "SELECT entity, count(*) FROM {} WHERE NOT resolved GROUP BY entity").format(
            QUARANTINE)).fetchall())
    return {e.name: (legacy[e.name], loaded[e.name], quarantined.get(e.name, 0)) for e in topological_order()}


def latest_loads(target: str, *, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> dict[str, dict]:
    """The most recent successful load of every entity, with its quarantine rows first seen in it."""
    with _connect(target, timeout_ms) as conn:
        rows = conn.execute(sql.SQL(
            "SELECT DISTINCT ON (r.entity) r.entity, r.run_id, r.mode, r.status, r.records_read, r.inserted, r.updated, "
            "r.deleted, r.quarantined, r.duration_ms, r.finished_at, r.details, r.load_path, "
            "(SELECT count(*) FROM {q} q WHERE q.entity = r.entity AND q.first_run_id = r.run_id) AS new_quarantined "
            "FROM {runs} r WHERE r.status NOT IN ('FAILED', 'CANCELED') ORDER BY r.entity, r.id DESC").format(
            q=QUARANTINE,
            runs=MIGRATION_RUNS)).fetchall()
    keys = ("run_id", "mode", "status", "read", "inserted", "updated", "deleted", "quarantined", "duration_ms",
            "finished_at", "details", "load_path", "new_quarantined")
    return {r[0]: dict(zip(keys, r[1:])) for r in rows}


def differential_report(source: str, target: str, *, timeout_ms: int = DEFAULT_TIMEOUT_MS, schema: str = DEFAULT_SCHEMA) -> tuple[str, int]:
    """(markdown, total remaining difference)."""
    loads = latest_loads(target, timeout_ms=timeout_ms)
    now = remaining_differences(source, target, timeout_ms=timeout_ms, schema=schema)
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


def write_differential_report(source: str, target: str, folder: Path, *, timeout_ms: int = DEFAULT_TIMEOUT_MS,
                              schema: str = DEFAULT_SCHEMA) -> tuple[Path, int]:
    text, remaining = differential_report(source, target, timeout_ms=timeout_ms, schema=schema)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DIFFERENTIAL_REPORT
    path.write_text(text)
    return path, remaining


# ------------------------------------------------------------------ dry run

DRY_RUN_REPORT = "DRY_RUN_REPORT.md"


def dry_run_report(results, mode: str) -> tuple[str, dict[str, int]]:
    """(markdown, totals) of a rehearsal's results (engine/rehearsal.py): per table what the load
    would do, the quarantine by reason."""
    cols = ("records_read", "inserted", "updated", "unchanged", "deleted", "evicted", "quarantined")
    totals = {c: sum(getattr(r, c) for r in results) for c in cols}
    lines = [f"# Dry run ({mode})", "",
             f"Written {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC by a rehearsal: every table loaded "
             "in dependency order in one target transaction, then rolled back; the target was left as it was.", "",
             "| table | " + " | ".join(c.replace("_", " ") for c in cols) + " | quarantine by reason | difference left |",
             "|---|" + "---:|" * len(cols) + "---|---:|"]
    for r in results:
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(r.quarantine_by_reason.items())) or "-"
        lines.append(f"| {r.entity} | " + " | ".join(f"{getattr(r, c):,}" for c in cols)
                     + f" | {reasons} | {r.remaining_difference:,} |")
    lines.append("| **total** | " + " | ".join(f"**{totals[c]:,}**" for c in cols) + " | | |")
    return "\n".join(lines) + "\n", totals


def write_dry_run_report(results, mode: str, folder: Path) -> tuple[Path, dict[str, int]]:
    text, totals = dry_run_report(results, mode)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DRY_RUN_REPORT
    path.write_text(text)
    return path, totals


# ------------------------------------------------------------------ validation report

VALIDATION_REPORT = "POST_MIGRATION_VALIDATION_REPORT.md"
COMPREHENSIVE_REPORT = "COMPREHENSIVE_MIGRATION_REPORT.md"


def latest_checks(target: str, *, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> dict[str, dict[str, dict]]:
    """entity -> check name -> the latest recorded result."""
    with _connect(target, timeout_ms) as conn:
        rows = conn.execute(sql.SQL(
            "SELECT DISTINCT ON (entity, check_name) entity, check_name, passed, severity, metadata, run_id, checked_at "
            "FROM {} ORDER BY entity, check_name, id DESC").format(
            CHECK_RESULTS)).fetchall()
    out: dict[str, dict[str, dict]] = {}
    for name, check, passed, severity, metadata, run_id, at in rows:
        out.setdefault(name, {})[check] = {"passed": passed, "severity": severity, "metadata": metadata,
                                           "run_id": run_id, "at": at}
    return out


def _check_numbers(check: str, m: dict) -> str:
    keys = CHECKS[check].headline if check in CHECKS else ()
    parts = [f"{k.replace('_', ' ')} {m[k]:,}" if isinstance(m.get(k), int) else f"{k.replace('_', ' ')} {m[k]}"
             for k in keys if k in m]
    for k, v in m.items():
        if k.startswith("sample") and v:
            parts.append(f"{k.replace('_', ' ')}: {v}")
    return "; ".join(parts)


BUDGET = "quarantine_within_budget"


def over_budget(checks: dict[str, dict[str, dict]]) -> list[tuple[str, str, dict]]:
    """(entity, "ERROR" or "WARN", the check's metadata) of every table whose latest budget check
    failed, the furthest over its budget first."""
    out = [(name, r["severity"], r["metadata"]) for name, results in checks.items()
           if (r := results.get(BUDGET)) is not None and not r["passed"]]
    return sorted(out, key=lambda x: (x[1] != "ERROR", -(x[2]["percent"] - x[2]["max_percent"]), x[0]))


def _budget_line(name: str, severity: str, m: dict) -> str:
    limit = m["max_percent"] if severity == "ERROR" else m["warn_above_percent"]
    reasons = ", ".join(f"{r} {p}%" for r, p in (m.get("by_reason_percent") or {}).items())
    return (f"{name}: {m['percent']}% of {m['legacy_rows']:,} legacy rows in quarantine, "
            f"{m['percent'] - limit:+.3g} points over its {'maximum' if severity == 'ERROR' else 'warning level'} "
            f"of {limit:g}% ({reasons})")


def budget_lines(target: str, *, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> list[str]:
    """The quarantine budget, from the latest checks: the tables over it, or that none is."""
    over = over_budget(latest_checks(target, timeout_ms=timeout_ms))
    if not over:
        return ["quarantine budget: every table within it"]
    return ["quarantine budget:"] + [f"  {severity}  {_budget_line(name, severity, m)}" for name, severity, m in over]


def validation_report(target: str, source: str | None = None, *,
                      timeout_ms: int = DEFAULT_TIMEOUT_MS) -> tuple[str, int, int]:
    """(markdown, checks passed, checks in all) from the latest result of every check; with
    ``source``, also what the legacy database holds that the registry does not map."""
    checks = latest_checks(target, timeout_ms=timeout_ms)
    lines = ["# Post-migration validation report", "",
             f"Written {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC from "
             f"`{CONTROL_SCHEMA}.check_results`: the latest result of every asset check of every entity.", ""]
    passed = total = 0
    failing: list[str] = []
    body = []
    for e in topological_order():
        results = checks.get(e.name, {})
        body += [f"### {e.level}. {e.name}", ""]
        if not results:
            body += ["No check has run for this entity.", ""]
            failing.append(e.name)
            continue
        body += ["| check | result | severity | numbers |", "|---|---|---|---|"]
        for check, r in sorted(results.items()):
            total += 1
            passed += r["passed"]
            if not r["passed"]:
                failing.append(e.name)
            body.append(f"| {check} | {'PASS' if r['passed'] else '**FAIL**'} | {r['severity']} | "
                        f"{_check_numbers(check, r['metadata'])} |")
        body.append("")
    failing = sorted(set(failing), key=[x.name for x in topological_order()].index)
    over = over_budget(checks)
    errors = [name for name, severity, _ in over if severity == "ERROR"]
    signed = not failing and not over
    lines += ["## Sign-off", "",
              f"- verdict: **{'ready to sign off' if signed else 'not ready'}**: "
              + ("every check of every entity passes and the quarantine is within budget" if signed else
                 f"{len(failing)} entities with a failing check, {len(errors)} over the quarantine maximum, "
                 f"{len(over) - len(errors)} above the warning level"),
              "- quarantine budget (QUARANTINE_WARN_PERCENT, QUARANTINE_MAX_PERCENT): "
              + ("every table within it" if not over else "")]
    lines += [f"  - {severity}: {_budget_line(name, severity, m)}" for name, severity, m in over]
    lines += [""]
    if source is not None:
        with _connect(source, timeout_ms) as conn:
            drift = drift_warnings(*legacy_drift(conn))
        lines += ["## Legacy data the registry does not map", "",
                  *([f"- {w}" for w in drift] or ["- none: every legacy column and table is read by the registry"]),
                  ""]
    lines += ["## Totals", "", f"- checks passed: **{passed:,} of {total:,}**",
              f"- entities with every check passing: **{len(ENTITIES) - len(failing)} of {len(ENTITIES)}**",
              f"- entities needing attention: {', '.join(failing) if failing else 'none'}", "",
              "## Per entity", ""] + body
    return "\n".join(lines) + "\n", passed, total


# ------------------------------------------------------------------ comprehensive report

FINANCIAL = ("payments", "purchases")
CLINICAL = ("patients", "cases", "treatment_plans")


def _money(source: str, target: str, name: str, *, timeout_ms: int = DEFAULT_TIMEOUT_MS, schema: str = DEFAULT_SCHEMA) -> list[tuple[str, object, object, object]]:
    """(column, legacy total, target total, open-quarantine total) of each cents column, exact."""
    e = entity(name)
    out = []
    with _connect(source, timeout_ms) as src, _connect(target, timeout_ms) as tgt:
        for c in (c for c in e.columns if c.kind is Kind.CENTS):
            (legacy,) = src.execute(sql.SQL("SELECT coalesce(sum({})::numeric, 0) / 100 FROM {}").format(
                sql.Identifier(c.legacy_name), sql.Identifier(e.legacy_table))).fetchone()
            (loaded,) = tgt.execute(sql.SQL(
                "SELECT coalesce(sum({}), 0) FROM {} WHERE {}").format(
                sql.Identifier(c.target), target_table(e, schema), not_soft_deleted_sql())).fetchone()
            (held,) = tgt.execute(sql.SQL(
                "SELECT coalesce(sum((raw->>{})::numeric), 0) / 100 FROM {} WHERE entity = %s AND NOT resolved").format(
                sql.Literal(c.legacy_name), QUARANTINE), [name]).fetchone()
            out.append((c.target, legacy, loaded, held))
    return out


def comprehensive_report(source: str, target: str, *, timeout_ms: int = DEFAULT_TIMEOUT_MS, schema: str = DEFAULT_SCHEMA) -> tuple[str, dict]:
    """(markdown, headline figures) of the migration as the audit trail and both databases show it now."""
    loads = latest_loads(target, timeout_ms=timeout_ms)
    now = remaining_differences(source, target, timeout_ms=timeout_ms, schema=schema)
    checks = latest_checks(target, timeout_ms=timeout_ms)
    with _connect(target, timeout_ms) as conn:
        reasons = conn.execute(sql.SQL(
            "SELECT entity, reason, count(*) FROM {} WHERE NOT resolved GROUP BY 1, 2 ORDER BY 3 DESC").format(
            QUARANTINE)).fetchall()
        resolved = dict(conn.execute(sql.SQL(
            "SELECT coalesce(resolution, 'loaded'), count(*) FROM {} WHERE resolved GROUP BY 1").format(
            QUARANTINE)).fetchall())
        failures = conn.execute(sql.SQL(
            "SELECT coalesce(error_class, 'UNKNOWN'), count(*), count(DISTINCT run_id), max(finished_at) FROM {} "
            "WHERE status = 'FAILED' GROUP BY 1 ORDER BY 2 DESC").format(
            MIGRATION_RUNS)).fetchall()
        span = conn.execute(sql.SQL(
            "SELECT min(started_at), max(finished_at), count(DISTINCT run_id) FROM {} "
            "WHERE status NOT IN ('FAILED', 'CANCELED')").format(
            MIGRATION_RUNS)).fetchone()
    legacy_total = sum(v[0] for v in now.values())
    loaded_total = sum(v[1] for v in now.values())
    held_total = sum(v[2] for v in now.values())
    accounted = loaded_total + held_total
    load_s = sum(x["duration_ms"] for x in loads.values()) / 1000
    read = sum(x["read"] for x in loads.values())
    recoveries: dict[str, int] = {}
    for x in loads.values():
        for rule, n in ((x["details"] or {}).get("recoveries") or {}).items():
            recoveries[rule] = recoveries.get(rule, 0) + n
    check_total = sum(len(v) for v in checks.values())
    check_passed = sum(r["passed"] for v in checks.values() for r in v.values())
    figures = {"legacy_rows": legacy_total, "target_rows": loaded_total, "quarantined": held_total,
               "accounted_rate": accounted / legacy_total if legacy_total else 1.0,
               "loaded_rate": loaded_total / legacy_total if legacy_total else 1.0,
               "checks_passed": check_passed, "checks_total": check_total}
    L = ["# Comprehensive migration report", "",
         f"Written {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC from `{CONTROL_SCHEMA}` (audit trail, "
         "quarantine, check results) and row counts taken on both databases while writing it.", "",
         "## Executive summary", "",
         f"- Legacy records: **{legacy_total:,}** in {len(now)} entities",
         f"- Migrated to the target: **{loaded_total:,}** ({100 * figures['loaded_rate']:.2f}%)",
         f"- In quarantine with a reason: **{held_total:,}**",
         f"- Accounted for (target + quarantine): **{accounted:,} = {100 * figures['accounted_rate']:.2f}%** "
         f"of the legacy records" + (" - nothing lost" if accounted == legacy_total else " - see the differences below"),
         f"- Load time of the latest load of every entity: {load_s:,.1f} s for {read:,} records read "
         f"({read / load_s if load_s else 0:,.0f} records/s)",
         f"- Loads recorded: {span[2] or 0} runs between {span[0]:%Y-%m-%d %H:%M} and {span[1]:%Y-%m-%d %H:%M} UTC"
         if span[0] else "- Loads recorded: none",
         f"- Asset checks passing: {check_passed:,} of {check_total:,}", "",
         "## Entities by dependency level", "",
         "| level | entity | priority | legacy rows | target rows | quarantined | difference | last status | mode |",
         "|---:|---|---|---:|---:|---:|---:|---|---|"]
    for e in topological_order():
        legacy, loaded, held = now[e.name]
        x = loads.get(e.name, {})
        L.append(f"| {e.level} | {e.name} | {e.priority} | {legacy:,} | {loaded:,} | {held:,} | "
                 f"{legacy - loaded - held:,} | {x.get('status', 'never loaded')} | {x.get('mode', '')} |")
    L += ["", "## Performance", "", "Slowest loads (latest load of each entity):", "",
          "| entity | records read | seconds | records/s | path |", "|---|---:|---:|---:|---|"]
    for name, x in sorted(loads.items(), key=lambda kv: -kv[1]["duration_ms"])[:10]:
        secs = x["duration_ms"] / 1000
        L.append(f"| {name} | {x['read']:,} | {secs:.2f} | {x['read'] / secs if secs else 0:,.0f} | "
                 f"{(x['load_path'] or x['mode'])[:70]} |")
    L += ["", "## Error analysis", "", "Open quarantine by reason:", "", "| reason | rows | entities |", "|---|---:|---|"]
    by_reason: dict[str, list] = {}
    for name, reason, n in reasons:
        by_reason.setdefault(reason, []).append((name, n))
    for reason, items in sorted(by_reason.items(), key=lambda kv: -sum(n for _, n in kv[1])):
        L.append(f"| {reason} | {sum(n for _, n in items):,} | "
                 + ", ".join(f"{name} ({n:,})" for name, n in items[:6]) + (" ..." if len(items) > 6 else "") + " |")
    if not reasons:
        L.append("| (none) | 0 | |")
    fixed = sum(recoveries.values())
    rate = fixed / (fixed + held_total) if fixed + held_total else 1.0
    L += ["", "Automatic recoveries applied (latest loads):", "", "| rule | rows |", "|---|---:|"]
    L += [f"| {rule} | {n:,} |" for rule, n in sorted(recoveries.items(), key=lambda kv: -kv[1])] or ["| (none) | 0 |"]
    L += ["", f"Automatic resolution rate: **{100 * rate:.1f}%** of problem rows fixed without a person "
              f"({fixed:,} recovered, {held_total:,} quarantined). Quarantine rows resolved later: "
          + (", ".join(f"{k} {v:,}" for k, v in resolved.items()) or "none") + ".", "",
          "Failed attempts (each retried by the RetryPolicy or failed for good, from the audit trail):", "",
          "| error class | failed steps | runs | last |", "|---|---:|---:|---|"]
    L += [f"| {cls} | {n:,} | {runs:,} | {last:%Y-%m-%d %H:%M} |" for cls, n, runs, last in failures] \
        or ["| (none) | 0 | 0 | |"]
    L += ["", "## Business impact", "", "Financial totals, legacy against target + quarantine, to the cent:", "",
          "| table | column | legacy total | target total | quarantined total | difference |",
          "|---|---|---:|---:|---:|---:|"]
    money_ok = True
    for name in FINANCIAL:
        for col, legacy, loaded, held in _money(source, target, name, timeout_ms=timeout_ms, schema=schema):
            diff = legacy - loaded - held
            money_ok &= diff == 0
            L.append(f"| {name} | {col} | {legacy:,.2f} | {loaded:,.2f} | {held:,.2f} | {diff:,.2f} |")
    L += ["", "Clinical records preserved (legacy = target + quarantine):", "",
          "| entity | legacy | target | quarantined | preserved |", "|---|---:|---:|---:|---|"]
    for name in CLINICAL:
        legacy, loaded, held = now[name]
        L.append(f"| {name} | {legacy:,} | {loaded:,} | {held:,} | {'yes' if legacy == loaded + held else '**NO**'} |")
    figures["money_reconciled"] = money_ok
    return "\n".join(L) + "\n", figures


def write_all(source: str, target: str, folder: Path, *, timeout_ms: int = DEFAULT_TIMEOUT_MS, schema: str = DEFAULT_SCHEMA) -> dict:
    """Write the three reports into ``folder``; returns their paths and the headline figures."""
    folder.mkdir(parents=True, exist_ok=True)
    text, figures = comprehensive_report(source, target, timeout_ms=timeout_ms, schema=schema)
    (folder / COMPREHENSIVE_REPORT).write_text(text)
    text, passed, total = validation_report(target, source, timeout_ms=timeout_ms)
    (folder / VALIDATION_REPORT).write_text(text)
    diff_path, remaining = write_differential_report(source, target, folder, timeout_ms=timeout_ms, schema=schema)
    figures.update({"remaining_difference": remaining})
    return {"paths": [folder / COMPREHENSIVE_REPORT, folder / VALIDATION_REPORT, diff_path], **figures}


# ------------------------------------------------------------------ status (the seed's daily status check)

def status(source: str, target: str, *, timeout_ms: int = DEFAULT_TIMEOUT_MS, schema: str = DEFAULT_SCHEMA) -> tuple[list[dict], bool]:
    """Per entity: latest load, open quarantine, latest checks, remaining difference; and whether
    everything is healthy (every entity loaded, its last attempt not failed, every ERROR check of
    its latest results passing, legacy = target + quarantine)."""
    with _connect(target, timeout_ms) as conn:
        last_attempt = dict(conn.execute(sql.SQL(
            "SELECT DISTINCT ON (entity) entity, status FROM {} ORDER BY entity, id DESC").format(
            MIGRATION_RUNS)).fetchall())
        aside = tables_set_aside(conn, schema)
    loads = latest_loads(target, timeout_ms=timeout_ms)
    checks = latest_checks(target, timeout_ms=timeout_ms)
    now = remaining_differences(source, target, timeout_ms=timeout_ms, schema=schema)
    rows, healthy = [], True
    for e in topological_order():
        x = loads.get(e.name)
        results = checks.get(e.name, {})
        failed = sorted(name for name, r in results.items() if not r["passed"])
        legacy, loaded, held = now[e.name]
        problems = []
        if x is None:
            problems.append("never loaded")
        if last_attempt.get(e.name) in ("FAILED", "CANCELED"):
            problems.append("last attempt failed")
        if any(results[name]["severity"] == "ERROR" for name in failed):
            problems.append("checks failing: " + ", ".join(failed))
            if BUDGET in failed and results[BUDGET]["severity"] == "ERROR":
                m = results[BUDGET]["metadata"]
                problems.append(f"quarantine {m['percent']}% over its maximum of {m['max_percent']:g}%")
        elif not results:
            problems.append("no checks recorded")
        if legacy != loaded + held:
            problems.append(f"difference {legacy - loaded - held:+,}")
        if e.target_table in aside:
            problems.append("keys set aside until target_keys restores them")
        healthy &= not problems
        rows.append({"level": e.level, "entity": e.name, "last_run": x["finished_at"] if x else None,
                     "status": last_attempt.get(e.name, "-"), "mode": x["mode"] if x else "-",
                     "legacy": legacy, "target": loaded, "quarantined": held,
                     "checks": f"{len(results) - len(failed)}/{len(results)}",
                     "state": "OK" if not problems else "; ".join(problems)})
    return rows, healthy


def summary_lines(target: str, run_id: str | None = None, *, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> list[str]:
    """The per-entity summary table of one run (default: the latest) from the audit trail."""
    with _connect(target, timeout_ms) as conn:
        if run_id is None:
            row = conn.execute(f"SELECT run_id FROM {CONTROL_SCHEMA}.migration_runs ORDER BY id DESC LIMIT 1").fetchone()
            if not row:
                return ["no migration has run yet"]
            run_id = row[0]
        rows = {r[0]: r[1:] for r in conn.execute(
            f"SELECT entity, status, records_read, inserted, updated, unchanged, quarantined, duration_ms "
            f"FROM {CONTROL_SCHEMA}.migration_runs WHERE run_id = %s ORDER BY id", [run_id]).fetchall()}
    if not rows:
        return [f"run {run_id} loaded no table"]
    header = f"{'level':>5} {'entity':<26} {'status':<17} {'read':>10} {'inserted':>10} {'updated':>8} " \
             f"{'unchanged':>10} {'quarant.':>8} {'secs':>7}"
    out = [header, "-" * len(header)]
    totals = [0] * 6
    for e in topological_order():
        if e.name not in rows:
            out.append(f"{e.level:>5} {e.name:<26} {'(not run)':<17}")
            continue
        status, read, ins, upd, unch, quar, ms = rows[e.name]
        for i, v in enumerate((read, ins, upd, unch, quar, ms)):
            totals[i] += v
        out.append(f"{e.level:>5} {e.name:<26} {status:<17} {read:>10,} {ins:>10,} {upd:>8,} {unch:>10,} {quar:>8,} "
                   f"{ms / 1000:>7.2f}")
    read, ins, upd, unch, quar, ms = totals
    out.append("-" * len(header))
    out.append(f"{'':>5} {'total':<26} {'':<17} {read:>10,} {ins:>10,} {upd:>8,} {unch:>10,} {quar:>8,} "
               f"{ms / 1000:>7.2f}")
    if read:
        out.append(f"accounted for: {read:,} legacy rows = {read - quar:,} in the target + {quar:,} in quarantine "
                   f"({100 * (read - quar) / read:.2f}% loaded)")
    return out
