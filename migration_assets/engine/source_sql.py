"""The SQL run on the legacy database, built here and run by the stream and the planner.

The load's one SELECT converts every column to its target type (transforms.py gives each kind's
value and validity SQL), applies the recovery rules that need only the row itself (emails
corrected or replaced by a placeholder, required NULLs given their default), flags the rows that
cannot load with a reason code and a detail (carrying the raw legacy row as JSON for those rows
only), and hashes each row's version for the change summaries. Text that only needs trimming and
foreign keys (the legacy integer) travel raw: the stream finishes them on the Arrow batch, which
is cheaper than doing it per row in SQL.

The other statements read the same snapshot: the table's state (count, id range, change
high-water mark), the per-bucket summaries the planner compares, the rows changed since a
watermark, the gaps in the ids (where deleted rows are), and raw rows by id.
"""

from __future__ import annotations

import zlib
from dataclasses import replace

from psycopg import sql

from ..registry import Entity
from ..transforms import EMAIL_REGEX, Column, Kind, blank_sql
from .names import (BUCKET, DEFAULT_FOR_NULL, DETAIL, EMAIL_CORRECTED, EMAIL_PLACEHOLDER, ENGINE_VERSION,
                    INVALID_EMAIL, INVALID_VALUE, LEGACY_ID, NOTES, PLACEHOLDER_DOMAIN, RAW, REJECT, REQUIRED_NULL,
                    SOURCE_HASH)
from .options import LoadOptions


# Legacy columns stored as text (the kinds whose legacy type is a character type).
TEXT_KINDS = (Kind.TEXT, Kind.LONG_TEXT, Kind.EMAIL, Kind.YN, Kind.CODE_CHAR, Kind.TEXT_DATE)
_HIGH_BYTE = sql.Literal("[\\x80-\\xff]")
_UTF8_TEXT = sql.Literal(  # well-formed UTF-8 (RFC 3629), byte by byte as a SQL_ASCII server matches it
    "^([\\x01-\\x7f]|[\\xc2-\\xdf][\\x80-\\xbf]|\\xe0[\\xa0-\\xbf][\\x80-\\xbf]"
    "|[\\xe1-\\xec\\xee\\xef][\\x80-\\xbf]{2}|\\xed[\\x80-\\x9f][\\x80-\\xbf]"
    "|\\xf0[\\x90-\\xbf][\\x80-\\xbf]{2}|[\\xf1-\\xf3][\\x80-\\xbf]{3}"
    "|\\xf4[\\x80-\\x8f][\\x80-\\xbf]{2})*$")
_WIN1252_UNDEFINED = sql.Literal("[\\x81\\x8d\\x8f\\x90\\x9d]")  # no character in WIN1252


def for_server(opts: LoadOptions, server_encoding: str) -> LoadOptions:
    """``opts`` for a legacy server whose ``server_encoding`` is given. A server with a declared
    encoding converts its text to the connection's UTF-8 itself; a SQL_ASCII one sends its bytes
    as they were written, so the source query decodes them (LEGACY_TEXT_ENCODING)."""
    sql_ascii = server_encoding == "SQL_ASCII"
    return opts if opts.sql_ascii == sql_ascii else replace(opts, sql_ascii=sql_ascii)


def decoded_sql(v: sql.Composable, encoding: str) -> sql.Composable:
    """SQL on a SQL_ASCII server: text ``v`` as UTF-8 text, NULL where it cannot be decoded as
    ``encoding`` (utf8: not well-formed; win1252: one of its five undefined bytes; latin1 decodes
    every byte). Valid UTF-8 stays the same value, so what compares it elsewhere is unaffected."""
    if encoding == "utf8":
        return sql.SQL("CASE WHEN {v} !~ {high} OR {v} ~ {utf8} THEN {v} END").format(
            v=v, high=_HIGH_BYTE, utf8=_UTF8_TEXT)
    converted = sql.SQL("convert_from(convert(convert_to({}, 'SQL_ASCII'), {}, 'UTF8'), 'SQL_ASCII')").format(
        v, sql.Literal(encoding.upper()))
    if encoding == "win1252":
        return sql.SQL("CASE WHEN {} !~ {} THEN {} END").format(v, _WIN1252_UNDEFINED, converted)
    return converted


