"""Legacy servers in the encodings older PostgreSQL installations use: every connection reads
them as UTF-8 (the server converts LATIN1 and WIN1252 text; SQL_ASCII holds bytes as written), the
loads keep every character, the content checks compare the same characters on both servers, and
a refresh equals a fresh migration."""

from __future__ import annotations

import psycopg
import pytest
from dagster import DagsterInstance, materialize
from psycopg import sql

from migration_assets.assets import MODE_TAG
from migration_assets.simulator import generate, mutate
from migration_assets.migrations import apply_migrations

from .conftest import query

TABLES = ("offices", "profiles")
TEXTS = {  # characters each encoding can store
    "LATIN1": ("Renée Ñúñez", "Zoë Ångström"),
    "WIN1252": ("Renée – Ñúñez", "Zoë “Ångström” €"),
    "SQL_ASCII": ("Renée Ñúñez", "Zoë 日本"),
}


def _legacy_in(databases, encoding: str) -> str:
    name = f"ma_test_legacy_{encoding.lower()}_{len(databases.created)}"
    with psycopg.connect(databases.admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} ENCODING {} LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0").format(
            sql.Identifier(name), sql.Literal(encoding)))
    databases.created.append(name)
    params = psycopg.conninfo.conninfo_to_dict(databases.admin)
    params["dbname"] = name
    return psycopg.conninfo.make_conninfo(**params)


def _accent(legacy: str, texts: tuple[str, str], round_no: int) -> None:
    office, person = texts
    with psycopg.connect(legacy, client_encoding="UTF8") as conn:
        conn.execute("UPDATE tbl_office SET office_name = %s || ' ' || office_id, last_modified = localtimestamp "
                     "WHERE office_id %% 2 = %s", [office, round_no])
        conn.execute("UPDATE users SET first_nm = %s, modified_ts = localtimestamp WHERE user_id %% 2 = %s",
                     [person, round_no])


def _run(monkeypatch, legacy: str, target: str, mode: str):
    from migration_assets.definitions import build_resources, table_assets

    monkeypatch.setenv("SOURCE_DB_URL", legacy)
    monkeypatch.setenv("TARGET_DB_URL", target)
    monkeypatch.setenv("DIFFERENTIAL_OVERLAP_SECONDS", "0")
    # every other row of these tables is quarantined on purpose: the budget is not what is tested
    monkeypatch.setenv("QUARANTINE_WARN_PERCENT", "100")
    monkeypatch.setenv("QUARANTINE_MAX_PERCENT", "100")
    chosen = [a for a in table_assets() if a.key.path[-1] in TABLES]
    result = materialize(chosen, resources=build_resources(), instance=DagsterInstance.ephemeral(),
                         tags={MODE_TAG: mode}, raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure][:3]
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks), [c.asset_check_key for c in checks if not c.passed]


def _content(conninfo: str, table: str) -> list[tuple]:
    return query(conninfo, sql.SQL("SELECT to_jsonb(t) - 'id' FROM {} t ORDER BY id").format(
        sql.Identifier("public", table)))


@pytest.mark.parametrize("encoding", sorted(TEXTS))
def test_a_legacy_server_in_another_encoding_loads_every_character_and_refresh_equals_fresh(
        encoding, databases, monkeypatch):
    legacy = _legacy_in(databases, encoding)
    generate(legacy, scale=0.002, seed=61, log=lambda *_: None)
    _accent(legacy, TEXTS[encoding], 0)
    target = databases.new("target_enc")
    apply_migrations(target)
    from migration_assets.preflight import validate

    assert validate(legacy, target) == [
        "the legacy server's encoding is SQL_ASCII (bytes with no declared encoding): its text is decoded as "
        "LEGACY_TEXT_ENCODING (default utf8); a value that does not decode is quarantined as INVALID_VALUE naming "
        "the column" if encoding == "SQL_ASCII" else
        f"the legacy server's encoding is {encoding}: its text is read as UTF-8 (the server converts it)"]
    _run(monkeypatch, legacy, target, "full")
    office, person = TEXTS[encoding]
    assert query(target, "SELECT count(*) FROM public.offices WHERE name LIKE %s", [office + " %"])[0][0] > 0
    assert query(target, "SELECT count(*) FROM public.profiles WHERE first_name = %s", [person])[0][0] > 0
    mutate(legacy, fraction=0.05, round_no=1, entities=list(TABLES), log=lambda *_: None)
    _accent(legacy, TEXTS[encoding], 1)
    _run(monkeypatch, legacy, target, "differential")
    fresh = databases.new("target_enc_fresh")
    apply_migrations(fresh)
    _run(monkeypatch, legacy, fresh, "full")
    for table in TABLES:
        assert _content(target, table) == _content(fresh, table), table


