"""End-to-end: the 45 assets through Dagster on real PostgreSQL, checked against the legacy rows.

The expected target values are computed here in plain Python from the raw legacy rows (an
independent reference implementation of each transform), not by re-running the engine's SQL.
"""

import datetime as dt
import re
from decimal import Decimal

import psycopg
import pyarrow as pa
import pytest
from dagster import DagsterInstance, materialize
from psycopg import sql

from migration_assets.engine.commit import migrate_entity
from migration_assets.engine.options import LoadOptions
from migration_assets.registry import ENTITIES, entity, topological_order
from migration_assets.transforms import EMAIL_REGEX, Kind, legacy_uuid

from .conftest import query

ISO = re.compile(r"^(19|20)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")


def expected_value(c, v):
    """Reference transform of one legacy value; raises ValueError where the row must be quarantined."""
    k = c.kind
    if v is None:
        if c.required and c.default is not None:
            return {"false": False, "'unknown'": "unknown"}[c.default]
        if c.required:
            raise ValueError("required NULL")
        return None
    if k is Kind.FK:
        return legacy_uuid(c.parent, v)
    if k in (Kind.TEXT, Kind.LONG_TEXT):
        return v.strip() or None
    if k is Kind.EMAIL:
        e = v.strip().lower()
        if not re.match(EMAIL_REGEX, e):
            raise ValueError("bad email")  # recovered rows are checked separately
        return e
    if k in (Kind.INTEGER, Kind.BIGINT):
        return v
    if k is Kind.YN:
        return {"Y": True, "N": False}[v.upper()]
    if k in (Kind.CODE_INT, Kind.CODE_CHAR):
        return c.codes[v]
    if k is Kind.CENTS:
        return (Decimal(v) / 100).quantize(Decimal("0.01"))
    if k is Kind.EPOCH:
        if not 0 <= v <= 4102444800:
            raise ValueError("epoch out of range")
        return dt.datetime.fromtimestamp(v, dt.timezone.utc)
    if k is Kind.TEXT_DATE:
        if not ISO.match(v.strip()):
            raise ValueError("bad date")
        return dt.date.fromisoformat(v.strip())  # raises for 2021-02-30
    if k is Kind.TIMESTAMP:
        return v.replace(tzinfo=dt.timezone.utc)
    raise AssertionError(k)


def run_all(instance=None):
    from migration_assets.definitions import build_resources, table_assets

    return materialize(table_assets(), resources=build_resources(), instance=instance or DagsterInstance.ephemeral(),
                       raise_on_error=True)


@pytest.fixture()
def migrated(dagster_env, legacy, target):
    result = run_all()
    assert result.success
    return legacy, target, result


@pytest.fixture()
def migrated_private(private_migration):
    """Like ``migrated`` but on a legacy database of its own: for tests that change the source."""
    return private_migration(scale=0.01, seed=7)


def test_every_legacy_row_is_in_the_target_or_in_quarantine(migrated):
    legacy, target, _ = migrated
    for e in ENTITIES:
        legacy_ids = {r[0] for r in query(legacy, sql.SQL("SELECT {} FROM {}").format(
            sql.Identifier(e.legacy_pk), sql.Identifier(e.legacy_table)))}
        loaded = {r[0] for r in query(target, sql.SQL("SELECT (metadata->>'legacy_id')::bigint FROM {}").format(
            sql.Identifier("public", e.target_table)))}
        quarantined = {r[0] for r in query(target, "SELECT legacy_id FROM migration_control.quarantine "
                                                   "WHERE entity = %s AND NOT resolved", [e.name])}
        assert not loaded & quarantined, e.name
        assert loaded | quarantined == legacy_ids, e.name
        assert len(loaded) > 0.85 * len(legacy_ids), e.name