def _decodes(c: Column, opts: LoadOptions) -> bool:
    return opts.sql_ascii and c.kind in TEXT_KINDS


def _src(c: Column, opts: LoadOptions | None = None) -> sql.Composable:
    """The legacy value of ``c`` (alias ``l``), as UTF-8 text where the server is SQL_ASCII."""
    raw = sql.SQL("l.{}").format(sql.Identifier(c.legacy_name))
    return decoded_sql(raw, opts.text_encoding) if opts is not None and _decodes(c, opts) else raw


def _escaped(c: Column) -> sql.Composable:
    """The raw bytes of a text column as ASCII (octal escapes for bytes above 0x7f): what a
    quarantine row's detail and raw row show of a value that could not be decoded."""
    return sql.SQL("encode(convert_to(l.{}, 'SQL_ASCII'), 'escape')").format(sql.Identifier(c.legacy_name))


def raw_row_sql(e: Entity, opts: LoadOptions) -> sql.Composable:
    """The legacy row as JSON text (the quarantine's ``raw``): the whole row, or on a SQL_ASCII
    server the key and the columns the registry reads, decoded (escaped where they cannot be),
    since the row's other bytes may not be text the target can store."""
    if not opts.sql_ascii:
        return sql.SQL("row_to_json(l)::text")
    pairs = [sql.SQL("{}, l.{}").format(sql.Literal(e.legacy_pk), sql.Identifier(e.legacy_pk))]
    for c in e.columns:
        value = sql.SQL("coalesce({}, {})").format(_src(c, opts), _escaped(c)) if _decodes(c, opts) else _src(c)
        pairs.append(sql.SQL("{}, {}").format(sql.Literal(c.legacy_name), value))
    return sql.SQL("json_build_object({})::text").format(sql.SQL(", ").join(pairs))


def _email_fixed_sql(src: sql.Composable) -> sql.Composable:
    """Email recovery: trim, lower-case, drop inner spaces, collapse '@@', fix ' at ', strip a trailing dot."""
    return sql.SQL(
        "rtrim(regexp_replace(replace(replace(lower(btrim({})), ' at ', '@'), ' ', ''), '@+', '@', 'g'), '.')"
    ).format(src)


def email_ok_sql(value: sql.Composable) -> sql.Composable:
    """SQL: ``value`` is a valid address and not under the placeholders' reserved domain."""
    domain = "@" + PLACEHOLDER_DOMAIN
    return sql.SQL("({v} ~ {re} AND right({v}, {n}) <> {d})").format(
        v=value, re=sql.Literal(EMAIL_REGEX), n=sql.Literal(len(domain)), d=sql.Literal(domain))


def column_value_sql(e: Entity, c: Column, opts: LoadOptions) -> sql.Composable:
    src = _src(c, opts)
    if c.kind is Kind.FK:
        return src  # the legacy integer: the UUID is computed on the batch (uuid3_keys)
    if c.kind is Kind.EMAIL and opts.error_recovery:
        fixed = _email_fixed_sql(src)
        placeholder = sql.SQL("{} || l.{} || {}").format(
            sql.Literal(f"invalid+{e.name}.{c.target}."), sql.Identifier(e.legacy_pk),
            sql.Literal("@" + PLACEHOLDER_DOMAIN))
        v = c.value_sql(src)
        return sql.SQL("CASE WHEN {v} IS NULL THEN NULL WHEN {v_ok} THEN {v} "
                       "WHEN {f_ok} THEN {f} ELSE {p} END").format(
            v=v, v_ok=email_ok_sql(v), f=fixed, f_ok=email_ok_sql(fixed), p=placeholder)
    value = c.value_sql(src, zone=opts.legacy_timezone)
    if opts.error_recovery and c.required and c.default is not None:
        value = sql.SQL("coalesce({}, {})").format(value, sql.SQL(c.default))
    return value


