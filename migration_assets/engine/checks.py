"""The checks QA signs the migration off with, without Dagster: what each asserts (:data:`CHECKS`),
the two-server accounting they share (accounting.py), the SQL of each, and their evaluation
into plain :class:`CheckOutcome` values, recorded in ``migration_control.check_results``.
checks.py declares them as Dagster asset checks and turns outcomes into Dagster's results; the
command line, the benchmark and the tests call :func:`run_checks` here or there. Adding a check is
one entry in :data:`CHECKS` and its function here, called by :func:`run_checks`.

Each outcome carries the numbers and a capped sample of offending legacy ids.

- ``rows_reconcile``: legacy rows = target rows + unresolved quarantine rows (ERROR), compared per
  bucket of 1,024 legacy ids (count and a sum of id hashes on both servers); only differing
  buckets are compared id by id to name the rows. Rows kept by the soft delete policy
  (``metadata.deleted_at_source``) are not counted as target rows.
- ``foreign_keys_resolve``: no target row references a missing parent, for every foreign key
  (ERROR, blocking: children do not materialize on a broken parent). Counted in the target scan
  of the summaries (which joins the parents anyway); rows are named only when some dangle.
- ``keys_unique``: primary key, unique keys, one target row per legacy id (ERROR). A key with a
  valid unique index is proven by it; one row per legacy id is proven by the bucket accounting
  and counted only inside differing buckets.
- ``emails_valid``: email columns match the email rule of the target's constraint (WARN).
- ``content_checksum``: a 64-bit hash of every mapped column of every row, from the raw legacy
  row (the transforms in SQL) and from the stored target row, summed per bucket on each server
  and compared row by row only in differing buckets (ERROR). A foreign key is compared as the
  legacy id of the parent row it resolves to on the target (a hash join), so the legacy side
  needs no md5 per key; the primary key's UUID derivation is recomputed for every
  UUID_CHECK_EVERY-th id. Tables above CONTENT_CHECKSUM_SAMPLE_ABOVE rows compare a
  deterministic sample of ids.

Both servers work at once: the legacy side's summaries run in a worker thread while the target
computes its own and the target-only checks; Python only compares a few thousand bucket rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from psycopg import sql
from psycopg.types.json import Jsonb

from ..connections import borrowed, set_statement_timeout
from ..registry import Entity
from ..transforms import EMAIL_REGEX
from .accounting import (CheckOptions, IdAccounting, enforcing_index, in_sample, legacy_content_rows_sql,
                         summarize, target_rows_sql)
from .names import BUCKET, CHECK_RESULTS, QUARANTINE, legacy_id_of, not_soft_deleted_sql, target_table
from .rejects import parent_joins


SAMPLE = 20


@dataclass(frozen=True)
class Check:
    """One asset check: what it asserts, how bad a failure is, and whether a failure stops the
    table's children (Dagster's blocking check). ``applies``: the entities it exists for;
    ``headline``: the metadata the validation report shows."""

    name: str
    description: str
    severity: str = "ERROR"  # or "WARN"
    blocking: bool = False
    applies: Callable[[Entity], bool] = lambda e: True
    headline: tuple[str, ...] = ()


CHECKS: dict[str, Check] = {c.name: c for c in (
    Check("rows_reconcile", "Every legacy row is accounted for: legacy rows = target rows + unresolved quarantine "
                            "rows, compared by legacy id.",
          headline=("legacy_rows", "target_rows", "quarantined_unresolved", "legacy_ids_unaccounted",
                    "ids_not_in_legacy")),
    Check("quarantine_within_budget", "The share of the table's legacy rows held in quarantine is within budget: a "
                                      "warning above QUARANTINE_WARN_PERCENT, an error above QUARANTINE_MAX_PERCENT "
                                      "that blocks the table's children; the reasons that make up the share are in "
                                      "the metadata.", blocking=True,
          headline=("percent", "warn_above_percent", "max_percent", "quarantined", "by_reason")),
    Check("foreign_keys_resolve", "Every foreign key of the table points at an existing parent row. Blocking: "
                                  "children wait for a parent that passes.", blocking=True,
          headline=("dangling_references",)),
    Check("keys_unique", "No duplicate primary keys, no duplicate natural keys (unique columns), and exactly one "
                         "target row per legacy id.", headline=("rows_in_duplicate_groups",)),
    Check("emails_valid", "Every email column matches the email format rule.", severity="WARN",
          applies=lambda e: bool(e.email_columns), headline=("invalid_emails",)),
    Check("content_checksum", "Every loaded row holds exactly the values the registry's transforms give for its "
                              "legacy row: a hash of all mapped columns, computed from the raw legacy row on the "
                              "legacy server and from the target row on the target server, compared row by row; "
                              "each foreign key must lead to the parent with the legacy row's parent id (every row "
                              "unless CONTENT_CHECKSUM_SAMPLE_ABOVE sets a size above which a deterministic sample "
                              "of ids is compared).", headline=("rows_compared", "rows_differing", "mode")),
)}


@dataclass(frozen=True)
class CheckOutcome:
    """One check's result for one table: plain values (numbers, text, lists, dicts of them) that
    the audit trail stores as JSON and checks.py hands to Dagster."""

    check_name: str
    passed: bool
    metadata: dict
    level: str | None = None  # this result's severity when it is not the check's own (a budget's warning)

    @property
    def severity(self) -> str:
        return self.level or CHECKS[self.check_name].severity

    @property
    def description(self) -> str:
        return CHECKS[self.check_name].description


def rows_reconcile(source_conn, target_conn, e: Entity, acc: IdAccounting | None = None,
                   opts: CheckOptions = CheckOptions()) -> CheckOutcome:
    """Per-bucket accounting of legacy ids; the ids of differing buckets only are streamed into a
    temp table on the target to name the missing and extra ones. No table is held in Python."""
    acc = acc or summarize(source_conn, target_conn, e, opts)
    missing = extra = 0
    missing_sample = extra_sample = None
    if acc.differing_buckets:
        t = target_table(e, opts.load.target_schema)
        buckets = sql.Literal(acc.differing_buckets)
        target_conn.execute("CREATE TEMP TABLE IF NOT EXISTS _legacy_ids (id bigint PRIMARY KEY) ON COMMIT DROP")
        target_conn.execute("TRUNCATE _legacy_ids")
        with source_conn.cursor().copy(sql.SQL("COPY (SELECT {pk} FROM {t} WHERE {pk} / {b} = ANY({bs})) TO STDOUT").format(
                pk=sql.Identifier(e.legacy_pk), t=sql.Identifier(e.legacy_table), b=sql.Literal(BUCKET),
                bs=buckets)) as out, target_conn.cursor().copy("COPY _legacy_ids (id) FROM STDIN") as inp:
            for chunk in out:
                inp.write(chunk)
        missing, extra, missing_sample, extra_sample = target_conn.execute(sql.SQL("""
            WITH acc AS (SELECT {lid} AS id FROM {t} t WHERE {live}
                         UNION ALL SELECT legacy_id FROM {q} WHERE entity = {ent} AND NOT resolved),
                 scoped AS (SELECT id FROM acc WHERE id / {b} = ANY({bs})),
                 missing AS (SELECT l.id FROM _legacy_ids l WHERE NOT EXISTS (SELECT 1 FROM scoped s WHERE s.id = l.id)),
                 extra AS (SELECT s.id FROM scoped s WHERE NOT EXISTS (SELECT 1 FROM _legacy_ids l WHERE l.id = s.id))
            SELECT (SELECT count(*) FROM missing), (SELECT count(*) FROM extra),
                   (SELECT array_agg(id ORDER BY id) FROM (SELECT id FROM missing ORDER BY id LIMIT {n}) s),
                   (SELECT array_agg(id ORDER BY id) FROM (SELECT id FROM extra ORDER BY id LIMIT {n}) s)""").format(
            lid=legacy_id_of("t", staged=False), t=t, q=QUARANTINE, ent=sql.Literal(e.name),
            live=not_soft_deleted_sql("t"),
            b=sql.Literal(BUCKET), bs=buckets, n=sql.Literal(SAMPLE))).fetchone()
    passed = acc.legacy_rows == acc.target_rows + acc.quarantined and not acc.differing_buckets
    return CheckOutcome("rows_reconcile", passed, metadata={
        "legacy_rows": acc.legacy_rows,
        "target_rows": acc.target_rows,
        "quarantined_unresolved": acc.quarantined,
        "legacy_ids_unaccounted": missing,
        "ids_not_in_legacy": extra,
        "id_buckets_differing": len(acc.differing_buckets),
        "sample_unaccounted_legacy_ids": missing_sample or [],
        "sample_ids_not_in_legacy": extra_sample or [],
    })


def quarantine_within_budget(target_conn, e: Entity, acc: IdAccounting, opts: CheckOptions) -> CheckOutcome:
    """The open quarantine rows as a share of the legacy rows (both from the accounting), against
    the table's budget; the reasons that make up the share from the quarantine. Passed up to
    QUARANTINE_WARN_PERCENT, or at most QUARANTINE_MIN_ROWS rows whatever the share; a warning up
    to QUARANTINE_MAX_PERCENT; an error above it."""
    warn, high = opts.quarantine_warn.of(e.name), opts.quarantine_max.of(e.name)
    percent = 100 * acc.quarantined / acc.legacy_rows if acc.legacy_rows else 0.0
    few = acc.quarantined <= opts.quarantine_min_rows  # within budget whatever the share
    by_reason = dict(target_conn.execute(sql.SQL(
        "SELECT reason, count(*) FROM {} WHERE entity = %s AND NOT resolved GROUP BY reason ORDER BY 2 DESC, 1").format(
        QUARANTINE), [e.name]).fetchall())
    return CheckOutcome("quarantine_within_budget", few or percent <= warn,
                        level="ERROR" if not few and percent > high else "WARN",
                        metadata={
                            "percent": round(percent, 3),
                            "warn_above_percent": warn,
                            "max_percent": high,
                            "min_rows": opts.quarantine_min_rows,
                            "quarantined": acc.quarantined,
                            "legacy_rows": acc.legacy_rows,
                            "by_reason": by_reason,
                            "by_reason_percent": {r: round(100 * n / acc.legacy_rows, 3)
                                                  for r, n in by_reason.items()} if acc.legacy_rows else {},
                        })


def _offending_rows(target_conn, e: Entity, schema: str, predicate: sql.Composable) -> tuple[int, list[int] | None]:
    """(count, first SAMPLE legacy ids) of the rows of ``e``'s table in ``schema`` matching ``predicate`` (alias t)."""
    return target_conn.execute(sql.SQL(
        "SELECT count(*), (array_agg({lid} ORDER BY {lid}))[1:{n}] FROM {t} t WHERE {pred}").format(
        lid=legacy_id_of("t", staged=False), t=target_table(e, schema), pred=predicate,
        n=sql.Literal(SAMPLE))).fetchone()


