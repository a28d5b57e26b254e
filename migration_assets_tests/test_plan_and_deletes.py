"""Differential refresh on real PostgreSQL: watermarks, deletes, the sensor, crashes, live writes.

The reference for "correct" is always a fresh full migration of the (mutated) legacy database
into a second target: after a refresh, every table must equal it row for row (md5 over the rows
ordered by id) and the open quarantine must hold the same (entity, legacy id, reason) rows.
"""

import random
import threading

import psycopg
import pytest
from dagster import DagsterInstance, SkipReason, build_sensor_context, materialize
from psycopg import sql

from migration_assets.assets import MODE_TAG
from migration_assets.engine.checks import rows_reconcile
from migration_assets.engine.commit import migrate_entity
from migration_assets.engine.names import SOFT_DELETED
from migration_assets.engine.options import LoadOptions
from migration_assets.engine.source_sql import gaps_sql
from migration_assets.engine.stream import LegacyStream
from migration_assets.registry import ENTITIES, entity, topological_order
from migration_assets.reports import differential_report
from migration_assets.simulator import mutate
from migration_assets.migrations import apply_migrations

from .conftest import query


def fresh_migration(databases, legacy: str) -> str:
    target = databases.new("fresh")
    apply_migrations(target)
    for e in topological_order():
        migrate_entity(legacy, target, e.name, LoadOptions(run_id="fresh"))
    return target


def table_checksums(conninfo: str) -> dict[str, str]:
    with psycopg.connect(conninfo) as conn:
        return {e.name: conn.execute(sql.SQL("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) "
                                             "FROM {} AS t").format(sql.Identifier("public", e.name))).fetchone()[0]
                for e in ENTITIES}


def open_quarantine(conninfo: str) -> set[tuple[str, int, str]]:
    return set(query(conninfo, "SELECT entity, legacy_id, reason, detail FROM migration_control.quarantine "
                             "WHERE NOT resolved"))


def assert_equal_to_fresh(databases, legacy: str, target: str) -> None:
    fresh = fresh_migration(databases, legacy)
    ours, theirs = table_checksums(target), table_checksums(fresh)
    assert [n for n in ours if ours[n] != theirs[n]] == []
    assert open_quarantine(target) == open_quarantine(fresh)


@pytest.fixture(autouse=True)
def wide_budget(monkeypatch):
    """The cascades these tests drive can quarantine most of a small table: the quarantine budget
    (test_checks_only.py) is opened wide for this module's runs only, it is not what they test."""
    monkeypatch.setenv("QUARANTINE_WARN_PERCENT", "100")
    monkeypatch.setenv("QUARANTINE_MAX_PERCENT", "100")


def refresh(mode: str = "differential", selection=None):
    """A refresh through Dagster (under the module's wide budget)."""
    from migration_assets.definitions import build_resources, table_assets

    result = materialize(table_assets(), resources=build_resources(), instance=DagsterInstance.ephemeral(),
                         tags={MODE_TAG: mode}, selection=selection)
    assert result.success
    return result


def audit(target: str, run_id: str) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in query(target, "SELECT entity, mode, records_read, inserted, updated, deleted, "
                                               "(details->>'remaining_difference')::bigint "
                                               "FROM migration_control.migration_runs WHERE run_id = %s", [run_id])}


def test_gaps_are_exactly_the_missing_ids(databases):
    """The search for deleted rows against a brute-force answer, on random id sets and bounds."""
    e = entity("offices")
    conninfo = databases.new("gaps")
    rnd = random.Random(5)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} ({} bigint PRIMARY KEY, {} timestamp)").format(
            sql.Identifier(e.legacy_table), sql.Identifier(e.legacy_pk), sql.Identifier(e.legacy_change_column)))
        for _ in range(25):
            conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(e.legacy_table)))
            ids = sorted(rnd.sample(range(-200, 3000), rnd.randint(0, 1500)))
            conn.execute(sql.SQL("INSERT INTO {} ({}) SELECT unnest(%s::bigint[])").format(
                sql.Identifier(e.legacy_table), sql.Identifier(e.legacy_pk)), [ids])
            lower, upper = rnd.randint(-300, 500), rnd.randint(500, 3200)
            stream = LegacyStream(conninfo, e, LoadOptions())
            found = set()
            for lo, hi in stream.query(*gaps_sql(e, lower, upper)):
                found |= set(range(lo, hi + 1))
            stream.close()
            assert found == set(range(lower, upper + 1)) - set(ids)