def trimmed_in_arrow(c: Column, opts: LoadOptions) -> bool:
    """Text whose ``nullif(btrim(..), '')`` the load applies to the batch (:func:`trim_text`)
    instead of in the source query, where it cost more than the whole COPY of a long-text table.
    A required column with a recovery default keeps the SQL (the default replaces the NULL)."""
    return c.kind in (Kind.TEXT, Kind.LONG_TEXT) and not (opts.error_recovery and c.required and c.default is not None)


def _wire_value_sql(e: Entity, c: Column, opts: LoadOptions) -> sql.Composable:
    """What the source query sends for ``c``: the converted value, except where the batch does
    the rest (the legacy integer of a key, raw text trimmed in Arrow)."""
    if trimmed_in_arrow(c, opts):
        return _src(c, opts)
    return column_value_sql(e, c, opts)


def _rejects_sql(e: Entity, opts: LoadOptions) -> tuple[sql.Composable, sql.Composable, sql.Composable]:
    """(reason, detail, recovery notes) expressions; reason NULL means the row is loadable."""
    reasons: list[tuple[sql.Composable, str, sql.Composable]] = []
    notes: list[sql.Composable] = []
    for c in e.columns:  # first: a value that is not text in LEGACY_TEXT_ENCODING (SQL_ASCII server)
        if _decodes(c, opts):
            reasons.append((sql.SQL("(l.{} IS NOT NULL AND {} IS NULL)").format(
                sql.Identifier(c.legacy_name), _src(c, opts)), INVALID_VALUE, sql.SQL("{} || {}").format(
                sql.Literal(f"{c.legacy_name}: not {opts.text_encoding} text (LEGACY_TEXT_ENCODING): "),
                _escaped(c))))
    for c in e.columns:
        src = _src(c, opts)
        defaulted = opts.error_recovery and c.default is not None
        if c.required and not defaulted:
            # text kinds (text dates too) turn blank values into NULL, so a value of spaces only counts as missing:
            # it must be quarantined, not reach the target's NOT NULL constraint
            converted = c.kind in (Kind.TEXT, Kind.LONG_TEXT, Kind.EMAIL, Kind.TEXT_DATE)
            missing = blank_sql(src) if converted else sql.SQL("{} IS NULL").format(src)
            reasons.append((missing, REQUIRED_NULL,
                            sql.Literal(f"{c.legacy_name} is NULL or blank; {c.target} is required")))
        elif c.required and defaulted:
            notes.append(sql.SQL("CASE WHEN {} IS NULL THEN {} END").format(
                src, sql.Literal(f'"{c.target}": {{"rule": "{DEFAULT_FOR_NULL}"}}')))
        invalid = c.invalid_sql(src)
        if invalid is not None:
            reasons.append((invalid, INVALID_VALUE, sql.SQL("{} || {}::text").format(
                sql.Literal(f"{c.legacy_name}: cannot convert to {c.target_type}: "), src)))
        if c.kind is Kind.EMAIL:
            cleaned = c.value_sql(src)
            bad = sql.SQL("({v} IS NOT NULL AND NOT {ok})").format(v=cleaned, ok=email_ok_sql(cleaned))
            if opts.error_recovery:
                notes.append(sql.SQL("CASE WHEN {bad} THEN {k} || to_json({s}::text)::text || "
                                     "CASE WHEN {f_ok} THEN {corrected} ELSE {placeholder} END END").format(
                    bad=bad, k=sql.Literal(f'"{c.target}": {{"original": '), s=src,
                    f_ok=email_ok_sql(_email_fixed_sql(src)), corrected=sql.Literal(f', "rule": "{EMAIL_CORRECTED}"}}'),
                    placeholder=sql.Literal(f', "rule": "{EMAIL_PLACEHOLDER}"}}')))
            else:
                reasons.append((bad, INVALID_EMAIL, sql.SQL("{} || {}::text").format(
                    sql.Literal(f"{c.legacy_name}: not a valid email: "), src)))
    if not reasons:
        reason = detail = sql.SQL("NULL::text")
    else:
        reason = sql.SQL("CASE {} END").format(sql.SQL(" ").join(
            sql.SQL("WHEN {} THEN {}").format(cond, sql.Literal(code)) for cond, code, _ in reasons))
        detail = sql.SQL("CASE {} END").format(sql.SQL(" ").join(
            sql.SQL("WHEN {} THEN {}").format(cond, d) for cond, _, d in reasons))
    if notes:
        note = sql.SQL("nullif(concat_ws(', ', {}), '')").format(sql.SQL(", ").join(notes))
    else:
        note = sql.SQL("NULL::text")
    return reason, detail, note


