"""The Postgres Arrow IO manager: consumes an asset's record-batch stream into its target table.

``handle_output`` receives the :class:`~migration_assets.engine.stream.LegacyStream` an asset returns and
loads it with :func:`~migration_assets.engine.commit.commit_load` (the engine's one load sequence)
in ONE transaction on the target (a sliced asset's last step hands it
:class:`~migration_assets.engine.slices.FinishSlices` instead: the slices are in, the keys are
built once): the COPY, the quarantine, the merge (or the empty-table fast path) and the audit row
in ``migration_control.migration_runs`` commit together or not at all, under the guard of
failures.py (timeout, signals, the failure audited and classified). It merges instead of
deleting and re-inserting (unlike a generic DB IO manager), so children referencing a table keep
their parents; rows deleted at the source leave by the delete policy, their children following
the fresh-migration rules (engine). A differential load that leaves legacy rows unaccounted for
is followed, in the same step, by a full-mode pass of the table. A signal (SIGINT, SIGTERM) rolls
the load back and fails the step without a retry (stopping.py). The UI gets the counts as
materialization metadata.

The contract with the asset (assets.py): Dagster calls ``handle_output`` when the asset body
yields its ``Output(stream)``, before the body goes on, so the load has committed when the body
runs the table's checks next; a failed load raises there and the checks never run. The stream
carries the run's options (``stream.opts``), which the asset built from the settings resource.

``load_input`` exists for users who want a table downstream: it streams the target table back as
a ``pyarrow.RecordBatchReader`` in BATCH_SIZE batches, never the whole table at once. The
migration assets themselves depend on their parents with ``deps=`` and never load them.
"""

from __future__ import annotations

import time
from typing import Callable

import psycopg
import pyarrow as pa
from dagster import (
    ConfigurableIOManager,
    InputContext,
    MetadataValue,
    OutputContext,
)
from psycopg import sql

from . import connections, stopping
from .engine.audit import LoadResult, write_audit
from .engine.copy import parse_copy_rows
from .engine.commit import commit_load
from .engine.names import target_columns, target_table
from .engine.slices import FinishSlices
from .engine.stream import LegacyStream
from .errors import ErrorKind, classify
from .failures import target_transaction
from .lineage import column_lineage
from .preflight import UNMAPPED_OF_TABLE, unmapped_columns
from .registry import entity
from .resources import MigrationSettings, PostgresResource


def bounded_progress(name: str, timeout_ms: int, log: Callable[[str], None]) -> Callable[[str], None]:
    """A load's progress callback: logs each line, and raises TimeoutError once MIGRATION_TIMEOUT
    has passed since it was made (the per-statement timeout does not bound a whole load)."""
    started, timeout_s = time.time(), timeout_ms / 1000

    def progress(message: str) -> None:
        if time.time() - started > timeout_s:
            raise TimeoutError(f"{name}: MIGRATION_TIMEOUT of {timeout_s:.0f}s exceeded")
        log(message)

    return progress


