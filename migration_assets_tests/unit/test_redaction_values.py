"""No row values in what the project stores or prints about an error (audit trail, logs, events)."""

from migration_assets.redaction import without_row_values


def test_failing_row_and_key_values_are_removed_and_the_key_columns_kept():
    text = ('new row for relation "profiles" violates check constraint "profiles_email_email_format"\n'
            "DETAIL:  Failing row contains (3f2a..., Renée, renee@example.com, doctor).")
    assert without_row_values(text) == ('new row for relation "profiles" violates check constraint '
                                        '"profiles_email_email_format"\nDETAIL:  Failing row contains '
                                        '(values not shown)')
    assert without_row_values('DETAIL:  Key (email)=(a (b)@c.d) already exists.') == \
        "DETAIL:  Key (email)=(values not shown) already exists."
    assert without_row_values('DETAIL:  Key (office_id, code)=(7, X) is not present in table "offices".') == \
        'DETAIL:  Key (office_id, code)=(values not shown) is not present in table "offices".'
    assert without_row_values("relation \"x\" does not exist") == "relation \"x\" does not exist"


def test_a_data_error_the_arrow_reader_raises_is_data_and_never_retried():
    """The stream reads through the driver's own reader, which raises typed errors carrying the
    SQLSTATE (the bare pyarrow reader raised an OSError, classed as a lost connection and retried)."""
    import adbc_driver_manager

    from migration_assets.errors import classify

    exc = adbc_driver_manager.DataError('INVALID_DATA: ERROR: invalid byte sequence for encoding "UTF8": 0xe9',
                                        status_code=adbc_driver_manager.AdbcStatusCode.INVALID_DATA,
                                        sqlstate="22021")
    kind = classify(exc)
    assert (kind.name, kind.transient) == ("DATA", False)
