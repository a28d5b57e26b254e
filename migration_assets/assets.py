"""The table assets, one per registry entity, built by one factory from the registry.

Each asset is one target table. Its upstream deps are its foreign-key parents as *non-data*
deps (``deps=``): an asset never loads a parent table, it only runs after it. Groups are the
computed dependency levels (``level_01`` .. ``level_11``), tags carry the priority, ``kinds``
says postgres. The asset body is cheap: it opens the legacy table's record-batch stream and
yields it; the Postgres Arrow IO manager consumes the stream into the target in one
transaction, committed before the body continues to the table's checks (io_manager.py).

Three shapes, the same assets (key, deps, group, tags, checks) in each, chosen by the settings
(``build_table_assets``): one step per table (the default); a large table as a graph of steps,
plan -> one step per id-range slice -> finish (``build_sliced_asset``, MIGRATION_SLICE_ROWS;
engine/slices.py); and, under an executor that starts a process per step, a level's other tables
in one subsettable step (``build_level_asset``).

``target_keys`` comes after every table: a run that includes it (``full_migration``,
``differential_refresh``) has its first load step set the keys of its empty tables aside, and it
restores them in one transaction after the last table (engine/keys.py: two PostgREST schema
reloads for a first migration instead of one per table).

Every asset carries a RetryPolicy (MAX_RETRY_ATTEMPTS, exponential backoff with jitter).
Permanent errors (schema mismatch, a database that does not answer, bad configuration, a
timeout, checks that cannot be evaluated after the table committed, a signal) are raised as
``Failure(allow_retries=False)`` carrying their kind, so they fail at once with a clear message
(failures.py decides, for every step that writes to the target).
"""

import hashlib
import time
from datetime import timedelta

from pydantic import Field

from dagster import (
    AssetCheckKey,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    AssetsDefinition,
    Backoff,
    DynamicOut,
    DynamicOutput,
    Failure,
    FreshnessPolicy,
    GraphIn,
    GraphOut,
    In,
    Jitter,
    MaterializeResult,
    MetadataValue,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    RetryPolicy,
    TableColumn,
    TableSchema,
    Config,
    asset,
    graph,
    multi_asset,
    op,
)

from . import stopping
from .checks import check_specs, run_checks
from .cutover import CutOver, perform, summary
from .engine import keys
from .engine.names import ENGINE_VERSION
from .hooks import SLICED_STEP, level_step_name, record_step_failure
from .engine.slices import FinishSlices, load_slice, plan_slices, read_slice_plan
from .engine.stream import LegacyStream
from .errors import classify
from .failures import as_failure, target_transaction
from .io_manager import bounded_progress
from .lineage import OWNER, legacy_key
from .preflight import DatabaseUnreachable, SchemaMismatch, validate_once
from .registry import ENTITIES, Entity
from .resources import LegacyDatabase, MigrationSettings, PostgresResource
from .settings import Settings


IO_MANAGER_KEY = "target_io_manager"
MODE_TAG = "migration/mode"  # run tag: "full" or "differential" (set by the sensor and the schedule)
READ_TAG = "migration/read"  # run tag: "all" re-reads and compares every legacy row (migrate --full)


def load_options(context, settings: MigrationSettings):
    """The load options of this run: the settings, the run's mode tag and its read tag."""
    return settings.load_options(context.run.run_id, context.run.tags.get(MODE_TAG),
                                 incremental=context.run.tags.get(READ_TAG) != "all")


def retry_policy(s: Settings) -> RetryPolicy:
    return RetryPolicy(max_retries=s.max_retry_attempts, delay=1.0, backoff=Backoff.EXPONENTIAL,
                       jitter=Jitter.PLUS_MINUS)


def _description(e: Entity, schema: str) -> str:
    fks = ", ".join(f"{c.target} -> {c.parent}{'' if c.required else ' (optional)'}" for c in e.foreign_keys)
    return (f"{e.description}\n\nLegacy `{e.legacy_table}` (key `{e.legacy_pk}`) -> `{schema}.{e.target_table}`. "
            f"Level {e.level}, priority {e.priority}, about {e.expected_rows:,} rows at scale 1.0."
            + (f"\n\nForeign keys: {fks}." if fks else ""))


def _tags(e: Entity) -> dict[str, str]:
    return {"priority": e.priority, "level": str(e.level)}