def source_query(e: Entity, opts: LoadOptions, where: sql.Composable | None = None) -> sql.Composable:
    """The SELECT run on the legacy database (exposed for tests and the checksum check)."""
    reason, detail, notes = _rejects_sql(e, opts)
    cols = [sql.SQL("{} AS {}").format(_wire_value_sql(e, c, opts), sql.Identifier(c.target)) for c in e.columns]
    cols += [
        sql.SQL("l.{} AS {}").format(sql.Identifier(e.legacy_pk), sql.Identifier(LEGACY_ID)),
        sql.SQL("r.reason AS {}").format(sql.Identifier(REJECT)),
        sql.SQL("CASE WHEN r.reason IS NOT NULL THEN {} END AS {}").format(detail, sql.Identifier(DETAIL)),
        sql.SQL("CASE WHEN r.reason IS NOT NULL THEN {} END AS {}").format(raw_row_sql(e, opts), sql.Identifier(RAW)),
        sql.SQL("{} AS {}").format(source_hash_sql(e, opts), sql.Identifier(SOURCE_HASH)),
        sql.SQL("{} AS {}").format(notes, sql.Identifier(NOTES)),
    ]
    q = sql.SQL("SELECT {} FROM {} AS l CROSS JOIN LATERAL (SELECT {} AS reason) AS r").format(
        sql.SQL(", ").join(cols), sql.Identifier(e.legacy_table), reason)
    if where is not None:
        q = sql.SQL("{} WHERE {}").format(q, where)
    return q


def hash_salt(e: Entity, opts: LoadOptions) -> int:
    """Salt of the per-row source hash: changes with the entity's definition and the recovery mode,
    so a changed transform makes every row look changed and get re-migrated. LEGACY_TEXT_ENCODING
    is part of it when set (it changes what a SQL_ASCII server's text becomes), and so is
    LEGACY_TIMEZONE (it changes every timestamp); their defaults leave the salt, and so every
    existing summary, as it was."""
    decoding = "" if opts.text_encoding == "utf8" else f"|{opts.text_encoding}"
    zone = "" if opts.legacy_timezone == "UTC" else f"|tz={opts.legacy_timezone}"
    return zlib.crc32(f"{ENGINE_VERSION}|{opts.error_recovery}|{e!r}{decoding}{zone}".encode())


def source_hash_sql(e: Entity, opts: LoadOptions, alias: str = "l") -> sql.Composable:
    """64-bit hash of the legacy row's version: its ``xmin``, the id of the transaction that wrote
    it, salted with the entity's definition.

    PostgreSQL never changes a row in place: every UPDATE writes a new version with a new xmin, so
    a row whose content changed always changes its hash (so does one rewritten with the same
    values, or every row after a logical dump and restore: re-read, then found unchanged by the
    merge; a false alarm costs time, never a missed change). Hashing the values instead
    (hash_record_extended of the row) would read every column of every row for each summary.
    Only ever compared with values the same legacy database computed (a physical replica keeps
    the xmins)."""
    return sql.SQL("hashint8extended({}.xmin::text::bigint, {})").format(
        sql.Identifier(alias), sql.Literal(hash_salt(e, opts)))