class PostgresArrowIOManager(ConfigurableIOManager):
    """Streams Arrow record batches into (and out of) the Supabase target database."""

    target: PostgresResource
    settings: MigrationSettings

    def handle_output(self, context: OutputContext, obj: LegacyStream | FinishSlices) -> None:
        e = entity(context.asset_key.path[-1])
        if not isinstance(obj, (LegacyStream, FinishSlices)):
            raise TypeError(f"{e.name}: expected a LegacyStream from the asset, got {type(obj).__name__}")
        started = time.time()
        timeout_ms = self.settings.migration_timeout_ms
        progress = bounded_progress(e.name, timeout_ms, context.log.info)
        try:
            # MIGRATION_TIMEOUT bounds every statement (the guard sets it for the transaction, and
            # renews it for a full pass's); progress bounds the whole load
            with target_transaction(context.run_id, self.target, timeout_ms, e.name,
                                    on_error=lambda exc: self._record_failure(context, e.name, exc, started)) as conn:
                result = commit_load(conn, obj, context.run_id, on_progress=progress, warn=context.log.warning,
                                     renew=lambda c: connections.set_statement_timeout(c, timeout_ms))
            unmapped = self._unmapped(context, e, obj)
        finally:
            obj.close()
        context.add_output_metadata({**self._metadata(e, result, obj.opts.delete_policy),
                                     "dagster/column_lineage": column_lineage(e),
                                     "legacy_unmapped_columns": MetadataValue.json(unmapped)})
        context.log.info(
            f"{e.name}: {result.status} via {result.load_path}: read {result.records_read:,}, "
            f"inserted {result.inserted:,}, updated {result.updated:,}, unchanged {result.unchanged:,}, "
            f"deleted {result.deleted:,}, "
            f"quarantined {result.quarantined:,} in {result.duration_s:.2f}s ({result.rows_per_second:,.0f} rows/s)")

    @staticmethod
    def _unmapped(context: OutputContext, e, obj: LegacyStream | FinishSlices) -> list[str]:
        """The legacy table's columns the registry does not map (the catalog shows what is left
        behind), read on the stream's connection; the load is committed, so a failure here is
        only a warning."""
        stream = obj.stream if isinstance(obj, FinishSlices) else obj
        try:
            return unmapped_columns(e, stream.query(UNMAPPED_OF_TABLE, [e.legacy_table]))
        except psycopg.Error as exc:
            context.log.warning(f"{e.name}: could not list the legacy columns the registry does not map: "
                                f"{classify(exc).message}")
            return []

    def _record_failure(self, context: OutputContext, name: str, exc: BaseException | None, started: float):
        """Audit the failure on its own connection (the load's transaction was rolled back);
        ``exc`` None: a signal stopped the load (status CANCELED)."""
        kind = classify(exc) if exc is not None else ErrorKind(
            "CANCELED", False, "stopped by a signal (SIGINT or SIGTERM); the load was rolled back", "re-run the job")
        try:
            with self.target.connect(connect_timeout=5) as conn:
                write_audit(conn, context.run_id, None, name, status="FAILED" if exc is not None else stopping.CANCELED,
                            error_class=kind.name, error=kind.message, recovery=kind.recovery, started_at=started)
                conn.commit()
        except Exception as audit_exc:  # the target may be the thing that is down
            context.log.warning(f"{name}: could not record the failure in the audit trail: {classify(audit_exc).message}")
        return kind

    def _metadata(self, e, r: LoadResult, delete_policy: str) -> dict:
        # the rows the table holds now: a soft delete keeps its row (marked), a hard one removes it
        removed = r.evicted + (r.deleted if delete_policy == "hard" else 0)
        return {
            "dagster/row_count": r.existing + r.inserted - removed,
            "status": r.status,
            "load_path": r.load_path,
            "records_read": r.records_read,
            "existing_before": r.existing,
            "inserted": r.inserted,
            "updated": r.updated,
            "unchanged": r.unchanged,
            "quarantined": r.quarantined,
            "mode": r.mode,
            "deleted": r.deleted,
            "evicted_now_quarantined": r.evicted,
            "children_affected": MetadataValue.json(r.cascaded),
            "remaining_difference": r.remaining_difference,
            "quarantine_resolved": r.resolved,
            "quarantine_by_reason": MetadataValue.json(r.quarantine_by_reason),
            "recoveries_applied": MetadataValue.json(r.recoveries),
            "phase_seconds": MetadataValue.json(r.phases),
            "auto_resolution_rate": MetadataValue.float(_resolution_rate(r)),
            "rows_per_second": MetadataValue.float(round(r.rows_per_second, 1)),
            "duration_s": MetadataValue.float(round(r.duration_s, 3)),
            "peak_rss_mb": MetadataValue.float(round(r.peak_rss_mb, 1)),
        }

    def load_input(self, context: InputContext) -> pa.RecordBatchReader:
        e = entity(context.asset_key.path[-1])
        batch_size = self.settings.batch_size
        names = target_columns(e)
        # UUIDs as their text: what a downstream consumer reads (the load's batches carry arrow.uuid)
        types = {"id": pa.string(), "metadata": pa.string(),
                 **{c.target: pa.string() if c.target_type == "uuid" else c.arrow_type for c in e.columns}}
        schema = pa.schema([(n, types[n]) for n in names])
        conninfo = self.target.conninfo()

        def batches():
            with connections.connect(conninfo) as conn:
                conn.execute("SET LOCAL TimeZone = 'UTC'")
                copy_sql = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT csv)").format(
                    sql.SQL(", ").join(map(sql.Identifier, names)), target_table(e, self.settings.target_schema))
                with conn.cursor().copy(copy_sql) as copy:
                    chunks = []
                    for chunk in copy:
                        chunks.append(chunk)
                        if len(chunks) >= batch_size:
                            yield _parse(chunks, schema)
                            chunks = []
                    if chunks:
                        yield _parse(chunks, schema)

        return pa.RecordBatchReader.from_batches(schema, batches())


def _parse(chunks, schema: pa.Schema) -> pa.RecordBatch:
    return parse_copy_rows(chunks, schema).cast(schema).combine_chunks().to_batches()[0]


def _resolution_rate(r: LoadResult) -> float:
    """Share of problem rows fixed automatically (recoveries) among all problem rows."""
    fixed = sum(r.recoveries.values())
    problems = fixed + r.quarantined
    return round(fixed / problems, 4) if problems else 1.0
