"""Legacy rows deleted at the source, and the target rows that must leave with them.

After the merge the target holds every legacy row of the snapshot (loaded or quarantined), so
(target rows + open quarantine) - legacy rows is exactly the number of rows deleted at the
source; when it is 0 the search is skipped. Otherwise the source lists the gaps in its ids (one
pass over its primary key, source_sql.gaps_sql) and the target looks the ids of those gaps up
by their UUID and in the quarantine (:func:`apply_deletes`).

Under the ``hard`` policy a deleted row leaves the target, and so does a row that no longer
loads (now quarantined): :func:`evict` walks the foreign-key graph down from the removed rows
and treats every descendant as a fresh migration would with that parent absent (a required
reference moves the child to the quarantine as ORPHAN_FK with its raw legacy row, an optional
one is set NULL and marked for a retry), then deletes children before parents. Under ``soft``
the row stays, marked ``metadata.deleted_at_source``. Either way the open quarantine rows of
deleted legacy rows are resolved as ``deleted_at_source``.
"""

from __future__ import annotations

import logging

from psycopg import sql

from ..registry import Entity, children, entity
from .audit import LoadResult
from .names import ORPHAN_FK, QUARANTINE, SOFT_DELETED, legacy_uuid_sql, live_rows_sql, target_table
from .options import LoadOptions
from .plan import ReadPlan, Watermark, accounted
from .rejects import orphan_detail, set_fk_null, upsert_quarantine
from .source_sql import absent_ids_sql, gaps_sql
from .stream import LegacyStream, SourceState

log = logging.getLogger(__name__)


GAP_EXPAND_LIMIT = 5_000_000  # ids; beyond this the deleted rows are found by a scan instead


def deleted_ids_sql(e: Entity, opts: LoadOptions, expand: bool) -> sql.Composable:
    """Fill the temp table ``_gone`` with the legacy ids in the gaps of ``_gaps`` (lo, hi) that the
    target (present under the delete policy) or the open quarantine still holds. ``expand``: probe
    every id of the gaps by its UUID (primary-key lookups); otherwise (sparse ids, huge gaps) one
    scan of the target's legacy ids against the gaps."""
    live = live_rows_sql("t", opts.delete_policy)
    if expand:
        return sql.SQL(
            "INSERT INTO _gone SELECT g FROM _gaps, generate_series(lo, hi) AS g "
            "WHERE EXISTS (SELECT 1 FROM {t} AS t WHERE t.id = {uuid} AND {live}) "
            "OR EXISTS (SELECT 1 FROM {q} AS q WHERE q.entity = {ent} AND q.legacy_id = g AND NOT q.resolved)").format(
            t=target_table(e, opts.target_schema), uuid=legacy_uuid_sql(e.name, sql.SQL("g")), ent=sql.Literal(e.name),
            live=live, q=QUARANTINE)
    return sql.SQL(
        "INSERT INTO _gone SELECT DISTINCT s.l FROM (SELECT (t.metadata->>'legacy_id')::bigint AS l FROM {t} AS t "
        "WHERE {live} UNION ALL SELECT legacy_id FROM {q} WHERE entity = {ent} AND NOT resolved) s "
        "JOIN _gaps ON s.l BETWEEN _gaps.lo AND _gaps.hi").format(
        t=target_table(e, opts.target_schema), live=live, q=QUARANTINE, ent=sql.Literal(e.name))


def resolve_quarantine_sql(e: Entity, run_id: str, resolution: str, where: sql.Composable) -> sql.Composable:
    """Resolve ``e``'s open quarantine rows where ``where`` holds (alias ``q``), as ``resolution``."""
    return sql.SQL(
        "UPDATE {q} AS q SET resolved = true, resolved_at = now(), resolved_run_id = {run}, resolution = {res} "
        "WHERE q.entity = {ent} AND NOT q.resolved AND {where}").format(
        q=QUARANTINE, run=sql.Literal(run_id), res=sql.Literal(resolution), ent=sql.Literal(e.name), where=where)


def target_rows_of_sql(e: Entity, schema: str, into: str, legacy_ids: sql.Composable) -> sql.Composable:
    """Create the temp table ``into`` (column ``id``) of the rows of ``e``'s table in ``schema`` whose legacy id is
    one of ``legacy_ids`` (a query of one bigint column), looked up by their UUIDs."""
    return sql.SQL("CREATE TEMP TABLE {into} ON COMMIT DROP AS SELECT t.id FROM {t} AS t WHERE t.id = "
                   "ANY(ARRAY(SELECT {uuid} FROM ({ids}) AS g (legacy_id)))").format(
        into=sql.Identifier(into), t=target_table(e, schema), ids=legacy_ids,
        uuid=legacy_uuid_sql(e.name, sql.SQL("g.legacy_id")))


