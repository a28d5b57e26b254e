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
  (ERROR, blocking: children do not materialize on a broken parent).
- ``keys_unique``: primary key, unique keys, one target row per legacy id (ERROR). A key with a
  valid unique index is proven by it; one row per legacy id is proven by the bucket accounting
  and counted only inside differing buckets.
- ``emails_valid``: email columns match the email rule of the target's constraint (WARN).
- ``content_checksum``: a 64-bit hash of every mapped column, from the raw legacy row (the
  transforms in SQL) and from the stored target row, summed per bucket on each server and
  compared row by row only in differing buckets (ERROR). Tables above
  CONTENT_CHECKSUM_SAMPLE_ABOVE rows compare a deterministic sample of ids.

Both servers work at once: the legacy side's summaries run in a worker thread while the target
computes its own and the target-only checks; Python only compares a few thousand bucket rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey, MetadataValue
from psycopg import sql

from .engine import HASH_MOD
from .registry import Entity
from .target_schema import CONTROL_SCHEMA
from .transforms import EMAIL_REGEX, Kind

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
                        "and from the target row on the target server, compared row by row (a deterministic "
                        "sample of ids on very large tables).",
}

# Tables above this many legacy rows get a sampled content checksum (CONTENT_CHECKSUM_SAMPLE_ABOVE);
# the sample is every legacy id divisible by CONTENT_CHECKSUM_SAMPLE_EVERY. Recomputing every
# transform on the legacy server costs about 6 us a row (several md5 keys, date and code rules):
# a full comparison of the 4.5M rows at scale 1.0 would cost about half the migration itself,
# so tables above 50,000 rows compare a 2% sample by default. CONTENT_CHECKSUM_SAMPLE_ABOVE set
# above the largest table makes every comparison full.
SAMPLE_ABOVE_DEFAULT = 50_000
SAMPLE_EVERY_DEFAULT = 50


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


def _legacy_id(alias: str = "t") -> sql.Composable:
    return sql.SQL("({}.metadata->>'legacy_id')::bigint").format(sql.Identifier(alias))


ID_BUCKET = 1024  # legacy ids per bucket of the summaries


@dataclass
class IdAccounting:
    """What both servers hold of one entity, per bucket of ID_BUCKET legacy ids, summarised on
    each server and compared in Python (a few thousand rows at scale 1.0, whatever the table's size).

    Ids: (rows, sum of a hash of each id) from the legacy primary key, against the same over
    target rows + open quarantine rows. A bucket that matches holds exactly the same ids on both
    sides, each once (a missing, extra or repeated id changes the count or the sum).

    Content: (rows, sum of a 64-bit hash of the row's transformed values) over the legacy rows
    that are not in quarantine, against the same over the target's stored values. Order-
    independent, so each side is one aggregate scan on its own server, and the two servers work
    at the same time. Only the buckets that differ are compared row by row, to name the rows."""

    legacy_rows: int
    target_rows: int
    quarantined: int
    differing_buckets: list[int]
    content_every: int = 1  # 1: every row's content compared; n: legacy ids divisible by n
    content_rows: int = 0  # legacy rows whose content was compared
    content_differing: list[int] = field(default_factory=list)
    legacy_checksum: int = 0  # sums of the content hashes, modulo 2^64
    target_checksum: int = 0


