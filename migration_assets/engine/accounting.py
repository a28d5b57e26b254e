"""The two-server accounting the checks share (checks.py): both servers summarise one entity per
bucket of BUCKET legacy ids at the same time (the legacy side in a worker thread), and Python
compares a few thousand bucket rows, whatever the table's size (:class:`IdAccounting`). The row
hashes are SQL: the legacy side applies the registry's transforms (source_sql), the target side
hashes its stored row, each foreign key as the legacy id of the parent it resolves to. Before
either side starts they agree on a :class:`Comparison` (content sample, open quarantine ids,
references recovery set NULL, the parents' relations).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from psycopg import sql

from ..registry import Entity
from ..settings import DEFAULTS, Budget
from ..transforms import Kind, uuid_sql
from .names import BUCKET, HASH_MOD, QUARANTINE, legacy_id_of, not_soft_deleted_sql, table_named, target_table
from .options import LoadOptions
from .rejects import parent_joins
from .source_sql import column_value_sql, for_server


@dataclass(frozen=True)
class CheckOptions:
    """The options of one table's checks, built once per run (resources.MigrationSettings
    .check_options) like LoadOptions: the content sample, the UUID sample, MIGRATION_TIMEOUT for
    the target's statements, and the run's load options (the legacy side applies the transforms
    the load applied).

    By default (CONTENT_CHECKSUM_SAMPLE_ABOVE=-1) every row of every table is compared: QA signs
    off on the content of every row, not on an estimate; a team that prefers a cheaper check on
    its largest tables sets a size above which only the ids divisible by
    CONTENT_CHECKSUM_SAMPLE_EVERY are compared (BENCHMARKS.md reports both). The primary key's
    UUID (uuid v3 of entity and legacy id) is recomputed for the ids divisible by
    UUID_CHECK_EVERY: an md5 in SQL costs more than the rest of a row's comparison; the
    relations are compared for every row."""

    sample_above: int = DEFAULTS["sample_above"]
    sample_every: int = DEFAULTS["sample_every"]
    uuid_every: int = DEFAULTS["uuid_every"]
    quarantine_warn: Budget = DEFAULTS["quarantine_warn"]  # percent of the legacy rows (quarantine_within_budget)
    quarantine_max: Budget = DEFAULTS["quarantine_max"]
    quarantine_min_rows: int = DEFAULTS["quarantine_min_rows"]
    timeout_ms: int | None = None
    load: LoadOptions = field(default_factory=LoadOptions)


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
    plan: "Comparison"  # what both sides agreed on (sampling, exclusions; the drill-down reuses it)
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
class Comparison:
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


def _text_value(c, v: sql.Composable, plan: Comparison) -> sql.Composable:
    """``v`` as it enters the row hash: a text value as its UTF-8 bytes when the servers' encodings differ."""
    if plan.text_as_utf8 and c.target_type == "text":
        return sql.SQL("convert_to({}, 'UTF8')").format(v)
    return v


