"""The one sequence of a table's load, shared by the IO manager, a sliced asset's last step and
:func:`migrate_entity` (tests, the benchmark): load (or finish the slices), write the audit row
in the same transaction, commit; then, when a differential load left legacy rows unaccounted for
(load.needs_full_pass), a full-mode pass of the table, audited and committed the same way.

The caller owns the connection and what surrounds the sequence (Dagster's step: the statement
timeout, signals, the failure's classification and audit, failures.py); ``renew`` lets it set
its per-transaction settings again before the second transaction.
"""

from __future__ import annotations

import logging
from typing import Callable

import psycopg
from psycopg import sql

from .. import connections
from ..registry import entity
from ..errors import classify
from .audit import LoadResult, write_audit
from .changes import confirm, forget
from .load import full_pass, load_again, load_stream, needs_full_pass
from .names import WATERMARKS
from .options import LoadOptions
from .slices import FinishSlices, finish_slices
from .stream import LegacyStream

log = logging.getLogger(__name__)


def commit_load(conn: psycopg.Connection, work: LegacyStream | FinishSlices, run_id: str,
                on_progress: Callable[[str], None] | None = None,
                renew: Callable[[psycopg.Connection], None] | None = None,
                warn: Callable[[str], None] = log.warning) -> LoadResult:
    """Load ``work`` (a stream, or a sliced load to finish) into its table on ``conn`` and commit
    with its audit row; follow a differential load that left rows unaccounted for with a full
    pass (in logical mode, with one load of the slot's newer changes, and no full pass: rows
    committed after the position a table recorded come with the next refresh). Returns the last
    transaction's result. On an error nothing of the failed transaction stays (the caller's
    connection rolls back)."""
    opts = work.opts
    name = (work.stream if isinstance(work, FinishSlices) else work).entity.name
    if isinstance(work, FinishSlices):
        result = finish_slices(conn, work.stream, opts, on_progress=on_progress)
    else:
        result = load_stream(conn, work, opts, on_progress)
    write_audit(conn, run_id, result, name)
    conn.commit()
    if opts.change_source == "logical":
        confirm_slot(conn, work, opts, warn)
        if needs_full_pass(result) and not isinstance(work, FinishSlices):
            # rows committed after the position the run decoded up to were in the snapshot: the
            # slot's newer changes name them, which costs far less than comparing every row
            warn(f"{name}: {result.remaining_difference:,} legacy rows committed after the decoded position: "
                 "loading again with the slot's newer changes")
            forget(work.conninfo, opts.slot, opts.run_id)
            if renew is not None:
                renew(conn)
            result = load_again(conn, work, opts, on_progress)
            write_audit(conn, run_id, result, name)
            conn.commit()
            confirm_slot(conn, work, opts, warn)
        if needs_full_pass(result):
            # every row the snapshot holds and this load did not read was committed after the
            # decoded position the table recorded: the slot names it to the next refresh
            warn(f"{name}: {result.remaining_difference:,} legacy rows committed while it loaded: the next refresh "
                 "reads them from the slot")
            return result
    if needs_full_pass(result):
        warn(f"{name}: the differential load left {result.remaining_difference:,} legacy rows unaccounted for "
             "(inserted below the highest id seen): comparing every row")
        if renew is not None:
            renew(conn)
        result = full_pass(conn, work, opts, on_progress)
        write_audit(conn, run_id, result, name)
        conn.commit()
    return result


def confirm_slot(conn: psycopg.Connection, work: LegacyStream | FinishSlices, opts: LoadOptions,
                 warn: Callable[[str], None]) -> None:
    """Logical mode, after a commit: advance the legacy slot to the lowest position every table
    has recorded (changes.confirm). A failure only delays it: the next refresh re-reads those
    changes (idempotent), so it is a warning, never the step's failure."""
    stream = work.stream if isinstance(work, FinishSlices) else work
    try:
        positions = dict(conn.execute(sql.SQL("SELECT entity, logical_lsn::text FROM {}").format(
            WATERMARKS)).fetchall())
        conn.commit()
        confirm(stream.conninfo, opts.slot, positions)
    except psycopg.Error as exc:
        warn(f"the replication slot {opts.slot} could not be advanced now ({classify(exc).message}); the next "
             "refresh reads those changes again")


def migrate_entity(source_conninfo: str, target_conninfo: str, name: str, opts: LoadOptions,
                   on_progress=None, fail_after_batches: int | None = None) -> LoadResult:
    """Load one entity outside Dagster (tests, benchmark): :func:`commit_load` on a stream."""
    stream = LegacyStream(source_conninfo, entity(name), opts, fail_after_batches=fail_after_batches)
    try:
        with connections.borrowed(target_conninfo, "load") as conn:
            return commit_load(conn, stream, opts.run_id, on_progress)
    finally:
        stream.close()
