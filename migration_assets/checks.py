"""Asset checks QA signs the migration off with: set-based SQL, run in the asset's own step.

The checks are declared as ``check_specs`` on each table asset and evaluated right after its
load, in the same step, so they cost no extra process and no extra orchestration step (the
in-process executor runs 45 steps, not 45 + 45 x checks). Each result carries the numbers and a
capped sample of offending legacy ids.

- ``rows_reconcile``: legacy rows = target rows + unresolved quarantine rows (ERROR); rows kept
  by the soft delete policy (``metadata.deleted_at_source``) are not counted as target rows.
- ``foreign_keys_resolve``: no target row references a missing parent, for every foreign key
  (ERROR, blocking: children do not materialize on a broken parent).
- ``keys_unique``: primary key, unique keys, one target row per legacy id (ERROR).
- ``emails_valid``: email columns match the email rule of the target's constraint (WARN).
"""

from __future__ import annotations

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey, MetadataValue
from psycopg import sql

from .registry import Entity
from .target_schema import CONTROL_SCHEMA
from .transforms import EMAIL_REGEX

SAMPLE = 20

CHECKS = {
    "rows_reconcile": "Every legacy row is accounted for: legacy rows = target rows + unresolved quarantine rows, "
                      "compared by legacy id.",
    "foreign_keys_resolve": "Every foreign key of the table points at an existing parent row. Blocking: children "
                            "wait for a parent that passes.",
    "keys_unique": "No duplicate primary keys, no duplicate natural keys (unique columns), and exactly one target "
                   "row per legacy id.",
    "emails_valid": "Every email column matches the email format rule.",
}


def check_specs(e: Entity) -> list[AssetCheckSpec]:
    key = AssetKey(e.name)
    specs = [
        AssetCheckSpec("rows_reconcile", asset=key, description=CHECKS["rows_reconcile"]),
        AssetCheckSpec("foreign_keys_resolve", asset=key, description=CHECKS["foreign_keys_resolve"], blocking=True),
        AssetCheckSpec("keys_unique", asset=key, description=CHECKS["keys_unique"]),
    ]
    if e.email_columns:
        specs.append(AssetCheckSpec("emails_valid", asset=key, description=CHECKS["emails_valid"]))
    return specs


def _legacy_id(alias: str = "t") -> sql.Composable:
    return sql.SQL("({}.metadata->>'legacy_id')::bigint").format(sql.Identifier(alias))


def rows_reconcile(source_conn, target_conn, e: Entity) -> AssetCheckResult:
    """Counts on both sides, then the legacy ids missing from both target and quarantine.

    The id comparison streams the legacy ids into a temp table on the target: no table is held
    in Python."""
    t = sql.Identifier("public", e.target_table)
    (legacy_rows,) = source_conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(e.legacy_table))).fetchone()
    target_conn.execute("CREATE TEMP TABLE IF NOT EXISTS _legacy_ids (id bigint PRIMARY KEY) ON COMMIT DROP")
    target_conn.execute("TRUNCATE _legacy_ids")
    with source_conn.cursor().copy(sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(
            sql.Identifier(e.legacy_pk), sql.Identifier(e.legacy_table))) as out, \
            target_conn.cursor().copy("COPY _legacy_ids (id) FROM STDIN") as inp:
        for chunk in out:
            inp.write(chunk)
    target_rows, quarantined, missing, extra, missing_sample, extra_sample = target_conn.execute(sql.SQL("""
        WITH tgt AS (SELECT {lid} AS id FROM {t} t WHERE NOT (t.metadata ? 'deleted_at_source')),
             q AS (SELECT legacy_id AS id FROM {q} WHERE entity = {ent} AND NOT resolved),
             acc AS (SELECT id FROM tgt UNION ALL SELECT id FROM q),
             missing AS (SELECT l.id FROM _legacy_ids l WHERE NOT EXISTS (SELECT 1 FROM acc WHERE acc.id = l.id)),
             extra AS (SELECT acc.id FROM acc WHERE NOT EXISTS (SELECT 1 FROM _legacy_ids l WHERE l.id = acc.id))
        SELECT (SELECT count(*) FROM tgt), (SELECT count(*) FROM q), (SELECT count(*) FROM missing),
               (SELECT count(*) FROM extra),
               (SELECT array_agg(id ORDER BY id) FROM (SELECT id FROM missing ORDER BY id LIMIT {n}) s),
               (SELECT array_agg(id ORDER BY id) FROM (SELECT id FROM extra ORDER BY id LIMIT {n}) s)""").format(
        lid=_legacy_id(), t=t, q=sql.Identifier(CONTROL_SCHEMA, "quarantine"), ent=sql.Literal(e.name),
        n=sql.Literal(SAMPLE))).fetchone()
    passed = legacy_rows == target_rows + quarantined and missing == 0 and extra == 0
    return AssetCheckResult(
        check_name="rows_reconcile", asset_key=AssetKey(e.name), passed=passed, severity=AssetCheckSeverity.ERROR,
        description=CHECKS["rows_reconcile"],
        metadata={"legacy_rows": legacy_rows, "target_rows": target_rows, "quarantined_unresolved": quarantined,
                  "legacy_ids_unaccounted": missing, "ids_not_in_legacy": extra,
                  "sample_unaccounted_legacy_ids": MetadataValue.json(missing_sample or []),
                  "sample_ids_not_in_legacy": MetadataValue.json(extra_sample or [])})


