"""The SQL run on the legacy database, built for every entity of the registry (engine.source_sql)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from migration_assets.engine.names import BUCKET, DETAIL, LEGACY_ID, NOTES, RAW, REJECT, SOURCE_HASH
from migration_assets.engine.options import LoadOptions
from migration_assets.engine.source_sql import (bucket_summary_sql, changed_since_sql, column_value_sql,
                                                future_marks_sql, gaps_sql, hash_salt, ids_sql, raw_rows_sql,
                                                source_query, source_state_sql)
from migration_assets.registry import ENTITIES, BY_NAME
from migration_assets.transforms import Kind

from .conftest import HOSTILE, render


@pytest.mark.parametrize("e", ENTITIES, ids=lambda e: e.name)
def test_the_source_query_selects_every_target_column_and_the_helpers(e):
    text = render(source_query(e, LoadOptions()))
    for c in e.columns:
        assert f'AS "{c.target}"' in text and f'l."{c.legacy_name}"' in text
    for helper in (LEGACY_ID, REJECT, DETAIL, RAW, SOURCE_HASH, NOTES):
        assert f'AS "{helper}"' in text
    assert f'FROM "{e.legacy_table}" AS l' in text and "WHERE" not in text.split(" FROM ")[-1]


@pytest.mark.parametrize("e", ENTITIES, ids=lambda e: e.name)
def test_recovery_changes_only_what_it_recovers(e):
    def without_salt(opts):  # the recovery mode is part of the row hash's salt: every row re-reads
        return re.sub(r"hashint8extended\(\"l\".xmin::text::bigint, \d+\)", "H", render(source_query(e, opts)))

    on, off = without_salt(LoadOptions()), without_salt(LoadOptions(error_recovery=False))
    emails = [c for c in e.columns if c.kind is Kind.EMAIL]
    defaulted = [c for c in e.columns if c.required and c.default is not None]
    assert (on != off) == bool(emails or defaulted)
    for c in emails:
        assert f"{c.legacy_name}: not a valid email: " in off and "email_placeholder" in on
    for c in defaulted:
        assert f"{c.legacy_name} is NULL or blank" in off and f"{c.legacy_name} is NULL or blank" not in on
        assert "default_for_null" in on


def test_a_hostile_identifier_is_quoted_everywhere():
    e = dataclasses.replace(BY_NAME["roles"], legacy_table=HOSTILE, legacy_pk=HOSTILE)
    for text in (render(source_query(e, LoadOptions(), ids_sql(e, above=5))), render(source_state_sql(e, "UTC")),
                 render(bucket_summary_sql(e, LoadOptions())), render(raw_rows_sql(e, LoadOptions())),
                 render(gaps_sql(e, 1, 10)[0]), render(future_marks_sql(e, "UTC")[1])):
        assert '"we""ird name"' in text
        assert "we\"ird name" not in text.replace('"we""ird name"', "")


def test_values_are_literals_or_parameters_never_spliced_text():
    e = BY_NAME["roles"]
    assert render(changed_since_sql(e, "2026-01-01 00:00:00' OR true --")).endswith(
        "'2026-01-01 00:00:00'' OR true --'")
    assert "%s" in render(raw_rows_sql(e, LoadOptions()))  # the ids travel as one array parameter
    query, params = gaps_sql(e, -7, 9)
    assert params == {"lower": -7, "upper": 9} and "%(lower)s" in render(query)


def test_ids_sql_combines_what_is_given_and_selects_nothing_without_it():
    e = BY_NAME["roles"]
    pk = f'l."{e.legacy_pk}"'
    assert render(ids_sql(e)) == "false"
    assert render(ids_sql(e, above=41)) == f"{pk} > 41"
    text = render(ids_sql(e, above=1, buckets=[3, 4], ids=[5]))
    assert text == f"{pk} > 1 OR ({pk} / {BUCKET}) = ANY('{{3,4}}'::int2[]) OR {pk} = ANY('{{5}}'::int2[])"


@pytest.mark.parametrize("lower,upper,bigint", [(1, 1000, False), (-2**31 + 129, 2**31 - 129, False),
                                                (-2**31, 10, True), (0, 2**31 - 1, True)])
def test_gap_arithmetic_moves_to_bigint_only_near_int4_limits(lower, upper, bigint):
    text = render(gaps_sql(BY_NAME["roles"], lower, upper)[0])
    assert ("::bigint >> 6" in text) == bigint


def test_the_hash_salt_follows_the_definition_and_the_recovery_mode():
    e = BY_NAME["roles"]
    assert hash_salt(e, LoadOptions()) == hash_salt(e, LoadOptions(batch_size=7, mode="differential"))
    assert hash_salt(e, LoadOptions()) != hash_salt(e, LoadOptions(error_recovery=False))
    changed = dataclasses.replace(e, description=e.description + " (changed)")
    assert hash_salt(changed, LoadOptions()) != hash_salt(e, LoadOptions())


def test_a_foreign_key_travels_as_the_legacy_integer():
    e = next(e for e in ENTITIES if e.foreign_keys)
    c = e.foreign_keys[0]
    assert render(column_value_sql(e, c, LoadOptions())) == f'l."{c.legacy_name}"'
