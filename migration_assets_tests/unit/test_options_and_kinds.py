"""One definition per setting and per name (settings.SETTINGS, engine.options, engine.names,
transforms.Kind)."""

from __future__ import annotations

import dataclasses

import pytest

from migration_assets.engine.names import REASONS
from migration_assets.engine.options import DELETE_POLICIES, MODES, LoadOptions
from migration_assets.errors import classify
from migration_assets.settings import DEFAULTS, SETTINGS, SettingsError, load
from migration_assets.transforms import Kind


def test_load_options_take_their_defaults_and_choices_from_the_settings():
    opts = LoadOptions()
    for f in dataclasses.fields(LoadOptions):
        if f.name in DEFAULTS:
            assert getattr(opts, f.name) == DEFAULTS[f.name], f.name
    by_field = {s.field: s for s in SETTINGS}
    assert MODES == by_field["mode"].choices and DELETE_POLICIES == by_field["delete_policy"].choices


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"batch_size": "10"}, {"mode": "fast"}, {"delete_policy": "x"},
                                 {"legacy_timezone": "EST5EDT+1"}])
def test_load_options_refuse_what_the_settings_refuse(bad):
    with pytest.raises(ValueError):
        LoadOptions(**bad)


def test_every_setting_is_named_in_its_error():
    with pytest.raises(SettingsError) as err:
        load({"BATCH_SIZE": "0", "ERROR_RECOVERY_ENABLED": "maybe", "MIGRATION_MODE": "fast"})
    for name in ("BATCH_SIZE='0'", "ERROR_RECOVERY_ENABLED='maybe'", "MIGRATION_MODE='fast'"):
        assert name in str(err.value)
    assert load({}).batch_size == DEFAULTS["batch_size"]


@pytest.mark.parametrize("raw", ["UTC+5", "New York", "Mars/Olympus", "../etc/passwd", ""])
def test_legacy_timezone_is_an_iana_zone(raw):
    if not raw:  # unset: the default
        assert load({"LEGACY_TIMEZONE": raw}).legacy_timezone == "UTC"
        return
    with pytest.raises(SettingsError) as err:
        load({"LEGACY_TIMEZONE": raw})
    assert str(err.value) == (f"invalid settings:\n  LEGACY_TIMEZONE={raw!r} is not a time zone of the IANA database: "
                              "allowed an IANA time zone name (UTC, America/New_York, Europe/Paris...)")
    assert load({"LEGACY_TIMEZONE": " America/New_York "}).legacy_timezone == "America/New_York"


@pytest.mark.parametrize("zone, since, until, back", [
    ("America/New_York", "2026-11-01 01:50", "2026-11-01 01:10", 60),  # the hour repeated
    ("America/New_York", "2026-10-01 00:00", "2026-12-06 00:00", 60),
    ("America/New_York", "2026-03-01 00:00", "2026-04-01 00:00", 0),  # clocks go forward: nothing re-read
    ("America/New_York", "2026-11-02 00:00", "2026-12-06 00:00", 0),
    ("Australia/Lord_Howe", "2026-03-01 00:00", "2026-05-01 00:00", 30),  # a half-hour shift
    ("Asia/Tokyo", "2020-01-01 00:00", "2026-12-06 00:00", 0),
    ("UTC", "2020-01-01 00:00", "2026-12-06 00:00", 0),
    ("Europe/Paris", "1900-01-01 00:00", "2026-12-06 00:00", 60),  # a watermark from long ago
])
def test_clock_set_back_is_the_largest_fall_of_the_zones_offset_in_the_window(zone, since, until, back):
    import datetime as dt

    from migration_assets.engine.plan import clock_set_back

    assert clock_set_back(zone, dt.datetime.fromisoformat(since), dt.datetime.fromisoformat(until)) == \
        dt.timedelta(minutes=back)


def test_every_kind_is_its_own_member():
    members = list(Kind)
    assert len({k.value for k in members}) == len(members) == len(Kind.__members__)
    assert Kind.FK is not Kind.PK and Kind.FK.name == "FK"
    assert (Kind.FK.legacy_type, Kind.FK.target_type) == (Kind.PK.legacy_type, Kind.PK.target_type)


def test_reason_codes_are_spelled_once():
    assert len(set(REASONS)) == len(REASONS) == 5


def test_errors_are_classified_by_kind():
    import psycopg
    from psycopg import errors as pgerr

    assert classify(psycopg.OperationalError("server closed the connection unexpectedly")).transient
    assert not classify(pgerr.UndefinedColumn("column x does not exist")).transient
    assert classify(TimeoutError("MIGRATION_TIMEOUT of 5s exceeded")).name == "TIMEOUT"
