"""Error classification by type and SQLSTATE, never by text; a step's failure carries its kind."""

from __future__ import annotations

import psycopg
import pytest
from dagster import Failure
from psycopg import errors as pgerr

from migration_assets.config import DbSettings
from migration_assets.engine.load import SliceError
from migration_assets.errors import ErrorKind, PermanentError, classify
from migration_assets.failures import as_failure, kind_of
from migration_assets.preflight import DatabaseUnreachable, SchemaMismatch
from migration_assets.redaction import register_secret
from migration_assets.resources import PostgresResource
from migration_assets.migrations import MigrationDrift, SetupError


@pytest.mark.parametrize("exc, name, transient", [
    (psycopg.OperationalError("server closed the connection unexpectedly"), "CONNECTION", True),
    (ConnectionResetError("reset by peer"), "CONNECTION", True),
    (pgerr.AdminShutdown("terminating connection due to administrator command"), "CONNECTION", True),
    (pgerr.SerializationFailure("could not serialize access"), "CONCURRENCY", True),
    (pgerr.DeadlockDetected("deadlock detected"), "CONCURRENCY", True),
    (pgerr.QueryCanceled("canceling statement due to user request"), "CONCURRENCY", True),
    (pgerr.TooManyConnections("sorry, too many clients already"), "CONCURRENCY", True),
    (pgerr.UndefinedColumn("column x does not exist"), "SCHEMA", False),
    (pgerr.InsufficientPrivilege("permission denied for table offices"), "PERMISSION", False),
    (pgerr.UniqueViolation('duplicate key value violates unique constraint "p_key"'), "DUPLICATE_KEY", False),
    (pgerr.ForeignKeyViolation("insert or update violates foreign key constraint"), "FOREIGN_KEY", False),
    (pgerr.InvalidTextRepresentation("invalid input syntax for type integer"), "DATA", False),
    (pgerr.NotNullViolation("null value in column"), "INTEGRITY", False),
    (pgerr.DiskFull("could not extend file"), "UNKNOWN", False),
    (TimeoutError("offices: MIGRATION_TIMEOUT of 5s exceeded"), "TIMEOUT", False),
    (ValueError("something else"), "UNKNOWN", False),
    # text is never read: the seed's message patterns alone classify nothing
    (Exception('duplicate key value violates unique constraint "p_key"'), "UNKNOWN", False),
    (Exception('violates check constraint "profiles_email_email_format"'), "UNKNOWN", False),
    (Exception("insert violates foreign key constraint"), "UNKNOWN", False),
    (Exception("Cannot use a pool after calling end"), "UNKNOWN", False),
    (Exception("canceling statement due to statement timeout"), "UNKNOWN", False),
])
def test_errors_are_classified_by_type_and_sqlstate(exc, name, transient):
    kind = classify(exc)
    assert (kind.name, kind.transient) == (name, transient)


@pytest.mark.parametrize("exc, name", [
    (SliceError("offices: a slice is pending"), "SLICES"), (SchemaMismatch("schema does not match"), "SCHEMA"),
    (DatabaseUnreachable("the legacy database does not answer"), "UNREACHABLE"),
    (MigrationDrift("file changed"), "MIGRATION_DRIFT"), (SetupError("profiles exists"), "SETUP"),
])
def test_the_projects_permanent_errors_carry_their_kind_and_recovery(exc, name):
    assert isinstance(exc, PermanentError)
    assert classify(exc) == ErrorKind(name, False, str(exc), type(exc).recovery)


def test_a_step_failure_carries_the_kind_the_step_decided():
    kind = classify(SchemaMismatch("legacy table tbl_office does not exist"))
    failure = as_failure(kind, "offices: pre-flight")
    assert isinstance(failure, Failure) and failure.allow_retries is False
    assert failure.description == ("offices: pre-flight: SCHEMA: legacy table tbl_office does not exist. align the "
                                   "schema with the registry (apply the migrations), then re-run")
    assert kind_of(failure) == kind
    assert kind_of(Failure("someone else's failure")).name == "UNKNOWN"


def test_no_password_and_no_row_value_in_a_classified_message():
    register_secret("s3cret-pw")
    assert classify(psycopg.OperationalError("x password=s3cret-pw")).message == "x password=[redacted]"
    assert "s3cret-pw" not in classify(psycopg.OperationalError('host "s3cret-pw" unknown')).message
    kind = classify(pgerr.NotNullViolation('null value in column "name" violates not-null constraint DETAIL: '
                                           'Failing row contains (1, Renée, renee@mail.test).'))
    assert "Renée" not in kind.message and "renee@mail.test" not in kind.message


def test_passwords_never_show():
    db = DbSettings(host="db.example", port=5433, dbname="legacy", user="app", password="s3cret-pw")
    assert "s3cret-pw" not in repr(db) and "s3cret-pw" not in str(db) and "s3cret-pw" not in db.describe()
    assert "s3cret-pw" in db.conninfo()  # only handed to the driver
    res = PostgresResource(host="db.example", user="app", password="s3cret-pw", database="legacy")
    assert "s3cret-pw" not in repr(res) and "s3cret-pw" not in str(res)
    with pytest.raises(psycopg.OperationalError) as info:
        PostgresResource(host="127.0.0.1", port=1, user="app", password="s3cret-pw", database="x").connect(
            connect_timeout=2)
    assert "s3cret-pw" not in str(info.value)
    assert "app@127.0.0.1:1/x" in str(info.value)
    assert "s3cret-pw" not in classify(psycopg.OperationalError("x password=s3cret-pw")).message
