"""Column transforms: how one legacy column becomes one target column.

Every column in the registry names one of the kinds below. A kind knows
- the legacy column's SQL type (used by the simulator to build the legacy schema),
- the target column's SQL type and Arrow type (used by the target schema and the IO manager),
- the SQL expression that turns the legacy value into the target value, and
- the SQL predicate that says a present legacy value cannot be converted ("fails its cast").

The expressions run inside the legacy database's ``COPY (SELECT ...) TO STDOUT``: the legacy
server has spare CPU while the target server is the bottleneck of a migration, so value
conversion is pushed to the source and costs the Python process nothing. Every expression is
total: a value that fails its cast yields NULL instead of raising, and the validity predicate
routes the row to quarantine with the column named. The same expressions are reused by the
content-checksum check, so "what the migration should have written" is defined exactly once.

Keys are special: ``pk`` and ``fk`` columns produce the md5 hex digest of
``NAMESPACE_BYTES || "<entity>:<legacy id>"`` in SQL, and :func:`uuid_from_md5_hex` turns the
digest into an RFC 4122 version-3 UUID with vectorised pyarrow.compute (setting the version and
variant nibbles). No Python row loop, no lookup table, no extension (uuid-ossp/pgcrypto) needed.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import Mapping

import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

# The namespace of every legacy-id UUID. Its 16 bytes are printable ASCII, so the name-based
# hash ``md5(namespace || name)`` is a plain text md5 in SQL.
NAMESPACE_BYTES = b"migration_assets"
NAMESPACE = uuid.UUID(bytes=NAMESPACE_BYTES)

# One email rule for the target CHECK constraint, the recovery rules and the format check.
EMAIL_REGEX = r"^[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$"

# Plausible range for epoch-second timestamps (1970-01-01 .. 2100-01-01).
EPOCH_MIN, EPOCH_MAX = 0, 4102444800


def legacy_uuid(entity: str, legacy_id: int) -> uuid.UUID:
    """The target primary key of ``entity``'s legacy row ``legacy_id`` (reference implementation)."""
    return uuid.uuid3(NAMESPACE, f"{entity}:{legacy_id}")


def md5_key_sql(entity: str, value: sql.Composable) -> sql.Composable:
    """SQL: the md5 hex digest behind :func:`legacy_uuid` (NULL when ``value`` is NULL)."""
    prefix = NAMESPACE_BYTES.decode("ascii") + entity + ":"
    return sql.SQL("md5({} || {}::text)").format(sql.Literal(prefix), value)


def uuid_sql(entity: str, value: sql.Composable) -> sql.Composable:
    """SQL (target side, for checks): the full UUID, equal to :func:`legacy_uuid`."""
    h = md5_key_sql(entity, value)
    return sql.SQL(
        "(left({h}, 12) || '3' || substr({h}, 14, 3) || "
        "translate(substr({h}, 17, 1), '0123456789abcdef', '89ab89ab89ab89ab') || right({h}, 15))::uuid"
    ).format(h=h)


_VARIANT_IN = pa.array(list("0123456789abcdef"))
_VARIANT_OUT = pa.array(list("89ab89ab89ab89ab"))


