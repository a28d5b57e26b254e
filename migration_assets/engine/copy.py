"""Bytes on the wire to the target, and the keys the fast path drops and rebuilds.

The load writes the stream's batches with a binary ``COPY ... FROM STDIN``: :class:`BinaryCopy`
encodes Arrow to PostgreSQL's binary format in Rust (pgpq), skipping the rejected rows without
copying the batch. Rejected rows go to the quarantine as CSV (:func:`to_csv`);
:func:`parse_copy_rows` reads ``COPY ... TO STDOUT (FORMAT csv)`` back into Arrow (the IO
manager's ``load_input``).

Fast path: an empty target table is loaded with its primary key, unique constraints, indexes and
the foreign keys on and to it dropped inside the load's transaction, then rebuilt from the
definitions the catalog gave (:func:`capture_constraints`). Building a b-tree once from the loaded
rows is cheaper than maintaining it under random-UUID inserts, and re-adding a foreign key
validates every row, so the result is the table the merge path would produce. A table that a role
the loader does not own references, or whose keys a user's view depends on, takes the merge path
instead (:func:`fast_path_blocker`). A run that ends with the ``target_keys`` step sets the keys of
all its empty tables aside at once instead, and restores them after its last table (keys.py).
"""

from __future__ import annotations

import io

import numpy as np
import pgpq
import pyarrow as pa
import pyarrow.csv as pcsv
from pgpq import encoders as pgpq_encoders, schema as pgpq_schema
from psycopg import sql

from ..registry import Entity
from .names import table_named, target_table


