"""The checks' SQL, rendered without a database: both servers hash the same values in the same
order for every entity, the legacy side applies the load's options, and the statements of one
entity are what they must be, whole."""

from __future__ import annotations

import pytest
from psycopg import sql

from migration_assets.engine.accounting import Comparison, legacy_content_rows_sql, target_rows_sql
from migration_assets.engine.options import LoadOptions
from migration_assets.registry import BY_NAME, ENTITIES


def _plan(e, **options) -> Comparison:
    parents = {c.target: sql.SQL("(SELECT p.id, coalesce((p.metadata->>'legacy_id')::bigint, -1) AS lid FROM {} p)")
               .format(sql.Identifier("public", c.parent)) for c in e.foreign_keys}
    return Comparison(every=1, uuid_every=50, excluded=[7], recovered={}, parents=parents,
                      options=LoadOptions(**options))


def _row_arguments(text: str) -> list[str]:
    """The top-level arguments of the first ``ROW(...)`` in ``text``."""
    start = text.index("ROW(") + 4
    args, depth, quoted, current = [], 0, False, ""
    for ch in text[start:]:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            if depth == 0:
                break
            depth -= 1
        elif not quoted and ch == "," and depth == 0:
            args.append(current.strip())
            current = ""
            continue
        current += ch
    return args + [current.strip()]


@pytest.mark.parametrize("e", ENTITIES, ids=lambda e: e.name)
def test_both_servers_hash_the_legacy_id_the_uuid_sample_and_every_column_in_registry_order(e):
    plan = _plan(e)
    legacy = _row_arguments(legacy_content_rows_sql(e, plan, [0]).as_string(None))
    _, target_hash, flags = target_rows_sql(e, plan)
    target = _row_arguments(target_hash.as_string(None))
    assert len(legacy) == len(target) == len(e.columns) + 2
    assert target[2:] == [f't."{c.target}"' if c.kind.name != "FK" else target[2 + i]
                          for i, c in enumerate(e.columns)]
    assert len(flags) == len(e.foreign_keys)


def test_the_statements_of_one_entity_whole_with_the_legacy_timezone_applied():
    e = BY_NAME["roles"]
    plan = _plan(e, legacy_timezone="America/New_York")
    md5 = "md5('migration_assetsroles:' || l.\"role_id\"::bigint::text)"
    uuid = (f"(left({md5}, 12) || '3' || substr({md5}, 14, 3) || translate(substr({md5}, 17, 1), "
            f"'0123456789abcdef', '89ab89ab89ab89ab') || right({md5}, 15))::uuid")

    def trimmed(col):
        return (f"CASE WHEN l.\"{col}\" = '' THEN NULL WHEN starts_with(l.\"{col}\", ' ') OR get_byte(convert_to("
                f"l.\"{col}\", getdatabaseencoding()), octet_length(l.\"{col}\") - 1) = 32 THEN "
                f"nullif(btrim(l.\"{col}\"), '') ELSE l.\"{col}\" END")

    assert legacy_content_rows_sql(e, plan, [0, 3]).as_string(None) == (
        "SELECT l.\"role_id\"::bigint, hash_record_extended(ROW(l.\"role_id\"::bigint, "
        f"CASE WHEN l.\"role_id\"::bigint % 50 = 0 THEN uuid_hash_extended({uuid}, 0) END, "
        f"({trimmed('role_name')})::text, ({trimmed('description')})::text, "
        "(coalesce(CASE WHEN l.\"sys_flag\" IN ('Y', 'y') THEN true WHEN l.\"sys_flag\" IN ('N', 'n') THEN false END, "
        "false))::boolean, (CASE WHEN l.\"updated_at\" >= '4714-11-24 00:00:00 BC' AND l.\"updated_at\" < "
        "'10000-01-01 00:00:00' THEN (l.\"updated_at\" AT TIME ZONE 'America/New_York') END)::timestamptz), 0) "
        "FROM \"sec_roles\" AS l WHERE true AND l.\"role_id\"::bigint <> ALL('{7}'::int2[]::bigint[]) "
        "AND l.\"role_id\"::bigint / 1024 = ANY('{0,3}'::int2[]::bigint[])")
    source, target_hash, flags = target_rows_sql(e, plan)
    assert (source.as_string(None), target_hash.as_string(None), flags) == (
        '"public"."roles" t ',
        "hash_record_extended(ROW((\"t\".metadata->>'legacy_id')::bigint, CASE WHEN "
        "(\"t\".metadata->>'legacy_id')::bigint % 50 = 0 THEN uuid_hash_extended(t.id, 0) END, t.\"name\", "
        "t.\"description\", t.\"is_system\", t.\"updated_at\"), 0)", [])
