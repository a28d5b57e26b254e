"""The 45 table assets, built by one factory from the registry.

Each asset is one target table. Its upstream deps are its foreign-key parents as *non-data*
deps (``deps=``): an asset never loads a parent table, it only runs after it. Groups are the
computed dependency levels (``level_01`` .. ``level_11``), tags carry the priority, ``kinds``
says postgres. The asset body is cheap: it opens the legacy table's record-batch stream and
yields it; the Postgres Arrow IO manager consumes the stream into the target in one
transaction, committed before the body continues to the table's checks (io_manager.py).

Every asset carries a RetryPolicy (MAX_RETRY_ATTEMPTS, exponential backoff with jitter).
Permanent errors (schema mismatch, a database that does not answer, bad configuration, a
timeout, checks that cannot be evaluated after the table committed, a signal) are raised as
``Failure(allow_retries=False)`` so they fail at once with a clear message.
"""


from dagster import (
    AssetExecutionContext,
    Output,
    AssetKey,
    Backoff,
    Failure,
    Jitter,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
)

from . import stopping
from .checks import check_specs, run_checks
from .engine.stream import LegacyStream
from .errors import classify
from .preflight import DatabaseUnreachable, SchemaMismatch, validate_once
from .registry import ENTITIES, Entity
from .resources import LegacyDatabase, MigrationSettings, PostgresResource
from .settings import Settings

OWNER = "team:data-migration"
IO_MANAGER_KEY = "target_io_manager"
MODE_TAG = "migration/mode"  # run tag: "full" or "differential" (set by the sensor and the schedule)


def retry_policy(s: Settings) -> RetryPolicy:
    return RetryPolicy(max_retries=s.max_retry_attempts, delay=1.0, backoff=Backoff.EXPONENTIAL,
                       jitter=Jitter.PLUS_MINUS)


def _description(e: Entity) -> str:
    fks = ", ".join(f"{c.target} -> {c.parent}{'' if c.required else ' (optional)'}" for c in e.foreign_keys)
    return (f"{e.description}\n\nLegacy `{e.legacy_table}` (key `{e.legacy_pk}`) -> `public.{e.target_table}`. "
            f"Level {e.level}, priority {e.priority}, about {e.expected_rows:,} rows at scale 1.0."
            + (f"\n\nForeign keys: {fks}." if fks else ""))


def build_table_asset(e: Entity, s: Settings):
    @asset(
        name=e.name,
        deps=[AssetKey(p) for p in e.parents],
        group_name=e.group_name,
        kinds={"postgres"},
        tags={"priority": e.priority, "level": str(e.level)},
        owners=[OWNER],
        description=_description(e),
        io_manager_key=IO_MANAGER_KEY,
        # checks run in the asset's own step, right after the load: no extra step per check
        check_specs=check_specs(e) if s.asset_checks else None,
        retry_policy=retry_policy(s),
        metadata={
            "legacy_table": e.legacy_table,
            "legacy_primary_key": e.legacy_pk,
            "dependency_level": e.level,
            "priority": e.priority,
            "expected_rows_at_scale_1": e.expected_rows,
            "foreign_keys": MetadataValue.json({c.target: {"parent": c.parent, "required": c.required}
                                                for c in e.foreign_keys}),
        },
    )
    def _table_asset(context: AssetExecutionContext, legacy: LegacyDatabase, target: PostgresResource,
                     settings: MigrationSettings):
        stopping.raise_if_interrupted(context.run.run_id, e.name)
        try:
            # pre-flight: both schemas against the registry, at the run's first step
            validate_once(context.run.run_id, legacy.connect, target.connect)
        except (SchemaMismatch, DatabaseUnreachable) as exc:
            raise Failure(description=f"{e.name}: pre-flight: {exc}", allow_retries=False) from None
        try:
            mode = context.run.tags.get(MODE_TAG)
            stream: LegacyStream = legacy.stream(e, settings.load_options(context.run.run_id, mode))
        except Exception as exc:
            kind = classify(exc)
            if kind.transient:
                raise
            raise Failure(description=f"{e.name}: {kind.name}: {kind.message}", allow_retries=False) from None
        # the IO manager loads and commits the table when the output is yielded ...
        yield Output(stream)
        # ... so the checks below see the committed table
        if context.selected_asset_check_keys:
            try:
                results = run_checks(legacy.conninfo(), target.conninfo(), e, run_id=context.run.run_id,
                                     sample_above=settings.sample_above, sample_every=settings.sample_every,
                                     uuid_every=settings.uuid_every, timeout_ms=settings.migration_timeout_ms,
                                     error_recovery=settings.error_recovery)
            except stopping.INTERRUPTS:
                stopping.note(context.run.run_id)
                raise Failure(description=f"{e.name}: checks stopped by a signal (the load was committed)",
                              allow_retries=False) from None
            except Exception as exc:
                # the table is loaded and committed: a retry would reload it, so a check that
                # cannot be evaluated fails the step for good, with its cause
                kind = classify(exc)
                raise Failure(description=f"{e.name}: checks could not be evaluated: {kind.name}: {kind.message}",
                              allow_retries=False) from None
            yield from results

    return _table_asset


def build_table_assets(s: Settings) -> list:
    """The 45 table assets, with the settings the definitions read (checks on or off, retries)."""
    return [build_table_asset(e, s) for e in ENTITIES]


REPORT_ASSET = "migration_reports"


@asset(
    name=REPORT_ASSET,
    deps=[AssetKey(e.name) for e in ENTITIES],
    group_name="reports",
    kinds={"markdown"},
    owners=[OWNER],
    description="The seed's reports, written from the audit trail after the 45 tables: "
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
                    timeout_ms=settings.migration_timeout_ms)
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
