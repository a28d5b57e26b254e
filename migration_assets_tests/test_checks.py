"""Each check catches the breakage it exists for, names the rows, and passes on a clean migration."""

import psycopg
import pytest

from migration_assets.checks import run_checks
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
    assert len(evaluations) == sum(4 if e.email_columns else 3 for e in ENTITIES)
    failed = [(ev.asset_key.path[-1], ev.check_name) for ev in evaluations if not ev.passed]
    assert failed == []


def test_row_deleted_in_the_target_is_named(migrated_for_checks):
    legacy, target, _ = migrated_for_checks
    with psycopg.connect(target) as conn:
        conn.execute("SET session_replication_role = replica")  # bypass FK triggers, as a bad script would
        conn.execute("DELETE FROM public.case_files WHERE (metadata->>'legacy_id')::bigint = 5")
        conn.commit()
    r = _by_name(run_checks(legacy, target, entity("case_files")))["rows_reconcile"]
    assert not r.passed
    assert r.metadata["legacy_ids_unaccounted"].value == 1
    assert r.metadata["sample_unaccounted_legacy_ids"].value == [5]


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