def soft_delete_sql(e: Entity, schema: str, run_id: str, ids_table: str) -> sql.Composable:
    """Mark the rows of ``e``'s table in ``schema`` listed in ``ids_table`` deleted at the source (run and time)."""
    return sql.SQL(
        "UPDATE {t} AS t SET metadata = t.metadata || jsonb_build_object({k}, jsonb_build_object("
        "'run_id', {run}::text, 'at', now())) FROM {ids} d WHERE t.id = d.id").format(
        t=target_table(e, schema), k=sql.Literal(SOFT_DELETED), run=sql.Literal(run_id), ids=sql.Identifier(ids_table))


def apply_deletes(conn, e: Entity, stream: LegacyStream, opts: LoadOptions, result: LoadResult,
                  state: SourceState, previous: Watermark | None, plan: ReadPlan) -> None:
    """Find the rows whose legacy row was deleted, set-based, and apply the delete policy (see the
    module's docstring). Sets ``result.accounted_after``, ``result.deleted`` and, when the load
    did not count the table before (a differential load), ``result.existing``."""
    if plan.read_nothing and plan.accounted_before is not None:
        accounted_now = plan.accounted_before  # this load wrote nothing: the count before still holds
    else:
        rows, accounted_now = accounted(conn, e, opts)
        if result.existing is None:
            result.existing = rows - result.inserted + result.evicted
    result.accounted_after = accounted_now
    if accounted_now <= state.rows:
        return
    # the gaps searched span every id the target or the quarantine may hold: the snapshot's range,
    # the last watermark's and the open quarantine's (rows quarantined by a parent's cascade)
    held = conn.execute(sql.SQL("SELECT min(legacy_id), max(legacy_id) FROM {} WHERE entity = %s AND NOT resolved").format(
        QUARANTINE), [e.name]).fetchone()
    ids = [x for x in (state.min_id, state.max_id, *held) + ((previous.min_id, previous.max_id) if previous else ())
           if x is not None]
    if previous is None or previous.min_id is None:
        lo, hi = conn.execute(sql.SQL("SELECT min(l), max(l) FROM (SELECT (metadata->>'legacy_id')::bigint AS l "
                                      "FROM {t} UNION ALL SELECT legacy_id FROM {q} WHERE entity = %s) s").format(
            t=target_table(e, opts.target_schema), q=QUARANTINE), [e.name]).fetchone()
        ids += [x for x in (lo, hi) if x is not None]
    gaps = None
    if plan.touched is not None:
        # logical mode: the deleted rows are the changed ids the snapshot no longer holds, exactly;
        # fewer of them than rows to account for (rows removed behind the slot's back): the search
        gaps = [(i, i) for (i,) in stream.query(absent_ids_sql(e, sorted(plan.touched)))]
        if len(gaps) < accounted_now - state.rows:
            log.warning("%s: %d rows to account for, %d deletes decoded: searching the legacy keys", e.name,
                        accounted_now - state.rows, len(gaps))
            gaps = None
    if gaps is None:
        gaps = stream.query(*gaps_sql(e, min(ids), max(ids)))
    conn.execute("CREATE TEMP TABLE _gone (legacy_id bigint PRIMARY KEY) ON COMMIT DROP")
    conn.execute("CREATE TEMP TABLE _gaps (lo bigint, hi bigint) ON COMMIT DROP")
    with conn.cursor().copy("COPY _gaps (lo, hi) FROM STDIN") as cp:
        for g in gaps:
            cp.write_row(g)
    conn.execute(deleted_ids_sql(e, opts, expand=sum(h - l + 1 for l, h in gaps) <= GAP_EXPAND_LIMIT))
    gone_quarantined = conn.execute(resolve_quarantine_sql(
        e, opts.run_id, SOFT_DELETED, sql.SQL("q.legacy_id IN (SELECT legacy_id FROM _gone)"))).rowcount
    conn.execute(target_rows_of_sql(e, opts.target_schema, "_evict_deleted", sql.SQL("SELECT legacy_id FROM _gone")))
    if opts.delete_policy == "hard":
        result.deleted = evict(conn, e, "_evict_deleted", stream, opts, result)
    else:
        result.deleted = conn.execute(soft_delete_sql(e, opts.target_schema, opts.run_id, "_evict_deleted")).rowcount
    result.accounted_after = accounted_now - result.deleted - gone_quarantined
    log.info("%s: %d target rows deleted at the source (%s policy), %d gaps checked", e.name, result.deleted,
             opts.delete_policy, len(gaps))


_steps = iter(range(1, 1 << 62))  # cascade step numbers, unique within the process


def cascade_step_sql(child: Entity, schema: str, c, step: int, parent_ids: sql.Composable) -> sql.Composable:
    """Register in ``_cascade`` (as ``step``) the rows of ``child``'s table in ``schema`` whose required reference ``c``
    points at one of ``parent_ids`` (a query of one uuid column), with the detail a fresh
    migration gives them; a row already registered keeps its first registration."""
    return sql.SQL(
        "INSERT INTO _cascade SELECT {step}, {ent}, ch.id, (ch.metadata->>'legacy_id')::bigint, "
        "(ch.metadata->>'source_hash')::bigint, {detail} FROM {ct} AS ch "
        "WHERE ch.{col} = ANY(ARRAY({ids})) ON CONFLICT DO NOTHING").format(
        step=sql.Literal(step), ent=sql.Literal(child.name), ct=target_table(child, schema),
        col=sql.Identifier(c.target), ids=parent_ids, detail=sql.Literal(orphan_detail(c)))