def _content_every(source_conn, e: Entity, sample_above: int | None, sample_every: int | None) -> int:
    """1 (compare every row) unless the legacy table is above the sampling threshold."""
    from .config import env_int

    above = env_int("CONTENT_CHECKSUM_SAMPLE_ABOVE", SAMPLE_ABOVE_DEFAULT) if sample_above is None else sample_above
    every = env_int("CONTENT_CHECKSUM_SAMPLE_EVERY", SAMPLE_EVERY_DEFAULT) if sample_every is None else sample_every
    (estimate,) = source_conn.execute("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                                      [e.legacy_table]).fetchone() or (0,)
    return every if estimate and estimate > above and every > 1 else 1


def _in_sample(value: sql.Composable, every: int) -> sql.Composable:
    return sql.SQL("true") if every == 1 else sql.SQL("{} % {} = 0").format(value, sql.Literal(every))


def _open_quarantine(target_conn, e: Entity, every: int) -> list[int]:
    """Legacy ids of the entity's open quarantine rows (within the content sample)."""
    return [r[0] for r in target_conn.execute(sql.SQL(
        "SELECT legacy_id FROM {q} WHERE entity = {ent} AND NOT resolved AND {s}").format(
        q=sql.Identifier(CONTROL_SCHEMA, "quarantine"), ent=sql.Literal(e.name),
        s=_in_sample(sql.SQL("legacy_id"), every))).fetchall()]


def _legacy_content_rows(e: Entity, every: int, excluded: list[int], buckets: list[int] | None = None):
    """Legacy id and content hash of the legacy rows to compare: in the sample, not in quarantine
    (``excluded``), and within ``buckets`` when given. The id lists are array literals (constants
    the planner turns into hashed lookups); the transforms' SQL may hold a '%', so no parameters."""
    pk = sql.SQL("l.{}").format(sql.Identifier(e.legacy_pk))
    where = [_in_sample(pk, every), sql.SQL("{} <> ALL({}::bigint[])").format(pk, sql.Literal(excluded))]
    if buckets is not None:
        where.append(sql.SQL("{} / {} = ANY({}::bigint[])").format(pk, sql.Literal(ID_BUCKET), sql.Literal(buckets)))
    return sql.SQL("{} WHERE {}").format(legacy_content_sql(e), sql.SQL(" AND ").join(where))


def _legacy_summary(source_conn, e: Entity, every: int, excluded: list[int]):
    """Per bucket on the legacy server: (rows, id-hash sum) of every id, and (rows, content-hash
    sum) of the rows to compare."""
    source_conn.execute("SET TimeZone = 'UTC'")
    ids = source_conn.execute(sql.SQL(
        "SELECT {pk} / {b}, count(*), sum(hashint8({pk}::bigint)) FROM {t} GROUP BY 1").format(
        pk=sql.Identifier(e.legacy_pk), b=sql.Literal(ID_BUCKET), t=sql.Identifier(e.legacy_table))).fetchall()
    content = source_conn.execute(sql.SQL("SELECT id / {b}, count(*), sum(h) FROM ({}) AS s(id, h) GROUP BY 1").format(
        _legacy_content_rows(e, every, excluded), b=sql.Literal(ID_BUCKET))).fetchall()
    return ids, content


def _target_summary(target_conn, e: Entity, every: int):
    """Per bucket on the target, in one scan: loaded rows, open quarantine rows, the id-hash sum
    of both, and (rows, content-hash sum) of the loaded rows in the sample."""
    target_conn.execute("SET TimeZone = 'UTC'")
    lid, h = _target_content_exprs(e)
    h = h if every == 1 else sql.SQL("CASE WHEN {} THEN {} END").format(_in_sample(lid, every), h)
    return target_conn.execute(sql.SQL("""
        SELECT id / {b}, count(*) FILTER (WHERE loaded), count(*) FILTER (WHERE NOT loaded), sum(hashint8(id)),
               count(h), sum(h)
        FROM (SELECT {lid} AS id, true AS loaded, {h} AS h FROM {t} t WHERE NOT (t.metadata ? 'deleted_at_source')
              UNION ALL SELECT legacy_id, false, NULL FROM {q} WHERE entity = {ent} AND NOT resolved) s
        GROUP BY 1""").format(b=sql.Literal(ID_BUCKET), lid=lid, h=h, t=sql.Identifier("public", e.target_table),
                              q=sql.Identifier(CONTROL_SCHEMA, "quarantine"), ent=sql.Literal(e.name))).fetchall()


def _summarize(source_conn, target_conn, e: Entity, sample_above: int | None = None,
               sample_every: int | None = None, meanwhile=None) -> IdAccounting:
    """Both servers' summaries, computed at the same time: the legacy side in a worker thread on
    ``source_conn``, the target side here on ``target_conn``, followed by ``meanwhile(target_conn)``
    (the target-only checks) while the legacy server may still be working."""
    from concurrent.futures import ThreadPoolExecutor

    every = _content_every(source_conn, e, sample_above, sample_every)
    excluded = _open_quarantine(target_conn, e, every)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="legacy-summary") as pool:
        legacy_future = pool.submit(_legacy_summary, source_conn, e, every, excluded)
        target = _target_summary(target_conn, e, every)
        if meanwhile is not None:
            meanwhile(target_conn)
        legacy_ids, legacy_content = legacy_future.result()
    theirs = {b: (n, h) for b, n, h in legacy_ids}
    ours = {b: (loaded + quarantined, h) for b, loaded, quarantined, h, _, _ in target}
    expected = {b: (n, h) for b, n, h in legacy_content}
    stored = {b: (n, h) for b, *_, n, h in target if n}
    return IdAccounting(
        legacy_rows=sum(n for _, n, _ in legacy_ids), target_rows=sum(r[1] for r in target),
        quarantined=sum(r[2] for r in target),
        differing_buckets=sorted(b for b in theirs.keys() | ours.keys() if theirs.get(b) != ours.get(b)),
        content_every=every, content_rows=sum(n for _, n, _ in legacy_content),
        content_differing=sorted(b for b in expected.keys() | stored.keys() if expected.get(b) != stored.get(b)),
        legacy_checksum=int(sum(h for _, _, h in legacy_content)) % HASH_MOD,
        target_checksum=int(sum(h for *_, h in target if h is not None)) % HASH_MOD)


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
                pk=sql.Identifier(e.legacy_pk), t=sql.Identifier(e.legacy_table), b=sql.Literal(ID_BUCKET),
                bs=buckets)) as out, target_conn.cursor().copy("COPY _legacy_ids (id) FROM STDIN") as inp:
            for chunk in out:
                inp.write(chunk)
        missing, extra, missing_sample, extra_sample = target_conn.execute(sql.SQL("""
            WITH acc AS (SELECT {lid} AS id FROM {t} t WHERE NOT (t.metadata ? 'deleted_at_source')
                         UNION ALL SELECT legacy_id FROM {q} WHERE entity = {ent} AND NOT resolved),
                 scoped AS (SELECT id FROM acc WHERE id / {b} = ANY({bs})),
                 missing AS (SELECT l.id FROM _legacy_ids l WHERE NOT EXISTS (SELECT 1 FROM scoped s WHERE s.id = l.id)),
                 extra AS (SELECT s.id FROM scoped s WHERE NOT EXISTS (SELECT 1 FROM _legacy_ids l WHERE l.id = s.id))
            SELECT (SELECT count(*) FROM missing), (SELECT count(*) FROM extra),
                   (SELECT array_agg(id ORDER BY id) FROM (SELECT id FROM missing ORDER BY id LIMIT {n}) s),
                   (SELECT array_agg(id ORDER BY id) FROM (SELECT id FROM extra ORDER BY id LIMIT {n}) s)""").format(
            lid=_legacy_id(), t=t, q=sql.Identifier(CONTROL_SCHEMA, "quarantine"), ent=sql.Literal(e.name),
            b=sql.Literal(ID_BUCKET), bs=buckets, n=sql.Literal(SAMPLE))).fetchone()
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
        lid=_legacy_id(), t=sql.Identifier("public", e.target_table), pred=predicate,
        n=sql.Literal(SAMPLE))).fetchone()


