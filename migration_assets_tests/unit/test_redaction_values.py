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