def foreign_keys_resolve(target_conn, e: Entity, acc: IdAccounting | None = None,
                         opts: CheckOptions = CheckOptions()) -> CheckOutcome:
    """All foreign keys of the table in one pass: the rows left-joined to every parent's keys
    (hash joins), dangling references counted per column. Rows are told apart by address, so a
    parent key present twice (its primary key dropped) cannot count a child twice. With ``acc``
    (whose target scan made the same joins) a table without dangling references needs no query."""
    per_fk, samples = {c.target: 0 for c in e.foreign_keys}, {}
    if e.foreign_keys and (acc is None or any(acc.dangling.values())):
        fks = e.foreign_keys
        flags = [sql.Identifier(f"m{i}") for i in range(len(fks))]
        joins, missing = parent_joins(e, "t", opts.load.target_schema)
        outputs = []
        for f in flags:
            outputs.append(sql.SQL("count(DISTINCT rid) FILTER (WHERE {})").format(f))
            outputs.append(sql.SQL("(array_agg(DISTINCT lid) FILTER (WHERE {}))[1:{}]").format(f, sql.Literal(SAMPLE)))
        row = target_conn.execute(sql.SQL(
            "SELECT {outputs} FROM (SELECT t.ctid AS rid, {lid} AS lid, {flags} FROM {t} AS t {joins} "
            "WHERE {any}) s").format(
            outputs=sql.SQL(", ").join(outputs), lid=legacy_id_of("t", staged=False),
            flags=sql.SQL(", ").join(sql.SQL("{} AS {}").format(m, f) for m, f in zip(missing, flags)),
            t=target_table(e, opts.load.target_schema), joins=joins, any=sql.SQL(" OR ").join(missing))).fetchone()
        for i, c in enumerate(fks):
            n, sample = row[2 * i], row[2 * i + 1]
            per_fk[c.target] = n
            if n:
                samples[c.target] = sample
    broken = sum(per_fk.values())
    return CheckOutcome("foreign_keys_resolve", broken == 0, metadata={
        "dangling_references": broken,
        "by_foreign_key": per_fk,
        "sample_legacy_ids": samples,
    })