def test_mutate_refresh_equals_a_fresh_migration_including_deletes(private_migration, databases):
    legacy, target, _ = private_migration(scale=0.01, seed=11)
    counts = mutate(legacy, fraction=0.05, round_no=1, seed=11, log=lambda *_: None)
    assert sum(c.deleted for c in counts.values()) > 0
    result = refresh("differential")
    rows = audit(target, result.run_id)
    # a table is counted once, after its merge, and the rows it held when its load began are
    # derived from that: they must add up to what it holds now (a parent's cascade runs before
    # the child's load, and a child's load never removes parent rows)
    after = {e.name: query(target, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", e.name)))[0][0]
             for e in ENTITIES}
    assert dict(query(target, "SELECT entity, existing_records + inserted - deleted - (details->>'evicted')::bigint "
                              "FROM migration_control.migration_runs WHERE run_id = %s", [result.run_id])) == after
    # the catalog's row count is the table's, deletes and evictions subtracted
    assert {e.name: result.asset_materializations_for_node(e.name)[0].metadata["dagster/row_count"].value
            for e in ENTITIES} == after
    assert {r[0] for r in rows.values()} == {"differential"}
    assert sum(r[4] for r in rows.values()) > 0  # deletes applied
    assert {n: r[5] for n, r in rows.items() if r[5]} == {}  # nothing left over
    # a differential read only the changes: far fewer rows than the tables hold
    legacy_rows = sum(query(legacy, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(e.legacy_table)))[0][0]
                      for e in ENTITIES)
    assert sum(r[1] for r in rows.values()) < 0.3 * legacy_rows
    assert_equal_to_fresh(databases, legacy, target)
    # a second refresh on the quiet source changes nothing
    rows = audit(target, refresh("differential").run_id)
    assert sum(r[2] + r[3] + r[4] for r in rows.values()) == 0


def test_a_delete_reaching_a_row_by_two_paths_removes_children_before_parents(private_migration, databases):
    """A profile is deleted whose cascade reaches an order_files row twice: through a file the
    profile uploaded (found early in the walk) and through an order of the profile's doctor
    (found later). The rows must still be deleted children first."""
    legacy, target, _ = private_migration(scale=0.01, seed=17)
    file_lid, profile_lid = query(target, """
        SELECT (f.metadata->>'legacy_id')::bigint, (p.metadata->>'legacy_id')::bigint
        FROM public.order_files x JOIN public.orders o ON o.id = x.order_id
        JOIN public.doctor_offices d ON d.id = o.doctor_office_id JOIN public.doctors dr ON dr.id = d.doctor_id
        JOIN public.profiles p ON p.id = dr.profile_id JOIN public.files f ON f.id = x.file_id
        ORDER BY x.id LIMIT 1""")[0]
    files, profiles = entity("files"), entity("profiles")
    uploaded_by = next(c.legacy_name for c in files.foreign_keys if c.target == "uploaded_by")
    with psycopg.connect(legacy) as conn:  # the doctor's own profile uploaded the order's file
        conn.execute(sql.SQL("UPDATE {t} SET {u} = %s, {chg} = now() WHERE {pk} = %s").format(
            t=sql.Identifier(files.legacy_table), u=sql.Identifier(uploaded_by),
            chg=sql.Identifier(files.legacy_change_column), pk=sql.Identifier(files.legacy_pk)),
            [profile_lid, file_lid])
    refresh("differential")
    with psycopg.connect(legacy) as conn:
        conn.execute(sql.SQL("DELETE FROM {t} WHERE {pk} = %s").format(
            t=sql.Identifier(profiles.legacy_table), pk=sql.Identifier(profiles.legacy_pk)), [profile_lid])
    rows = audit(target, refresh("differential").run_id)
    assert rows["profiles"][4] == 1
    assert_equal_to_fresh(databases, legacy, target)