def test_sql_ascii_bytes_that_are_not_utf8_are_quarantined_by_column_or_transcoded_as_told(databases, monkeypatch):
    """A SQL_ASCII server holds whatever bytes its application wrote (here Latin-1). Read as UTF-8
    (the default) such a value cannot load: its row is quarantined as INVALID_VALUE naming the
    column, with the bytes escaped, and no table stops. LEGACY_TEXT_ENCODING=latin1 transcodes
    them, the quarantined rows load and leave the quarantine, and the result equals a fresh
    migration with that setting."""
    legacy = _legacy_in(databases, "SQL_ASCII")
    generate(legacy, scale=0.002, seed=67, log=lambda *_: None)
    with psycopg.connect(legacy) as conn:  # 'Renée' and 'Zoë' in Latin-1 bytes
        conn.execute("UPDATE tbl_office SET office_name = convert_from('\\x52656ee965'::bytea, 'SQL_ASCII') "
                     "|| ' ' || office_id WHERE office_id % 2 = 1")
        conn.execute("UPDATE users SET first_nm = convert_from('\\x5a6feb'::bytea, 'SQL_ASCII') "
                     "WHERE user_id % 2 = 1")
    target = databases.new("target_sql_ascii")
    apply_migrations(target)
    _run(monkeypatch, legacy, target, "full")
    quarantined = query(target, "SELECT entity, reason, detail FROM migration_control.quarantine "
                                "WHERE NOT resolved AND detail LIKE '%%LEGACY_TEXT_ENCODING%%' ORDER BY 1, legacy_id")
    offices = [q for q in quarantined if q[0] == "offices"]
    assert offices and all(q[1:] == ("INVALID_VALUE", f"office_name: not utf8 text (LEGACY_TEXT_ENCODING): "
                                     f"Ren\\351e {q[2].rsplit(' ', 1)[1]}") for q in offices)
    assert any(q[0] == "profiles" and q[2] == "first_nm: not utf8 text (LEGACY_TEXT_ENCODING): Zo\\353"
               for q in quarantined)
    monkeypatch.setenv("LEGACY_TEXT_ENCODING", "latin1")
    _run(monkeypatch, legacy, target, "full")
    assert query(target, "SELECT count(*) FROM migration_control.quarantine WHERE NOT resolved "
                         "AND detail LIKE '%%LEGACY_TEXT_ENCODING%%'") == [(0,)]
    assert query(target, "SELECT count(*) FROM public.profiles WHERE first_name = 'Zoë'")[0][0] > 0
    fresh = databases.new("target_sql_ascii_fresh")
    apply_migrations(fresh)
    _run(monkeypatch, legacy, fresh, "full")
    for table in TABLES:
        assert _content(target, table) == _content(fresh, table), table


def test_unicode_spaces_are_kept_in_text_and_make_an_email_a_placeholder(databases):
    """The decision (docs/design.md, 'Nothing lost'): only ASCII spaces are trimmed, as the seed did and as
    btrim does. A no-break or other Unicode space is kept in text (it can be meant: '10 mg'), and
    an email holding one is not an address: with recovery it becomes its row's placeholder, the
    original kept in metadata.recovered."""
    from migration_assets.engine.commit import migrate_entity
    from migration_assets.engine.options import LoadOptions

    legacy = databases.new("legacy_unicode_spaces")
    generate(legacy, scale=0.002, seed=71, log=lambda *_: None)
    name, email = "\u00a0Clinic\u2003 ", "ann@mail.test\u00a0"
    with psycopg.connect(legacy) as conn:
        (office_id,) = conn.execute("UPDATE tbl_office SET office_name = %s, contact_email = %s WHERE office_id = "
                                    "(SELECT min(office_id) FROM tbl_office) RETURNING office_id",
                                    [name, email]).fetchone()
    target = databases.new("target_unicode_spaces")
    apply_migrations(target)
    migrate_entity(legacy, target, "offices", LoadOptions(run_id="unicode-spaces"))
    assert query(target, "SELECT name, email, metadata->'recovered'->'email'->>'original' FROM public.offices "
                         "WHERE metadata->>'legacy_id' = %s", [str(office_id)]) == [
        ("\u00a0Clinic\u2003", f"invalid+offices.email.{office_id}@invalid.example.com", email)]
