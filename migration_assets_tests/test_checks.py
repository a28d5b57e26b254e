"""Each check catches the breakage it exists for, names the rows, and passes on a clean migration."""

import psycopg
import pytest

from migration_assets.checks import run_checks
from migration_assets.engine.accounting import CheckOptions
from migration_assets.engine.checks import content_checksum
from migration_assets.registry import ENTITIES, entity

from .conftest import query


def _by_name(results):
    return {r.check_name: r for r in results}


@pytest.fixture()
def migrated_for_checks(private_migration):
    """A small legacy database of its own (the tests break its target), fully migrated."""
    return private_migration(scale=0.005, seed=9)


def test_all_checks_pass_on_a_clean_migration(migrated_for_checks):
    _, _, result = migrated_for_checks
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == sum(6 if e.email_columns else 5 for e in ENTITIES)
    failed = [(ev.asset_key.path[-1], ev.check_name) for ev in evaluations if not ev.passed]
    assert failed == []


def test_row_deleted_in_the_target_is_named(migrated_for_checks):
    legacy, target, _ = migrated_for_checks
    with psycopg.connect(target) as conn:
        conn.execute("SET session_replication_role = replica")  # bypass FK triggers, as a bad script would
        conn.execute("DELETE FROM public.case_files WHERE (metadata->>'legacy_id')::bigint = 5")
        conn.commit()
    results = _by_name(run_checks(legacy, target, entity("case_files")))
    r = results["rows_reconcile"]
    assert not r.passed
    assert r.metadata["legacy_ids_unaccounted"].value == 1
    assert r.metadata["sample_unaccounted_legacy_ids"].value == [5]
    # the content comparison misses the row too (its bucket's sums differ, then row by row)
    content = results["content_checksum"]
    assert not content.passed and content.metadata["sample_legacy_ids"].value == [5]
    assert content.metadata["id_buckets_differing"].value == 1


def test_parent_removed_behind_the_constraints_fails_the_blocking_fk_check(migrated_for_checks):
    legacy, target, _ = migrated_for_checks
    (case_uuid, case_legacy) = query(target, "SELECT id, (metadata->>'legacy_id')::bigint FROM public.cases "
                                             "WHERE id IN (SELECT case_id FROM public.tasks) LIMIT 1")[0]
    children = sorted(r[0] for r in query(target, "SELECT (metadata->>'legacy_id')::bigint FROM public.tasks "
                                                  "WHERE case_id = %s", [case_uuid]))
    with psycopg.connect(target) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM public.cases WHERE id = %s", [case_uuid])
        conn.commit()
    r = _by_name(run_checks(legacy, target, entity("tasks")))["foreign_keys_resolve"]
    assert not r.passed
    assert r.metadata["by_foreign_key"].value["case_id"] == len(children)
    assert r.metadata["sample_legacy_ids"].value["case_id"] == children[:20]


def test_duplicate_legacy_id_is_named(migrated_for_checks):
    legacy, target, _ = migrated_for_checks
    with psycopg.connect(target) as conn:
        conn.execute("INSERT INTO public.roles (id, name, description, is_system, updated_at, metadata) "
                     "SELECT gen_random_uuid(), name || ' copy', description, is_system, updated_at, metadata "
                     "FROM public.roles WHERE (metadata->>'legacy_id')::bigint = 1")
        conn.commit()
    r = _by_name(run_checks(legacy, target, entity("roles")))["keys_unique"]
    assert not r.passed
    assert r.metadata["by_key"].value["legacy_id"] == 2
    assert r.metadata["sample_legacy_ids"].value["legacy_id"] == [1, 1]


def test_corrupted_email_is_named(migrated_for_checks):
    legacy, target, _ = migrated_for_checks
    with psycopg.connect(target) as conn:
        conn.execute("ALTER TABLE public.profiles DROP CONSTRAINT profiles_email_email_format")
        conn.execute("UPDATE public.profiles SET email = 'not an email' WHERE (metadata->>'legacy_id')::bigint = 3")
        conn.commit()
    r = _by_name(run_checks(legacy, target, entity("profiles")))["emails_valid"]
    assert not r.passed
    assert r.metadata["sample_legacy_ids"].value == {"email": [3]}