def test_full_mode_applies_deletes_too(private_migration, databases):
    legacy, target, _ = private_migration(scale=0.01, seed=12)
    mutate(legacy, fraction=0.03, round_no=1, seed=12, log=lambda *_: None)
    rows = audit(target, refresh("full").run_id)
    assert sum(r[4] for r in rows.values()) > 0
    assert_equal_to_fresh(databases, legacy, target)


def test_writes_during_a_differential_run_then_one_quiet_refresh_reconciles(private_migration, databases):
    legacy, target, _ = private_migration(scale=0.01, seed=13)
    mutate(legacy, fraction=0.03, round_no=1, seed=13, log=lambda *_: None)
    stop = threading.Event()
    rounds = []

    def writer():  # another connection keeps writing (updates, inserts, deletes) during the run
        n = 2
        while not stop.is_set() and n < 40:
            mutate(legacy, fraction=0.002, round_no=n, seed=13, log=lambda *_: None)
            rounds.append(n)
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        refresh("differential")
    finally:
        stop.set()
        thread.join()
    assert rounds, "the writer never committed during the run"
    rows = audit(target, refresh("differential").run_id)
    assert {n: r[5] for n, r in rows.items() if r[5]} == {}
    assert_equal_to_fresh(databases, legacy, target)
    text, remaining = differential_report(legacy, target)
    assert remaining == 0 and "**Remaining difference: 0 rows**" in text
    line = next(x for x in text.splitlines() if x.startswith("| 1 | offices |"))
    legacy_rows = query(legacy, sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(entity("offices").legacy_table)))[0][0]
    target_rows = query(target, "SELECT count(*) FROM public.offices")[0][0]
    open_rows = query(target, "SELECT count(*) FROM migration_control.quarantine "
                              "WHERE entity = 'offices' AND NOT resolved")[0][0]
    assert legacy_rows == target_rows + open_rows
    assert line.endswith(f"| {legacy_rows:,} | {target_rows:,} | {open_rows:,} | 0 |")


def test_an_orphan_loads_when_its_parent_becomes_loadable_at_the_source(private_migration, databases):
    # the orphan's own legacy row never changes: only the retry pass can bring it back
    legacy, target, _ = private_migration(scale=0.01, seed=23)
    files, case_files = entity("files"), entity("case_files")
    lid, parent_id = query(target, "SELECT legacy_id, (raw->>'doc_id')::bigint FROM migration_control.quarantine "
                                   "WHERE entity = 'case_files' AND reason = 'ORPHAN_FK' AND NOT resolved "
                                   "AND detail = 'file_id references a missing files row' ORDER BY 1 LIMIT 1")[0]
    (template,) = query(target, "SELECT min((metadata->>'legacy_id')::bigint) FROM public.files")[0]
    with psycopg.connect(legacy) as conn:  # the parent becomes a copy of a loadable file, under its id
        conn.execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(
            sql.Identifier(files.legacy_table), sql.Identifier(files.legacy_pk)), [parent_id])
        conn.execute(sql.SQL(
            "INSERT INTO {t} SELECT (jsonb_populate_record(NULL::{t}, to_jsonb(d) || "
            "jsonb_build_object({pk}, %s::bigint, {ch}, now()::timestamp))).* FROM {t} AS d WHERE {pk_id} = %s").format(
            t=sql.Identifier(files.legacy_table), pk=sql.Literal(files.legacy_pk),
            ch=sql.Literal(files.legacy_change_column), pk_id=sql.Identifier(files.legacy_pk)), [parent_id, template])
    refresh("differential")
    assert query(target, "SELECT count(*) FROM public.case_files WHERE (metadata->>'legacy_id')::bigint = %s",
                 [lid])[0][0] == 1
    assert query(target, "SELECT resolved FROM migration_control.quarantine WHERE entity = %s AND legacy_id = %s",
                 [case_files.name, lid])[0][0] is True
    assert_equal_to_fresh(databases, legacy, target)


