"""A legacy application that writes its local time into timestamps without time zone
(LEGACY_TIMEZONE): the loaded instants across both daylight-saving changes of a year, the
change-tracking column compared with the legacy clock in that zone (marks east of UTC are not
"in the future"), the hour a clock repeats re-read by the next refresh, and pre-flight naming a
server whose zone differs or a column the setting would shift."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import psycopg
import pytest

from migration_assets.checks import run_checks
from migration_assets.engine.accounting import CheckOptions
from migration_assets.engine.commit import migrate_entity
from migration_assets.engine.options import LoadOptions
from migration_assets.preflight import SchemaMismatch, validate
from migration_assets.registry import entity
from migration_assets.simulator import generate
from migration_assets.migrations import apply_migrations

from .conftest import query

HOUR = dt.timedelta(hours=1)


def _transitions(zone: str, year: int) -> list[dt.datetime]:
    """The naive local times at which ``zone`` changed its UTC offset in ``year`` (Python's tz
    database, independent of PostgreSQL's)."""
    tz, found = zoneinfo.ZoneInfo(zone), []
    t = dt.datetime(year, 1, 1, tzinfo=dt.timezone.utc)
    while t.year == year:
        step = t + dt.timedelta(minutes=30)
        if t.astimezone(tz).utcoffset() != step.astimezone(tz).utcoffset():
            found.append(step.astimezone(tz).replace(tzinfo=None))
        t = step
    return found


def _instant(naive: dt.datetime, zone: str) -> dt.datetime:
    """The reference reading of a naive local time: where the wall clock is ambiguous (repeated)
    or skipped, the zone's standard-time offset, as PostgreSQL documents for AT TIME ZONE."""
    tz = zoneinfo.ZoneInfo(zone)
    candidates = [naive.replace(tzinfo=tz, fold=f) for f in (0, 1)]
    if candidates[0].utcoffset() != candidates[1].utcoffset():
        standard = [c for c in candidates if not c.dst()] or candidates
        return standard[0].astimezone(dt.timezone.utc)
    return candidates[0].astimezone(dt.timezone.utc)


def _add_offices(legacy: str, marks: list[dt.datetime]) -> list[int]:
    """One legacy office per mark, copied from the first one (new id and code), marked ``marks[i]``."""
    with psycopg.connect(legacy) as conn:
        (first,) = conn.execute("SELECT max(office_id) FROM tbl_office").fetchone()
        conn.execute("UPDATE tbl_office SET last_modified = '2026-01-01'")  # before every transition
        for i, mark in enumerate(marks, start=1):
            conn.execute(
                "INSERT INTO tbl_office SELECT (jsonb_populate_record(NULL::tbl_office, to_jsonb(o) || "
                "jsonb_build_object('office_id', o.office_id + %s, 'office_code', 'TZ-' || %s, "
                "'last_modified', %s::timestamp))).* FROM tbl_office o WHERE o.office_id = %s",
                [i, i, mark, first])
    return [first + i for i in range(1, len(marks) + 1)]


def _loaded(target: str, ids: list[int]) -> list[dt.datetime]:
    rows = dict(query(target, "SELECT (metadata->>'legacy_id')::bigint, updated_at FROM public.offices "
                              "WHERE (metadata->>'legacy_id')::bigint = ANY(%s)", [ids]))
    return [rows[i].astimezone(dt.timezone.utc) for i in ids]


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/Paris", "Australia/Sydney", "Asia/Kolkata"])
def test_naive_timestamps_become_the_instants_of_the_legacy_timezone_across_both_clock_changes(zone, databases):
    """Every half hour from two hours before to two hours after each of the year's offset
    changes (Asia/Kolkata has none: a fixed offset east of UTC), read in the zone: each loaded
    instant equals Python's tz database's reading, a skipped or repeated time taken as standard
    time; the content checks pass with the zone applied on the legacy side too."""
    legacy = databases.new("legacy_tz")
    generate(legacy, scale=0.002, seed=73, log=lambda *_: None)
    changes = _transitions(zone, 2026) or [dt.datetime(2026, 6, 1, 12)]
    assert len(changes) == (1 if zone == "Asia/Kolkata" else 2)
    marks = [c + k * dt.timedelta(minutes=30) for c in changes for k in range(-4, 5)]
    ids = _add_offices(legacy, marks)
    target = databases.new("target_tz")
    apply_migrations(target)
    opts = LoadOptions(run_id="tz", legacy_timezone=zone)
    migrate_entity(legacy, target, "offices", opts)
    assert _loaded(target, ids) == [_instant(m, zone) for m in marks]
    results = run_checks(legacy, target, entity("offices"), opts=CheckOptions(load=opts))
    assert all(r.passed for r in results), [(r.check_name, r.metadata) for r in results if not r.passed]
    if zone == "America/New_York":  # PostgreSQL's rule, spelled out once: 02:30 skipped, 01:30 repeated
        by_mark = dict(zip(marks, _loaded(target, ids)))
        assert by_mark[dt.datetime(2026, 3, 8, 2, 30)] == dt.datetime(2026, 3, 8, 7, 30, tzinfo=dt.timezone.utc)
        assert by_mark[dt.datetime(2026, 11, 1, 1, 30)] == dt.datetime(2026, 11, 1, 6, 30, tzinfo=dt.timezone.utc)


def test_changing_legacy_timezone_re_migrates_the_timestamps_and_equals_a_fresh_migration(databases):
    legacy = databases.new("legacy_tz_change")
    generate(legacy, scale=0.002, seed=79, log=lambda *_: None)
    marks = [dt.datetime(2026, 7, 1, 9, 0), dt.datetime(2026, 12, 1, 9, 0)]
    ids = _add_offices(legacy, marks)
    target = databases.new("target_tz_change")
    apply_migrations(target)
    migrate_entity(legacy, target, "offices", LoadOptions(run_id="utc"))
    assert _loaded(target, ids) == [m.replace(tzinfo=dt.timezone.utc) for m in marks]
    result = migrate_entity(legacy, target, "offices", LoadOptions(run_id="ny", legacy_timezone="America/New_York"))
    assert result.updated == query(legacy, "SELECT count(*) FROM tbl_office")[0][0]  # every row re-read
    assert _loaded(target, ids) == [dt.datetime(2026, 7, 1, 13, tzinfo=dt.timezone.utc),
                                    dt.datetime(2026, 12, 1, 14, tzinfo=dt.timezone.utc)]
    fresh = databases.new("target_tz_fresh")
    apply_migrations(fresh)
    migrate_entity(legacy, fresh, "offices", LoadOptions(run_id="fresh", legacy_timezone="America/New_York"))
    content = "SELECT to_jsonb(t) - 'id' FROM public.offices t ORDER BY metadata->>'legacy_id'"
    assert query(target, content) == query(fresh, content)


def _touch(legacy: str, ids: list[int], name: str, mark_sql: str, params=()) -> None:
    with psycopg.connect(legacy) as conn:
        conn.execute(f"UPDATE tbl_office SET office_name = %s, last_modified = {mark_sql} "
                     "WHERE office_id = ANY(%s)", [name, *params, ids])


def test_marks_written_east_of_utc_are_read_once_by_a_refresh_in_the_legacy_timezone(databases):
    """A Tokyo application marks rows with its wall clock, nine hours ahead of UTC. Read as UTC
    (the default) those marks are later than the snapshot's clock: never the watermark, re-read by
    every refresh. With LEGACY_TIMEZONE=Asia/Tokyo they are the watermark like any other mark."""
    legacy = databases.new("legacy_tokyo")
    generate(legacy, scale=0.002, seed=83, log=lambda *_: None)
    ids = _add_offices(legacy, [dt.datetime(2026, 2, 1)] * 3)
    tokyo_now = "(now() AT TIME ZONE 'Asia/Tokyo')"
    for zone, future in (("UTC", 3), ("Asia/Tokyo", 0)):
        target = databases.new("target_tokyo")
        apply_migrations(target)
        opts = LoadOptions(run_id="full", legacy_timezone=zone, overlap_s=0)
        migrate_entity(legacy, target, "offices", opts)
        _touch(legacy, ids, f"Tokyo {zone}", tokyo_now)
        refresh = LoadOptions(run_id="diff", legacy_timezone=zone, overlap_s=0, mode="differential")
        first = migrate_entity(legacy, target, "offices", refresh)
        assert first.updated == 3
        assert query(target, "SELECT count(*) FROM public.offices WHERE name = %s", [f"Tokyo {zone}"]) == [(3,)]
        again = migrate_entity(legacy, target, "offices", refresh)
        assert f"{future} rows marked in the future" in again.load_path, (zone, again.load_path)
        (hwm,) = query(target, "SELECT change_hwm AT TIME ZONE 'UTC' FROM migration_control.watermarks "
                               "WHERE entity = 'offices'")[0]
        (marked,) = query(legacy, "SELECT max(last_modified) FROM tbl_office")[0]
        assert (hwm == marked) is (zone == "Asia/Tokyo"), (zone, hwm, marked)


def test_the_hour_a_clock_repeats_is_re_read_after_a_watermark_inside_it(databases):
    """New York, 2026-11-01: a row marked 01:50 (daylight time) sets the watermark; twenty minutes
    later the clock has gone back and the application marks a change 01:10 (standard time). The
    next refresh, with no overlap configured, still reads it: the window starts an hour earlier
    because the zone set its clock back since the watermark."""
    legacy = databases.new("legacy_fall_back")
    generate(legacy, scale=0.002, seed=89, log=lambda *_: None)
    ids = _add_offices(legacy, [dt.datetime(2026, 11, 1, 1, 50), dt.datetime(2026, 10, 31, 12)])
    target = databases.new("target_fall_back")
    apply_migrations(target)
    opts = LoadOptions(run_id="full", legacy_timezone="America/New_York", overlap_s=0)
    migrate_entity(legacy, target, "offices", opts)
    assert query(target, "SELECT change_hwm AT TIME ZONE 'UTC' FROM migration_control.watermarks "
                         "WHERE entity = 'offices'") == [(dt.datetime(2026, 11, 1, 1, 50),)]
    _touch(legacy, ids[1:], "changed at 01:10 EST", "%s::timestamp", [dt.datetime(2026, 11, 1, 1, 10)])
    result = migrate_entity(legacy, target, "offices", LoadOptions(
        run_id="diff", legacy_timezone="America/New_York", overlap_s=0, mode="differential"))
    assert result.updated == 1 and "- 1:00:00 (clocks set back in America/New_York)" in result.load_path
    assert query(target, "SELECT count(*) FROM public.offices WHERE name = 'changed at 01:10 EST'") == [(1,)]


def test_preflight_names_a_server_in_another_zone_and_a_column_the_setting_would_shift(databases):
    legacy = databases.new("legacy_tz_preflight")
    generate(legacy, scale=0.002, seed=97, log=lambda *_: None)
    target = databases.new("target_tz_preflight")
    apply_migrations(target)
    name = psycopg.conninfo.conninfo_to_dict(legacy)["dbname"]
    with psycopg.connect(legacy, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET timezone = \'America/New_York\'')
    assert validate(legacy, target) == [
        "the legacy server's time zone is America/New_York but LEGACY_TIMEZONE is UTC: timestamps without time "
        "zone are read as UTC time; if the legacy application writes its server's local time, set "
        "LEGACY_TIMEZONE=America/New_York (a change re-migrates every row)"]
    assert validate(legacy, target, "America/New_York") == []
    assert validate(legacy, target, "US/Eastern") == []  # an alias: the same clock, no warning
    with psycopg.connect(legacy, autocommit=True) as conn:
        conn.execute("ALTER TABLE tbl_office ALTER last_modified TYPE timestamptz")
    with pytest.raises(SchemaMismatch) as refused:
        validate(legacy, target, "America/New_York")
    assert str(refused.value) == (
        "schema does not match the registry: legacy column tbl_office.last_modified (-> offices) is timestamp with "
        "time zone, which LEGACY_TIMEZONE=America/New_York would shift: that setting is for timestamps without time "
        "zone; leave it at UTC for this database")
