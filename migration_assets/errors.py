"""Error classification: which failures a retry can fix, and what the seed called them.

The seed system recognised four error types (duplicate key, email format, foreign key,
connection pool) by matching messages. Here the SQLSTATE decides where psycopg gives one, the
message only where it does not. Transient errors (connection lost or reset, server shutting down,
serialization failure, deadlock, a closed pool, a lock timeout, too many connections, a query
canceled by an operator) are retried by the asset's RetryPolicy. Everything else is permanent and
fails at once with a clear message (``dagster.Failure(allow_retries=False)``): data exceptions
(SQLSTATE class 22), integrity violations (23), schema errors (42), any other error the server
answered with a SQLSTATE, and a statement timeout (MIGRATION_TIMEOUT: the same load would hit it
again).
"""

from __future__ import annotations

from dataclasses import dataclass

import adbc_driver_manager
import psycopg
from psycopg import errors as pgerr

from .redaction import redact, without_row_values

TRANSIENT_SQLSTATE_PREFIXES = ("08", "57P", "40")  # connection, operator intervention, rollback
TRANSIENT_SQLSTATES = {"55P03", "57014", "53300"}  # lock not available, query canceled, too many connections


@dataclass(frozen=True)
class ErrorKind:
    name: str  # DUPLICATE_KEY, EMAIL_FORMAT, FOREIGN_KEY, CONNECTION_POOL, CONNECTION, TIMEOUT, SCHEMA, UNKNOWN
    transient: bool
    message: str
    recovery: str


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


def classify(exc: BaseException) -> ErrorKind:
    msg = _message(exc)
    state = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, TimeoutError) or "MIGRATION_TIMEOUT" in msg or "statement timeout" in msg:
        # statement_timeout is set from MIGRATION_TIMEOUT: the same load would hit it again
        if "MIGRATION_TIMEOUT" not in msg:
            msg = f"MIGRATION_TIMEOUT exceeded: {msg}"
        return ErrorKind("TIMEOUT", False, msg, "raise MIGRATION_TIMEOUT or lower BATCH_SIZE; re-run (idempotent)")
    if type(exc).__name__ == "SliceError":
        return ErrorKind("SLICES", False, msg, "re-run the job: pending slices load, completed ones stay, the last "
                         "step builds the keys")
    if type(exc).__name__ == "SchemaMismatch" or "pre-flight" in msg:
        return ErrorKind("SCHEMA", False, msg, "align the schema with the registry (apply the migrations), then re-run")
    if isinstance(exc, pgerr.UniqueViolation) or "duplicate key value" in msg:
        return ErrorKind("DUPLICATE_KEY", False, msg,
                         "duplicates are quarantined before the load; check for concurrent writers to the target")
    if (isinstance(exc, pgerr.CheckViolation) and "email_format" in msg) or "email_format" in msg:
        return ErrorKind("EMAIL_FORMAT", False, msg, "email rule mismatch between registry and target constraint")
    if isinstance(exc, pgerr.ForeignKeyViolation) and (users := _users_foreign_key(exc)):
        return ErrorKind("FOREIGN_KEY", False, msg, f"your own foreign key {users} (not the registry's) still "
                         "references a row the legacy side deleted or changed: make it ON DELETE SET NULL or "
                         "CASCADE, delete the referencing rows, or keep the row with DELETE_POLICY=soft; then re-run")
    if isinstance(exc, pgerr.ForeignKeyViolation) or "foreign key constraint" in msg:
        return ErrorKind("FOREIGN_KEY", False, msg, "materialize the parent entity first; orphans are quarantined")
    if "pool" in msg.lower() and ("closed" in msg.lower() or "after calling end" in msg.lower()):
        return ErrorKind("CONNECTION_POOL", True, msg, "retry with a fresh pool")
    if state == "42501":  # insufficient_privilege: not a schema mismatch, and no migration fixes it
        return ErrorKind("PERMISSION", False, msg, "the migration role lacks this privilege: grant it, or run as "
                         "the owner of the tables concerned")
    if isinstance(exc, (pgerr.UndefinedTable, pgerr.UndefinedColumn, pgerr.DatatypeMismatch)) or state.startswith("42"):
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
