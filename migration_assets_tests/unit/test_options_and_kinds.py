"""One definition per setting and per name (settings.SETTINGS, engine.options, engine.names,
transforms.Kind)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from migration_assets.engine.names import REASONS
from migration_assets.engine.options import LoadOptions
from migration_assets.errors import classify
from migration_assets.settings import DEFAULTS, SETTINGS, SettingsError, load
from migration_assets.transforms import Kind


@pytest.mark.parametrize("bad, message", [
    ({"batch_size": 0}, "BATCH_SIZE=0 is out of range: allowed integer 1..1,000,000"),
    ({"batch_size": "10"}, "BATCH_SIZE='10' is not an integer: allowed integer 1..1,000,000"),
    ({"fast_path": "yes"}, "MIGRATION_FAST_PATH='yes' is not a boolean: allowed true/false (also 1/0, yes/no, on/off)"),
    ({"mode": "fast"}, "MIGRATION_MODE='fast' is not allowed: allowed full, differential"),
    ({"delete_policy": "x"}, "DELETE_POLICY='x' is not allowed: allowed hard, soft"),
    ({"legacy_timezone": "EST5EDT+1"}, "LEGACY_TIMEZONE='EST5EDT+1' is not a time zone of the IANA database: "
                                       "allowed an IANA time zone name (UTC, America/New_York, Europe/Paris...)"),
])
def test_load_options_refuse_what_the_settings_refuse_naming_the_variable(bad, message):
    with pytest.raises(ValueError) as refused:
        LoadOptions(**bad)
    assert str(refused.value) == message


def test_a_run_configuration_is_checked_as_the_environment_is():
    """A value given in a run's configuration (the launchpad) meets the same checks, named."""
    from migration_assets.resources import MigrationSettings

    with pytest.raises(Exception) as refused:
        MigrationSettings(mode="fast")
    assert "MIGRATION_MODE='fast' is not allowed: allowed full, differential" in str(refused.value)
    with pytest.raises(Exception) as refused:
        MigrationSettings(batch_size=0)  # the bounds are the field's own (ge/le), checked first
    assert "batch_size\n  Input should be greater than or equal to 1" in str(refused.value)
    with pytest.raises(Exception) as refused:
        MigrationSettings(legacy_timezone="Mars/Olympus", sliced_tables=["nope"])
    assert "LEGACY_TIMEZONE='Mars/Olympus' is not a time zone of the IANA database" in str(refused.value)
    assert "MIGRATION_SLICED_TABLES=('nope',) is naming no table of the registry (nope)" in str(refused.value)


def test_every_setting_reaches_the_resource_with_its_bounds_and_the_engine_ones_reach_load_options():
    from migration_assets.resources import MigrationSettings

    resource = MigrationSettings.from_settings(load({"LEGACY_TIMEZONE": "Asia/Tokyo", "BATCH_SIZE": "77",
                                                     "MIGRATION_REPORTS_DIR": "out"}))
    opts = resource.load_options("r1", "differential")
    assert (opts.legacy_timezone, opts.batch_size, opts.mode, opts.run_id) == ("Asia/Tokyo", 77, "differential", "r1")
    assert resource.reports_dir == "out"
    for s in SETTINGS:
        info = MigrationSettings.model_fields[s.field]
        bounds = {type(m).__name__: m for m in info.metadata}
        assert (getattr(bounds.get("Ge"), "ge", None), getattr(bounds.get("Le"), "le", None)) == (s.minimum, s.maximum)
        assert (s.field in {f.name for f in dataclasses.fields(LoadOptions)}) is s.engine, s.env


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


@pytest.mark.parametrize("raw, why", [("auth", "reserved"), ("migration_control", "reserved"), ("pg_data", "reserved"),
                                      ("Clinic", "not a schema name"), ("1clinic", "not a schema name"),
                                      ("clinic;drop", "not a schema name")])
def test_the_target_schema_is_a_plain_name_of_the_projects_own(raw, why):
    with pytest.raises(SettingsError) as err:
        load({"MIGRATION_TARGET_SCHEMA": raw})
    assert str(err.value).startswith(f"invalid settings:\n  MIGRATION_TARGET_SCHEMA={raw!r} is {why}: allowed lower-case "
                                     "letters, digits and underscores, at most 63, not starting with a digit or pg_, none "
                                     "of migration_control, information_schema, auth, storage,")
    assert load({"MIGRATION_TARGET_SCHEMA": "clinic"}).target_schema == "clinic"
    assert load({}).target_schema == "public"
    assert load({"MIGRATION_SLOT": "1_slot"}).slot == "1_slot"  # a slot's rules are PostgreSQL's for slots


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


def test_the_readme_settings_table_is_the_one_the_code_defines():
    from migration_assets.settings import markdown_table

    assert markdown_table() in (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_a_bare_run_prints_help_and_starts_nothing():
    out = subprocess.run(["./run"], cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for word in ("usage: ./run", "demo", "test", "ui", "status"):
        assert word in out.stdout


@pytest.mark.parametrize("raw, message", [
    ("x", "QUARANTINE_MAX_PERCENT='x' is not a percentage ('x')"),
    ("5,nope=3", "QUARANTINE_MAX_PERCENT='5,nope=3' is naming no table of the registry (nope)"),
    ("150", "QUARANTINE_MAX_PERCENT='150' is out of range"),
    ("2,3", "QUARANTINE_MAX_PERCENT='2,3' is not one default percentage followed by table=percentage overrides"),
    ("operations=3", "QUARANTINE_MAX_PERCENT='operations=3' is not one default percentage followed by "
                     "table=percentage overrides"),
])
def test_a_quarantine_budget_is_a_percentage_with_per_table_overrides(raw, message):
    from migration_assets.settings import Budget

    budget = load({"QUARANTINE_WARN_PERCENT": "1", "QUARANTINE_MAX_PERCENT": " 5 , operations=20,tasks=7.5"}
                  ).quarantine_max
    assert (budget, budget.of("operations"), budget.of("tasks"), budget.of("roles")) == (
        Budget(5.0, (("operations", 20.0), ("tasks", 7.5))), 20.0, 7.5, 5.0)
    assert str(budget) == "5,operations=20,tasks=7.5"
    with pytest.raises(SettingsError) as refused:
        load({"QUARANTINE_MAX_PERCENT": raw})
    assert str(refused.value) == (f"invalid settings:\n  {message}: allowed a percentage 0..100, then "
                                  "table=percentage overrides (2,operations=20)")


def test_a_warning_level_above_the_maximum_is_refused_naming_where():
    with pytest.raises(SettingsError) as refused:
        load({"QUARANTINE_WARN_PERCENT": "3,tasks=30", "QUARANTINE_MAX_PERCENT": "5,operations=2"})
    assert str(refused.value) == ("invalid settings:\n  QUARANTINE_WARN_PERCENT is above QUARANTINE_MAX_PERCENT "
                                  "for operations, tasks")
    from migration_assets.resources import MigrationSettings

    opts = MigrationSettings.from_settings(load({"QUARANTINE_WARN_PERCENT": "4,operations=15",
                                                 "QUARANTINE_MAX_PERCENT": "5,operations=20"})).check_options("r")
    assert (opts.quarantine_max.of("operations"), opts.quarantine_warn.of("operations"), opts.quarantine_warn.of(
        "tasks")) == (20.0, 15.0, 4.0)
