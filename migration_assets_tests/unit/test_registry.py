"""Unit tests of the registry, the key function and the generated schema files (no database)."""


import numpy as np
import pyarrow as pa
import pytest

from migration_assets import registry
from migration_assets.registry import ENTITIES, BY_NAME, levels, topological_order
from migration_assets.transforms import Kind, ParentKeys, legacy_uuid, md5_key_sql, md5_of_ids, uuid3_keys

SEED_ENTITIES = """offices profiles categories roles doctors patients technicians doctor_offices
patients_doctors_offices role_permissions technician_roles cases orders jaws templates products brackets
case_states order_states tasks team_communications files case_files order_files message_attachments messages
case_messages comments system_messages projects treatment_plans template_products template_view_groups
template_view_roles purchases payments operations order_cases treatment_discussions patient_events""".split()


def test_45_entities_including_the_seeds_40():
    assert len(ENTITIES) == 45
    assert len(BY_NAME) == 45
    assert set(SEED_ENTITIES) <= set(BY_NAME)


def test_every_foreign_key_parent_is_an_entity():
    for e in ENTITIES:
        for c in e.foreign_keys:
            assert c.parent in BY_NAME, f"{e.name}.{c.target} -> {c.parent}"
            assert c.parent != e.name


def test_graph_is_acyclic_with_11_computed_levels():
    lv = levels()
    assert len(lv) == 45
    assert set(lv.values()) == set(range(1, 12))
    for e in ENTITIES:
        # longest path: exactly one more than the deepest parent
        assert lv[e.name] == 1 + max((lv[p] for p in e.parents), default=0)


def test_cycle_is_detected(monkeypatch):
    a = BY_NAME["offices"]
    cyclic = a.__class__(a.name, a.legacy_table, a.legacy_pk,
                         a.columns + (registry.fk("loop_id", "cases", required=False),),
                         a.priority, a.expected_rows, a.description)
    monkeypatch.setitem(BY_NAME, "offices", cyclic)
    levels.cache_clear()
    try:
        with pytest.raises(ValueError, match="cycle"):
            levels()
    finally:
        levels.cache_clear()


def test_topological_order_puts_parents_first():
    seen = set()
    for e in topological_order():
        assert set(e.parents) <= seen
        seen.add(e.name)


def test_seed_counts_and_total():
    assert BY_NAME["system_messages"].expected_rows == 2_191_123
    assert BY_NAME["tasks"].expected_rows == 953_224
    assert 4_200_000 < registry.total_expected_rows() < 4_600_000


def test_legacy_names_are_unique_and_differ_from_target_for_many():
    assert len({e.legacy_table for e in ENTITIES}) == 45
    for e in ENTITIES:
        names = [e.legacy_pk] + [c.legacy_name for c in e.columns]
        assert len(names) == len(set(names)), e.name
    renamed = [e for e in ENTITIES if e.legacy_table != e.target_table]
    assert len(renamed) >= 40


def test_realistic_legacy_types_are_present():
    kinds = {c.kind for e in ENTITIES for c in e.columns}
    assert {Kind.YN, Kind.CODE_INT, Kind.CODE_CHAR, Kind.CENTS, Kind.EPOCH, Kind.TEXT_DATE, Kind.EMAIL} <= kinds


def test_arrow_uuid_equals_python_uuid3():
    ids = [1, 2, 9, 10, 99, 123456, 2**31 - 1, 2**62, None, 7]
    for name in ("cases", "profiles", "system_messages"):
        out = uuid3_keys(name, pa.array(ids, pa.int64()))
        assert out.type == pa.uuid()
        got = out.to_pylist()
        for i, value in zip(ids, got):
            if i is None:
                assert value is None
            else:
                assert value == legacy_uuid(name, i)
                assert value.version == 3
    # a slice of a chunk (non-zero offset) and an empty array
    sliced = pa.chunked_array([pa.array([5, 6, 7, 8], pa.int32()).slice(1, 2)])
    assert uuid3_keys("cases", sliced).to_pylist() == [
        legacy_uuid("cases", 6), legacy_uuid("cases", 7)]
    assert len(uuid3_keys("cases", pa.array([], pa.int64()))) == 0


def test_parent_keys_cache_gives_the_same_uuids_as_hashing_every_row():
    """The foreign keys' cache across batches: nulls, repeats, growth, a sliced chunk, ids outside
    the cached range (hashed directly) and an all-null batch all equal uuid3_keys row for row."""
    rng = np.random.default_rng(7)
    keys = ParentKeys("profiles")
    batches = [pa.array(rng.integers(0, top, 5000), mask=rng.random(5000) < 0.2, type=pa.int32())
               for top in (50, 3000, 40000, 3000)]
    batches += [pa.array([ParentKeys.MAX_ID + 5, 3, None, -1], pa.int64()), pa.array([None, None], pa.int32()),
                pa.chunked_array([pa.array([5, 6, 7, 8], pa.int32()).slice(1, 2)]), pa.array([], pa.int32())]
    for ids in batches:
        got = keys(ids)
        assert got.type == pa.uuid()
        assert got.equals(uuid3_keys("profiles", ids))
    assert keys(pa.array([1, 2, 1], pa.int64())).to_pylist() == [legacy_uuid("profiles", i) for i in (1, 2, 1)]


def test_vectorised_md5_spans_message_blocks():
    import hashlib

    # messages of 55, 56 and 64+ bytes need one, two and two 64-byte blocks: mixed in one array
    for prefix in (b"p" * 40, b"q" * 54, b"r" * 70):
        ids = pa.array([0, 1, 12, 123, 1234, 12345678901234], pa.int64())
        got = md5_of_ids(prefix, ids)
        for i, row in zip(ids.to_pylist(), got):
            assert bytes(row) == hashlib.md5(prefix + str(i).encode()).digest(), (len(prefix), i)


def test_key_sql_is_quoted_and_parameter_free():
    from psycopg import sql

    text = md5_key_sql("cases", sql.Identifier("case_id")).as_string(None)
    assert text == "md5('migration_assetscases:' || \"case_id\"::text)"


def test_parent_joins_key_null_references_by_the_rows_own_id():
    """A NULL reference must not reach a hash table as NULL: PostgreSQL 15 keeps NULL-keyed rows
    of a right hash join in one bucket that no batch split divides (305 s instead of 0.5 s for
    a staged files table whose optional task_id is mostly NULL). The row's own id never matches
    a parent (another entity's name is hashed into it; no entity references itself)."""
    from migration_assets.engine.rejects import parent_joins

    files = BY_NAME["files"]
    joins, flags = parent_joins(files, "s", "public")
    text = joins.as_string(None)
    for i, c in enumerate(files.foreign_keys):
        assert f'"p{i}".id = coalesce("s"."{c.target}", "s".id)' in text
        assert flags[i].as_string(None) == f'("s"."{c.target}" IS NOT NULL AND "p{i}".id IS NULL)'
