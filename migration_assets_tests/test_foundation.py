"""Simulator and target schema against a real PostgreSQL."""

import re

import psycopg
import pytest
from psycopg import sql

from migration_assets.registry import ENTITIES, entity
from migration_assets.simulator import DirtyRates, generate, mutate, rows_at_scale
from migration_assets.migrations import apply_migrations, schema_fingerprint
from migration_assets.target_schema import ROLES
from migration_assets.transforms import EMAIL_REGEX

from .conftest import TEST_SCALE, query


def _checksums(conninfo: str) -> dict[str, str]:
    out = {}
    with psycopg.connect(conninfo) as conn:
        for e in ENTITIES:
            out[e.legacy_table] = conn.execute(sql.SQL(
                "SELECT md5(string_agg(t::text, E'\\n' ORDER BY t.{})) FROM {} t").format(
                sql.Identifier(e.legacy_pk), sql.Identifier(e.legacy_table))).fetchone()[0]
    return out


def test_same_seed_gives_identical_tables_and_another_seed_does_not(databases, legacy):
    again = databases.new("legacy_again")
    generate(again, scale=TEST_SCALE, seed=7, log=lambda *_: None)
    assert _checksums(again) == _checksums(legacy)
    other = databases.new("legacy_other")
    generate(other, scale=TEST_SCALE, seed=8, log=lambda *_: None)
    differing = [t for t, h in _checksums(other).items() if h != _checksums(legacy)[t]]
    assert len(differing) > 40


def test_row_counts_follow_the_scale(legacy):
    for e in ENTITIES:
        n = query(legacy, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(e.legacy_table)))[0][0]
        assert n == rows_at_scale(e, TEST_SCALE), e.name


@pytest.fixture(scope="module")
def dirty_big(databases):
    """Scale 0.1 for the rate checks: enough rows for tight tolerances, a few seconds to build."""
    conninfo = databases.new("legacy_rates")
    generate(conninfo, scale=0.1, seed=11, log=lambda *_: None)
    return conninfo


def test_dirty_data_rates_within_tolerance(dirty_big):
    r = DirtyRates()
    sm = entity("system_messages")  # 219K rows
    n = rows_at_scale(sm, 0.1)
    (orphans,) = query(dirty_big, "SELECT count(*) FROM sys_msg_log WHERE user_id > (SELECT max(user_id) FROM users)")[0]
    (nulls,) = query(dirty_big, "SELECT count(*) FROM sys_msg_log WHERE log_text IS NULL")[0]
    (bad_epochs,) = query(dirty_big, "SELECT count(*) FROM sys_msg_log WHERE log_epoch NOT BETWEEN 0 AND 4102444800")[0]
    for observed, rate in ((orphans, r.orphan_fk), (nulls, r.null_required), (bad_epochs, r.bad_date)):
        expected = n * rate
        assert abs(observed - expected) < 4 * expected ** 0.5 + 3, (observed, expected)
    # emails: invalid, duplicated (also by case / whitespace), messy
    rows = query(dirty_big, "SELECT email_addr FROM users")
    emails = [x for (x,) in rows]
    invalid = sum(1 for x in emails if x is not None and not re.match(EMAIL_REGEX, x.strip().lower()))
    norm = [x.strip().lower() for x in emails if x is not None]
    dups = len(norm) - len(set(norm))
    messy = sum(1 for x in emails if x is not None and x != x.strip().lower())
    n = len(emails)
    assert abs(invalid - n * r.invalid_email) < 4 * (n * r.invalid_email) ** 0.5 + 3
    assert abs(dups - n * r.duplicate_email) < 4 * (n * r.duplicate_email) ** 0.5 + 3
    assert 0.5 * r.messy_email < messy / n < 1.6 * r.messy_email
    # duplicated natural keys
    (dup_keys,) = query(dirty_big, "SELECT count(*) - count(DISTINCT ord_no) FROM ord_hdr")[0]
    assert dup_keys > 0
    # unparsable text dates
    (bad_dates,) = query(dirty_big, "SELECT count(*) FROM wf_task WHERE due_dt !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$'")[0]
    assert bad_dates > 0


def test_clean_rates_give_clean_data(databases):
    conninfo = databases.new("legacy_clean")
    generate(conninfo, scale=0.005, seed=3, rates=DirtyRates.clean(), log=lambda *_: None)
    (n,) = query(conninfo, "SELECT count(*) FROM sys_msg_log WHERE user_id > (SELECT max(user_id) FROM users) "
                           "OR log_text IS NULL")[0]
    assert n == 0


def test_mutate_updates_inserts_and_deletes(databases):
    conninfo = databases.new("legacy_mutate")
    generate(conninfo, scale=0.01, seed=5, log=lambda *_: None)
    before = query(conninfo, "SELECT count(*), max(log_id) FROM sys_msg_log")[0]
    counts = mutate(conninfo, fraction=0.05, round_no=1, seed=5, log=lambda *_: None)
    c = counts["system_messages"]
    assert c.updated > 0 and c.inserted > 0 and c.deleted > 0
    after = query(conninfo, "SELECT count(*), max(log_id) FROM sys_msg_log")[0]
    assert after[0] == before[0] + c.inserted - c.deleted
    assert after[1] == before[1] + c.inserted
    (recent,) = query(conninfo, "SELECT count(*) FROM sys_msg_log WHERE log_upd > now() - interval '1 hour'")[0]
    # updated rows that were later deleted in the same round are gone; all others carry the new timestamp
    assert c.inserted <= recent <= c.updated + c.inserted


def test_target_migrations_apply_twice_without_change(target):
    first = schema_fingerprint(target)
    assert apply_migrations(target) == []  # nothing pending
    assert schema_fingerprint(target) == first
    tables = query(target, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND rowsecurity")[0][0]
    assert tables == 45
    roles = {r for (r,) in query(target, "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", [list(ROLES)])}
    assert roles == set(ROLES)
    (n_fk,) = query(target, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
                            "AND connamespace = 'public'::regnamespace")[0]
    assert n_fk == sum(len(e.foreign_keys) for e in ENTITIES)
    (n_email,) = query(target, "SELECT count(*) FROM pg_constraint WHERE conname LIKE '%email_format'")[0]
    assert n_email == sum(len(e.email_columns) for e in ENTITIES)
    # no extension needed
    exts = {x for (x,) in query(target, "SELECT extname FROM pg_extension")}
    assert exts <= {"plpgsql"}


def test_sql_legacy_uuid_function_matches_python(target):
    from migration_assets.transforms import legacy_uuid

    rows = query(target, "SELECT migration_control.legacy_uuid('cases', i) FROM generate_series(1, 50) i ORDER BY i")
    assert [r[0] for r in rows] == [legacy_uuid("cases", i) for i in range(1, 51)]