def keys_unique(target_conn, e: Entity, acc: IdAccounting | None = None, source_conn=None,
                opts: CheckOptions = CheckOptions()) -> CheckOutcome:
    """Primary and natural keys: proven by a valid unique index when there is one, counted
    otherwise. One row per legacy id: proven by the id accounting wherever its buckets match
    (an id present twice changes a bucket's count), counted within the differing buckets."""
    schema = opts.load.target_schema
    t = target_table(e, schema)
    found, samples, enforced = {}, {}, {}
    keys = [("id", sql.SQL("t.id"), sql.SQL("true"))]
    keys += [(c.target, sql.SQL("t.{}").format(sql.Identifier(c.target)), sql.SQL("true")) for c in e.unique_columns]
    if acc is None and source_conn is not None:
        acc = summarize(source_conn, target_conn, e, opts)
    if acc is None:
        keys.append(("legacy_id", legacy_id_of("t", staged=False), sql.SQL("true")))
    elif acc.differing_buckets:
        keys.append(("legacy_id", legacy_id_of("t", staged=False), sql.SQL("{} / {} = ANY({})").format(
            legacy_id_of("t", staged=False), sql.Literal(BUCKET), sql.Literal(acc.differing_buckets))))
    else:
        found["legacy_id"] = 0
        enforced["legacy_id"] = "id accounting: every bucket matches the legacy primary key"
    for name, expr, scope in keys:
        index = enforcing_index(target_conn, schema, e.target_table, name) if name != "legacy_id" else None
        if index:
            found[name], enforced[name] = 0, f"unique index {index}"
            continue
        # hash aggregate first (cheap); the sample query only runs when something is duplicated
        (n,) = target_conn.execute(sql.SQL(
            "SELECT coalesce(sum(c), 0)::bigint FROM (SELECT count(*) AS c FROM {t} t WHERE {k} IS NOT NULL AND {s} "
            "GROUP BY {k} HAVING count(*) > 1) s").format(k=expr, t=t, s=scope)).fetchone()
        found[name] = n
        if n:
            (samples[name],) = target_conn.execute(sql.SQL(
                "SELECT (array_agg(lid ORDER BY lid))[1:{n}] FROM ("
                "  SELECT {lid} AS lid, count(*) OVER (PARTITION BY {k}) AS c FROM {t} t "
                "  WHERE {k} IS NOT NULL AND {s}) s "
                "WHERE c > 1").format(lid=legacy_id_of("t", staged=False), k=expr, t=t, s=scope,
                                      n=sql.Literal(SAMPLE))).fetchone()
    dup = sum(found.values())
    return CheckOutcome("keys_unique", dup == 0, metadata={
        "rows_in_duplicate_groups": dup,
        "by_key": found,
        "proven_by": enforced,
        "sample_legacy_ids": samples,
    })