def uuid_from_md5_hex(digests: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Vectorised: md5 hex digests -> RFC 4122 v3 UUIDs (32 hex digits, the form uuid_in reads).

    Sets the version nibble (position 12) to 3 and the variant nibble (position 16) to 8..b.
    NULL digests stay NULL.
    """
    head = pc.utf8_slice_codeunits(digests, 0, 12)
    mid = pc.utf8_slice_codeunits(digests, 13, 16)
    variant = pc.take(_VARIANT_OUT, pc.index_in(pc.utf8_slice_codeunits(digests, 16, 17), value_set=_VARIANT_IN))
    tail = pc.utf8_slice_codeunits(digests, 17, 32)
    return pc.binary_join_element_wise(head, pa.scalar("3"), mid, variant, tail, "")


class Kind(enum.Enum):
    """Transform kinds. Value: (legacy SQL type, target SQL type)."""

    PK = ("integer", "uuid")
    FK = ("integer", "uuid")
    TEXT = ("varchar(200)", "text")
    LONG_TEXT = ("text", "text")
    EMAIL = ("varchar(120)", "text")
    INTEGER = ("integer", "integer")
    BIGINT = ("bigint", "bigint")
    YN = ("char(1)", "boolean")
    CODE_INT = ("smallint", "text")
    CODE_CHAR = ("char(1)", "text")
    CENTS = ("bigint", "numeric(14,2)")
    EPOCH = ("bigint", "timestamptz")
    TEXT_DATE = ("varchar(10)", "date")
    TIMESTAMP = ("timestamp", "timestamptz")

    @property
    def legacy_type(self) -> str:
        return self.value[0]

    @property
    def target_type(self) -> str:
        return self.value[1]


ARROW_TYPES: Mapping[str, pa.DataType] = {
    "uuid": pa.string(),
    "text": pa.string(),
    "integer": pa.int32(),
    "bigint": pa.int64(),
    "boolean": pa.bool_(),
    "numeric(14,2)": pa.decimal128(14, 2),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
}


@dataclass(frozen=True)
class Column:
    """One target column and where it comes from.

    ``target``: target column name. ``kind``: the transform. ``legacy``: legacy column name
    (defaults to ``target``). ``parent``: for FK columns, the parent entity. ``required``: NOT NULL
    in the target (for FKs: the reference is mandatory). ``codes``: for CODE kinds, legacy code ->
    target enum value. ``unique``: a natural key with a UNIQUE constraint in the target.
    ``default``: SQL literal used by the NULL-in-required-column recovery rule (None: quarantine).
    ``gen``: simulator hint (see simulator.py) for text columns.
    """

    target: str
    kind: Kind
    legacy: str | None = None
    parent: str | None = None
    required: bool = False
    codes: Mapping[object, str] | None = None
    unique: bool = False
    default: str | None = None
    gen: str | None = None
    mutable: bool = field(default=False)  # the simulator's mutate mode edits this column

    @property
    def legacy_name(self) -> str:
        return self.legacy or self.target

    @property
    def target_type(self) -> str:
        if self.kind is Kind.CODE_INT or self.kind is Kind.CODE_CHAR:
            return "text"
        return self.kind.target_type

    @property
    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPES[self.target_type]

    # ---------------------------------------------------------------- SQL on the legacy side

    def value_sql(self, src: sql.Composable, key_entity: str | None = None) -> sql.Composable:
        """The converted value (NULL where the legacy value is NULL or fails its cast)."""
        k = self.kind
        if k is Kind.PK or k is Kind.FK:
            assert key_entity is not None
            return md5_key_sql(key_entity, src)
        if k is Kind.TEXT or k is Kind.LONG_TEXT:
            return sql.SQL("nullif(btrim({}), '')").format(src)
        if k is Kind.EMAIL:
            return sql.SQL("nullif(lower(btrim({})), '')").format(src)
        if k is Kind.INTEGER or k is Kind.BIGINT:
            return src
        if k is Kind.YN:
            return sql.SQL("CASE upper({}) WHEN 'Y' THEN true WHEN 'N' THEN false END").format(src)
        if k is Kind.CODE_INT or k is Kind.CODE_CHAR:
            whens = sql.SQL(" ").join(
                sql.SQL("WHEN {} THEN {}").format(sql.Literal(code), sql.Literal(label))
                for code, label in self.codes.items()
            )
            return sql.SQL("CASE {} {} END").format(src, whens)
        if k is Kind.CENTS:
            return sql.SQL("CASE WHEN abs({0}) < 1000000000000 THEN round({0}::numeric / 100, 2) END").format(src)
        if k is Kind.EPOCH:
            return sql.SQL("CASE WHEN {0} BETWEEN {1} AND {2} THEN to_timestamp({0}) END").format(
                src, sql.Literal(EPOCH_MIN), sql.Literal(EPOCH_MAX)
            )
        if k is Kind.TEXT_DATE:
            # parsed and validated in Arrow (parse_text_dates): ~0.5 us a value there, against
            # ~7 us for a regex-plus-calendar test that SQL would evaluate several times per row
            return sql.SQL("nullif(btrim({}), '')").format(src)
        if k is Kind.TIMESTAMP:
            return sql.SQL("({} AT TIME ZONE 'UTC')").format(src)
        raise AssertionError(k)

    def invalid_sql(self, src: sql.Composable) -> sql.Composable | None:
        """True when the legacy value is present but cannot be converted (None: never)."""
        k = self.kind
        if k is Kind.YN:
            return sql.SQL("({0} IS NOT NULL AND upper({0}) NOT IN ('Y', 'N'))").format(src)
        if k is Kind.CODE_INT or k is Kind.CODE_CHAR:
            codes = sql.SQL(", ").join(sql.Literal(c) for c in self.codes)
            return sql.SQL("({0} IS NOT NULL AND {0} NOT IN ({1}))").format(src, codes)
        if k is Kind.CENTS:
            return sql.SQL("({0} IS NOT NULL AND abs({0}) >= 1000000000000)").format(src)
        if k is Kind.EPOCH:
            return sql.SQL("({0} IS NOT NULL AND {0} NOT BETWEEN {1} AND {2})").format(
                src, sql.Literal(EPOCH_MIN), sql.Literal(EPOCH_MAX)
            )
        return None  # TEXT_DATE: see parse_text_dates

    @property
    def source_arrow_type(self) -> pa.DataType:
        """Arrow type of the value as the source query sends it (text dates arrive as text)."""
        return pa.string() if self.kind is Kind.TEXT_DATE else self.arrow_type


_DATE_MIN = pa.scalar(-2208988800, pa.timestamp("s"))  # 1900-01-01
_DATE_END = pa.scalar(4102444800, pa.timestamp("s"))  # 2100-01-01


def parse_text_dates(text: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """Vectorised strict ISO date parsing: (date32 values, mask of present-but-invalid values).

    Valid means YYYY-MM-DD exactly (after trimming), a real calendar day, years 1900..2099:
    pyarrow's strptime is lenient (2021-02-30 becomes March 2nd, 2021-1-5 passes), so the parse is
    formatted back and must reproduce the input.
    """
    trimmed = pc.utf8_trim_whitespace(text)
    parsed = pc.strptime(trimmed, format="%Y-%m-%d", unit="s", error_is_null=True)
    ok = pc.and_kleene(pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), trimmed),
                       pc.and_(pc.greater_equal(parsed, _DATE_MIN), pc.less(parsed, _DATE_END)))
    ok = pc.fill_null(ok, False)
    dates = pc.if_else(ok, parsed, pa.scalar(None, pa.timestamp("s"))).cast(pa.date32())
    invalid = pc.and_(pc.is_valid(trimmed), pc.invert(ok))
    return dates, invalid
