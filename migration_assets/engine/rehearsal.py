"""A dry run (``migrate --dry-run``, ``refresh --dry-run``, the ``dry_run`` job): what a
migration or a refresh would do to the target, without doing it.

Every selected table is loaded by the real load (load.load_stream: the same plan, transforms,
quarantine rules, merge, deletes and cascades) in dependency order inside ONE target
transaction, which is rolled back at the end. So a child is judged against its parents'
would-be state (a row whose parent would be quarantined is an orphan in the rehearsal too), and
nothing stays: no row, no quarantine row, no watermark, no audit row (none is written). The
legacy database is only read, each table in a snapshot of its own, as a load reads it.

What it costs: the time of the load itself, and the transaction holds each table's load lock
(readers are not blocked) until the end. The temporary tables a load leaves until its commit are
dropped after each table, since the transaction never commits. A differential load that leaves
legacy rows unaccounted for would be followed by a full pass; the rehearsal reports that
difference instead of running the pass. In logical mode (MIGRATION_CHANGE_SOURCE) it plans as the
watermark mode does: the same rows change, and nothing is created on the legacy server.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from psycopg import sql

from .. import connections
from ..registry import topological_order
from .audit import LoadResult
from .load import load_stream
from .options import LoadOptions
from .stream import LegacyStream

# this session's temporary tables (a load's staging, rejects and delete lists)
_TEMP_TABLES = "SELECT relname FROM pg_class WHERE relnamespace = pg_my_temp_schema() AND relkind = 'r'"


def rehearse(source_conninfo: str, target_conninfo: str, opts: LoadOptions, names: list[str] | None = None,
             on_progress: Callable[[str], None] | None = None) -> list[LoadResult]:
    """The results the load of each table (``names``, default all) would have, in dependency
    order; the target is left exactly as it was."""
    # the watermark's plan even in logical mode: that mode's first load creates a slot and a
    # publication on the legacy server, which a rehearsal must not; both plans load the same rows
    opts = replace(opts, change_source="watermark")
    results = []
    with connections.connect(target_conninfo) as conn:
        try:
            for e in topological_order():
                if names is not None and e.name not in names:
                    continue
                stream = LegacyStream(source_conninfo, e, opts)
                try:
                    results.append(load_stream(conn, stream, opts, on_progress))
                finally:
                    stream.close()
                for (name,) in conn.execute(_TEMP_TABLES).fetchall():
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
        finally:
            conn.rollback()
    return results