def _offending_rows(target_conn, e: Entity, predicate: sql.Composable) -> tuple[int, list[int] | None]:
    """(count, first SAMPLE legacy ids) of the target rows of ``e`` matching ``predicate`` (alias t)."""
    return target_conn.execute(sql.SQL(
        "SELECT count(*), (array_agg({lid} ORDER BY {lid}))[1:{n}] FROM {t} t WHERE {pred}").format(
        lid=_legacy_id(), t=sql.Identifier("public", e.target_table), pred=predicate,
        n=sql.Literal(SAMPLE))).fetchone()


def foreign_keys_resolve(target_conn, e: Entity) -> AssetCheckResult:
    per_fk, samples = {}, {}
    for c in e.foreign_keys:
        n, sample = _offending_rows(target_conn, e, sql.SQL(
            "t.{col} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {p} p WHERE p.id = t.{col})").format(
            col=sql.Identifier(c.target), p=sql.Identifier("public", c.parent)))
        per_fk[c.target] = n
        if n:
            samples[c.target] = sample
    broken = sum(per_fk.values())
    return AssetCheckResult(
        check_name="foreign_keys_resolve", asset_key=AssetKey(e.name), passed=broken == 0,
        severity=AssetCheckSeverity.ERROR, description=CHECKS["foreign_keys_resolve"],
        metadata={"dangling_references": broken, "by_foreign_key": MetadataValue.json(per_fk),
                  "sample_legacy_ids": MetadataValue.json(samples)})


def keys_unique(target_conn, e: Entity) -> AssetCheckResult:
    t = sql.Identifier("public", e.target_table)
    found, samples = {}, {}
    keys = [("id", sql.SQL("t.id")), ("legacy_id", _legacy_id())]
    keys += [(c.target, sql.SQL("t.{}").format(sql.Identifier(c.target))) for c in e.unique_columns]
    for name, expr in keys:
        # hash aggregate first (cheap); the sample query only runs when something is duplicated
        (n,) = target_conn.execute(sql.SQL(
            "SELECT coalesce(sum(c), 0)::bigint FROM (SELECT count(*) AS c FROM {t} t WHERE {k} IS NOT NULL "
            "GROUP BY {k} HAVING count(*) > 1) s").format(k=expr, t=t)).fetchone()
        found[name] = n
        if n:
            (samples[name],) = target_conn.execute(sql.SQL(
                "SELECT (array_agg(lid ORDER BY lid))[1:{n}] FROM ("
                "  SELECT {lid} AS lid, count(*) OVER (PARTITION BY {k}) AS c FROM {t} t WHERE {k} IS NOT NULL) s "
                "WHERE c > 1").format(lid=_legacy_id(), k=expr, t=t, n=sql.Literal(SAMPLE))).fetchone()
    dup = sum(found.values())
    return AssetCheckResult(
        check_name="keys_unique", asset_key=AssetKey(e.name), passed=dup == 0, severity=AssetCheckSeverity.ERROR,
        description=CHECKS["keys_unique"],
        metadata={"rows_in_duplicate_groups": dup, "by_key": MetadataValue.json(found),
                  "sample_legacy_ids": MetadataValue.json(samples)})


def emails_valid(target_conn, e: Entity) -> AssetCheckResult:
    found, samples = {}, {}
    for c in e.email_columns:
        n, sample = _offending_rows(target_conn, e, sql.SQL("t.{col} IS NOT NULL AND t.{col} !~ {re}").format(
            col=sql.Identifier(c.target), re=sql.Literal(EMAIL_REGEX)))
        found[c.target] = n
        if n:
            samples[c.target] = sample
    bad = sum(found.values())
    return AssetCheckResult(
        check_name="emails_valid", asset_key=AssetKey(e.name), passed=bad == 0, severity=AssetCheckSeverity.WARN,
        description=CHECKS["emails_valid"],
        metadata={"invalid_emails": bad, "by_column": MetadataValue.json(found),
                  "sample_legacy_ids": MetadataValue.json(samples)})


def run_checks(source_conninfo: str, target_conninfo: str, e: Entity) -> list[AssetCheckResult]:
    import psycopg

    with psycopg.connect(source_conninfo, autocommit=True) as src, psycopg.connect(target_conninfo) as tgt:
        results = [rows_reconcile(src, tgt, e), foreign_keys_resolve(tgt, e), keys_unique(tgt, e)]
        if e.email_columns:
            results.append(emails_valid(tgt, e))
        tgt.rollback()  # read-only: drop the temp table
    return results
