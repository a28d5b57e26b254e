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


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"batch_size": "10"}, {"mode": "fast"}, {"delete_policy": "x"}])
def test_load_options_refuse_what_the_settings_refuse(bad):
    with pytest.raises(ValueError):
        LoadOptions(**bad)


def test_every_setting_is_named_in_its_error():
    with pytest.raises(SettingsError) as err:
        load({"BATCH_SIZE": "0", "ERROR_RECOVERY_ENABLED": "maybe", "MIGRATION_MODE": "fast"})
    for name in ("BATCH_SIZE='0'", "ERROR_RECOVERY_ENABLED='maybe'", "MIGRATION_MODE='fast'"):
        assert name in str(err.value)
    assert load({}).batch_size == DEFAULTS["batch_size"]


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