def code_version(e: Entity) -> str:
    """The version of a table's load: its registry entry (columns, transforms, keys) and the
    engine's version, hashed. The UI marks a table whose code version changed since its last
    materialization."""
    return hashlib.sha256(f"{ENGINE_VERSION}|{e!r}".encode()).hexdigest()[:12]


def _asset_metadata(e: Entity, schema: str) -> dict:
    return {
        "dagster/table_name": f"{schema}.{e.target_table}",
        "dagster/column_schema": TableSchema(columns=[TableColumn("id", "uuid", description="uuid v3 of the legacy id")]
            + [TableColumn(c.target, c.target_type, description=f"legacy {e.legacy_table}.{c.legacy_name} "
                                                                f"({c.kind.name.lower()})") for c in e.columns]
            + [TableColumn("metadata", "jsonb", description="legacy_id, source_hash, recovered values")]),
        "legacy_table": e.legacy_table,
        "legacy_primary_key": e.legacy_pk,
        "dependency_level": e.level,
        "priority": e.priority,
        "expected_rows_at_scale_1": e.expected_rows,
        "foreign_keys": MetadataValue.json({c.target: {"parent": c.parent, "required": c.required}
                                            for c in e.foreign_keys}),
    }


# Every table is materialized at least nightly (nightly_full_sync) and whenever its legacy table
# changes (legacy_changes): a table not materialized for a day is stale, which is how a stopped
# schedule or sensor, or a failing nightly run, shows in the UI.
FRESHNESS = FreshnessPolicy.time_window(fail_window=timedelta(hours=26), warn_window=timedelta(hours=25))
POOL = "migration_target"  # every step that writes to the target: dagster.yaml's pools bound them across runs


def _table_spec(e: Entity, schema: str) -> AssetSpec:
    return AssetSpec(key=AssetKey(e.name), deps=[legacy_key(e)] + [AssetKey(p) for p in e.parents],
                     group_name=e.group_name,
                     kinds={"postgres"}, tags=_tags(e), owners=[OWNER], description=_description(e, schema),
                     metadata=_asset_metadata(e, schema), code_version=code_version(e),
                     freshness_policy=FRESHNESS).with_io_manager_key(IO_MANAGER_KEY)


def build_table_asset(e: Entity, s: Settings):
    """One table's asset. Its checks run in the asset's own step, right after the load (no extra
    step per check); the step is subsettable, so the checks also run alone, on the table as it is
    (the UI's "Execute" on a check, ``migration-assets check``): the asset not selected, nothing
    loads."""
    @multi_asset(name=e.name, specs=[_table_spec(e, s.target_schema)], can_subset=True, retry_policy=retry_policy(s),
                 pool=POOL, check_specs=check_specs(e) if s.asset_checks else None, hooks={record_step_failure})
    def _table_asset(context: AssetExecutionContext, legacy: LegacyDatabase, target: PostgresResource,
                     settings: MigrationSettings):
        if AssetKey(e.name) in context.selected_asset_keys:
            stream = _open_stream(context, e, legacy, target, settings)
            # the IO manager loads and commits the table when the output is yielded ...
            yield Output(stream, output_name=e.name)
        # ... so the checks below see the committed table
        yield from _table_checks(context, e, legacy, target, settings)

    return _table_asset


def _preflight(context, e: Entity, legacy: LegacyDatabase, target: PostgresResource,
               settings: MigrationSettings) -> None:
    stopping.raise_if_interrupted(context.run.run_id, e.name)
    try:
        # pre-flight: both schemas against the registry, and no cutover (unless
        # MIGRATION_AFTER_CUTOVER), at the run's first load step
        for warning in validate_once(context.run.run_id, legacy.connect, target.connect,
                                     settings.legacy_timezone, after_cutover=settings.after_cutover,
                                     logical_slot=settings.slot if settings.change_source == "logical" else None,
                                     schema=settings.target_schema):
            context.log.warning(f"pre-flight: {warning}")
    except (SchemaMismatch, DatabaseUnreachable, CutOver) as exc:
        raise as_failure(classify(exc), f"{e.name}: pre-flight") from None
    _keys_once(context, target, settings)


_keys_prepared: set[str] = set()  # runs whose keys this process prepared (keys.prepare is once per run anyway)