def parse_copy_rows(chunks: list[bytes], schema: pa.Schema) -> pa.Table:
    """Parse rows of a PostgreSQL ``COPY ... (FORMAT csv)`` into a typed Arrow table.

    PostgreSQL writes NULL as an empty unquoted field and the empty string as ``""``; booleans as
    t/f. The IO manager's ``load_input`` reads the target tables back through here.
    """
    return pcsv.read_csv(
        io.BytesIO(b"".join(chunks)),
        read_options=pcsv.ReadOptions(column_names=schema.names, block_size=1 << 26),
        parse_options=pcsv.ParseOptions(newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(column_types=schema, null_values=[""], strings_can_be_null=True,
                                            quoted_strings_can_be_null=False, true_values=["t"],
                                            false_values=["f"]))


def _write_options() -> pcsv.WriteOptions:
    return pcsv.WriteOptions(include_header=False, quoting_style="needed")


def to_csv(batch: pa.RecordBatch | pa.Table) -> bytes:
    """CSV for COPY (the quarantine's rejects: ids, text and the raw row)."""
    out = io.BytesIO()
    pcsv.write_csv(batch, out, _write_options())
    return out.getvalue()


class BinaryCopy:
    """Arrow batches -> PostgreSQL binary COPY data (pgpq, in Rust: no per-row Python).

    The Arrow type of each column must be the binary layout of the target column: UUIDs are
    their 16-byte storage (the layout uuid_recv reads), ``metadata`` is encoded as jsonb, the
    rest follows the registry's Arrow types (int32 for integer, timestamp[us] for timestamptz...).
    """

    def __init__(self, schema: pa.Schema):
        self.schema = pa.schema([pa.field(f.name, f.type.storage_type if isinstance(f.type, pa.ExtensionType)
                                          else f.type) for f in schema])
        encoders = {f.name: (pgpq_encoders.StringEncoderBuilder.new_with_output(f, pgpq_schema.Jsonb())
                             if f.name == "metadata" else pgpq.ArrowToPostgresBinaryEncoder.infer_encoder(f))
                    for f in self.schema}
        self._encoder = pgpq.ArrowToPostgresBinaryEncoder.new_with_encoders(self.schema, encoders)

    def header(self) -> bytes:
        return self._encoder.write_header()

    def encode(self, batch: pa.RecordBatch, skip: pa.Array | None = None) -> bytes:
        """The rows of ``batch``, except those where the boolean ``skip`` is true.

        Rows are skipped by encoding the runs between them (zero-copy slices): filtering the batch
        would copy every column to drop a few rejects, and most batches of dirty data hold some."""
        arrays = [c.storage if isinstance(c, pa.ExtensionArray) else c for c in batch.columns]
        rows = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        if skip is None:
            return self._encoder.write_batch(rows)
        out, start = [], 0
        for stop in np.flatnonzero(skip.to_numpy(zero_copy_only=False)).tolist() + [rows.num_rows]:
            if stop > start:
                out.append(self._encoder.write_batch(rows.slice(start, stop - start)))
            start = stop + 1
        return b"".join(out)

    def trailer(self) -> bytes:
        return self._encoder.finish()


def capture_constraints(conn, e: Entity, schema: str) -> list[tuple[str, str, str]]:
    """(table, name, definition) of every PK/unique/FK constraint on or referencing ``e``'s table in
    ``schema``, plus indexes."""
    rows = conn.execute("""
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), contype,
               CASE contype WHEN 'p' THEN 0 WHEN 'u' THEN 1 ELSE 3 END AS ord
        FROM pg_constraint
        WHERE (conrelid = %(t)s::regclass AND contype IN ('p', 'u', 'f'))
           OR (confrelid = %(t)s::regclass AND contype = 'f' AND conrelid <> %(t)s::regclass)
        UNION ALL
        SELECT %(t)s::text, c.relname, pg_get_indexdef(i.indexrelid), 'i', 2
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = %(t)s::regclass
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid)
        ORDER BY 5, 2""", {"t": target_table(e, schema).as_string(conn)}).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


_DEPENDENTS_OF_KEYS = """
    WITH dropped AS (  -- what the fast path drops: the table's keys and indexes, the foreign keys to it
        SELECT 'pg_constraint'::regclass AS classid, oid AS objid FROM pg_constraint
        WHERE (conrelid = %(t)s::regclass AND contype IN ('p', 'u', 'f'))
           OR (confrelid = %(t)s::regclass AND contype = 'f')
        UNION ALL
        SELECT 'pg_class'::regclass, indexrelid FROM pg_index WHERE indrelid = %(t)s::regclass)
    SELECT DISTINCT CASE WHEN d.classid = 'pg_rewrite'::regclass
                         THEN (SELECT CASE r.relkind WHEN 'm' THEN 'materialized view ' ELSE 'view ' END
                                      || format('%%I.%%I', r.relnamespace::regnamespace, r.relname)
                               FROM pg_rewrite w JOIN pg_class r ON r.oid = w.ev_class WHERE w.oid = d.objid)
                         ELSE pg_describe_object(d.classid, d.objid, d.objsubid) END
    FROM pg_depend d JOIN dropped k ON k.classid = d.refclassid AND k.objid = d.refobjid
    WHERE d.deptype = 'n'
      AND NOT EXISTS (SELECT FROM dropped x WHERE x.classid = d.classid AND x.objid = d.objid)
    ORDER BY 1"""


def fast_path_blocker(conn, e: Entity, schema: str) -> str | None:
    """Why the fast path cannot drop the keys of ``e``'s table in ``schema``, or None.

    - A table the loading role does not own references it (Supabase's ``auth`` or ``storage``
      schemas, a user's own table): only its owner may drop that foreign key.
    - Another object depends on a key or index it would drop, other than the foreign keys it
      drops and rebuilds itself: a user's view grouping by ``id`` (PostgreSQL records the
      primary key as what makes the other columns functionally dependent), a materialized view,
      a rule. PostgreSQL would refuse the drop, and its advice (``DROP ... CASCADE``) would
      destroy the user's object. pg_depend names them all, whatever their kind.
    The merge path needs neither drop, so the table loads through it."""
    table = target_table(e, schema).as_string(conn)
    row = conn.execute("""
        SELECT c.conrelid::regclass::text, pg_get_userbyid(r.relowner)
        FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid
        WHERE c.confrelid = %s::regclass AND c.contype = 'f'
          AND NOT pg_has_role(current_user, r.relowner, 'USAGE')
        ORDER BY 1 LIMIT 1""", [table]).fetchone()
    if row:
        return f"{row[0]}, owned by {row[1]}, references it"
    dependents = [d for (d,) in conn.execute(_DEPENDENTS_OF_KEYS, {"t": table})]
    if dependents:
        return f"its keys are used by {', '.join(dependents[:3])}{' ...' if len(dependents) > 3 else ''}"
    return None


DROP_ORDER = {"f": 0, "i": 1, "u": 2, "p": 3}  # by kind: what depends on a key is dropped first ...
BUILD_ORDER = {"p": 0, "u": 1, "i": 2, "f": 3}  # ... and built last (the fast path's keys and keys.py's)


def drop_constraints_sql(saved: list[tuple[str, str, str, str]], schema: str) -> list[sql.Composable]:
    """Drop what :func:`capture_constraints` found in ``schema``: foreign keys first (they depend on
    the keys), then indexes, unique constraints and the primary key."""
    out = []
    for table, name, _, kind in sorted(saved, key=lambda s: DROP_ORDER[s[3]]):
        if kind == "i":
            out.append(sql.SQL("DROP INDEX {}").format(table_named(name, schema)))
        else:  # table is a regclass text from the catalog (already quoted as needed)
            out.append(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.SQL(table), sql.Identifier(name)))
    return out


def restore_constraints_sql(saved: list[tuple[str, str, str, str]]) -> list[sql.Composable]:
    """Rebuild them from the catalog's definitions: the primary key first, foreign keys last
    (re-adding a foreign key validates every row)."""
    out = []
    for table, name, definition, kind in sorted(saved, key=lambda s: BUILD_ORDER[s[3]]):
        if kind == "i":
            out.append(sql.SQL(definition))  # pg_get_indexdef output: a complete CREATE INDEX statement
        else:
            out.append(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                sql.SQL(table), sql.Identifier(name), sql.SQL(definition)))
    return out


def drop_constraints(conn, saved, schema: str) -> None:
    for statement in drop_constraints_sql(saved, schema):
        conn.execute(statement)


def restore_constraints(conn, saved) -> None:
    for statement in restore_constraints_sql(saved):
        conn.execute(statement)
