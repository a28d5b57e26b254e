"""Keys set aside for a whole first migration and restored after its last table (engine/keys.py), on
real PostgreSQL: a run stopped half-way and resumed equals a fresh migration, the keys come back
exactly as the schema files made them, a key the rows break stays aside with its name given, and a
restore started beside a load in progress waits for it."""

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from migration_assets.engine import keys
from migration_assets.engine.commit import migrate_entity
from migration_assets.engine.options import LoadOptions
from migration_assets.preflight import target_problems
from migration_assets.registry import ENTITIES, entity, topological_order
from migration_assets.reports import status

from .conftest import query
from .test_plan_and_deletes import assert_equal_to_fresh

# every constraint and index of the registry's tables, as the catalog spells them
CATALOG = """
    SELECT r.relname::text, c.conname::text, pg_get_constraintdef(c.oid) FROM pg_constraint c
    JOIN pg_class r ON r.oid = c.conrelid WHERE r.relnamespace = 'public'::regnamespace AND r.relname = ANY(%(t)s)
    UNION ALL
    SELECT r.relname::text, x.relname::text, pg_get_indexdef(x.oid) FROM pg_index i
    JOIN pg_class x ON x.oid = i.indexrelid JOIN pg_class r ON r.oid = i.indrelid
    WHERE r.relnamespace = 'public'::regnamespace AND r.relname = ANY(%(t)s)
    ORDER BY 1, 2, 3"""
TABLES = [e.target_table for e in ENTITIES]


def catalog(target: str) -> list[tuple]:
    return query(target, CATALOG, {"t": TABLES})


def prepare(target: str, run_id: str, finishing: bool = True) -> keys.Prepared:
    with psycopg.connect(target) as conn:
        done = keys.prepare(conn, run_id, list(ENTITIES), "public", finishing=finishing)
        conn.commit()
        return done


def restore(target: str) -> int:
    with psycopg.connect(target) as conn:
        n = keys.restore(conn)
        conn.commit()
        return n


def test_a_first_migration_stopped_with_its_keys_aside_resumes_to_a_fresh_migration_and_its_keys_come_back(
        databases, legacy, target):
    as_set_up = catalog(target)
    first = prepare(target, "first")
    assert first.tables == tuple(e.name for e in ENTITIES)  # every table is empty
    assert prepare(target, "first") == keys.Prepared()  # once per run
    # only the check constraints are left on the tables, and everything else is recorded
    left = catalog(target)
    assert {d.split(" ")[0] for _, _, d in left} == {"CHECK"}
    recorded = query(target, "SELECT table_name, name FROM migration_control.keys_set_aside")
    assert len(recorded) == first.set_aside
    assert set(recorded) == {(t, n) for t, n, d in as_set_up if not d.startswith("CHECK")}
    with psycopg.connect(target) as conn:
        assert target_problems(conn, "public") == []  # keys set aside count as present
    # the run stops after the first half of the tables
    order = topological_order()
    half = order[: len(order) // 2]
    for e in half:
        r = migrate_entity(legacy, target, e.name, LoadOptions(run_id="first"))
        assert r.load_path.startswith("fast (keys set aside")
    # status names them until they are restored
    rows, healthy = status(legacy, target)
    assert not healthy and all("keys set aside until target_keys restores them" in r["state"] for r in rows)
    with psycopg.connect(target) as conn:
        n, tables, _, run = keys.set_aside_since(conn)
    assert (n, tables, run) == (first.set_aside, len(ENTITIES), "first")
    # the resumed run: nothing new to set aside; the loaded tables merge (on the indexes their
    # loads built), the others load on the fast path; then the keys come back
    assert prepare(target, "second") == keys.Prepared()
    for e in order:
        r = migrate_entity(legacy, target, e.name, LoadOptions(run_id="second"))
        assert r.load_path.startswith("merge" if e in half else "fast (keys set aside")
        if e in half:
            assert (r.inserted, r.updated) == (0, 0)
    assert restore(target) == first.set_aside
    assert catalog(target) == as_set_up
    assert query(target, "SELECT count(*) FROM migration_control.keys_set_aside") == [(0,)]
    assert query(target, "SELECT run_id, set_aside, restored FROM migration_control.key_runs "
                         "WHERE set_aside > 0") == [("first", first.set_aside, first.set_aside)]
    assert_equal_to_fresh(databases, legacy, target)
    assert restore(target) == 0
    with psycopg.connect(target) as conn:
        assert keys.set_aside_since(conn) is None
    assert not any("keys set aside" in r["state"] for r in status(legacy, target)[0])


def test_a_key_the_rows_break_stays_aside_and_is_named_and_a_run_without_target_keys_restores_first(
        databases, legacy, target):
    as_set_up = catalog(target)
    n = prepare(target, "first").set_aside
    for e in topological_order():
        migrate_entity(legacy, target, e.name, LoadOptions(run_id="first"))
    # an address whose profile does not exist, written while the foreign key is aside
    (address, profile), = query(target, "SELECT id, profile_id FROM public.addresses ORDER BY id LIMIT 1")
    with psycopg.connect(target) as conn:
        conn.execute("UPDATE public.addresses SET profile_id = gen_random_uuid() WHERE id = %s", [address])
    with pytest.raises(keys.KeysNotRestored) as failed:
        restore(target)
    assert str(failed.value).startswith("addresses_profile_id_fkey on public.addresses could not be restored: "
                                        'insert or update on table "addresses" violates foreign key constraint '
                                        '"addresses_profile_id_fkey"; every key set aside stays aside')
    assert query(target, "SELECT count(*) FROM migration_control.keys_set_aside") == [(n,)]
    assert {d.split(" ")[0] for _, _, d in catalog(target)} == {"CHECK", "CREATE"}  # the loads' indexes only
    with psycopg.connect(target) as conn:
        conn.execute("UPDATE public.addresses SET profile_id = %s WHERE id = %s", [profile, address])
    # a run that does not end with target_keys restores them before it loads
    assert prepare(target, "sensor", finishing=False) == keys.Prepared(restored=n)
    assert catalog(target) == as_set_up


def test_a_restore_waits_for_a_load_in_progress_and_attaches_the_indexes_it_built(target):
    """A run without target_keys (a sensor's refresh) may start while a first migration is loading
    a table whose keys are set aside: the restore waits for that load and takes its indexes."""
    as_set_up = catalog(target)
    prepare(target, "first")
    with psycopg.connect(target) as load:  # what a load holds and builds, not committed yet
        load.execute("LOCK TABLE public.profiles IN SHARE ROW EXCLUSIVE MODE")
        for statement in keys.build_indexes_sql(keys.set_aside_of(load, entity("profiles"), "public")):
            load.execute(statement)
        with ThreadPoolExecutor(1) as pool:
            restoring = pool.submit(prepare, target, "sensor", False)
            time.sleep(1.0)
            assert not restoring.done()  # waiting for the load
            load.commit()
            assert restoring.result(timeout=60).restored > 0
    assert catalog(target) == as_set_up