def _keys_once(context, target: PostgresResource, settings: MigrationSettings) -> None:
    """At the run's first load step in this process (engine/keys.py): a run that ends with
    target_keys sets aside the keys of the empty tables it loads; any other run restores what an
    earlier one left aside."""
    run_id = context.run.run_id
    if run_id in _keys_prepared:
        return
    selected = context.job_def.asset_layer.selected_asset_keys
    entities = [x for x in ENTITIES if AssetKey(x.name) in selected]
    with target_transaction(run_id, target, settings.migration_timeout_ms, "setting the keys aside") as conn:
        done = keys.prepare(conn, run_id, entities, settings.target_schema, finishing=AssetKey(KEYS_ASSET) in selected,
                            fast_path=settings.fast_path)
        conn.commit()
    _keys_prepared.add(run_id)
    if done.set_aside:
        context.log.info(f"{done.set_aside} keys and indexes of {len(done.tables)} empty tables set aside until "
                         f"{KEYS_ASSET} restores them after the last table (PostgREST reloads its schema when "
                         "they go and when they come back, not once per table)")
    if done.restored:
        context.log.warning(f"{done.restored} keys an earlier run set aside were restored first (this run does "
                            f"not end with {KEYS_ASSET})")


def _permanent(e: Entity, exc: Exception) -> Exception:
    """A transient error as it is (the RetryPolicy retries it); any other as a Failure without retry."""
    kind = classify(exc)
    return exc if kind.transient else as_failure(kind, e.name)


def _open_stream(context, e: Entity, legacy: LegacyDatabase, target: PostgresResource,
                 settings: MigrationSettings) -> LegacyStream:
    _preflight(context, e, legacy, target, settings)
    try:
        return legacy.stream(e, load_options(context, settings))
    except Exception as exc:
        raise _permanent(e, exc) from None


def _table_checks(context, e: Entity, legacy: LegacyDatabase, target: PostgresResource,
                  settings: MigrationSettings):
    """The table's selected checks, right after its load committed, in the same step."""
    selected = {k for k in context.selected_asset_check_keys if k.asset_key == AssetKey(e.name)}
    if not selected:
        return
    try:
        results = run_checks(legacy.conninfo(), target.conninfo(), e, context.run.run_id,
                             settings.check_options(context.run.run_id))
    except stopping.INTERRUPTS:
        stopping.note(context.run.run_id)
        raise Failure(description=f"{e.name}: checks stopped by a signal (the load was committed)",
                      allow_retries=False) from None
    except Exception as exc:
        # the table is loaded and committed: a retry would reload it, so a check that
        # cannot be evaluated fails the step for good, with its cause
        raise as_failure(classify(exc), f"{e.name}: checks could not be evaluated") from None
    yield from (r for r in results if AssetCheckKey(AssetKey(e.name), r.check_name) in selected)


def _committed_on_target(context, target: PostgresResource, settings: MigrationSettings, stream: LegacyStream,
                         what: str, work):
    """``work(conn)`` in one transaction on the target, committed, under failures.target_transaction
    (``what`` names it in a failure); ``stream`` closed after."""
    try:
        with target_transaction(context.run.run_id, target, settings.migration_timeout_ms, what) as conn:
            out = work(conn)
            conn.commit()
            return out
    finally:
        stream.close()


WHOLE = "whole"
LEGACY_INPUT = "legacy_table"  # a sliced table's graph input for its legacy table (no entity has that name)  # the mapping key of a sliced asset's one step when its table loads in one step