def test_crash_in_the_middle_of_a_differential_run_then_rerun(private_migration, databases):
    legacy, target, _ = private_migration(scale=0.01, seed=14)
    mutate(legacy, fraction=0.05, round_no=1, seed=14, log=lambda *_: None)
    before = table_checksums(target)
    watermarks = query(target, "SELECT * FROM migration_control.watermarks ORDER BY entity")
    opts = LoadOptions(run_id="crash", mode="differential", batch_size=50)
    with pytest.raises(RuntimeError, match="injected failure"):
        migrate_entity(legacy, target, "tasks", opts, fail_after_batches=1)
    assert table_checksums(target) == before  # nothing half-applied, cascades included
    assert query(target, "SELECT * FROM migration_control.watermarks ORDER BY entity") == watermarks
    refresh("differential")
    assert_equal_to_fresh(databases, legacy, target)


def test_soft_delete_policy_keeps_the_row_and_marks_it(private_migration, monkeypatch):
    legacy, target, _ = private_migration(scale=0.01, seed=15)
    e = entity("offices")
    gone = query(legacy, sql.SQL("SELECT min({pk}) FROM {t}").format(
        pk=sql.Identifier(e.legacy_pk), t=sql.Identifier(e.legacy_table)))[0][0]
    with psycopg.connect(legacy) as conn:
        conn.execute(sql.SQL("DELETE FROM {t} WHERE {pk} = %s").format(
            t=sql.Identifier(e.legacy_table), pk=sql.Identifier(e.legacy_pk)), [gone])
    children_before = table_checksums(target)
    monkeypatch.setenv("DELETE_POLICY", "soft")
    rows = audit(target, refresh("differential", selection=["offices"]).run_id)
    assert rows["offices"][4] == 1 and rows["offices"][5] == 0
    marked = query(target, sql.SQL("SELECT (metadata->>'legacy_id')::bigint FROM public.offices WHERE metadata ? {}")
                   .format(sql.Literal(SOFT_DELETED)))
    assert marked == [(gone,)]
    after = table_checksums(target)
    assert [n for n in after if after[n] != children_before[n]] == ["offices"]
    with psycopg.connect(legacy) as src, psycopg.connect(target) as tgt:
        assert rows_reconcile(src, tgt, e).passed  # the kept row is not counted as a live one


def test_sensor_requests_exactly_the_changed_entities_and_nothing_when_quiet(private_migration, monkeypatch):
    from migration_assets.definitions import build_resources
    from migration_assets.sensors import legacy_changes

    legacy, target, _ = private_migration(scale=0.01, seed=16)
    resources = {k: v for k, v in build_resources().items() if k in ("legacy", "target", "settings")}

    def tick(cursor=None):
        with build_sensor_context(cursor=cursor, resources=resources) as context:
            return legacy_changes(context), context.cursor

    result, cursor = tick()
    assert isinstance(result, SkipReason), result
    mutate(legacy, fraction=0.05, round_no=1, seed=16, entities=["offices", "tasks"], log=lambda *_: None)
    waiting = {r[0] for r in query(target, "SELECT DISTINCT entity FROM migration_control.quarantine "
                                           "WHERE NOT resolved AND reason = 'ORPHAN_FK'")}
    expected = {"offices", "tasks"} | {e.name for e in ENTITIES if e.name in waiting
                                       and {"offices", "tasks"} & set(e.parents)}
    request, cursor = tick(cursor)
    assert {k.path[-1] for k in request.asset_selection} == expected | {"migration_reports"}
    assert request.tags[MODE_TAG] == "differential" and request.run_key
    # the same change is not requested twice
    again, _ = tick(cursor)
    assert isinstance(again, SkipReason)
    # once refreshed, the source is quiet again for a sensor without a cursor
    refresh("differential", selection=sorted(expected))
    quiet, _ = tick()
    assert isinstance(quiet, SkipReason), quiet