def foreign_keys_resolve(target_conn, e: Entity) -> AssetCheckResult:
    """All foreign keys of the table in one pass: the rows left-joined to every parent's keys
    (hash joins), dangling references counted per column. Rows are told apart by address, so a
    parent key present twice (its primary key dropped) cannot count a child twice."""
    per_fk, samples = {c.target: 0 for c in e.foreign_keys}, {}
    if e.foreign_keys:
        fks = e.foreign_keys
        flags = [sql.Identifier(f"m{i}") for i in range(len(fks))]
        missing = [sql.SQL("(t.{col} IS NOT NULL AND {p}.id IS NULL)").format(
            col=sql.Identifier(c.target), p=sql.Identifier(f"p{i}")) for i, c in enumerate(fks)]
        joins = sql.SQL(" ").join(sql.SQL("LEFT JOIN {t} AS {p} ON {p}.id = t.{col}").format(
            t=sql.Identifier("public", c.parent), p=sql.Identifier(f"p{i}"), col=sql.Identifier(c.target))
            for i, c in enumerate(fks))
        outputs = []
        for f in flags:
            outputs.append(sql.SQL("count(DISTINCT rid) FILTER (WHERE {})").format(f))
            outputs.append(sql.SQL("(array_agg(DISTINCT lid) FILTER (WHERE {}))[1:{}]").format(f, sql.Literal(SAMPLE)))
        row = target_conn.execute(sql.SQL(
            "SELECT {outputs} FROM (SELECT t.ctid AS rid, {lid} AS lid, {flags} FROM {t} AS t {joins} "
            "WHERE {any}) s").format(
            outputs=sql.SQL(", ").join(outputs), lid=_legacy_id(),
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


def _enforcing_index(target_conn, e: Entity, column: str) -> str | None:
    """Name of a valid, non-partial, single-column unique index on ``column`` (then the database
    itself guarantees uniqueness), else None."""
    row = target_conn.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        "WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indisvalid AND i.indnatts = 1 "
        "AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attname = %s LIMIT 1",
        [f"public.{e.target_table}", column]).fetchone()
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
        keys.append(("legacy_id", _legacy_id(), sql.SQL("true")))
    elif acc.differing_buckets:
        keys.append(("legacy_id", _legacy_id(), sql.SQL("{} / {} = ANY({})").format(
            _legacy_id(), sql.Literal(ID_BUCKET), sql.Literal(acc.differing_buckets))))
    else:
        found["legacy_id"] = 0
        enforced["legacy_id"] = "id accounting: every bucket matches the legacy primary key"
    for name, expr, scope in keys:
        index = _enforcing_index(target_conn, e, name) if name != "legacy_id" else None
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
                "WHERE c > 1").format(lid=_legacy_id(), k=expr, t=t, s=scope, n=sql.Literal(SAMPLE))).fetchone()
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