def _content_every(source_conn, e: Entity, above: int, every: int) -> int:
    """1 (compare every row) unless the legacy table is above the sampling threshold (negative: none)."""
    if above < 0 or every <= 1:
        return 1
    (estimate,) = source_conn.execute("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                                      [e.legacy_table]).fetchone() or (0,)
    return every if estimate and estimate > above else 1


def in_sample(value: sql.Composable, every: int) -> sql.Composable:
    return sql.SQL("true") if every == 1 else sql.SQL("{} % {} = 0").format(value, sql.Literal(every))


def _open_quarantine(target_conn, e: Entity, every: int) -> list[int]:
    """Legacy ids of the entity's open quarantine rows (within the content sample)."""
    return [r[0] for r in target_conn.execute(sql.SQL(
        "SELECT legacy_id FROM {q} WHERE entity = {ent} AND NOT resolved AND {s}").format(
        q=QUARANTINE, ent=sql.Literal(e.name),
        s=in_sample(sql.SQL("legacy_id"), every))).fetchall()]


def _recovered_references(target_conn, e: Entity, schema: str) -> dict[str, list[int]]:
    """Per optional foreign key: legacy ids of the rows whose reference recovery set NULL (the value
    it had is in metadata.recovered). Their legacy rows still hold the integer, so the legacy side
    hashes the UUID it stood for, as the target side does. Read through the partial retry index."""
    optional = [c for c in e.foreign_keys if not c.required]
    if not optional:
        return {}
    t = target_table(e, schema)
    cols = sql.SQL(", ").join(sql.SQL(
        "array_agg({lid} ORDER BY {lid}) FILTER (WHERE t.{c} IS NULL AND t.metadata->'recovered'->{k} ? 'was')").format(
        lid=legacy_id_of("t", staged=False), c=sql.Identifier(c.target), k=sql.Literal(c.target)) for c in optional)
    row = target_conn.execute(sql.SQL("SELECT {} FROM {} t WHERE t.metadata->'recovered' ? 'retry'").format(
        cols, t)).fetchone()
    return {c.target: ids for c, ids in zip(optional, row) if ids}


def _parent_relation(target_conn, schema: str, table: str) -> sql.Composable:
    """(id, lid) of a parent table in ``schema``. With its primary key enforced, the plain table (the join cannot
    fan out); without, one row per id, so a duplicated parent cannot count a child twice.

    ``coalesce(lid, -1)``: a non-strict expression, so when the planner flattens this subquery
    under the LEFT JOIN it evaluates the legacy id at the parent's scan (a placeholder) and
    hashes (id, lid); with the strict expression it hashed each parent row's whole metadata and
    read the id out of it after the join, for every child row. A parent whose metadata has no
    legacy id reads as -1, which no legacy id equals."""
    lid, t = legacy_id_of("p", staged=False), table_named(table, schema)
    if enforcing_index(target_conn, schema, table, "id"):
        return sql.SQL("(SELECT p.id, coalesce({}, -1) AS lid FROM {} p)").format(lid, t)
    return sql.SQL("(SELECT p.id, min({}) AS lid FROM {} p GROUP BY p.id)").format(lid, t)


def _compare(source_conn, target_conn, e: Entity, opts: CheckOptions) -> Comparison:
    every = _content_every(source_conn, e, opts.sample_above, opts.sample_every)
    schema = opts.load.target_schema
    encoding = source_conn.info.parameter_status("server_encoding") or ""  # reported at connect: no query
    return Comparison(every=every, uuid_every=max(opts.uuid_every, 1), excluded=_open_quarantine(target_conn, e, every),
                      recovered=_recovered_references(target_conn, e, schema),
                      parents={c.target: _parent_relation(target_conn, schema, c.parent) for c in e.foreign_keys},
                      options=for_server(opts.load, encoding), text_as_utf8=encoding != "UTF8")


def _legacy_row_hash(e: Entity, plan: Comparison) -> sql.Composable:
    """64-bit hash of what the target row of a legacy row (alias l) must hold: the legacy id, the
    transformed values, each foreign key as its parent's legacy id (the UUID of a reference that
    recovery set NULL), and, for the ids in the UUID sample, the hash of the UUID its primary key
    must be (the md5 runs here, on the legacy server, which finishes its side first; the target
    hashes its stored id). Typed values hashed with the types' own hash functions (no text
    rendering); the transforms are the engine's SQL."""

    opts = plan.options
    pk = sql.SQL("l.{}::bigint").format(sql.Identifier(e.legacy_pk))
    values = [pk, sql.SQL("CASE WHEN {} THEN uuid_hash_extended({}, 0) END").format(
        in_sample(pk, plan.uuid_every), uuid_sql(e.name, pk))]
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


def target_rows_sql(e: Entity, plan: Comparison) -> tuple[sql.Composable, sql.Composable, list[sql.Composable]]:
    """(FROM clause, row hash, dangling flags) of the target rows: alias t, each parent joined by
    its UUID to read its legacy id (hash joins). The hash matches ``_legacy_row_hash``."""
    lid = legacy_id_of("t", staged=False)
    values = [lid, sql.SQL("CASE WHEN {} THEN uuid_hash_extended(t.id, 0) END").format(in_sample(lid, plan.uuid_every))]
    joins, flags = parent_joins(e, "t", plan.options.target_schema, lambda c: plan.parents[c.target])
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
    return sql.SQL("{} t {}").format(target_table(e, plan.options.target_schema), joins), _row_hash(values), flags


def legacy_content_rows_sql(e: Entity, plan: Comparison, buckets: list[int]) -> sql.Composable:
    """Legacy id and content hash of the legacy rows to compare within ``buckets``: in the sample,
    not in quarantine. The id lists are array literals (constants the planner turns into hashed
    lookups); the transforms' SQL may hold a '%', so no parameters."""
    pk = sql.SQL("l.{}::bigint").format(sql.Identifier(e.legacy_pk))
    return sql.SQL("SELECT {pk}, {h} FROM {t} AS l WHERE {s} AND {pk} <> ALL({ex}::bigint[]) "
                   "AND {pk} / {b} = ANY({bs}::bigint[])").format(
        pk=pk, h=_legacy_row_hash(e, plan), t=sql.Identifier(e.legacy_table), s=in_sample(pk, plan.every),
        ex=sql.Literal(plan.excluded), b=sql.Literal(BUCKET), bs=sql.Literal(buckets))


def _legacy_summary(source_conn, e: Entity, plan: Comparison):
    """Per bucket on the legacy server, in one scan: (rows, id-hash sum) of every id, and (rows,
    content-hash sum) of the rows to compare."""
    source_conn.execute("SET TimeZone = 'UTC'")
    # bigint on both sides of ``<> ALL``: only a same-type comparison becomes a hashed lookup
    pk = sql.SQL("l.{}::bigint").format(sql.Identifier(e.legacy_pk))
    keep = sql.SQL("({} AND {} <> ALL({}::bigint[]))").format(in_sample(pk, plan.every), pk,
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


def _target_summary(target_conn, e: Entity, plan: Comparison):
    """Per bucket on the target, in one scan joined to the parents: loaded rows, open quarantine
    rows, the id-hash sum of both, (rows, content-hash sum) of the loaded rows in the sample, and
    dangling references per foreign key (over all rows, soft-deleted ones included)."""
    target_conn.execute("SET LOCAL TimeZone = 'UTC'")
    source, h, flags = target_rows_sql(e, plan)
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
        b=sql.Literal(BUCKET), dangling=dangling, lid=lid, live=live, s=in_sample(lid, plan.every), h=h,
        table_flags=table_flags, source=source, quarantine_flags=quarantine_flags,
        q=QUARANTINE, ent=sql.Literal(e.name)))


def summarize(source_conn, target_conn, e: Entity, opts: CheckOptions = CheckOptions(),
              meanwhile=None) -> IdAccounting:
    """Both servers' summaries, computed at the same time: the legacy side in a worker thread on
    ``source_conn``, the target side here on ``target_conn``, followed by ``meanwhile(target_conn)``
    (the target-only checks) while the legacy server may still be working."""
    plan = _compare(source_conn, target_conn, e, opts)
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


def enforcing_index(target_conn, schema: str, table: str, column: str) -> str | None:
    """Name of a valid, non-partial, single-column unique index on ``column`` of ``schema.table`` (then the database
    itself guarantees uniqueness), else None."""
    row = target_conn.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        "WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indisvalid AND i.indnatts = 1 "
        "AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attname = %s LIMIT 1",
        [table_named(table, schema).as_string(target_conn), column]).fetchone()
    return row[0] if row else None


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