def build_sliced_asset(e: Entity, s: Settings) -> AssetsDefinition:
    """The asset of a large table as a graph of steps, for executors that run steps in parallel:
    ``<table>__plan`` cuts the empty table into id ranges (engine/slices.py), one
    ``<table>__slice`` step per range runs at the same time as the others (Dagster's dynamic
    mapping: the ranges are known at run time only), and ``<table>__finish`` builds the keys once,
    writes the audit row (through the IO manager) and runs the table's checks. A table that is
    not empty, or not larger than a slice, loads in one step (mapping key ``whole``): a refresh
    reads only what changed. Same key, deps, group, tags, metadata and checks as the one-step
    asset; the steps pass nothing between them (the plan lives in the control schema), so any
    step can run on any worker."""
    policy = retry_policy(s)
    specs = check_specs(e) if s.asset_checks else []
    tags = _tags(e)

    # one input per parent: Dagster cannot fan a graph's inputs into one op input
    upstream = [*e.parents, LEGACY_INPUT]  # the parents' tables and the legacy table (external)

    @op(name=f"{e.name}{SLICED_STEP}plan", ins={f"after_{p}": In(Nothing) for p in upstream}, pool=POOL,
        out=DynamicOut(Nothing), retry_policy=policy, tags=tags, description=f"{e.name}: plan the slices (or one step)")
    def plan_step(context: OpExecutionContext, legacy: LegacyDatabase, target: PostgresResource,
                  settings: MigrationSettings):
        stream = _open_stream(context, e, legacy, target, settings)
        plan = _committed_on_target(context, target, settings, stream, f"{e.name}: planning slices",
                                    lambda conn: plan_slices(conn, stream, stream.opts, settings.slice_rows))
        if plan is None:
            context.log.info(f"{e.name}: one step (the target holds rows, or the legacy table is not larger than "
                             f"MIGRATION_SLICE_ROWS={settings.slice_rows:,})")
            yield DynamicOutput(None, mapping_key=WHOLE)
            return
        done = len(plan.slices) - len(plan.pending())
        context.log.info(f"{e.name}: {len(plan.slices)} slices of about {settings.slice_rows:,} legacy rows "
                         f"(planned by run {plan.run_id}{f', {done} done already' if done else ''})")
        for piece in plan.slices:
            yield DynamicOutput(None, mapping_key=piece.key)

    @op(name=f"{e.name}{SLICED_STEP}slice", ins={"planned": In(Nothing)}, out=Out(Nothing), retry_policy=policy,
        pool=POOL,
        tags=tags, description=f"{e.name}: load one id range (its own transaction)")
    def slice_step(context: OpExecutionContext, legacy: LegacyDatabase, target: PostgresResource,
                   settings: MigrationSettings):
        key = context.get_mapping_key()
        if key == WHOLE:
            return
        number = int(key.removeprefix("slice_"))
        stopping.raise_if_interrupted(context.run.run_id, e.name)
        opts = load_options(context, settings)
        stream = legacy.stream(e, opts)
        progress = bounded_progress(e.name, settings.migration_timeout_ms, context.log.info)
        piece = _committed_on_target(context, target, settings, stream, f"{e.name} {key}",
                                     lambda conn: load_slice(conn, stream, opts, number, on_progress=progress))
        context.log.info(f"{e.name} {key} (legacy ids {piece.lo:,}..{piece.hi:,}): read {piece.rows_read or 0:,}, "
                         f"rejected {piece.rejected or 0:,}, by {piece.worker} in run {piece.run_id}")

    outs = {"result": Out(io_manager_key=IO_MANAGER_KEY)}
    outs.update({spec.get_python_identifier(): Out(is_required=False) for spec in specs})

    @op(name=f"{e.name}{SLICED_STEP}finish", ins={"slices": In(Nothing)}, out=outs, retry_policy=policy, tags=tags,
        pool=POOL,
        description=f"{e.name}: build the keys once, quarantine, audit, checks")
    def finish_step(context: OpExecutionContext, legacy: LegacyDatabase, target: PostgresResource,
                    settings: MigrationSettings):
        stream = _open_stream(context, e, legacy, target, settings)
        try:
            with target.connect(connect_timeout=10) as conn:
                sliced = read_slice_plan(conn, e) is not None
        except Exception as exc:
            stream.close()
            raise _permanent(e, exc) from None
        # the IO manager finishes the sliced load (or loads the table in one step) and commits ...
        yield Output(FinishSlices(stream) if sliced else stream, "result")
        # ... so the checks see the committed table
        yield from _table_checks(context, e, legacy, target, settings)

    def compose(**parents):
        planned = plan_step(**{f"after_{p}": v for p, v in parents.items()})
        finished = finish_step(slices=planned.map(lambda p: slice_step(planned=p)).collect())
        return dict(zip(outs, finished)) if len(outs) > 1 else finished

    graph_def = graph(name=e.name, description=_description(e, s.target_schema), ins={p: GraphIn() for p in upstream},
                      out={name: GraphOut() for name in outs})(compose)
    return AssetsDefinition.from_graph(
        graph_def,
        keys_by_input_name={**{p: AssetKey(p) for p in e.parents}, LEGACY_INPUT: legacy_key(e)},
        keys_by_output_name={"result": AssetKey(e.name)},
        group_name=e.group_name,
        tags_by_output_name={"result": {**tags, "dagster/kind/postgres": ""}},
        owners_by_output_name={"result": [OWNER]},
        descriptions_by_output_name={"result": _description(e, s.target_schema)},
        metadata_by_output_name={"result": _asset_metadata(e, s.target_schema)},
        code_versions_by_output_name={"result": code_version(e)},
        check_specs=specs or None,
        hook_defs={record_step_failure},
    ).map_asset_specs(lambda spec: spec.replace_attributes(freshness_policy=FRESHNESS))