@pytest.mark.parametrize("table,column,change", [
    ("payments", "amount", "amount + 0.01"),  # one cent off
    ("tasks", "updated_at", "updated_at + interval '1 microsecond'"),
    ("patients", "date_of_birth", "date_of_birth + 1"),
])
def test_changed_value_fails_the_content_checksum(migrated_for_checks, table, column, change):
    legacy, target, _ = migrated_for_checks
    lid = query(target, f"SELECT min((metadata->>'legacy_id')::bigint) FROM public.{table} WHERE {column} IS NOT NULL")[0][0]
    with psycopg.connect(target) as conn:
        conn.execute(f"UPDATE public.{table} SET {column} = {change} WHERE (metadata->>'legacy_id')::bigint = %s", [lid])
        conn.commit()
    r = _by_name(run_checks(legacy, target, entity(table)))["content_checksum"]
    assert not r.passed
    assert r.metadata["rows_differing"].value == 1
    assert r.metadata["sample_legacy_ids"].value == [lid]


def test_reference_moved_to_another_existing_parent_fails_the_content_checksum(migrated_for_checks):
    # the foreign key still resolves (the FK check passes), but to the wrong parent: the content
    # compares each reference as the legacy id of the parent it leads to
    legacy, target, _ = migrated_for_checks
    lid, other_case = query(target, "SELECT (t.metadata->>'legacy_id')::bigint, c.id FROM public.tasks t "
                                     "JOIN public.cases c ON c.id <> t.case_id ORDER BY 1, c.id LIMIT 1")[0]
    with psycopg.connect(target) as conn:
        conn.execute("UPDATE public.tasks SET case_id = %s WHERE (metadata->>'legacy_id')::bigint = %s",
                     [other_case, lid])
        conn.commit()
    results = _by_name(run_checks(legacy, target, entity("tasks")))
    assert results["foreign_keys_resolve"].passed
    content = results["content_checksum"]
    assert not content.passed
    assert content.metadata["rows_differing"].value == 1
    assert content.metadata["sample_legacy_ids"].value == [lid]


def test_primary_key_not_derived_from_the_legacy_id_is_named(migrated_for_checks):
    legacy, target, _ = migrated_for_checks
    (lid,) = query(target, "SELECT min((metadata->>'legacy_id')::bigint) FROM public.payments")[0]
    with psycopg.connect(target) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE public.payments SET id = gen_random_uuid() WHERE (metadata->>'legacy_id')::bigint = %s",
                     [lid])
        conn.commit()
    with psycopg.connect(legacy) as src, psycopg.connect(target) as tgt:
        r = content_checksum(src, tgt, entity("payments"), opts=CheckOptions(uuid_every=1))
    assert not r.passed
    assert r.metadata["sample_legacy_ids"] == [lid]
    assert r.metadata["uuid_keys_recomputed"] == "every row"


def test_reference_set_null_by_recovery_is_compared_with_the_value_it_had(migrated_for_checks):
    # an optional reference to a missing parent is loaded NULL, its UUID kept in metadata.recovered:
    # the legacy row still holds the integer, and both sides must agree on what it stood for
    legacy, target, _ = migrated_for_checks
    found = None
    for e in ENTITIES:
        for c in (c for c in e.foreign_keys if not c.required):
            rows = query(target, f"SELECT (metadata->>'legacy_id')::bigint FROM public.{e.target_table} "
                                 f"WHERE {c.target} IS NULL AND metadata->'recovered'->'{c.target}' ? 'was' "
                                 "ORDER BY 1 LIMIT 1")
            if rows and found is None:
                found = (e, c, rows[0][0])
    assert found, "the simulator's dirty data should leave at least one optional reference set NULL"
    e, c, lid = found
    assert _by_name(run_checks(legacy, target, e))["content_checksum"].passed
    with psycopg.connect(target) as conn:  # the recorded value no longer matches the legacy row
        conn.execute(f"UPDATE public.{e.target_table} SET metadata = jsonb_set(metadata, "
                     f"'{{recovered,{c.target},was}}', to_jsonb(gen_random_uuid()::text)) "
                     "WHERE (metadata->>'legacy_id')::bigint = %s", [lid])
        conn.commit()
    content = _by_name(run_checks(legacy, target, e))["content_checksum"]
    assert not content.passed and content.metadata["sample_legacy_ids"].value == [lid]