def test_values_keys_and_foreign_keys_match_the_legacy_rows_column_by_column(migrated):
    legacy, target, _ = migrated
    checked = 0
    for name in ("profiles", "patients", "cases", "orders", "tasks", "payments", "system_messages", "files"):
        e = entity(name)
        legacy_cols = [e.legacy_pk] + [c.legacy_name for c in e.columns]
        rows = query(legacy, sql.SQL("SELECT {} FROM {} ORDER BY 1").format(
            sql.SQL(", ").join(map(sql.Identifier, legacy_cols)), sql.Identifier(e.legacy_table)))
        with psycopg.connect(target) as conn:
            conn.execute("SET TimeZone = 'UTC'")
            got = {r[0]: r for r in conn.execute(sql.SQL("SELECT id, {}, metadata FROM {}").format(
                sql.SQL(", ").join(sql.Identifier(c.target) for c in e.columns),
                sql.Identifier("public", e.target_table))).fetchall()}
        for row in rows:
            key = legacy_uuid(e.name, row[0])
            try:
                want = [expected_value(c, v) for c, v in zip(e.columns, row[1:])]
            except (ValueError, KeyError):
                continue  # quarantined or recovered: covered by the accounting and recovery tests
            if key not in got:
                continue  # orphan or duplicate: quarantined, covered by the accounting test
            have = got[key]
            meta = have[-1]
            assert meta["legacy_id"] == row[0] and set(meta) <= {"legacy_id", "source_hash", "recovered"}
            recovered = meta.get("recovered", {})
            for c, w, h in zip(e.columns, want, have[1:-1]):
                if recovered.get(c.target, {}).get("rule") == "orphan_fk_set_null":
                    assert h is None and c.kind is Kind.FK and not c.required
                    continue
                assert h == w, f"{e.name} legacy id {row[0]} column {c.target}: {h!r} != {w!r}"
            checked += 1
    assert checked > 20_000


def test_foreign_keys_hold_and_reference_the_right_parent(migrated):
    legacy, target, _ = migrated
    # cases.patient_id must be the UUID of the legacy pt_id
    pairs = dict(query(legacy, "SELECT case_id, pt_id FROM case_hdr"))
    for case_uuid, patient_uuid, meta in query(target, "SELECT id, patient_id, metadata FROM public.cases"):
        assert patient_uuid == legacy_uuid("patients", pairs[meta["legacy_id"]])
    (violations,) = query(target, """SELECT count(*) FROM public.tasks t
        WHERE NOT EXISTS (SELECT 1 FROM public.cases c WHERE c.id = t.case_id)""")[0]
    assert violations == 0


def test_rerun_changes_nothing(migrated):
    legacy, target, _ = migrated
    before = query(target, "SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) FROM public.tasks t")[0][0]
    # row versions: a rewrite with the same values still makes a new one
    quarantine = query(target, "SELECT entity, legacy_id, xmin::text FROM migration_control.quarantine ORDER BY 1, 2")
    assert any(r == "DUPLICATE_KEY" for (r,) in query(target, "SELECT reason FROM migration_control.quarantine"))
    result = run_all()
    assert result.success
    run_id = result.run_id
    rows = query(target, "SELECT entity, status, inserted, updated FROM migration_control.migration_runs "
                         "WHERE run_id = %s", [run_id])
    assert len(rows) == 45
    for name, status, inserted, updated in rows:
        assert (inserted, updated) == (0, 0), name
        assert status in ("ALREADY_MIGRATED", "SKIPPED"), name
    assert query(target, "SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) FROM public.tasks t")[0][0] == before
    (dups,) = query(target, "SELECT count(*) - count(DISTINCT (entity, legacy_id)) FROM migration_control.quarantine")[0]
    assert dups == 0
    assert query(target, "SELECT entity, legacy_id, xmin::text FROM migration_control.quarantine ORDER BY 1, 2") == quarantine


def test_materialization_metadata_and_audit_trail(migrated):
    _, target, result = migrated
    mats = result.asset_materializations_for_node("system_messages")
    md = mats[0].metadata
    for key in ("dagster/row_count", "inserted", "updated", "unchanged", "quarantined", "rows_per_second",
                "duration_s", "peak_rss_mb"):
        assert key in md, key
    audit = query(target, "SELECT entity, status, records_read, inserted, quarantined FROM "
                          "migration_control.migration_runs WHERE run_id = %s", [result.run_id])
    assert {a[0] for a in audit} == {e.name for e in ENTITIES}
    for name, status, read, inserted, quarantined in audit:
        assert status == "COMPLETED"
        assert read == inserted + quarantined, name


