"""The data path, without Dagster: legacy rows -> Arrow record batches -> target table, one
transaction per table.

One load, phase by phase, one module each:

- ``options``: the :class:`~.options.LoadOptions` value every phase is handed;
- ``names``: the names the phases share (helper columns, reason codes, control tables);
- ``source_sql``: the SQL run on the legacy database (the transforming SELECT, summaries, gaps);
- ``stream``: :class:`~.stream.LegacyStream`, the legacy table as Arrow batches in one snapshot;
- ``plan``: :class:`~.plan.ReadPlan`, what to read (every row, changed buckets, or the changes
  since the watermark), and the watermark;
- ``copy``: binary COPY encoding, and the keys the empty-table fast path drops and rebuilds;
- ``keys``: a first migration's keys, set aside for the whole run and restored after its last
  table (one PostgREST schema reload each way instead of one per table);
- ``rejects``: orphans and duplicates found on the target side, and the quarantine;
- ``deletes``: rows deleted at the source, and the eviction that cascades to children;
- ``load``: :func:`~.load.load_stream`, the transaction that runs the phases in order;
- ``audit``: :class:`~.audit.LoadResult` and its row in the audit trail;
- ``memory``: allocator bounds, applied by an explicit call.

Rows leave the target only by the documented rules: a legacy row deleted at the source (hard
delete policy), a row that no longer loads (evicted, now quarantined), and their descendants as a
fresh migration would treat them. A re-run over an unchanged source writes nothing.

Functions named ``*_sql`` return SQL (identifiers composed with ``psycopg.sql``) and run nothing;
the unit tests check them without a database. Nothing here imports Dagster or reads the
environment: the code location (definitions.py) and the command line build the options.
"""
