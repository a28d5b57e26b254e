"""Asset checks QA signs the migration off with: set-based SQL, run in the asset's own step.

The checks are declared as ``check_specs`` on each table asset and evaluated right after its
load, in the same step, so they cost no extra process and no extra orchestration step (the
in-process executor runs 45 steps, not 45 + 45 x checks). Each result carries the numbers and a
capped sample of offending legacy ids.

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

from dataclasses import dataclass, field

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey, MetadataValue
from psycopg import sql

from .connections import borrowed, set_statement_timeout
from .engine.names import BUCKET, CHECK_RESULTS, HASH_MOD, QUARANTINE, legacy_id_of, not_soft_deleted_sql
from .engine.options import LoadOptions
from .engine.rejects import parent_joins
from .engine.source_sql import column_value_sql, for_server
from .registry import Entity
from .settings import DEFAULTS
from .transforms import EMAIL_REGEX, Kind, uuid_sql

SAMPLE = 20

CHECKS = {
    "rows_reconcile": "Every legacy row is accounted for: legacy rows = target rows + unresolved quarantine rows, "
                      "compared by legacy id.",
    "foreign_keys_resolve": "Every foreign key of the table points at an existing parent row. Blocking: children "
                            "wait for a parent that passes.",
    "keys_unique": "No duplicate primary keys, no duplicate natural keys (unique columns), and exactly one target "
                   "row per legacy id.",
    "emails_valid": "Every email column matches the email format rule.",
    "content_checksum": "Every loaded row holds exactly the values the registry's transforms give for its legacy "
                        "row: a hash of all mapped columns, computed from the raw legacy row on the legacy server "
                        "and from the target row on the target server, compared row by row; each foreign key "
                        "must lead to the parent with the legacy row's parent id (every row unless "
                        "CONTENT_CHECKSUM_SAMPLE_ABOVE sets a size above which a deterministic sample of ids is "
                        "compared).",
}

# Content comparison settings. By default (CONTENT_CHECKSUM_SAMPLE_ABOVE=-1) every row of every
# table is compared: QA signs off on the content of every row, not on an estimate. A team that
# prefers a cheaper check on its largest tables sets a size above which a table compares only the
# ids divisible by CONTENT_CHECKSUM_SAMPLE_EVERY (default 50); BENCHMARKS.md reports the cost of
# both (bench.run: "checks" sampled above 500,000 rows, "every row's content"). The UUID derivation
# of the primary key (uuid v3 of entity and legacy id) is recomputed for the ids divisible by
# UUID_CHECK_EVERY (default 50; 1 = every row):
# an md5 in SQL costs more than the rest of a row's comparison; the relations themselves are
# compared for every row (each foreign key must resolve to the parent with the right legacy id).
SAMPLE_ABOVE_DEFAULT = DEFAULTS["sample_above"]
SAMPLE_EVERY_DEFAULT = DEFAULTS["sample_every"]
UUID_CHECK_EVERY_DEFAULT = DEFAULTS["uuid_every"]


def check_specs(e: Entity) -> list[AssetCheckSpec]:
    key = AssetKey(e.name)
    specs = [
        AssetCheckSpec("rows_reconcile", asset=key, description=CHECKS["rows_reconcile"]),
        AssetCheckSpec("foreign_keys_resolve", asset=key, description=CHECKS["foreign_keys_resolve"], blocking=True),
        AssetCheckSpec("keys_unique", asset=key, description=CHECKS["keys_unique"]),
    ]
    if e.email_columns:
        specs.append(AssetCheckSpec("emails_valid", asset=key, description=CHECKS["emails_valid"]))
    specs.append(AssetCheckSpec("content_checksum", asset=key, description=CHECKS["content_checksum"]))
    return specs


@dataclass
class IdAccounting:
    """What both servers hold of one entity, per bucket of BUCKET legacy ids, summarised on
    each server and compared in Python (a few thousand rows at scale 1.0, whatever the table's size).

    Ids: (rows, sum of a hash of each id) from the legacy primary key, against the same over
    target rows + open quarantine rows. A bucket that matches holds exactly the same ids on both
    sides, each once (a missing, extra or repeated id changes the count or the sum).

    Content: (rows, sum of a 64-bit hash of the row's values) over the legacy rows that are not in
    quarantine, against the same over the target's stored rows. Order-independent, so each side is
    one aggregate scan on its own server, and the two servers work at the same time. Only the
    buckets that differ are compared row by row, to name the rows.

    Dangling references per foreign key come from the same target scan (its joins to the parents
    give the parents' legacy ids for the content hash)."""

    legacy_rows: int
    target_rows: int
    quarantined: int
    differing_buckets: list[int]
    plan: "_Plan"  # what both sides agreed on (sampling, exclusions; the drill-down reuses it)
    content_rows: int = 0  # legacy rows whose content was compared
    content_differing: list[int] = field(default_factory=list)
    legacy_checksum: int = 0  # sums of the content hashes, modulo 2^64
    target_checksum: int = 0
    dangling: dict[str, int] = field(default_factory=dict)  # foreign key column -> rows referencing no parent

    @property
    def content_every(self) -> int:
        """1: every row's content compared; n: the legacy ids divisible by n."""
        return self.plan.every

    @property
    def uuid_every(self) -> int:
        """Primary-key UUIDs are recomputed for the legacy ids divisible by this."""
        return self.plan.uuid_every


@dataclass(frozen=True)
class _Plan:
    """What both sides of one comparison agree on before either starts."""

    every: int  # content sample
    uuid_every: int
    excluded: list[int]  # open quarantine ids (within the sample): no content expected for them
    recovered: dict[str, list[int]]  # optional FK column -> legacy ids of rows where recovery set it NULL
    parents: dict[str, sql.Composable]  # FK column -> relation (id, lid) of the parent table
    # the run's load options (ERROR_RECOVERY_ENABLED, LEGACY_TEXT_ENCODING), for the legacy server
    # read: the legacy side applies the transforms the load applied
    options: LoadOptions = LoadOptions()
    # The legacy server stores text in another encoding than the target's UTF-8 (LATIN1, WIN1252,
    # SQL_ASCII...): a text hash on each server would hash different bytes for the same
    # characters, so both sides hash the text's UTF-8 bytes instead.
    text_as_utf8: bool = False


def _text_value(c, v: sql.Composable, plan: _Plan) -> sql.Composable:
    """``v`` as it enters the row hash: a text value as its UTF-8 bytes when the servers' encodings differ."""
    if plan.text_as_utf8 and c.target_type == "text":
        return sql.SQL("convert_to({}, 'UTF8')").format(v)
    return v


def _content_every(source_conn, e: Entity, sample_above: int | None, sample_every: int | None) -> int:
    """1 (compare every row) unless the legacy table is above the sampling threshold (negative: none)."""
    above = SAMPLE_ABOVE_DEFAULT if sample_above is None else sample_above
    every = SAMPLE_EVERY_DEFAULT if sample_every is None else sample_every
    if above < 0 or every <= 1:
        return 1
    (estimate,) = source_conn.execute("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                                      [e.legacy_table]).fetchone() or (0,)
    return every if estimate and estimate > above else 1


def _in_sample(value: sql.Composable, every: int) -> sql.Composable:
    return sql.SQL("true") if every == 1 else sql.SQL("{} % {} = 0").format(value, sql.Literal(every))


def _open_quarantine(target_conn, e: Entity, every: int) -> list[int]:
    """Legacy ids of the entity's open quarantine rows (within the content sample)."""
    return [r[0] for r in target_conn.execute(sql.SQL(
        "SELECT legacy_id FROM {q} WHERE entity = {ent} AND NOT resolved AND {s}").format(
        q=QUARANTINE, ent=sql.Literal(e.name),
        s=_in_sample(sql.SQL("legacy_id"), every))).fetchall()]


def _recovered_references(target_conn, e: Entity) -> dict[str, list[int]]:
    """Per optional foreign key: legacy ids of the rows whose reference recovery set NULL (the value
    it had is in metadata.recovered). Their legacy rows still hold the integer, so the legacy side
    hashes the UUID it stood for, as the target side does. Read through the partial retry index."""
    optional = [c for c in e.foreign_keys if not c.required]
    if not optional:
        return {}
    t = sql.Identifier("public", e.target_table)
    cols = sql.SQL(", ").join(sql.SQL(
        "array_agg({lid} ORDER BY {lid}) FILTER (WHERE t.{c} IS NULL AND t.metadata->'recovered'->{k} ? 'was')").format(
        lid=legacy_id_of("t", staged=False), c=sql.Identifier(c.target), k=sql.Literal(c.target)) for c in optional)
    row = target_conn.execute(sql.SQL("SELECT {} FROM {} t WHERE t.metadata->'recovered' ? 'retry'").format(
        cols, t)).fetchone()
    return {c.target: ids for c, ids in zip(optional, row) if ids}


def _parent_relation(target_conn, table: str) -> sql.Composable:
    """(id, lid) of a parent table. With its primary key enforced, the plain table (the join cannot
    fan out); without, one row per id, so a duplicated parent cannot count a child twice.

    ``coalesce(lid, -1)``: a non-strict expression, so when the planner flattens this subquery
    under the LEFT JOIN it evaluates the legacy id at the parent's scan (a placeholder) and
    hashes (id, lid); with the strict expression it hashed each parent row's whole metadata and
    read the id out of it after the join, for every child row. A parent whose metadata has no
    legacy id reads as -1, which no legacy id equals."""
    lid, t = legacy_id_of("p", staged=False), sql.Identifier("public", table)
    if _enforcing_index(target_conn, table, "id"):
        return sql.SQL("(SELECT p.id, coalesce({}, -1) AS lid FROM {} p)").format(lid, t)
    return sql.SQL("(SELECT p.id, min({}) AS lid FROM {} p GROUP BY p.id)").format(lid, t)


def _plan(source_conn, target_conn, e: Entity, sample_above: int | None, sample_every: int | None,
          uuid_every: int | None, options: LoadOptions | None = None) -> _Plan:
    every = _content_every(source_conn, e, sample_above, sample_every)
    uuid_every = UUID_CHECK_EVERY_DEFAULT if uuid_every is None else uuid_every
    encoding = source_conn.info.parameter_status("server_encoding") or ""  # reported at connect: no query
    return _Plan(every=every, uuid_every=max(uuid_every, 1), excluded=_open_quarantine(target_conn, e, every),
                 recovered=_recovered_references(target_conn, e),
                 parents={c.target: _parent_relation(target_conn, c.parent) for c in e.foreign_keys},
                 options=for_server(options or LoadOptions(), encoding),
                 text_as_utf8=encoding != "UTF8")


def _legacy_row_hash(e: Entity, plan: _Plan) -> sql.Composable:
    """64-bit hash of what the target row of a legacy row (alias l) must hold: the legacy id, the
    transformed values, each foreign key as its parent's legacy id (the UUID of a reference that
    recovery set NULL), and, for the ids in the UUID sample, the hash of the UUID its primary key
    must be (the md5 runs here, on the legacy server, which finishes its side first; the target
    hashes its stored id). Typed values hashed with the types' own hash functions (no text
    rendering); the transforms are the engine's SQL."""

    opts = plan.options
    pk = sql.SQL("l.{}::bigint").format(sql.Identifier(e.legacy_pk))
    values = [pk, sql.SQL("CASE WHEN {} THEN uuid_hash_extended({}, 0) END").format(
        _in_sample(pk, plan.uuid_every), uuid_sql(e.name, pk))]
    for c in e.columns:
        src = sql.SQL("l.{}").format(sql.Identifier(c.legacy_name))
        if c.kind is Kind.FK:
            v = sql.SQL("({})::bigint").format(column_value_sql(e, c, opts))
            ids = plan.recovered.get(c.target)
            if ids:
                v = sql.SQL("CASE WHEN {pk} = ANY({ids}::bigint[]) THEN uuid_hash_extended({u}, 0) ELSE {v} END").format(
                    pk=pk, ids=sql.Literal(ids), u=uuid_sql(c.parent, v), v=v)
        elif c.kind is Kind.TEXT_DATE:
            v = _strict_date_sql(src)
        else:
            v = _text_value(c, sql.SQL("({})::{}").format(column_value_sql(e, c, opts), sql.SQL(c.target_type)), plan)
        values.append(v)
    return _row_hash(values)


def _target_rows(e: Entity, plan: _Plan) -> tuple[sql.Composable, sql.Composable, list[sql.Composable]]:
    """(FROM clause, row hash, dangling flags) of the target rows: alias t, each parent joined by
    its UUID to read its legacy id (hash joins). The hash matches ``_legacy_row_hash``."""
    lid = legacy_id_of("t", staged=False)
    values = [lid, sql.SQL("CASE WHEN {} THEN uuid_hash_extended(t.id, 0) END").format(_in_sample(lid, plan.uuid_every))]
    joins, flags = parent_joins(e, "t", lambda c: plan.parents[c.target])
    alias = {c.target: sql.Identifier(f"p{i}") for i, c in enumerate(e.foreign_keys)}
    for c in e.columns:
        col = sql.SQL("t.{}").format(sql.Identifier(c.target))
        if c.kind is not Kind.FK:
            values.append(_text_value(c, col, plan))
            continue
        v = sql.SQL("{}.lid").format(alias[c.target])
        if not c.required:
            v = sql.SQL("CASE WHEN {col} IS NULL THEN uuid_hash_extended((t.metadata->'recovered'->{k}->>'was')::uuid, 0) "
                        "ELSE {v} END").format(col=col, k=sql.Literal(c.target), v=v)
        values.append(v)
    return sql.SQL("{} t {}").format(sql.Identifier("public", e.target_table), joins), _row_hash(values), flags


def _legacy_content_rows(e: Entity, plan: _Plan, buckets: list[int]) -> sql.Composable:
    """Legacy id and content hash of the legacy rows to compare within ``buckets``: in the sample,
    not in quarantine. The id lists are array literals (constants the planner turns into hashed
    lookups); the transforms' SQL may hold a '%', so no parameters."""
    pk = sql.SQL("l.{}::bigint").format(sql.Identifier(e.legacy_pk))
    return sql.SQL("SELECT {pk}, {h} FROM {t} AS l WHERE {s} AND {pk} <> ALL({ex}::bigint[]) "
                   "AND {pk} / {b} = ANY({bs}::bigint[])").format(
        pk=pk, h=_legacy_row_hash(e, plan), t=sql.Identifier(e.legacy_table), s=_in_sample(pk, plan.every),
        ex=sql.Literal(plan.excluded), b=sql.Literal(BUCKET), bs=sql.Literal(buckets))


def _legacy_summary(source_conn, e: Entity, plan: _Plan):
    """Per bucket on the legacy server, in one scan: (rows, id-hash sum) of every id, and (rows,
    content-hash sum) of the rows to compare."""
    source_conn.execute("SET TimeZone = 'UTC'")
    # bigint on both sides of ``<> ALL``: only a same-type comparison becomes a hashed lookup
    pk = sql.SQL("l.{}::bigint").format(sql.Identifier(e.legacy_pk))
    keep = sql.SQL("({} AND {} <> ALL({}::bigint[]))").format(_in_sample(pk, plan.every), pk,
                                                              sql.Literal(plan.excluded))
    return _grouped(source_conn, sql.SQL(
        "SELECT {pk} / {b}, count(*), sum(hashint8({pk})), count(*) FILTER (WHERE {keep}), "
        "sum(CASE WHEN {keep} THEN {h} END) FROM {t} AS l GROUP BY 1").format(
        pk=pk, b=sql.Literal(BUCKET), keep=keep, h=_legacy_row_hash(e, plan), t=sql.Identifier(e.legacy_table)))


def _grouped(conn, query: sql.Composable) -> list[tuple]:
    """Run a per-bucket summary with hash aggregation. The planner takes the bucket expression
    (id / 1024) for as many groups as ids and may sort the whole table, spilling to disk, to
    group it; there are only rows / 1024 groups."""
    if not conn.autocommit:  # the target's checks run in one transaction: LOCAL, no session state
        conn.execute("SET LOCAL enable_sort = off")
        rows = conn.execute(query).fetchall()  # an error aborts the transaction: nothing to reset
        conn.execute("SET LOCAL enable_sort = on")
        return rows
    conn.execute("SET enable_sort = off")
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.execute("RESET enable_sort")


def _target_summary(target_conn, e: Entity, plan: _Plan):
    """Per bucket on the target, in one scan joined to the parents: loaded rows, open quarantine
    rows, the id-hash sum of both, (rows, content-hash sum) of the loaded rows in the sample, and
    dangling references per foreign key (over all rows, soft-deleted ones included)."""
    target_conn.execute("SET LOCAL TimeZone = 'UTC'")
    source, h, flags = _target_rows(e, plan)
    lid = legacy_id_of("t", staged=False)
    live = not_soft_deleted_sql("t")
    names = [sql.Identifier(f"m{i}") for i in range(len(flags))]
    table_flags = sql.SQL("").join(sql.SQL(", {} AS {}").format(f, n) for f, n in zip(flags, names))
    quarantine_flags = sql.SQL("").join(sql.SQL(", false") for _ in flags)
    dangling = sql.SQL("").join(sql.SQL(", count(*) FILTER (WHERE {})").format(n) for n in names)
    # h tests the sample before the soft-delete key: AND evaluates left to right, so on a sampled
    # table the jsonb lookup runs for the sampled rows only
    return _grouped(target_conn, sql.SQL("""
        SELECT id / {b}, count(*) FILTER (WHERE k = 0), count(*) FILTER (WHERE k = 2),
               sum(hashint8(id)) FILTER (WHERE k <> 1), count(h), sum(h){dangling}
        FROM (SELECT {lid} AS id, CASE WHEN {live} THEN 0 ELSE 1 END AS k,
                     CASE WHEN {s} AND {live} THEN {h} END AS h{table_flags} FROM {source}
              UNION ALL SELECT legacy_id, 2, NULL{quarantine_flags} FROM {q} WHERE entity = {ent} AND NOT resolved) s
        GROUP BY 1""").format(
        b=sql.Literal(BUCKET), dangling=dangling, lid=lid, live=live, s=_in_sample(lid, plan.every), h=h,
        table_flags=table_flags, source=source, quarantine_flags=quarantine_flags,
        q=QUARANTINE, ent=sql.Literal(e.name)))


def _summarize(source_conn, target_conn, e: Entity, sample_above: int | None = None,
               sample_every: int | None = None, meanwhile=None, uuid_every: int | None = None,
               options: LoadOptions | None = None) -> IdAccounting:
    """Both servers' summaries, computed at the same time: the legacy side in a worker thread on
    ``source_conn``, the target side here on ``target_conn``, followed by ``meanwhile(target_conn)``
    (the target-only checks) while the legacy server may still be working."""
    from concurrent.futures import ThreadPoolExecutor

    plan = _plan(source_conn, target_conn, e, sample_above, sample_every, uuid_every, options)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="legacy-summary") as pool:
        legacy_future = pool.submit(_legacy_summary, source_conn, e, plan)
        target = _target_summary(target_conn, e, plan)
        if meanwhile is not None:
            meanwhile(target_conn)
        legacy = legacy_future.result()
    theirs = {r[0]: (r[1], r[2]) for r in legacy}
    ours = {r[0]: (r[1] + r[2], r[3]) for r in target}
    expected = {r[0]: (r[3], r[4]) for r in legacy if r[3]}
    stored = {r[0]: (r[4], r[5]) for r in target if r[4]}
    return IdAccounting(
        legacy_rows=sum(r[1] for r in legacy), target_rows=sum(r[1] for r in target),
        quarantined=sum(r[2] for r in target),
        differing_buckets=sorted(b for b in theirs.keys() | ours.keys() if theirs.get(b) != ours.get(b)),
        plan=plan, content_rows=sum(r[3] for r in legacy),
        content_differing=sorted(b for b in expected.keys() | stored.keys() if expected.get(b) != stored.get(b)),
        legacy_checksum=int(sum(r[4] for r in legacy if r[4] is not None)) % HASH_MOD,
        target_checksum=int(sum(r[5] for r in target if r[5] is not None)) % HASH_MOD,
        dangling={c.target: sum(r[6 + i] for r in target) for i, c in enumerate(e.foreign_keys)})


def rows_reconcile(source_conn, target_conn, e: Entity, acc: IdAccounting | None = None) -> AssetCheckResult:
    """Per-bucket accounting of legacy ids; the ids of differing buckets only are streamed into a
    temp table on the target to name the missing and extra ones. No table is held in Python."""
    acc = acc or _summarize(source_conn, target_conn, e)
    missing = extra = 0
    missing_sample = extra_sample = None
    if acc.differing_buckets:
        t = sql.Identifier("public", e.target_table)
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
    return AssetCheckResult(
        check_name="rows_reconcile", asset_key=AssetKey(e.name), passed=passed, severity=AssetCheckSeverity.ERROR,
        description=CHECKS["rows_reconcile"],
        metadata={"legacy_rows": acc.legacy_rows, "target_rows": acc.target_rows,
                  "quarantined_unresolved": acc.quarantined, "legacy_ids_unaccounted": missing,
                  "ids_not_in_legacy": extra, "id_buckets_differing": len(acc.differing_buckets),
                  "sample_unaccounted_legacy_ids": MetadataValue.json(missing_sample or []),
                  "sample_ids_not_in_legacy": MetadataValue.json(extra_sample or [])})


def _offending_rows(target_conn, e: Entity, predicate: sql.Composable) -> tuple[int, list[int] | None]:
    """(count, first SAMPLE legacy ids) of the target rows of ``e`` matching ``predicate`` (alias t)."""
    return target_conn.execute(sql.SQL(
        "SELECT count(*), (array_agg({lid} ORDER BY {lid}))[1:{n}] FROM {t} t WHERE {pred}").format(
        lid=legacy_id_of("t", staged=False), t=sql.Identifier("public", e.target_table), pred=predicate,
        n=sql.Literal(SAMPLE))).fetchone()


def foreign_keys_resolve(target_conn, e: Entity, acc: IdAccounting | None = None) -> AssetCheckResult:
    """All foreign keys of the table in one pass: the rows left-joined to every parent's keys
    (hash joins), dangling references counted per column. Rows are told apart by address, so a
    parent key present twice (its primary key dropped) cannot count a child twice. With ``acc``
    (whose target scan made the same joins) a table without dangling references needs no query."""
    per_fk, samples = {c.target: 0 for c in e.foreign_keys}, {}
    if e.foreign_keys and (acc is None or any(acc.dangling.values())):
        fks = e.foreign_keys
        flags = [sql.Identifier(f"m{i}") for i in range(len(fks))]
        joins, missing = parent_joins(e, "t")
        outputs = []
        for f in flags:
            outputs.append(sql.SQL("count(DISTINCT rid) FILTER (WHERE {})").format(f))
            outputs.append(sql.SQL("(array_agg(DISTINCT lid) FILTER (WHERE {}))[1:{}]").format(f, sql.Literal(SAMPLE)))
        row = target_conn.execute(sql.SQL(
            "SELECT {outputs} FROM (SELECT t.ctid AS rid, {lid} AS lid, {flags} FROM {t} AS t {joins} "
            "WHERE {any}) s").format(
            outputs=sql.SQL(", ").join(outputs), lid=legacy_id_of("t", staged=False),
            flags=sql.SQL(", ").join(sql.SQL("{} AS {}").format(m, f) for m, f in zip(missing, flags)),
            t=sql.Identifier("public", e.target_table), joins=joins, any=sql.SQL(" OR ").join(missing))).fetchone()
        for i, c in enumerate(fks):
            n, sample = row[2 * i], row[2 * i + 1]
            per_fk[c.target] = n
            if n:
                samples[c.target] = sample
    broken = sum(per_fk.values())
    return AssetCheckResult(
        check_name="foreign_keys_resolve", asset_key=AssetKey(e.name), passed=broken == 0,
        severity=AssetCheckSeverity.ERROR, description=CHECKS["foreign_keys_resolve"],
        metadata={"dangling_references": broken, "by_foreign_key": MetadataValue.json(per_fk),
                  "sample_legacy_ids": MetadataValue.json(samples)})


def _enforcing_index(target_conn, table: str, column: str) -> str | None:
    """Name of a valid, non-partial, single-column unique index on ``column`` (then the database
    itself guarantees uniqueness), else None."""
    row = target_conn.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        "WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indisvalid AND i.indnatts = 1 "
        "AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attname = %s LIMIT 1",
        [f"public.{table}", column]).fetchone()
    return row[0] if row else None


def keys_unique(target_conn, e: Entity, acc: IdAccounting | None = None, source_conn=None) -> AssetCheckResult:
    """Primary and natural keys: proven by a valid unique index when there is one, counted
    otherwise. One row per legacy id: proven by the id accounting wherever its buckets match
    (an id present twice changes a bucket's count), counted within the differing buckets."""
    t = sql.Identifier("public", e.target_table)
    found, samples, enforced = {}, {}, {}
    keys = [("id", sql.SQL("t.id"), sql.SQL("true"))]
    keys += [(c.target, sql.SQL("t.{}").format(sql.Identifier(c.target)), sql.SQL("true")) for c in e.unique_columns]
    if acc is None and source_conn is not None:
        acc = _summarize(source_conn, target_conn, e)
    if acc is None:
        keys.append(("legacy_id", legacy_id_of("t", staged=False), sql.SQL("true")))
    elif acc.differing_buckets:
        keys.append(("legacy_id", legacy_id_of("t", staged=False), sql.SQL("{} / {} = ANY({})").format(
            legacy_id_of("t", staged=False), sql.Literal(BUCKET), sql.Literal(acc.differing_buckets))))
    else:
        found["legacy_id"] = 0
        enforced["legacy_id"] = "id accounting: every bucket matches the legacy primary key"
    for name, expr, scope in keys:
        index = _enforcing_index(target_conn, e.target_table, name) if name != "legacy_id" else None
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
    return AssetCheckResult(
        check_name="keys_unique", asset_key=AssetKey(e.name), passed=dup == 0, severity=AssetCheckSeverity.ERROR,
        description=CHECKS["keys_unique"],
        metadata={"rows_in_duplicate_groups": dup, "by_key": MetadataValue.json(found),
                  "proven_by": MetadataValue.json(enforced), "sample_legacy_ids": MetadataValue.json(samples)})


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


def _strict_date_sql(v: sql.Composable) -> sql.Composable:
    """parse_text_dates in SQL: YYYY-MM-DD exactly (trimmed), a real day, years 1900..2099.
    Nested CASEs fix the evaluation order, so no cast ever sees a malformed value."""
    t = sql.SQL("btrim({})").format(v)
    return sql.SQL(
        "CASE WHEN {t} ~ '^(19|20)[0-9]{{2}}-(0[1-9]|1[0-2])-[0-9]{{2}}$' THEN CASE WHEN substr({t}, 9, 2)::int "
        "BETWEEN 1 AND extract(day FROM make_date(substr({t}, 1, 4)::int, substr({t}, 6, 2)::int, 1) "
        "+ interval '1 month - 1 day')::int THEN {t}::date END END").format(t=t)


def _row_hash(values: list[sql.Composable]) -> sql.Composable:
    # hash_record_extended combines each column's own extended hash function (int8, numeric,
    # timestamptz...): no text rendering, independent of the session's TimeZone and DateStyle
    return sql.SQL("hash_record_extended(ROW({}), 0)").format(sql.SQL(", ").join(values))


def content_checksum(source_conn, target_conn, e: Entity, sample_above: int | None = None,
                     sample_every: int | None = None, acc: IdAccounting | None = None,
                     uuid_every: int | None = None) -> AssetCheckResult:
    """Content of every loaded row (or of the sample) against its legacy row: per bucket first
    (see IdAccounting); in the buckets that differ, the (id, hash) pairs of the legacy rows are
    streamed into a temp table on the target and joined row by row to name the rows."""
    acc = acc or _summarize(source_conn, target_conn, e, sample_above, sample_every, uuid_every=uuid_every)
    plan = acc.plan
    differing, sample = 0, []
    if acc.content_differing:
        target_conn.execute("CREATE TEMP TABLE IF NOT EXISTS _legacy_content (id bigint PRIMARY KEY, h bigint) "
                            "ON COMMIT DROP")
        target_conn.execute("TRUNCATE _legacy_content")
        with source_conn.cursor().copy(sql.SQL("COPY ({}) TO STDOUT").format(
                _legacy_content_rows(e, plan, acc.content_differing))) as out, \
                target_conn.cursor().copy("COPY _legacy_content (id, h) FROM STDIN") as inp:
            for chunk in out:
                inp.write(chunk)
        source, h, _ = _target_rows(e, plan)
        lid = legacy_id_of("t", staged=False)
        # a row differs when its (id, hash) pair has no partner on the other side: a changed value,
        # a row missing on either side
        differing, sample = target_conn.execute(sql.SQL(
            "WITH t AS (SELECT {lid} AS lid, {h} AS h FROM {source} WHERE {live} "
            "           AND {lid} / {b} = ANY({buckets}::bigint[]) AND {s}), "
            "d AS (SELECT coalesce(t.lid, c.id) AS lid FROM t FULL JOIN _legacy_content c ON c.id = t.lid AND c.h = t.h "
            "      WHERE t.lid IS NULL OR c.id IS NULL) "
            "SELECT count(DISTINCT lid), (array_agg(DISTINCT lid ORDER BY lid))[1:{n}] FROM d").format(
            lid=lid, h=h, source=source, b=sql.Literal(BUCKET), s=_in_sample(lid, plan.every),
            live=not_soft_deleted_sql("t"),
            n=sql.Literal(SAMPLE), buckets=sql.Literal(acc.content_differing))).fetchone()
    every = acc.content_every
    return AssetCheckResult(
        check_name="content_checksum", asset_key=AssetKey(e.name), passed=differing == 0,
        severity=AssetCheckSeverity.ERROR, description=CHECKS["content_checksum"],
        metadata={"rows_compared": acc.content_rows, "rows_differing": differing,
                  "mode": f"sampled (legacy id % {every} = 0)" if every > 1 else "full",
                  "uuid_keys_recomputed": "every row" if acc.uuid_every == 1
                  else f"legacy id % {acc.uuid_every} = 0",
                  "id_buckets_differing": len(acc.content_differing),
                  "legacy_checksum": str(acc.legacy_checksum), "target_checksum": str(acc.target_checksum),
                  "columns": len(e.columns) + 1, "sample_legacy_ids": MetadataValue.json(sample or [])})


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
               sample_above: int | None = None, sample_every: int | None = None, uuid_every: int | None = None,
               timeout_ms: int | None = None, options: LoadOptions | None = None) -> list[AssetCheckResult]:
    """All checks of ``e``; with ``run_id``, also recorded in migration_control.check_results.
    ``timeout_ms`` (MIGRATION_TIMEOUT) bounds each of the target's check statements;
    ``options`` are the run's load options, so the legacy side applies the transforms the load applied."""
    with borrowed(source_conninfo, "checks-source", _configure, autocommit=True) as src, \
            borrowed(target_conninfo, "checks-target") as tgt:
        _configure(tgt)  # LOCAL to the checks' transaction
        if timeout_ms is not None:
            set_statement_timeout(tgt, timeout_ms)
        target_only = []  # evaluated on the target while the legacy server computes its summaries

        def meanwhile(conn):
            if e.email_columns:
                target_only.append(emails_valid(conn, e))

        acc = _summarize(src, tgt, e, sample_above, sample_every, meanwhile=meanwhile,
                         uuid_every=uuid_every, options=options)  # shared by the checks that compare both sides
        results = [rows_reconcile(src, tgt, e, acc), foreign_keys_resolve(tgt, e, acc), keys_unique(tgt, e, acc),
                   *target_only, content_checksum(src, tgt, e, acc=acc)]
        tgt.rollback()  # the checks only read: drop the temp tables
        if run_id is not None:
            if timeout_ms is not None:
                set_statement_timeout(tgt, timeout_ms)  # a new transaction
            record_results(tgt, run_id, e, results)
            tgt.commit()
    return results


def _plain(value):
    for attr in ("data", "value", "text"):
        if hasattr(value, attr):
            return getattr(value, attr)
    return value


def record_results(conn, run_id: str, e: Entity, results: list[AssetCheckResult]) -> None:
    from psycopg.types.json import Jsonb

    with conn.cursor() as cur:
        cur.executemany(sql.SQL(
            "INSERT INTO {} (run_id, entity, check_name, passed, severity, description, metadata) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)").format(CHECK_RESULTS),
            [(run_id, e.name, r.check_name, r.passed, r.severity.value, r.description,
              Jsonb({k: _plain(v) for k, v in (r.metadata or {}).items()})) for r in results])