def _uuid_from_md5_sql(md5_hex: sql.Composable) -> sql.Composable:
    """The RFC 4122 v3 layout of an md5 hex string, as the 32 hex digits of the UUID (compared
    with ``_uuid_hex_sql`` of the target's value; cheaper than building uuid values)."""
    return sql.SQL("overlay(overlay({0} placing '3' from 13 for 1) placing translate(substr({0}, 17, 1), "
                   "'0123456789abcdef', '89ab89ab89ab89ab') from 17 for 1)").format(md5_hex)


def _uuid_hex_sql(value: sql.Composable) -> sql.Composable:
    return sql.SQL("replace(({})::text, '-', '')").format(value)


def _strict_date_sql(v: sql.Composable) -> sql.Composable:
    """parse_text_dates in SQL: YYYY-MM-DD exactly (trimmed), a real day, years 1900..2099.
    Nested CASEs fix the evaluation order, so no cast ever sees a malformed value."""
    t = sql.SQL("btrim({})").format(v)
    return sql.SQL(
        "CASE WHEN {t} ~ '^(19|20)[0-9]{{2}}-(0[1-9]|1[0-2])-[0-9]{{2}}$' THEN CASE WHEN substr({t}, 9, 2)::int "
        "BETWEEN 1 AND extract(day FROM make_date(substr({t}, 1, 4)::int, substr({t}, 6, 2)::int, 1) "
        "+ interval '1 month - 1 day')::int THEN {t}::date END END").format(t=t)


def legacy_content_sql(e: Entity, opts=None) -> sql.Composable:
    """Per legacy row: (legacy id, 64-bit hash of the target values its transforms give).

    The md5 behind each key is computed once per row in a LATERAL subquery (``OFFSET 0`` keeps
    the planner from inlining it back into every use)."""
    from .engine import LoadOptions, _column_value_sql

    opts = opts or LoadOptions()
    keys = [e.pk_column.value_sql(sql.SQL("l.{}").format(sql.Identifier(e.legacy_pk)), key_entity=e.name)]
    values = [_uuid_from_md5_sql(sql.SQL("k.k0"))]
    for c in e.columns:
        src = sql.SQL("l.{}").format(sql.Identifier(c.legacy_name))
        if c.kind is Kind.FK:
            keys.append(c.value_sql(src, key_entity=c.parent))
            v = _uuid_from_md5_sql(sql.SQL("k.{}").format(sql.Identifier(f"k{len(keys) - 1}")))
        elif c.kind is Kind.TEXT_DATE:
            v = _strict_date_sql(src)
        else:
            v = sql.SQL("({})::{}").format(_column_value_sql(e, c, opts), sql.SQL(c.target_type))
        values.append(sql.SQL("({})::text").format(v))
    lateral = sql.SQL(", ").join(sql.SQL("{} AS {}").format(k, sql.Identifier(f"k{i}")) for i, k in enumerate(keys))
    return sql.SQL("SELECT l.{pk}, {h} FROM {t} AS l CROSS JOIN LATERAL (SELECT {keys} OFFSET 0) AS k").format(
        pk=sql.Identifier(e.legacy_pk), h=_row_hash(values), t=sql.Identifier(e.legacy_table), keys=lateral)


def _target_content_exprs(e: Entity) -> tuple[sql.Composable, sql.Composable]:
    """(legacy id, the content hash over its stored values) of a target row (alias t). An optional
    foreign key that recovery set NULL counts with the value it had (kept in metadata.recovered)."""
    values = [_uuid_hex_sql(sql.SQL("t.id"))]
    for c in e.columns:
        col = sql.SQL("t.{}").format(sql.Identifier(c.target))
        if c.kind is Kind.FK and not c.required:
            col = sql.SQL("coalesce({}, (t.metadata->'recovered'->{}->>'was')::uuid)").format(col, sql.Literal(c.target))
        values.append(_uuid_hex_sql(col) if c.kind is Kind.FK else sql.SQL("({})::text").format(col))
    return _legacy_id(), _row_hash(values)