def test_sensor_counts_only_the_tables_whose_signature_moved(private_migration):
    """A tick reads every table's signature (write counters, max id, max change mark) and counts
    only the tables whose signature moved; every table is recounted every EXACT_EVERY_S."""
    import json
    import time

    from migration_assets.definitions import build_resources
    from migration_assets.registry import children
    from migration_assets.sensors import legacy_changes

    legacy, target, _ = private_migration(scale=0.01, seed=17)
    resources = {k: v for k, v in build_resources().items() if k in ("legacy", "target", "settings")}

    def tick(cursor=None):
        with build_sensor_context(cursor=cursor, resources=resources) as context:
            return legacy_changes(context), context.cursor

    def selected(request):
        return {k.path[-1] for k in request.asset_selection}

    quiet, cursor = tick()
    assert isinstance(quiet, SkipReason), quiet
    assert json.loads(cursor)["counted_at"] > 0  # no cursor: every table counted

    # a delete below the highest id: no new id, no new change mark; only the row count and the
    # delete counter show it. The deleting backend reports its counters when it goes idle or
    # exits: wait until they show, as the next tick of a running sensor would.
    leaf = entity("system_messages")
    deleted = sql.SQL("SELECT pg_stat_get_tuples_deleted({}::regclass)").format(sql.Literal(leaf.legacy_table))
    with psycopg.connect(legacy, autocommit=True) as conn:
        before = conn.execute(deleted).fetchone()[0]
        conn.execute(sql.SQL(
            "DELETE FROM {t} WHERE {pk} = (SELECT {pk} FROM {t} ORDER BY {pk} LIMIT 1 OFFSET 3)").format(
            t=sql.Identifier(leaf.legacy_table), pk=sql.Identifier(leaf.legacy_pk)))
    deadline = time.monotonic() + 30
    with psycopg.connect(legacy, autocommit=True) as conn:
        while conn.execute(deleted).fetchone()[0] == before:
            assert time.monotonic() < deadline, "the statistics never showed the delete"
            time.sleep(0.2)
    request, cursor = tick(cursor)
    assert selected(request) == {leaf.name, "migration_reports"}

    # a table whose signature holds is not counted: its remembered state stands (a wrong row
    # count planted in the cursor is believed, so the entity is requested) ...
    other = next(e.name for e in ENTITIES if not children(e.name) and e.name != leaf.name)
    planted = json.loads(cursor)
    planted["seen"][other]["state"][0] += 1
    believed, _ = tick(json.dumps(planted))
    assert selected(believed) == {other, "migration_reports"}
    # ... until the last full count is older than EXACT_EVERY_S: then every table is counted again
    planted["counted_at"] = time.time() - 3600
    recounted, cursor = tick(json.dumps(planted))
    assert isinstance(recounted, SkipReason), recounted
    assert json.loads(cursor)["seen"][other]["state"] == json.loads(tick()[1])["seen"][other]["state"]