def delete_ids_sql(e: Entity, schema: str, ids: sql.Composable) -> sql.Composable:
    """Delete the rows of ``e``'s table in ``schema`` whose id is one of ``ids`` (a query of one uuid column)."""
    return sql.SQL("DELETE FROM {} WHERE id = ANY(ARRAY({}))").format(target_table(e, schema), ids)


def evict(conn, e: Entity, ids_table: str, stream: LegacyStream, opts: LoadOptions, result: LoadResult) -> int:
    """Remove the target rows of ``e`` listed (column ``id``) in the temp table ``ids_table``.

    Their descendants are treated as a fresh migration would treat them with that parent absent:
    a required reference moves the child row to the quarantine (ORPHAN_FK, the parent named, the
    raw legacy row attached), and so on down the foreign-key graph; an optional reference is set
    NULL and marked for a retry. The walk is breadth-first over one temp table ``_cascade`` (one
    row per removed descendant); rows are then deleted table by table, deepest dependency level
    first, so no foreign key ever points at a removed row. Returns the number of rows of ``e``
    removed.
    """
    n = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(ids_table))).fetchone()[0]
    if not n:
        return 0
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _cascade (step bigint, entity text, id uuid, legacy_id bigint, "
                 "h bigint, detail text, PRIMARY KEY (entity, id)) ON COMMIT DROP")
    first_step = next(_steps)
    removals: list[tuple[Entity, sql.Composable]] = [(e, sql.SQL("SELECT id FROM {}").format(sql.Identifier(ids_table)))]
    i = 0
    while i < len(removals):
        parent, ids_sql = removals[i]
        i += 1
        for child in children(parent.name):
            for c in (c for c in child.foreign_keys if c.parent == parent.name):
                ct, col = target_table(child, opts.target_schema), sql.Identifier(c.target)
                if c.required or not opts.error_recovery:
                    step = next(_steps)
                    moved = conn.execute(cascade_step_sql(child, opts.target_schema, c, step, ids_sql)).rowcount
                    if moved:
                        result.cascaded[child.name] = result.cascaded.get(child.name, 0) + moved
                        removals.append((child, sql.SQL("SELECT id FROM _cascade WHERE step = {}").format(
                            sql.Literal(step))))
                else:
                    n = set_fk_null(conn, ct, c, parent.name,
                                     sql.SQL("s.{} = ANY(ARRAY({}))").format(col, ids_sql))
                    if n:
                        result.cascaded[child.name] = result.cascaded.get(child.name, 0) + n
    # Children before parents, by dependency level, deepest first. Not in the walk's order: a row
    # reachable by two paths is registered once, by whichever path found it first, which can be
    # before its other parent was reached (a file's order_files row found through the file, then
    # its order through a doctor's office), and deleting in reverse walk order would then remove
    # that parent while the row still references it.
    removed = 0
    for target_entity in sorted({ent.name: ent for ent, _ in removals}.values(), key=lambda x: -x.level):
        ids_sql = sql.SQL(" UNION ALL ").join(ids for ent, ids in removals if ent.name == target_entity.name)
        removed = conn.execute(delete_ids_sql(target_entity, opts.target_schema, ids_sql)).rowcount
    if len(removals) > 1:
        _quarantine_cascaded(conn, stream, opts, first_step)
    return removed  # the last DELETE is the one of ``e`` itself


def _quarantine_cascaded(conn, stream: LegacyStream, opts: LoadOptions, since_step: int) -> None:
    """Quarantine the descendants removed by one eviction, with their raw legacy rows."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _cascade_raw (entity text, legacy_id bigint, raw jsonb) "
                 "ON COMMIT DROP")
    wanted: dict[str, list[int]] = {}
    for name, legacy_id in conn.execute("SELECT entity, legacy_id FROM _cascade WHERE step > %s", [since_step]):
        wanted.setdefault(name, []).append(legacy_id)
    with conn.cursor().copy("COPY _cascade_raw (entity, legacy_id, raw) FROM STDIN") as cp:
        for name, ids in wanted.items():
            for legacy_id, raw in stream.fetch_raw(ids, of=entity(name)):
                cp.write_row((name, legacy_id, raw))
    upsert_quarantine(conn, sql.SQL(
        "SELECT DISTINCT ON (c.entity, c.legacy_id) c.entity, c.legacy_id, {r} AS reason, c.detail, raw.raw, "
        "c.h AS source_hash, {run}::text AS run_id "
        "FROM _cascade c LEFT JOIN _cascade_raw raw USING (entity, legacy_id) WHERE c.step > {since} "
        "ORDER BY c.entity, c.legacy_id, c.step").format(
        r=sql.Literal(ORPHAN_FK), run=sql.Literal(opts.run_id), since=sql.Literal(since_step)))