def snapshot_clock(zone: str) -> sql.Composable:
    """The legacy clock as the change-tracking columns read it: the start of the reading
    transaction (one snapshot sees one clock) as a timestamp without time zone in LEGACY_TIMEZONE,
    the zone the legacy application writes its marks in (Kind.TIMESTAMP)."""
    return sql.SQL("(transaction_timestamp() AT TIME ZONE {})").format(sql.Literal(zone))


def source_state_sql(e: Entity, zone: str) -> sql.Composable:
    """(rows, min id, max id, change high-water mark as text) of a legacy table: what a watermark
    records, and what the sensor compares with it.

    Four subqueries, not one aggregate: apart, the count can read the primary key's index and the
    three extremes are index endpoints (the change column is indexed, like every change-tracking
    column a differential refresh filters on); together they take a scan of the whole heap.

    The high-water mark is the highest change mark not later than the snapshot's own clock: one
    row marked in the future (a legacy clock gone wrong, a 9999-12-31 placeholder) would otherwise
    move the mark past every later change, and a differential refresh would skip them all. Rows
    marked in the future are re-read by every differential refresh instead (plan_differential)."""
    return sql.SQL("SELECT (SELECT count(*) FROM {t}), (SELECT min({pk}) FROM {t}), (SELECT max({pk}) FROM {t}), "
                   "(SELECT max({chg}) FROM {t} WHERE {chg} <= {now})::text").format(now=snapshot_clock(zone),
        pk=sql.Identifier(e.legacy_pk), chg=sql.Identifier(e.legacy_change_column), t=sql.Identifier(e.legacy_table))


def bucket_summary_sql(e: Entity, opts: LoadOptions) -> sql.Composable:
    """Per bucket of BUCKET legacy ids: (bucket, rows, sum of source hashes, NULL, NULL, NULL), and
    one closing row (NULL, rows, NULL, min id, max id, change high-water mark) that is the
    snapshot's state (the high-water mark capped at the snapshot's clock as in
    :func:`source_state_sql`), so the planner does not scan the table twice."""
    return sql.SQL(
        "WITH s AS (SELECT l.{pk} / {b} AS b, count(*) AS n, sum({h}) AS h, min(l.{pk}) AS lo, max(l.{pk}) AS hi, "
        "           max(l.{chg}) FILTER (WHERE l.{chg} <= {now}) AS chg FROM {t} AS l GROUP BY 1) "
        "SELECT b, n, h, NULL, NULL, NULL FROM s "
        "UNION ALL SELECT NULL, coalesce(sum(n), 0), NULL, min(lo), max(hi), max(chg)::text FROM s").format(
        pk=sql.Identifier(e.legacy_pk), b=sql.Literal(BUCKET), h=source_hash_sql(e, opts),
        chg=sql.Identifier(e.legacy_change_column), t=sql.Identifier(e.legacy_table),
        now=snapshot_clock(opts.legacy_timezone))


def future_marks_sql(e: Entity, zone: str) -> tuple[sql.Composable, sql.Composable]:
    """(condition on alias ``l``, count query) of the rows whose change mark is later than the
    snapshot's clock: never the high-water mark, so every differential refresh re-reads them."""
    future = sql.SQL("l.{} > {}").format(sql.Identifier(e.legacy_change_column), snapshot_clock(zone))
    return future, sql.SQL("SELECT count(*) FROM {} AS l WHERE {}").format(sql.Identifier(e.legacy_table), future)


def changed_since_sql(e: Entity, since_iso: str) -> sql.Composable:
    """Condition on alias ``l``: changed at or after ``since_iso``. The literal is untyped, so it
    takes the change column's own type and the column's index applies."""
    return sql.SQL("l.{} >= {}").format(sql.Identifier(e.legacy_change_column), sql.Literal(since_iso))