def test_a_change_mark_in_the_future_never_hides_later_changes(private_migration, databases):
    """One legacy row marked 9999-12-31 must not become the watermark: later changes of other rows
    are still found by a differential refresh, and the future-marked row is re-read every time."""
    legacy, target, _ = private_migration(scale=0.005, seed=23)
    e = entity("offices")
    t, pk, chg = (sql.Identifier(e.legacy_table), sql.Identifier(e.legacy_pk),
                  sql.Identifier(e.legacy_change_column))
    name = next(c for c in e.columns if c.target == "name")
    ids = [r[0] for r in query(legacy, sql.SQL("SELECT {pk} FROM {t} ORDER BY {pk} LIMIT 3").format(pk=pk, t=t))]
    with psycopg.connect(legacy) as conn:
        conn.execute(sql.SQL("UPDATE {t} SET {chg} = '9999-12-31' WHERE {pk} = %s").format(t=t, chg=chg, pk=pk),
                     [ids[0]])
    refresh("differential", selection=["offices"])
    (hwm,) = query(target, "SELECT change_hwm <= now() FROM migration_control.watermarks WHERE entity = 'offices'")[0]
    assert hwm
    with psycopg.connect(legacy) as conn:  # a later change of another row, and of the future-marked row
        for legacy_id, value in ((ids[1], "Renamed after the future mark"), (ids[0], "Future row renamed")):
            conn.execute(sql.SQL("UPDATE {t} SET {n} = %s, {chg} = CASE WHEN {pk} = %s THEN {chg} ELSE "
                                 "localtimestamp END WHERE {pk} = %s").format(
                t=t, n=sql.Identifier(name.legacy_name), chg=chg, pk=pk), [value, ids[0], legacy_id])
    result = refresh("differential", selection=["offices"])
    assert audit(target, result.run_id)["offices"][3] == 2  # both updated
    (note,) = query(target, "SELECT load_path FROM migration_control.migration_runs WHERE run_id = %s "
                            "AND entity = 'offices'", [result.run_id])[0]
    assert "1 rows marked in the future" in note
    names = dict(query(target, "SELECT (metadata->>'legacy_id')::int, name FROM public.offices "
                               "WHERE (metadata->>'legacy_id')::int = ANY(%s)", [ids[:2]]))
    assert names == {ids[0]: "Future row renamed", ids[1]: "Renamed after the future mark"}


def test_a_shrunken_source_converges_to_a_fresh_migration(databases, target):
    """The legacy database regenerated four times smaller (mass deletes at the source): one full
    run resolves every open quarantine row of a legacy row that no longer exists, whatever its
    reason, including tables that a parent's cascade emptied (they then load on the fast path),
    and the target equals a fresh migration of the smaller source."""
    from migration_assets.simulator import generate

    legacy = databases.new("legacy_shrinks")
    generate(legacy, scale=0.02, seed=7, log=lambda *_: None)
    for e in topological_order():
        migrate_entity(legacy, target, e.name, LoadOptions(run_id="large"))
    generate(legacy, scale=0.005, seed=7, log=lambda *_: None)
    results = {e.name: migrate_entity(legacy, target, e.name, LoadOptions(run_id="small"))
               for e in topological_order()}
    assert {n: r.remaining_difference for n, r in results.items() if r.remaining_difference} == {}
    assert_equal_to_fresh(databases, legacy, target)


def test_a_row_inserted_below_the_highest_id_with_an_old_change_mark_is_found(private_migration):
    """A differential refresh reads changes since the watermark and ids above the highest seen;
    a row inserted below it with an old change mark is in neither. The load sees the legacy rows
    it cannot account for, and the same step compares every row and loads it."""
    legacy, target, _ = private_migration(scale=0.005, seed=47)
    e = entity("offices")
    t, pk, chg = (sql.Identifier(e.legacy_table), sql.Identifier(e.legacy_pk),
                  sql.Identifier(e.legacy_change_column))
    others = [c for c in e.columns if c.legacy_name != e.legacy_change_column]
    with psycopg.connect(legacy) as conn:
        conn.execute(sql.SQL("INSERT INTO {t} ({pk}, {chg}, {cols}) SELECT -7, '2001-01-01', {vals} FROM {t} "
                             "ORDER BY {pk} LIMIT 1").format(
            t=t, pk=pk, chg=chg, cols=sql.SQL(", ").join(sql.Identifier(c.legacy_name) for c in others),
            vals=sql.SQL(", ").join(sql.SQL("'below-' || {}").format(sql.Identifier(c.legacy_name)) if c.unique
                                    else sql.Identifier(c.legacy_name) for c in others)))
    result = refresh("differential", selection=["offices"])
    assert query(target, "SELECT count(*) FROM public.offices WHERE metadata->>'legacy_id' = '-7'") == [(1,)]
    rows = query(target, "SELECT mode, (details->>'remaining_difference')::bigint "
                         "FROM migration_control.migration_runs WHERE run_id = %s AND entity = 'offices' ORDER BY id",
                 [result.run_id])
    assert rows == [("differential", 1), ("full", 0)]
