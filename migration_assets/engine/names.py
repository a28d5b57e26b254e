"""The names every phase of a load shares, spelled once: the helper columns the stream adds to
the target's columns, the quarantine reason codes, the change-summary bucket, the reserved email
domains, the control schema's tables and the target tables' identifiers.

The legacy-id UUID has one SQL spelling here (:func:`legacy_uuid_sql`, the control schema's
``legacy_uuid`` function); its Python reference, vectorised twin and composed SQL live in
transforms.py, and tests hold the four equal.
"""

from __future__ import annotations

from psycopg import sql

from ..registry import Entity
from ..transforms import NAMESPACE_BYTES

CONTROL_SCHEMA = "migration_control"  # the engine's own tables on the target (target_schema.py creates them)
QUARANTINE = sql.Identifier(CONTROL_SCHEMA, "quarantine")
WATERMARKS = sql.Identifier(CONTROL_SCHEMA, "watermarks")
MIGRATION_RUNS = sql.Identifier(CONTROL_SCHEMA, "migration_runs")
CHECK_RESULTS = sql.Identifier(CONTROL_SCHEMA, "check_results")
SLICE_LOADS = sql.Identifier(CONTROL_SCHEMA, "slice_loads")  # a table loaded in id-range slices (slices.py)
SLICES = sql.Identifier(CONTROL_SCHEMA, "slices")
SLICE_REJECTS = sql.Identifier(CONTROL_SCHEMA, "slice_rejects")
KEYS_SET_ASIDE = sql.Identifier(CONTROL_SCHEMA, "keys_set_aside")  # a first migration's keys, until restored (keys.py)
KEY_RUNS = sql.Identifier(CONTROL_SCHEMA, "key_runs")

# Helper columns of the stream's batches, after the target's own columns (stream.arrow_schema).
LEGACY_ID = "_legacy_id"
REJECT = "_reject"  # reason code of a row that cannot load, else NULL
DETAIL = "_detail"
RAW = "_raw"  # the legacy row as JSON, for rejected rows only
NOTES = "_notes"  # the recovery rules the source query applied (metadata.recovered)
SOURCE_HASH = "_source_hash"

BUCKET = 1024  # legacy ids per bucket of the change summary
HASH_MOD = 1 << 64  # bucket hash sums are compared modulo 2^64
ENGINE_VERSION = "4"  # part of every source hash: bump when a transform or the hash changes meaning

# Quarantine reason codes (documented in docs/design.md, "Nothing lost").
REQUIRED_NULL = "REQUIRED_NULL"
INVALID_VALUE = "INVALID_VALUE"
INVALID_EMAIL = "INVALID_EMAIL"
ORPHAN_FK = "ORPHAN_FK"
DUPLICATE_KEY = "DUPLICATE_KEY"
REASONS = (REQUIRED_NULL, INVALID_VALUE, INVALID_EMAIL, ORPHAN_FK, DUPLICATE_KEY)

# The recovery rules, as metadata.recovered names them: the source query applies the first three
# (source_sql), the load the last (rejects: an optional reference to a missing parent set NULL)
DEFAULT_FOR_NULL = "default_for_null"
EMAIL_CORRECTED = "email_corrected"
EMAIL_PLACEHOLDER = "email_placeholder"
ORPHAN_FK_SET_NULL = "orphan_fk_set_null"
SOURCE_RULES = (DEFAULT_FOR_NULL, EMAIL_CORRECTED, EMAIL_PLACEHOLDER)

# metadata key of a soft-deleted target row, and the resolution of a quarantine row whose legacy row is gone
SOFT_DELETED = "deleted_at_source"

# Placeholders for emails that cannot be corrected live under this domain (RFC 2606 reserves
# example.com), and a legacy address under it is never taken as valid: it becomes its own row's
# placeholder (or INVALID_EMAIL without recovery), so a placeholder can never collide with it.
PLACEHOLDER_DOMAIN = "invalid.example.com"
SWAP_DOMAIN = "swap.invalid"  # reserved (RFC 2606): a unique email value in transit during a merge


def target_columns(e: Entity) -> list[str]:
    return ["id"] + [c.target for c in e.columns] + ["metadata"]


def target_table(e: Entity, schema: str) -> sql.Identifier:
    """The entity's target table in ``schema`` (MIGRATION_TARGET_SCHEMA, handed along in the options)."""
    return table_named(e.target_table, schema)


def table_named(name: str, schema: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


def column_list(names) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def legacy_id_of(alias: str, staged: bool) -> sql.Composable:
    """SQL: the legacy id of row ``alias``: its helper column in staging, its metadata in a target table."""
    if staged:
        return sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(LEGACY_ID))
    return sql.SQL("({}.metadata->>'legacy_id')::bigint").format(sql.Identifier(alias))


def legacy_uuid_sql(entity_name: str, legacy_id: sql.Composable) -> sql.Composable:
    """SQL: the target UUID of ``entity_name``'s legacy id ``legacy_id``, as an expression: the body
    of the control schema's ``legacy_uuid`` function, which the loads do not call. That function
    runs with a fixed search_path (Supabase's advisors require it), and a function with a SET
    clause is never inlined: 5.3 us a call against 2.2 us for the expression (1M ids)."""
    digest = sql.SQL("decode(md5({} || {} || ':' || ({})::text), 'hex')").format(
        sql.Literal(NAMESPACE_BYTES.decode()), sql.Literal(entity_name), legacy_id)
    return sql.SQL("encode(set_byte(set_byte({d}, 6, (get_byte({d}, 6) & 15) | 48), 8, (get_byte({d}, 8) & 63) | 128), "
                   "'hex')::uuid").format(d=digest)


def not_soft_deleted_sql(alias: str | None = None) -> sql.Composable:
    """SQL condition: the target row (``alias``, or the unqualified ``metadata``) is not marked
    deleted at the source."""
    metadata = sql.SQL("{}.metadata").format(sql.Identifier(alias)) if alias else sql.SQL("metadata")
    return sql.SQL("NOT ({} ? {})").format(metadata, sql.Literal(SOFT_DELETED))


def live_rows_sql(alias: str, delete_policy: str) -> sql.Composable:
    """SQL condition: the row ``alias`` of a target table counts as present (under the soft delete
    policy a row marked deleted at the source does not)."""
    return not_soft_deleted_sql(alias) if delete_policy == "soft" else sql.SQL("true")