def build_level_asset(entities: list[Entity], s: Settings) -> AssetsDefinition:
    """The tables of one level in one step, one after the other, for executors that start a
    process per step (multiprocess, k8s): a table of a few hundred rows loads in less time than a
    step process takes to start. Each table keeps its own asset (key, deps, group, tags, checks,
    metadata) and its own load transaction, audit row and checks; the step is subsettable, so
    materializing one table runs that table alone. A failure stops the step (the tables before it
    stay committed), and its retry re-runs them all: a loaded table re-merges to no change."""
    level = entities[0].level
    specs = [_table_spec(e, s.target_schema) for e in entities]

    @multi_asset(name=level_step_name(level), specs=specs, can_subset=True, retry_policy=retry_policy(s), pool=POOL,
                 hooks={record_step_failure},
                 check_specs=[c for e in entities for c in check_specs(e)] if s.asset_checks else None,
                 description=f"The tables of level {level} in one step: {', '.join(e.name for e in entities)}")
    def _level_tables(context: AssetExecutionContext, legacy: LegacyDatabase, target: PostgresResource,
                      settings: MigrationSettings):
        for e in entities:
            if AssetKey(e.name) in context.selected_asset_keys:
                yield Output(_open_stream(context, e, legacy, target, settings), output_name=e.name)
            yield from _table_checks(context, e, legacy, target, settings)  # the selected ones

    return _level_tables


PROCESS_PER_STEP = ("multiprocess", "k8s")  # executors whose every step starts a process


def build_table_assets(s: Settings) -> list:
    """The table assets, with the settings the definitions read: checks on or off, retries,
    which tables load in slices (``build_sliced_asset``) and, under an executor that starts a
    process per step, the other tables of a level in one step (``build_level_asset``)."""
    out, by_level = [], {}
    for e in ENTITIES:
        if s.sliced(e.name, e.expected_rows):
            out.append(build_sliced_asset(e, s))
        elif s.executor in PROCESS_PER_STEP:
            by_level.setdefault(e.level, []).append(e)
        else:
            out.append(build_table_asset(e, s))
    for entities in by_level.values():
        out.append(build_level_asset(entities, s) if len(entities) > 1 else build_table_asset(entities[0], s))
    return out


KEYS_ASSET = "target_keys"


@asset(
    name=KEYS_ASSET,
    deps=[AssetKey(e.name) for e in ENTITIES],
    group_name="target",
    kinds={"postgres"},
    owners=[OWNER],
    description="The keys of the tables this run found empty, restored after the last table in one transaction "
                "(engine/keys.py): each primary key and unique constraint attached to the index its table's load "
                "built, every foreign key added and validated. The run's first load step set them aside, so that "
                "Supabase's PostgREST reloads its schema twice for a first migration instead of once per table. "
                "Restores nothing on a loaded target. A run without this asset restores what is set aside first.",
)
def target_keys(context: AssetExecutionContext, target: PostgresResource, settings: MigrationSettings):
    started = time.perf_counter()
    with target_transaction(context.run.run_id, target, settings.migration_timeout_ms, KEYS_ASSET) as conn:
        restored = keys.restore(conn)
        conn.commit()
    seconds = time.perf_counter() - started
    context.log.info(f"{restored} keys and indexes restored in {seconds:.1f}s" if restored
                     else "no key was set aside: nothing to restore")
    return MaterializeResult(metadata={"restored": restored, "seconds": MetadataValue.float(round(seconds, 3))})


REPORT_ASSET = "migration_reports"