def emails_valid(target_conn, e: Entity, opts: CheckOptions = CheckOptions()) -> CheckOutcome:
    found, samples = {}, {}
    for c in e.email_columns:
        n, sample = _offending_rows(target_conn, e, opts.load.target_schema, sql.SQL(
            "t.{col} IS NOT NULL AND t.{col} !~ {re}").format(col=sql.Identifier(c.target), re=sql.Literal(EMAIL_REGEX)))
        found[c.target] = n
        if n:
            samples[c.target] = sample
    bad = sum(found.values())
    return CheckOutcome("emails_valid", bad == 0, metadata={
        "invalid_emails": bad,
        "by_column": found,
        "sample_legacy_ids": samples,
    })


def content_checksum(source_conn, target_conn, e: Entity, acc: IdAccounting | None = None,
                     opts: CheckOptions = CheckOptions()) -> CheckOutcome:
    """Content of every loaded row (or of the sample) against its legacy row: per bucket first
    (see IdAccounting); in the buckets that differ, the (id, hash) pairs of the legacy rows are
    streamed into a temp table on the target and joined row by row to name the rows."""
    acc = acc or summarize(source_conn, target_conn, e, opts)
    plan = acc.plan
    differing, sample = 0, []
    if acc.content_differing:
        target_conn.execute("CREATE TEMP TABLE IF NOT EXISTS _legacy_content (id bigint PRIMARY KEY, h bigint) "
                            "ON COMMIT DROP")
        target_conn.execute("TRUNCATE _legacy_content")
        with source_conn.cursor().copy(sql.SQL("COPY ({}) TO STDOUT").format(
                legacy_content_rows_sql(e, plan, acc.content_differing))) as out, \
                target_conn.cursor().copy("COPY _legacy_content (id, h) FROM STDIN") as inp:
            for chunk in out:
                inp.write(chunk)
        source, h, _ = target_rows_sql(e, plan)
        lid = legacy_id_of("t", staged=False)
        # a row differs when its (id, hash) pair has no partner on the other side: a changed value,
        # a row missing on either side
        differing, sample = target_conn.execute(sql.SQL(
            "WITH t AS (SELECT {lid} AS lid, {h} AS h FROM {source} WHERE {live} "
            "           AND {lid} / {b} = ANY({buckets}::bigint[]) AND {s}), "
            "d AS (SELECT coalesce(t.lid, c.id) AS lid FROM t FULL JOIN _legacy_content c ON c.id = t.lid AND c.h = t.h "
            "      WHERE t.lid IS NULL OR c.id IS NULL) "
            "SELECT count(DISTINCT lid), (array_agg(DISTINCT lid ORDER BY lid))[1:{n}] FROM d").format(
            lid=lid, h=h, source=source, b=sql.Literal(BUCKET), s=in_sample(lid, plan.every),
            live=not_soft_deleted_sql("t"),
            n=sql.Literal(SAMPLE), buckets=sql.Literal(acc.content_differing))).fetchone()
    every = acc.content_every
    return CheckOutcome("content_checksum", differing == 0, metadata={
        "rows_compared": acc.content_rows,
        "rows_differing": differing,
        "mode": f"sampled (legacy id % {every} = 0)" if every > 1 else "full",
        "uuid_keys_recomputed": "every row" if acc.uuid_every == 1 else f"legacy id % {acc.uuid_every} = 0",
        "id_buckets_differing": len(acc.content_differing),
        "legacy_checksum": str(acc.legacy_checksum),
        "target_checksum": str(acc.target_checksum),
        "columns": len(e.columns) + 1,
        "sample_legacy_ids": sample or [],
    })