def absent_ids_sql(e: Entity, ids: list[int]) -> sql.Composable:
    """The legacy ids among ``ids`` that the legacy table does not hold (in the snapshot that runs it)."""
    return sql.SQL("SELECT x FROM unnest({}::bigint[]) AS x "
                   "WHERE NOT EXISTS (SELECT FROM {} AS l WHERE l.{} = x)").format(
        sql.Literal(ids), sql.Identifier(e.legacy_table), sql.Identifier(e.legacy_pk))


def ids_sql(e: Entity, *, above: int | None = None, buckets: list[int] | None = None,
            ids: list[int] | None = None) -> sql.Composable:
    """Condition on alias ``l``: legacy id above ``above``, in one of ``buckets``, or in ``ids``
    (each part only when given; none given: false)."""
    pk = sql.SQL("l.{}").format(sql.Identifier(e.legacy_pk))
    parts = []
    if above is not None:
        parts.append(sql.SQL("{} > {}").format(pk, sql.Literal(above)))
    if buckets:
        parts.append(sql.SQL("({} / {}) = ANY({})").format(pk, sql.Literal(BUCKET), sql.Literal(buckets)))
    if ids:
        parts.append(sql.SQL("{} = ANY({})").format(pk, sql.Literal(ids)))
    return sql.SQL(" OR ").join(parts) if parts else sql.SQL("false")


def gaps_sql(e: Entity, lower: int, upper: int) -> tuple[sql.Composable, dict]:
    """(query, parameters): the ranges of legacy ids within [lower, upper] that do not exist.

    Every deleted row lies in one. One aggregate over the primary key counts the rows per block
    of 64 ids and records which of them exist (a 64-bit mask); runs of empty blocks are gaps as a
    whole, and the missing ids of partly filled blocks are read off their masks, so the table is
    read once. The arithmetic is in the legacy key's own integer type, unless the bounds come
    within two blocks of int4's limits, where it would overflow: then in bigint."""
    c = sql.SQL("") if -2**31 + 128 < lower and upper < 2**31 - 128 else sql.SQL("::bigint")
    query = sql.SQL(
        "WITH blocks AS (SELECT {pk}{c} >> 6 AS b, count(*) AS n, "
        "                bit_or(1::bigint << ({pk}{c} & 63)::int) AS m "
        "                FROM {t} WHERE {pk} BETWEEN %(lower)s{c} AND %(upper)s{c} GROUP BY 1), "
        "empty AS (SELECT (b + 1) << 6 AS lo, "
        "                 (lead(b, 1, (%(upper)s{c} >> 6) + 1) OVER (ORDER BY b) << 6) - 1 AS hi "
        "          FROM blocks "
        "          UNION ALL SELECT %(lower)s{c}, "
        "                 (coalesce((SELECT min(b) FROM blocks), (%(upper)s{c} >> 6) + 1) << 6) - 1), "
        "partial AS (SELECT b, m FROM blocks "
        "            WHERE n < least(%(upper)s{c}, (b << 6) + 63) - greatest(%(lower)s{c}, b << 6) + 1) "
        "SELECT greatest(lo, %(lower)s{c}), least(hi, %(upper)s{c}) FROM empty "
        "WHERE least(hi, %(upper)s{c}) >= greatest(lo, %(lower)s{c}) "
        "UNION ALL "
        "SELECT (b << 6) + i, (b << 6) + i FROM partial, generate_series(0, 63) AS i "
        "WHERE m & (1::bigint << i) = 0 AND (b << 6) + i BETWEEN %(lower)s{c} AND %(upper)s{c} "
        "ORDER BY 1").format(pk=sql.Identifier(e.legacy_pk), t=sql.Identifier(e.legacy_table), c=c)
    return query, {"lower": lower, "upper": upper}


def raw_rows_sql(e: Entity, opts: LoadOptions) -> sql.Composable:
    """(legacy id, the raw row as JSON text) of the ids given as the one parameter (an array)."""
    return sql.SQL("SELECT l.{pk}, {raw} FROM {t} AS l WHERE l.{pk} = ANY(%s)").format(
        pk=sql.Identifier(e.legacy_pk), t=sql.Identifier(e.legacy_table), raw=raw_row_sql(e, opts))