@asset(
    name=REPORT_ASSET,
    deps=[AssetKey(e.name) for e in ENTITIES] + [AssetKey(KEYS_ASSET)],  # after the keys: never beside their DDL
    group_name="reports",
    kinds={"markdown"},
    owners=[OWNER],
    description="The seed's reports, written from the audit trail after every table: "
                "COMPREHENSIVE_MIGRATION_REPORT.md (executive summary, entities by level, performance, error "
                "analysis, financial totals to the cent, clinical counts), POST_MIGRATION_VALIDATION_REPORT.md "
                "(every check of every entity) and FINAL_DIFFERENTIAL_MIGRATION_REPORT.md (the latest refresh and "
                "the remaining difference). Folder: MIGRATION_REPORTS_DIR (default ./reports). Materialize it on "
                "its own to regenerate them.",
)
def migration_reports(context: AssetExecutionContext, legacy: LegacyDatabase, target: PostgresResource,
                      settings: MigrationSettings):
    from pathlib import Path

    from .reports import summary_lines, write_all

    out = write_all(legacy.conninfo(), target.conninfo(), Path(settings.reports_dir),
                    timeout_ms=settings.migration_timeout_ms, schema=settings.target_schema)
    comprehensive, validation, differential = out["paths"]
    summary = comprehensive.read_text().split("## Entities by dependency level")[0]
    # the run's per-entity summary, last in the log of `dagster asset materialize --select '*'`
    # DEBUG: the command line prints the same table after the run (in the UI, every level shows)
    lines = summary_lines(target.conninfo(), context.run.run_id, timeout_ms=settings.migration_timeout_ms)
    context.log.debug("per-entity summary of this run:\n" + "\n".join(lines))
    context.log.info(f"reports written to {comprehensive.parent}")
    return MaterializeResult(metadata={
        "comprehensive_report": MetadataValue.path(str(comprehensive.resolve())),
        "validation_report": MetadataValue.path(str(validation.resolve())),
        "differential_report": MetadataValue.path(str(differential.resolve())),
        "summary": MetadataValue.md(summary),
        "legacy_rows": out["legacy_rows"],
        "target_rows": out["target_rows"],
        "quarantined": out["quarantined"],
        "accounted_rate": MetadataValue.float(round(out["accounted_rate"], 6)),
        "checks_passed": f"{out['checks_passed']} of {out['checks_total']}",
        "financial_totals_reconciled": out["money_reconciled"],
        "remaining_difference": out["remaining_difference"],
    })


CUTOVER_ASSET = "target_cutover"
CUTOVER_GROUP = "cutover"


class CutoverConfig(Config):
    confirm: str = Field(description="the target database's name (as current_database() says), to confirm that "
                                     "this target becomes the application's: a cutover is not undone")


@asset(
    name=CUTOVER_ASSET,
    deps=[AssetKey(e.name) for e in ENTITIES],
    group_name=CUTOVER_GROUP,
    kinds={"supabase"},
    owners=[OWNER],
    description="The cutover (cutover.py), run by the `cutover` job after its final differential refresh of every "
                "table: every table refreshed by this run and every ERROR check passing (quarantine budget "
                "included), then the app-ready migration (supabase/cutover: id, created_at and updated_at "
                "defaults, an updated_at trigger) and the record in migration_control.cutovers, in one "
                "transaction. Afterwards loads refuse to run (MIGRATION_AFTER_CUTOVER overrides). Needs the "
                "target database's name as `confirm`. Not part of full_migration or differential_refresh.",
)
def target_cutover(context: AssetExecutionContext, config: CutoverConfig, target: PostgresResource,
            settings: MigrationSettings):
    with target_transaction(context.run.run_id, target, settings.migration_timeout_ms, "cutover") as conn:
        (database,) = conn.execute("SELECT current_database()").fetchone()
        if config.confirm != database:
            raise Failure(description=f"cutover: confirm is {config.confirm!r}, not the target database's name "
                                      f"({database!r}): nothing was changed", allow_retries=False)
        row = perform(conn, context.run.run_id, settings.target_schema)
        conn.commit()
    context.log.info(summary(row))
    window = (row["cut_over_at"] - row["refresh_started_at"]).total_seconds()
    return MaterializeResult(metadata={
        "cut_over_at": MetadataValue.text(f"{row['cut_over_at']:%Y-%m-%d %H:%M:%S %Z}"),
        "write_freeze_seconds": MetadataValue.float(round(window, 3)),
        "final_refresh_seconds": MetadataValue.float(float(row["refresh_seconds"])),
        "app_ready_seconds": MetadataValue.float(float(row["cutover_seconds"])),
        **{k: row[k] for k in ("inserted", "updated", "deleted", "quarantined")},
        "app_ready_migrations": MetadataValue.text(", ".join(row["app_ready"]) or "already applied"),
    })