CHECK_WORKERS = 1  # parallel workers per query on each server (see _configure)


CHECK_RANDOM_PAGE_COST = 1.1


def _configure(conn) -> None:
    # JIT compilation of these one-off scans costs more than it saves (most of the largest
    # table's summary went to compiling). One parallel worker per query, not the default two:
    # both servers scan at the same time, and a second worker per side only adds process
    # switches and tuple-queue traffic. random_page_cost 1.1 instead of 4 (a spinning disk's):
    # the tables were just written and are cached, so a primary-key probe costs what a
    # sequential read does; with 4, a small child hashed the whole of a large parent to find its
    # parents instead of probing the parent's primary key. (BENCHMARKS.md, design measurements.)
    # The legacy side runs in autocommit with session settings (its connection is direct: the
    # loads export snapshots there); the target side runs in one transaction with LOCAL settings,
    # which a transaction pooler cannot lose or leak to another client.
    scope = "" if conn.autocommit else "LOCAL "
    conn.execute(f"SET {scope}jit = off; SET {scope}max_parallel_workers_per_gather = {CHECK_WORKERS}; "
                 f"SET {scope}random_page_cost = {CHECK_RANDOM_PAGE_COST}")


def run_checks(source_conninfo: str, target_conninfo: str, e: Entity, run_id: str | None = None,
               opts: CheckOptions = CheckOptions()) -> list[CheckOutcome]:
    """Every check of ``e`` (CHECKS); with ``run_id``, also recorded in migration_control.check_results.
    ``opts.timeout_ms`` (MIGRATION_TIMEOUT) bounds each of the target's check statements."""
    with borrowed(source_conninfo, "checks-source", _configure, autocommit=True) as src, \
            borrowed(target_conninfo, "checks-target") as tgt:
        _configure(tgt)  # LOCAL to the checks' transaction
        if opts.timeout_ms is not None:
            set_statement_timeout(tgt, opts.timeout_ms)
        target_only = []  # evaluated on the target while the legacy server computes its summaries

        def meanwhile(conn):
            if CHECKS["emails_valid"].applies(e):
                target_only.append(emails_valid(conn, e, opts))

        acc = summarize(src, tgt, e, opts, meanwhile=meanwhile)  # shared by the checks that compare both sides
        results = [rows_reconcile(src, tgt, e, acc, opts), quarantine_within_budget(tgt, e, acc, opts),
                   foreign_keys_resolve(tgt, e, acc, opts), keys_unique(tgt, e, acc, opts=opts), *target_only,
                   content_checksum(src, tgt, e, acc, opts)]
        tgt.rollback()  # the checks only read: drop the temp tables
        if run_id is not None:
            if opts.timeout_ms is not None:
                set_statement_timeout(tgt, opts.timeout_ms)  # a new transaction
            record_results(tgt, run_id, e, results)
            tgt.commit()
    return results


def record_results(conn, run_id: str, e: Entity, results: list[CheckOutcome]) -> None:
    with conn.cursor() as cur:
        cur.executemany(sql.SQL(
            "INSERT INTO {} (run_id, entity, check_name, passed, severity, description, metadata) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)").format(CHECK_RESULTS),
            [(run_id, e.name, r.check_name, r.passed, r.severity, r.description, Jsonb(r.metadata)) for r in results])