def test_a_parent_duplicated_behind_a_dropped_primary_key_does_not_count_its_children_twice(migrated_for_checks):
    # the children's summaries join the parent by UUID; without the parent's primary key the join
    # could fan out and count a child twice: the parent is then read one row per id
    legacy, target, _ = migrated_for_checks
    with psycopg.connect(target) as conn:
        conn.execute("ALTER TABLE public.cases DROP CONSTRAINT cases_pkey CASCADE")
        conn.execute("ALTER TABLE public.cases DROP CONSTRAINT cases_case_number_key")
        conn.execute("INSERT INTO public.cases SELECT * FROM public.cases WHERE id IN (SELECT case_id FROM public.tasks)")
        conn.commit()
    results = _by_name(run_checks(legacy, target, entity("tasks")))
    for name in ("rows_reconcile", "foreign_keys_resolve", "content_checksum"):
        assert results[name].passed, (name, results[name].metadata)
    assert not _by_name(run_checks(legacy, target, entity("cases")))["keys_unique"].passed


def test_sampled_content_checksum_compares_only_the_sample(migrated_for_checks):
    legacy, target, _ = migrated_for_checks
    with psycopg.connect(legacy) as src, psycopg.connect(target) as tgt:
        full = content_checksum(src, tgt, entity("tasks"), opts=CheckOptions(sample_above=10**9))
        sampled = content_checksum(src, tgt, entity("tasks"), opts=CheckOptions(sample_above=0, sample_every=10))
    assert full.passed and sampled.passed
    assert full.metadata["mode"] == "full" and sampled.metadata["mode"].startswith("sampled")
    assert 0 < sampled.metadata["rows_compared"] < full.metadata["rows_compared"] / 5


def test_preflight_names_table_and_column_and_stops_the_run_before_any_load(databases, target, monkeypatch):
    from dagster import DagsterInstance, materialize

    from migration_assets.definitions import build_resources, table_assets
    from migration_assets.preflight import SchemaMismatch, validate
    from migration_assets.simulator import generate

    legacy = databases.new("legacy_preflight")
    generate(legacy, scale=0.002, seed=3, log=lambda *_: None)
    validate(legacy, target)  # a matching pair passes
    e = entity("tasks")
    with psycopg.connect(legacy) as conn:
        conn.execute(f'ALTER TABLE "{e.legacy_table}" RENAME COLUMN "{e.columns[1].legacy_name}" TO renamed')
    with psycopg.connect(target) as conn:
        conn.execute("ALTER TABLE public.payments ALTER COLUMN amount TYPE text")
    with pytest.raises(SchemaMismatch) as info:
        validate(legacy, target)
    c = e.columns[1]
    assert (f"legacy column {e.legacy_table}.{c.legacy_name} (-> tasks.{c.target}) does not exist: if it was renamed "
            f"to renamed, set legacy='renamed' on Column '{c.target}' of entity tasks in registry.py") in str(info.value)
    assert "target column public.payments.amount is text, expected numeric" in str(info.value)
    monkeypatch.setenv("SOURCE_DB_URL", legacy)
    monkeypatch.setenv("TARGET_DB_URL", target)
    result = materialize(table_assets(), resources=build_resources(), instance=DagsterInstance.ephemeral(),
                         raise_on_error=False)
    assert not result.success
    loaded = sum(query(target, f"SELECT count(*) FROM public.{x.name}")[0][0] for x in ENTITIES)
    assert loaded == 0
    failures = [ev for ev in result.all_events if ev.is_step_failure]
    assert failures
    data = failures[0].step_failure_data
    message = data.user_failure_data.description if data.user_failure_data else data.error.message
    assert "pre-flight" in message and "payments.amount" in message
