"""Error classification: which failures a retry can fix, and what to do about the others.

Whether a retry can help is decided by type first, SQLSTATE next, never by message text:
- the project's own permanent errors derive from :class:`PermanentError`, which carries its kind
  and its recovery advice (a sliced load that cannot go on, a schema that does not match the
  registry, a target that cannot be set up, a database that refuses the login...);
- a ``TimeoutError`` is the load's own time limit (MIGRATION_TIMEOUT), and PostgreSQL's statement
  timeout is the one ``QueryCanceled`` (SQLSTATE 57014) whose primary message says so: PostgreSQL
  gives a timeout and an operator's cancel the same SQLSTATE, and that message is the only
  difference (a server whose messages are translated makes a timeout look like a cancel:
  retried up to MAX_RETRY_ATTEMPTS, then failed);
- psycopg's and ADBC's errors carry the server's SQLSTATE: connection loss (08), operator
  intervention (57P), rollbacks (40), lock not available, query canceled and too many connections
  are transient and retried by the asset's RetryPolicy; data exceptions (22), integrity
  violations (23, with the registry's constraint told from the user's own by name), privileges
  (42501), schema errors (42) and any other SQLSTATE are permanent and fail at once
  (failures.py turns them into a failure without retry);
- an error without SQLSTATE from the drivers' connection classes, or an ``OSError``, is a
  connection problem (transient); anything else is UNKNOWN and permanent.
Messages are kept for people, redacted: no password, no row values.
"""

from __future__ import annotations

from dataclasses import dataclass

import adbc_driver_manager
import psycopg
from psycopg import errors as pgerr

from .redaction import redact, without_row_values

TRANSIENT_SQLSTATE_PREFIXES = ("08", "57P", "40")  # connection, operator intervention, rollback
TRANSIENT_SQLSTATES = {"55P03", "57014", "53300"}  # lock not available, query canceled, too many connections
STATEMENT_TIMEOUT = "canceling statement due to statement timeout"  # PostgreSQL's message (see above)


@dataclass(frozen=True)
class ErrorKind:
    name: str  # SLICES, SCHEMA, SETUP, TIMEOUT, DUPLICATE_KEY, EMAIL_FORMAT, FOREIGN_KEY, CONNECTION, DATA...
    transient: bool
    message: str
    recovery: str


class PermanentError(RuntimeError):
    """An error a retry cannot fix. Subclasses name their ``kind`` and the ``recovery`` advice the
    audit trail and the run's failure show; the message says what happened."""

    kind = "UNKNOWN"
    recovery = "investigate: see the run's logs"


def _message(exc: BaseException) -> str:
    # libpq can echo conninfo fragments, and a misread URL's password as a host or port name;
    # PostgreSQL's DETAIL can carry a row's values (personal data): both removed
    text = redact(" ".join(without_row_values(str(exc)).split()))
    return text[:500] or type(exc).__name__


def _users_foreign_key(exc: BaseException) -> str | None:
    """The foreign key named by ``exc`` when it is not one of the registry's (a user's own table
    referencing a migrated one), as ``constraint on table``; else None."""
    diag = getattr(exc, "diag", None)
    name = getattr(diag, "constraint_name", None)
    if not name:
        return None
    from .registry import ENTITIES
    from .target_schema import constraint_names  # the registry's constraint names, spelled once

    ours = {n for e in ENTITIES for key, n in constraint_names(e).items() if key.startswith("fk:")}
    return None if name in ours else f"{name} on {diag.schema_name or 'public'}.{diag.table_name}"


def _email_rule(exc: BaseException) -> bool:
    """A violation of a registry table's email check constraint (named ``<table>_<column>_email_format``)."""
    name = getattr(getattr(exc, "diag", None), "constraint_name", None) or ""
    return isinstance(exc, pgerr.CheckViolation) and name.endswith("_email_format")


def classify(exc: BaseException) -> ErrorKind:
    msg = _message(exc)
    if isinstance(exc, PermanentError):
        return ErrorKind(exc.kind, False, msg, exc.recovery)
    primary = getattr(getattr(exc, "diag", None), "message_primary", None)
    if isinstance(exc, TimeoutError) or (isinstance(exc, pgerr.QueryCanceled) and primary == STATEMENT_TIMEOUT):
        # statement_timeout is set from MIGRATION_TIMEOUT: the same load would hit it again
        if "MIGRATION_TIMEOUT" not in msg:
            msg = f"MIGRATION_TIMEOUT exceeded: {msg}"
        return ErrorKind("TIMEOUT", False, msg, "raise MIGRATION_TIMEOUT or lower BATCH_SIZE; re-run (idempotent)")
    state = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, pgerr.UniqueViolation):
        return ErrorKind("DUPLICATE_KEY", False, msg,
                         "duplicates are quarantined before the load; check for concurrent writers to the target")
    if _email_rule(exc):
        return ErrorKind("EMAIL_FORMAT", False, msg, "email rule mismatch between registry and target constraint")
    if isinstance(exc, pgerr.ForeignKeyViolation) and (users := _users_foreign_key(exc)):
        return ErrorKind("FOREIGN_KEY", False, msg, f"your own foreign key {users} (not the registry's) still "
                         "references a row the legacy side deleted or changed: make it ON DELETE SET NULL or "
                         "CASCADE, delete the referencing rows, or keep the row with DELETE_POLICY=soft; then re-run")
    if isinstance(exc, pgerr.ForeignKeyViolation):
        return ErrorKind("FOREIGN_KEY", False, msg, "materialize the parent entity first; orphans are quarantined")
    if state == "42501":  # insufficient_privilege: not a schema mismatch, and no migration fixes it
        return ErrorKind("PERMISSION", False, msg, "the migration role lacks this privilege: grant it, or run as "
                         "the owner of the tables concerned")
    if state.startswith("42"):
        return ErrorKind("SCHEMA", False, msg, "schema mismatch: run the pre-flight validation and apply migrations")
    if state in TRANSIENT_SQLSTATES or state.startswith(TRANSIENT_SQLSTATE_PREFIXES):
        return ErrorKind("CONNECTION" if state.startswith(("08", "57P")) else "CONCURRENCY", True, msg,
                         "retried automatically with exponential backoff")
    if state.startswith("22"):
        # a data exception is a property of the rows: the same rows fail the same way on a retry
        return ErrorKind("DATA", False, msg, "a legacy value the load could not convert: report it with the "
                         "table and value named (a bug: every value should load or be quarantined)")
    if state.startswith("23"):
        return ErrorKind("INTEGRITY", False, msg, "a target constraint rejected a row: check for other writers "
                         "to the target or constraints the registry does not know")
    if len(state) == 5:
        # the server answered with a definite error: only the classes above are worth a retry
        return ErrorKind("UNKNOWN", False, msg, f"SQLSTATE {state}: investigate; see the run's logs")
    # the source is read through ADBC: its errors carry the SQLSTATE too (handled above when set)
    if isinstance(exc, (psycopg.OperationalError, adbc_driver_manager.OperationalError, ConnectionError, OSError)):
        return ErrorKind("CONNECTION", True, msg, "retried automatically with exponential backoff")
    return ErrorKind("UNKNOWN", False, msg, "investigate: see the run's logs")
