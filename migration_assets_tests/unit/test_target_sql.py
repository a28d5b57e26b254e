"""The SQL the load runs on the target, built without a database: plan, rejects, deletes, merge
(engine.plan, engine.rejects, engine.deletes, engine.load)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from psycopg import sql

from migration_assets.engine.deletes import deleted_ids_sql, resolve_quarantine_sql, soft_delete_sql, target_rows_of_sql
from migration_assets.engine.load import copy_sql, merge_sql, quarantine_rejects_sql, resolve_loaded_sql, stage_sql
from migration_assets.engine.names import SOFT_DELETED, target_table
from migration_assets.engine.options import LoadOptions
from migration_assets.engine.plan import (READ_ALL, ReadPlan, accounted_sql, retry_rows_sql, save_watermark_sql,
                                          target_summary_sql)
from migration_assets.engine.rejects import (duplicates_sql, first_missing_parent_sql, orphan_detail, orphan_sql,
                                             unique_swap_sql, upsert_quarantine_sql)
from migration_assets.engine.source_sql import hash_salt
from migration_assets.engine.stream import SourceState
from migration_assets.engine.names import legacy_uuid_sql
from migration_assets.registry import BY_NAME, ENTITIES

from .conftest import render, with_fks

QUARANTINE = '"migration_control"."quarantine"'
SELECT_ONE = sql.SQL("SELECT 1")


@pytest.mark.parametrize("e", ENTITIES, ids=lambda e: e.name)
def test_the_merge_writes_only_rows_whose_content_differs(e):
    text = render(merge_sql(e, "public"))
    assert text.startswith(f'WITH up AS (INSERT INTO "public"."{e.target_table}" AS t')
    assert "ON CONFLICT (id) DO UPDATE SET" in text and "IS DISTINCT FROM" in text
    for c in [*(c.target for c in e.columns), "metadata"]:
        assert f'"{c}" = EXCLUDED."{c}"' in text
    assert '"id" = EXCLUDED."id"' not in text


@pytest.mark.parametrize("e", with_fks(), ids=lambda e: e.name)
def test_the_orphan_search_follows_the_recovery_rules(e):
    on, off = orphan_sql(e, target_table(e, "public"), True, LoadOptions()), orphan_sql(e, target_table(e, "public"), True,
                                                                             LoadOptions(error_recovery=False))
    required = [c for c in e.foreign_keys if c.required]
    optional = [c for c in e.foreign_keys if not c.required]
    assert (on.quarantine is not None) == bool(required) and (on.set_null is not None) == bool(optional)
    assert off.quarantine is not None and off.set_null is None  # without recovery every orphan is quarantined
    text = render(on.search)
    for i, c in enumerate(e.foreign_keys):
        assert f'LEFT JOIN "public"."{c.parent}" AS "p{i}"' in text
    for c in required:
        assert orphan_detail(c) in render(on.quarantine)
    if optional:
        assert "orphan_fk_set_null" in render(on.set_null) and "ctid = ANY(ARRAY(" in render(on.set_null)


@pytest.mark.parametrize("e", [e for e in ENTITIES if e.unique_columns], ids=lambda e: e.name)
def test_duplicates_lose_to_the_lowest_legacy_id_and_target_rows_compete_on_the_merge_path(e):
    for c in e.unique_columns:
        staged = render(duplicates_sql(e, c, target_table(e, "public"), True, "public"))
        fast = render(duplicates_sql(e, c, target_table(e, "public"), False, "public"))
        for text in (staged, fast):
            assert "row_number() OVER (PARTITION BY v ORDER BY legacy_id)" in text and "'DUPLICATE_KEY'" in text
        assert "UNION ALL SELECT NULL::tid" in staged and "UNION ALL SELECT NULL::tid" not in fast
    swaps = [render(s) for s in unique_swap_sql(e, "public")]
    assert len(swaps) == len(e.unique_columns)
    assert all("s.{0} IS DISTINCT FROM t.{0}".format(f'"{c.target}"') in s for s, c in zip(swaps, e.unique_columns))


def test_the_first_missing_parent_is_named_only_where_two_references_can_be_missing():
    for e in ENTITIES:
        blocking = [c for c in e.foreign_keys if c.required]
        statement = first_missing_parent_sql(e, LoadOptions())
        assert (statement is None) == (len(blocking) < 2), e.name
        if statement is not None:
            text = render(statement)
            assert text.index(orphan_detail(blocking[0])) < text.index(orphan_detail(blocking[1]))


def test_quarantine_writes_reopen_a_row_seen_again():
    text = render(quarantine_rejects_sql(BY_NAME["roles"], "run-1"))
    assert text.startswith(f"INSERT INTO {QUARANTINE} AS q") and "ON CONFLICT (entity, legacy_id) DO UPDATE" in text
    assert "resolved = false" in text and "'run-1'::text AS run_id" in text
    assert render(upsert_quarantine_sql(SELECT_ONE)).count("INSERT INTO") == 1


def test_resolution_is_scoped_to_the_rows_this_load_wrote():
    e = BY_NAME["roles"]
    staged, fast = render(resolve_loaded_sql(e, "r", True, "public")), render(resolve_loaded_sql(e, "r", False, "public"))
    assert "IN (SELECT \"_legacy_id\" FROM _stage)" in staged and "_stage" not in fast
    for text in (staged, fast):
        assert "resolution = 'loaded'" in text and render(legacy_uuid_sql("roles", sql.SQL("q.legacy_id"))) in text
    gone = render(resolve_quarantine_sql(e, "r", SOFT_DELETED, SELECT_ONE))
    assert f"resolution = '{SOFT_DELETED}'" in gone


@pytest.mark.parametrize("policy", ["hard", "soft"])
def test_deleted_rows_are_found_among_present_rows_under_the_policy(policy):
    e = BY_NAME["patients"]
    for expand in (True, False):
        text = render(deleted_ids_sql(e, LoadOptions(delete_policy=policy), expand=expand))
        assert ("'deleted_at_source'" in text) == (policy == "soft")
        assert ("generate_series(lo, hi)" in text) == expand
    assert "jsonb_build_object('deleted_at_source'" in render(soft_delete_sql(e, "public", "r", "_evict_deleted"))
    assert 'CREATE TEMP TABLE "_x" ON COMMIT DROP' in render(target_rows_of_sql(e, "public", "_x", SELECT_ONE))


def test_the_plan_sql_counts_target_and_open_quarantine_per_bucket():
    e = BY_NAME["tasks"]
    text = render(target_summary_sql(e, "public"))
    assert "/ 1024" in text and QUARANTINE in text and "NOT resolved" in text
    soft, hard = render(accounted_sql(e, LoadOptions(delete_policy="soft"))), render(accounted_sql(e, LoadOptions()))
    assert "deleted_at_source" in soft and "deleted_at_source" not in hard
    retry = render(retry_rows_sql(e, LoadOptions()))
    assert "'DUPLICATE_KEY'" in retry and "'ORPHAN_FK'" in retry and "'tasks'" in retry


def test_the_watermark_is_one_parameterised_upsert():
    state = SourceState(rows=3, min_id=1, max_id=9, change_hwm="2026-12-01 00:00:00")
    statement, params = save_watermark_sql(BY_NAME["roles"], state, LoadOptions(run_id="r"), {2: (1, 5), 1: (2, 7)})
    assert render(statement).count("%s") == len(params) == 12
    version = hash_salt(BY_NAME["roles"], LoadOptions())
    assert params[0] == "roles" and params[7:] == [[1, 2], [2, 1], ["7", "5"], version, None]
    _, params = save_watermark_sql(BY_NAME["roles"], state, LoadOptions(), None, "16/B374D848")
    assert params[7:] == [None, None, None, version, "16/B374D848"]
    # the version is the source hash's salt: a changed transform changes both
    changed = replace(BY_NAME["roles"], description="renamed")
    assert save_watermark_sql(changed, state, LoadOptions(), None)[1][10] != version


def test_a_plan_is_a_value():
    assert READ_ALL == ReadPlan() and READ_ALL.where is None and not READ_ALL.read_nothing
    with pytest.raises(AttributeError):
        READ_ALL.note = "changed"  # frozen: handed along, never written into


@pytest.mark.parametrize("e", ENTITIES[:3], ids=lambda e: e.name)
def test_staging_and_copy_statements(e):
    create, add = (render(s) for s in stage_sql(e, "public"))
    # exactly the registry's columns: a user's identity, generated or defaulted column never reaches it
    cols = ", ".join(f'"{c}"' for c in ["id"] + [c.target for c in e.columns] + ["metadata"])
    assert create == f'CREATE TEMP TABLE _stage ON COMMIT DROP AS SELECT {cols} FROM "public"."{e.target_table}" ' \
                     'WITH NO DATA'
    assert add == 'ALTER TABLE _stage ADD COLUMN "_legacy_id" bigint'
    assert render(copy_sql(target_table(e, "public"), ["id", "metadata"], freeze=True)).endswith("(FORMAT binary, FREEZE)")
    assert render(copy_sql(target_table(e, "public"), ["id"], freeze=False)).endswith("(FORMAT binary)")


def test_the_fast_path_drops_dependents_first_and_rebuilds_keys_first():
    from migration_assets.engine.copy import drop_constraints_sql, restore_constraints_sql

    saved = [("public.tasks", "tasks_pkey", "PRIMARY KEY (id)", "p"),
             ("public.comments", "comments_task_id_fkey", "FOREIGN KEY (task_id) REFERENCES tasks(id)", "f"),
             ("public.tasks", "tasks_case_idx", "CREATE INDEX tasks_case_idx ON public.tasks USING btree (case_id)", "i"),
             ("public.tasks", "tasks_code_key", "UNIQUE (code)", "u")]
    dropped = [render(s) for s in drop_constraints_sql(saved, "public")]
    assert dropped == ['ALTER TABLE public.comments DROP CONSTRAINT "comments_task_id_fkey"',
                       'DROP INDEX "public"."tasks_case_idx"', 'ALTER TABLE public.tasks DROP CONSTRAINT "tasks_code_key"',
                       'ALTER TABLE public.tasks DROP CONSTRAINT "tasks_pkey"']
    rebuilt = [render(s) for s in restore_constraints_sql(saved)]
    assert rebuilt[0] == 'ALTER TABLE public.tasks ADD CONSTRAINT "tasks_pkey" PRIMARY KEY (id)'
    assert rebuilt[-1].startswith('ALTER TABLE public.comments ADD CONSTRAINT "comments_task_id_fkey" FOREIGN KEY')


def test_an_eviction_cascades_with_the_fresh_migration_detail_and_deletes_by_id():
    from migration_assets.engine.deletes import cascade_step_sql, delete_ids_sql

    child = next(e for e in ENTITIES if any(c.required for c in e.foreign_keys))
    c = next(c for c in child.foreign_keys if c.required)
    text = render(cascade_step_sql(child, "public", c, 7, SELECT_ONE))
    assert text.startswith("INSERT INTO _cascade SELECT 7, " + f"'{child.name}'") and orphan_detail(c) in text
    assert f'WHERE ch."{c.target}" = ANY(ARRAY(SELECT 1)) ON CONFLICT DO NOTHING' in text
    assert render(delete_ids_sql(child, "public", SELECT_ONE)) == \
        f'DELETE FROM "public"."{child.target_table}" WHERE id = ANY(ARRAY(SELECT 1))'


def test_slice_ranges_cover_the_ids_once_and_the_builders_quote_names():
    from migration_assets.engine.slices import Slice, slice_bounds_sql, slice_ranges, slice_where_sql
    from migration_assets.engine.stream import SourceState

    state = SourceState(rows=100, min_id=-5, max_id=2**31 - 1, change_hwm=None)
    ranges = slice_ranges(state, [10, 10, 500, None, 2**31 - 1, -9])
    assert ranges == [(-5, 10), (11, 500), (501, 2**31 - 1)]
    assert slice_ranges(SourceState(1, 7, 7, None), []) == [(7, 7)]
    hostile = replace(ENTITIES[0], legacy_table='we"ird', legacy_pk="i d")
    assert render(slice_bounds_sql(hostile)) == \
        'SELECT percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY "i d") FROM "we""ird"'
    assert render(slice_where_sql(hostile, Slice(1, -5, 2**31 - 1))) == 'l."i d" BETWEEN  -5 AND 2147483647'  # psycopg spaces a negative literal


def test_the_merge_the_quarantine_upsert_and_the_watermark_of_one_entity_whole():
    """The three statements every load runs, for roles, whole: the merge writes only a row whose
    content differs and counts inserts apart from updates; a quarantined row seen again is
    reopened with its latest reason; the watermark is one parameterised upsert (the change mark
    kept as the legacy clock's naive text, stored as if UTC)."""
    e = BY_NAME["roles"]
    cols = ['"name"', '"description"', '"is_system"', '"updated_at"', '"metadata"']
    assert render(merge_sql(e, "public")) == (
        'WITH up AS (INSERT INTO "public"."roles" AS t ("id", ' + ", ".join(cols) + ') SELECT "id", '
        + ", ".join(cols) + " FROM _stage ON CONFLICT (id) DO UPDATE SET "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in cols) + " WHERE ("
        + ", ".join(f"t.{c}" for c in cols) + ") IS DISTINCT FROM (" + ", ".join(f"EXCLUDED.{c}" for c in cols)
        + ") RETURNING (xmax = 0) AS inserted) SELECT count(*) FILTER (WHERE inserted), "
        "count(*) FILTER (WHERE NOT inserted) FROM up")
    assert render(quarantine_rejects_sql(e, "run-1")) == (
        f"INSERT INTO {QUARANTINE} AS q (entity, legacy_id, reason, detail, raw, source_hash, first_run_id, "
        "last_run_id) SELECT entity, legacy_id, reason, detail, raw, source_hash, run_id, run_id FROM (SELECT "
        "DISTINCT ON (legacy_id) 'roles'::text AS entity, legacy_id, reason, detail, raw, source_hash, "
        "'run-1'::text AS run_id FROM _quarantine ORDER BY legacy_id) AS r ON CONFLICT (entity, legacy_id) DO "
        "UPDATE SET reason = EXCLUDED.reason, detail = EXCLUDED.detail, raw = EXCLUDED.raw, source_hash = "
        "EXCLUDED.source_hash, last_run_id = EXCLUDED.last_run_id, last_seen_at = now(), resolved = false, "
        "resolved_at = NULL, resolved_run_id = NULL, resolution = NULL WHERE q.resolved OR (q.reason, q.detail, "
        "q.raw, q.source_hash) IS DISTINCT FROM (EXCLUDED.reason, EXCLUDED.detail, EXCLUDED.raw, "
        "EXCLUDED.source_hash)")
    state = SourceState(rows=3, min_id=1, max_id=9, change_hwm="2026-12-01 00:00:00")
    statement, params = save_watermark_sql(e, state, LoadOptions(run_id="r"), {2: (1, 5), 1: (2, 7)})
    kept = ("change_hwm", "min_legacy_id", "max_legacy_id", "legacy_rows", "run_id", "mode")
    summary = ("summary_buckets", "summary_rows", "summary_hashes", "transform_version", "logical_lsn")
    assert render(statement) == (
        'INSERT INTO "migration_control"."watermarks" AS w (entity, change_hwm, min_legacy_id, max_legacy_id, '
        "legacy_rows, run_id, mode, updated_at, summary_buckets, summary_rows, summary_hashes, transform_version, "
        "logical_lsn) VALUES (%s, %s::timestamp AT TIME ZONE 'UTC', %s, %s, %s, %s, %s, now(), %s, %s, "
        "%s::numeric[], %s, %s::pg_lsn) ON CONFLICT (entity) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in kept) + ", updated_at = now(), "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in summary))
    assert params == ["roles", "2026-12-01 00:00:00", 1, 9, 3, "r", "full", [1, 2], [2, 1], ["7", "5"],
                      hash_salt(e, LoadOptions()), None]


def test_the_key_expression_is_the_control_functions_body():
    """The loads compute a legacy id's UUID with the expression the control schema's legacy_uuid
    function holds (not inlinable once its search_path is fixed); both spelled the same."""
    from migration_assets.target_schema import MIGRATIONS_DIR

    expression = render(legacy_uuid_sql("roles", sql.SQL("legacy_id")))
    assert expression == ("encode(set_byte(set_byte(decode(md5('migration_assets' || 'roles' || ':' || (legacy_id)::text), "
                          "'hex'), 6, (get_byte(decode(md5('migration_assets' || 'roles' || ':' || (legacy_id)::text), "
                          "'hex'), 6) & 15) | 48), 8, (get_byte(decode(md5('migration_assets' || 'roles' || ':' || "
                          "(legacy_id)::text), 'hex'), 8) & 63) | 128), 'hex')::uuid")
    body = (MIGRATIONS_DIR / "20261124000005_differential_refresh.sql").read_text().split("$fn$")[1]
    assert " ".join(body.split()).replace("( ", "(").replace("entity", "'roles'").replace(
        "legacy_id::text", "(legacy_id)::text") == \
        "SELECT " + expression