def _row_hash(values: list[sql.Composable]) -> sql.Composable:
    return sql.SQL("hashtextextended(ROW({})::text, 0)").format(sql.SQL(", ").join(values))


def content_checksum(source_conn, target_conn, e: Entity, sample_above: int | None = None,
                     sample_every: int | None = None, acc: IdAccounting | None = None) -> AssetCheckResult:
    """Content of every loaded row (or of the sample) against its legacy row: per bucket first
    (see IdAccounting); in the buckets that differ, the (id, hash) pairs of the legacy rows are
    streamed into a temp table on the target and joined row by row to name the rows."""
    acc = acc or _summarize(source_conn, target_conn, e, sample_above, sample_every)
    every = acc.content_every
    differing, sample = 0, []
    if acc.content_differing:
        excluded = _open_quarantine(target_conn, e, every)
        rows = _legacy_content_rows(e, every, excluded, acc.content_differing)
        target_conn.execute("CREATE TEMP TABLE IF NOT EXISTS _legacy_content (id bigint PRIMARY KEY, h bigint) "
                            "ON COMMIT DROP")
        target_conn.execute("TRUNCATE _legacy_content")
        with source_conn.cursor().copy(sql.SQL("COPY ({}) TO STDOUT").format(rows)) as out, \
                target_conn.cursor().copy("COPY _legacy_content (id, h) FROM STDIN") as inp:
            for chunk in out:
                inp.write(chunk)
        lid, h = _target_content_exprs(e)
        # a row differs when its (id, hash) pair has no partner on the other side: a changed value,
        # a row missing on either side
        differing, sample = target_conn.execute(sql.SQL(
            "WITH t AS (SELECT {lid} AS lid, {h} AS h FROM {t} t WHERE NOT (t.metadata ? 'deleted_at_source') "
            "           AND {lid} / {b} = ANY({buckets}::bigint[]) AND {s}), "
            "d AS (SELECT coalesce(t.lid, c.id) AS lid FROM t FULL JOIN _legacy_content c ON c.id = t.lid AND c.h = t.h "
            "      WHERE t.lid IS NULL OR c.id IS NULL) "
            "SELECT count(DISTINCT lid), (array_agg(DISTINCT lid ORDER BY lid))[1:{n}] FROM d").format(
            lid=lid, h=h, t=sql.Identifier("public", e.target_table), b=sql.Literal(ID_BUCKET),
            s=_in_sample(lid, every), n=sql.Literal(SAMPLE), buckets=sql.Literal(acc.content_differing))).fetchone()
    return AssetCheckResult(
        check_name="content_checksum", asset_key=AssetKey(e.name), passed=differing == 0,
        severity=AssetCheckSeverity.ERROR, description=CHECKS["content_checksum"],
        metadata={"rows_compared": acc.content_rows, "rows_differing": differing,
                  "mode": f"sampled (legacy id % {every} = 0)" if every > 1 else "full",
                  "id_buckets_differing": len(acc.content_differing),
                  "legacy_checksum": str(acc.legacy_checksum), "target_checksum": str(acc.target_checksum),
                  "columns": len(e.columns) + 1, "sample_legacy_ids": MetadataValue.json(sample or [])})


def run_checks(source_conninfo: str, target_conninfo: str, e: Entity,
               run_id: str | None = None) -> list[AssetCheckResult]:
    """All checks of ``e``; with ``run_id``, also recorded in migration_control.check_results."""
    import psycopg

    with psycopg.connect(source_conninfo, autocommit=True) as src, psycopg.connect(target_conninfo) as tgt:
        target_only = []  # evaluated on the target while the legacy server computes its summaries

        def meanwhile(conn):
            target_only.append(foreign_keys_resolve(conn, e))
            if e.email_columns:
                target_only.append(emails_valid(conn, e))

        acc = _summarize(src, tgt, e, meanwhile=meanwhile)  # shared by the checks that compare both sides
        results = [rows_reconcile(src, tgt, e, acc), target_only[0], keys_unique(tgt, e, acc), *target_only[1:],
                   content_checksum(src, tgt, e, acc=acc)]
        tgt.rollback()  # the checks only read: drop the temp tables
        if run_id is not None:
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
            "VALUES (%s, %s, %s, %s, %s, %s, %s)").format(sql.Identifier(CONTROL_SCHEMA, "check_results")),
            [(run_id, e.name, r.check_name, r.passed, r.severity.value, r.description,
              Jsonb({k: _plain(v) for k, v in (r.metadata or {}).items()})) for r in results])