@pytest.mark.parametrize("fast_path", [True, False])
def test_failure_mid_stream_leaves_the_table_unchanged_then_the_next_run_completes(legacy, target, fast_path):
    opts = LoadOptions(batch_size=500, fast_path=fast_path, run_id="t")
    for e in topological_order():
        if e.name == "tasks":
            break
        migrate_entity(legacy, target, e.name, opts)
    if not fast_path:  # give the merge path an existing, partial table: the first 1000 rows
        migrate_entity(legacy, target, "tasks", LoadOptions(batch_size=500, run_id="t"))
        with psycopg.connect(target) as conn:
            conn.execute("DELETE FROM public.tasks WHERE (metadata->>'legacy_id')::bigint > 1000")
            conn.commit()
    snapshot = query(target, "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t.id)) FROM public.tasks t")[0]
    constraints = query(target, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.tasks'::regclass")[0]
    with pytest.raises(RuntimeError, match="injected failure"):
        migrate_entity(legacy, target, "tasks", opts, fail_after_batches=3)
    assert query(target, "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t.id)) FROM public.tasks t")[0] \
        == snapshot
    assert query(target, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.tasks'::regclass")[0] \
        == constraints
    result = migrate_entity(legacy, target, "tasks", opts)
    (legacy_n,) = query(legacy, "SELECT count(*) FROM wf_task")[0]
    (loaded,) = query(target, "SELECT count(*) FROM public.tasks")[0]
    assert loaded + result.quarantined == legacy_n


def test_rerun_reads_only_changed_buckets_and_applies_the_change(migrated_private):
    legacy, target, _ = migrated_private
    with psycopg.connect(legacy) as conn:
        conn.execute("UPDATE wf_task SET task_title = 'Changed at the source' WHERE task_id = 42")
        conn.commit()
    result = migrate_entity(legacy, target, "tasks", LoadOptions(run_id="changed"))
    assert (result.inserted, result.updated) == (0, 1)
    assert "1 of" in result.load_path
    (title,) = query(target, "SELECT title FROM public.tasks WHERE id = %s", [legacy_uuid("tasks", 42)])[0]
    assert title == "Changed at the source"
    (n,) = query(legacy, "SELECT count(*) FROM wf_task")[0]
    assert result.records_read == n  # verified + re-read rows account for the whole table


def test_rerun_compares_with_the_last_loads_summary_and_still_repairs_a_row_removed_behind_its_back(
        migrated_private):
    legacy, target, _ = migrated_private
    (n,) = query(legacy, "SELECT count(*) FROM wf_task")[0]
    (buckets,) = query(target, "SELECT cardinality(summary_buckets) FROM migration_control.watermarks "
                               "WHERE entity = 'tasks'")[0]
    assert buckets and buckets >= 1
    quiet = migrate_entity(legacy, target, "tasks", LoadOptions(run_id="quiet"))
    assert "against the last load's summary" in quiet.load_path
    assert (quiet.inserted, quiet.updated, quiet.records_read) == (0, 0, n)
    # a target row deleted behind the engine (constraints bypassed): the counts no longer match
    # the stored summary, so the target is summarised itself and the row's bucket is re-read
    with psycopg.connect(target) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM public.tasks WHERE id = %s", [legacy_uuid("tasks", 42)])
        conn.commit()
    repaired = migrate_entity(legacy, target, "tasks", LoadOptions(run_id="repair"))
    assert "against the last load's summary" not in repaired.load_path
    assert (repaired.inserted, repaired.updated) == (1, 0)
    assert repaired.remaining_difference == 0
    assert query(target, "SELECT count(*) FROM public.tasks WHERE id = %s", [legacy_uuid("tasks", 42)])[0][0] == 1
    # a differential load leaves no summary behind; the next full-mode load summarises the target
    migrate_entity(legacy, target, "tasks", LoadOptions(run_id="diff", mode="differential"))
    assert query(target, "SELECT summary_buckets FROM migration_control.watermarks WHERE entity = 'tasks'")[0][0] is None
    again = migrate_entity(legacy, target, "tasks", LoadOptions(run_id="again"))
    assert "against the last load's summary" not in again.load_path
    assert (again.inserted, again.updated) == (0, 0)


def test_fixing_a_quarantined_row_at_the_source_resolves_it(migrated_private):
    legacy, target, _ = migrated_private
    row = query(target, "SELECT legacy_id, reason FROM migration_control.quarantine "
                        "WHERE entity = 'tasks' AND reason = 'INVALID_VALUE' AND NOT resolved LIMIT 1")
    assert row, "the simulator's dirty data should have quarantined a task with a bad date"
    legacy_id = row[0][0]
    with psycopg.connect(legacy) as conn:
        conn.execute("UPDATE wf_task SET due_dt = '2024-05-06' WHERE task_id = %s", [legacy_id])
        (case_id,) = conn.execute("SELECT case_id FROM wf_task WHERE task_id = %s", [legacy_id]).fetchone()
        conn.commit()
    result = migrate_entity(legacy, target, "tasks", LoadOptions(run_id="fix"))
    loaded = query(target, "SELECT due_on FROM public.tasks WHERE id = %s", [legacy_uuid("tasks", legacy_id)])
    status = query(target, "SELECT resolved, resolved_run_id FROM migration_control.quarantine "
                           "WHERE entity = 'tasks' AND legacy_id = %s", [legacy_id])[0]
    if loaded:  # its case exists in the target: the row loads now and the quarantine row is resolved
        assert loaded[0][0] == dt.date(2024, 5, 6)
        assert status == (True, "fix") and result.resolved >= 1
    else:  # its case was itself quarantined: still quarantined, now for the orphan
        reason = query(target, "SELECT reason FROM migration_control.quarantine WHERE entity = 'tasks' "
                               "AND legacy_id = %s", [legacy_id])[0][0]
        assert reason == "ORPHAN_FK" and not status[0], case_id


def test_changed_transform_definition_forces_a_full_reread(migrated, monkeypatch):
    legacy, target, _ = migrated
    from migration_assets.engine import source_sql

    monkeypatch.setattr(source_sql, "ENGINE_VERSION", "test-bump")
    result = migrate_entity(legacy, target, "roles", LoadOptions(run_id="bump"))
    assert result.load_path.startswith("merge (1 of 1 id buckets changed")
    assert result.updated == result.existing  # the stored source hash changes on every row


def test_load_input_streams_the_target_table_in_bounded_batches(migrated):
    from dagster import AssetKey, build_input_context

    from migration_assets.io_manager import PostgresArrowIOManager
    from migration_assets.resources import MigrationSettings, PostgresResource

    _, target, _ = migrated
    manager = PostgresArrowIOManager(target=PostgresResource(url=target), settings=MigrationSettings(batch_size=1000))
    reader = manager.load_input(build_input_context(asset_key=AssetKey("tasks")))
    sizes = [batch.num_rows for batch in reader]
    (n,) = query(target, "SELECT count(*) FROM public.tasks")[0]
    assert sum(sizes) == n and max(sizes) <= 1000 and len(sizes) > 1
    assert reader.schema.field("due_on").type == "date32[day]"


def test_blank_required_text_is_quarantined_not_a_failed_load(migrated_private):
    legacy, target, _ = migrated_private
    with psycopg.connect(legacy) as conn:  # a new legacy row whose required title is blank
        (new_id,) = conn.execute(
            "INSERT INTO wf_task SELECT max(task_id) + 1, 1, NULL, NULL, NULL, '   ', 1, '2024-01-02', "
            "localtimestamp FROM wf_task RETURNING task_id").fetchone()
        conn.commit()
    result = migrate_entity(legacy, target, "tasks", LoadOptions(run_id="blank"))
    (reason, detail) = query(target, "SELECT reason, detail FROM migration_control.quarantine "
                                     "WHERE entity = 'tasks' AND legacy_id = %s AND NOT resolved", [new_id])[0]
    assert reason == "REQUIRED_NULL" and "task_title" in detail
    assert not query(target, "SELECT 1 FROM public.tasks WHERE id = %s", [legacy_uuid("tasks", new_id)])
    assert result.inserted == 0


def test_the_loads_arrow_trim_and_blank_test_agree_with_the_sql_transforms(legacy):
    """The load trims text in Arrow and tests blanks with a cheap prefix test: both must give
    what the SQL transforms (and the content checksum) define, for spaces, tabs and UTF-8."""
    from migration_assets.transforms import Column, blank_sql, trim_text

    values = ["plain", "  both  ", " lead", "trail ", "", " ", "   ", "\ttab\t", " \tmixed\t ", "ünïcödé  ",
              "  日本語 ", None, "in ner", "\u00a0nbsp\u00a0"]
    v = sql.SQL("v")
    with psycopg.connect(legacy) as conn:
        rows = conn.execute(sql.SQL("SELECT {}, {}, nullif(btrim(v), '') FROM unnest(%s::text[]) WITH ORDINALITY "
                                    "AS u(v, i) ORDER BY i").format(
            Column("x", Kind.TEXT).value_sql(v), blank_sql(v)), [values]).fetchall()
        flags = [None, "Y", "y", "N", "n", "x", " ", "1"]
        yn = Column("x", Kind.YN)
        got = conn.execute(sql.SQL(
            "SELECT {}, {}, CASE upper(v) WHEN 'Y' THEN true WHEN 'N' THEN false END, "
            "(v IS NOT NULL AND upper(v) NOT IN ('Y', 'N')) FROM unnest(%s::char(1)[]) WITH ORDINALITY AS u(v, i) "
            "ORDER BY i").format(yn.value_sql(v), yn.invalid_sql(v)), [flags]).fetchall()
    assert [r[0] for r in rows] == [r[2] for r in rows]  # the SQL transform is btrim's answer
    assert trim_text(pa.array(values, pa.string())).to_pylist() == [r[0] for r in rows]
    assert [r[1] for r in rows] == [r[0] is None for r in rows]
    assert [(r[0], r[1]) for r in got] == [(r[2], r[3]) for r in got]


def test_padded_text_and_lower_case_flags_load_as_the_transforms_say(migrated_private):
    legacy, target, _ = migrated_private
    ids = [r[0] for r in query(target, "SELECT (metadata->>'legacy_id')::bigint FROM public.messages "
                                       "ORDER BY 1 LIMIT 3")]
    with psycopg.connect(legacy) as conn:
        conn.execute("UPDATE msg SET subj = '  Padded  subject ', msg_body = 'body ünï  ', read_flag = 'y' "
                     "WHERE msg_id = %s", [ids[0]])
        conn.execute("UPDATE msg SET subj = '\tTabbed', msg_body = ' ', read_flag = 'n' WHERE msg_id = %s", [ids[1]])
        conn.execute("UPDATE msg SET subj = '', read_flag = 'N' WHERE msg_id = %s", [ids[2]])
    migrate_entity(legacy, target, "messages", LoadOptions(run_id="padded"))
    rows = dict((r[0], r[1:]) for r in query(target, "SELECT (metadata->>'legacy_id')::bigint, subject, body, is_read "
                                                       "FROM public.messages WHERE id = ANY(%s)",
                                             [[legacy_uuid("messages", i) for i in ids]]))
    assert rows == {ids[0]: ("Padded  subject", "body ünï", True)}
    held = dict(query(target, "SELECT legacy_id, detail FROM migration_control.quarantine WHERE entity = 'messages' "
                              "AND legacy_id = ANY(%s) AND NOT resolved", [ids[1:]]))
    assert "msg_body" in held[ids[1]] and "subj" in held[ids[2]]


def test_a_loaded_row_that_becomes_invalid_leaves_the_target_and_comes_back_when_fixed(migrated_private):
    """The row is in the target or in quarantine, never both; its children follow (optional
    references set NULL, then restored once the parent loads again)."""
    from migration_assets.engine.checks import foreign_keys_resolve, rows_reconcile

    legacy, target, _ = migrated_private
    task_uuid, task_id = query(target, "SELECT t.id, (t.metadata->>'legacy_id')::bigint FROM public.tasks t "
                                       "WHERE EXISTS (SELECT 1 FROM public.files f WHERE f.task_id = t.id) LIMIT 1")[0]
    files = sorted(r[0] for r in query(target, "SELECT id FROM public.files WHERE task_id = %s", [task_uuid]))
    (title,) = query(legacy, "SELECT task_title FROM wf_task WHERE task_id = %s", [task_id])[0]
    with psycopg.connect(legacy) as conn:
        conn.execute("UPDATE wf_task SET task_title = '  ' WHERE task_id = %s", [task_id])
    migrate_entity(legacy, target, "tasks", LoadOptions(run_id="invalid"))
    assert query(target, "SELECT 1 FROM public.tasks WHERE id = %s", [task_uuid]) == []
    assert query(target, "SELECT reason FROM migration_control.quarantine WHERE entity = 'tasks' "
                         "AND legacy_id = %s AND NOT resolved", [task_id]) == [("REQUIRED_NULL",)]
    assert sorted(r[0] for r in query(target, "SELECT id FROM public.files WHERE task_id IS NULL AND "
                                              "metadata->'recovered'->'task_id'->>'was' = %s", [str(task_uuid)])) == files
    with psycopg.connect(legacy) as src, psycopg.connect(target) as tgt:
        assert rows_reconcile(src, tgt, entity("tasks")).passed
        assert foreign_keys_resolve(tgt, entity("files")).passed
    with psycopg.connect(legacy) as conn:  # fixed at the source
        conn.execute("UPDATE wf_task SET task_title = %s WHERE task_id = %s", [title, task_id])
    migrate_entity(legacy, target, "tasks", LoadOptions(run_id="fixed"))
    migrate_entity(legacy, target, "files", LoadOptions(run_id="fixed"))
    assert query(target, "SELECT count(*) FROM public.tasks WHERE id = %s", [task_uuid]) == [(1,)]
    assert sorted(r[0] for r in query(target, "SELECT id FROM public.files WHERE task_id = %s", [task_uuid])) == files
