"""Jobs over the table assets (the checks of the selected assets run with them).

``full_migration`` compares every row (the mode of the run's ``migration/mode`` tag, default
MIGRATION_MODE); ``differential_refresh`` reads only what changed since each entity's watermark.
Both end with ``target_keys``, which restores the keys a first migration set aside (engine/keys.py).
``asset_checks`` evaluates the checks alone. ``cutover`` is the final refresh followed by the
cutover asset (cutover.py); the other jobs leave that asset out. The sensor requests subsets of
``differential_refresh``; the nightly schedule runs ``full_migration``. A failed step is audited
by the hook the table assets carry (hooks.py), in these jobs and in any run the UI starts.
"""

from pathlib import Path

from dagster import AssetSelection, MetadataValue, OpExecutionContext, Output, define_asset_job, job, op

from .assets import CUTOVER_ASSET, CUTOVER_GROUP, MODE_TAG
from .engine.rehearsal import rehearse
from .registry import BY_NAME
from .reports import write_dry_run_report
from .resources import LegacyDatabase, MigrationSettings, PostgresResource


# every asset but the cutover, which only the cutover job runs (by its group: a definitions set
# without the cutover asset, such as a test's, resolves these jobs too)
LOADS = AssetSelection.all() - AssetSelection.groups(CUTOVER_GROUP)

full_migration = define_asset_job(
    "full_migration", selection=LOADS,
    description=f"Migrate all {len(BY_NAME)} entities in dependency order (the seed's comprehensive migration); on "
                "a loaded target, compares every row and applies inserts, updates and deletes.")

differential_refresh = define_asset_job(
    "differential_refresh", selection=LOADS, tags={MODE_TAG: "differential"},
    description="Refresh from the legacy rows changed, added or deleted since each entity's watermark.")

cutover = define_asset_job(
    "cutover", selection=AssetSelection.assets(*BY_NAME, CUTOVER_ASSET), tags={MODE_TAG: "differential"},
    description="The cutover (`migration-assets cutover`; runbook in the README): a final differential refresh of "
                "every table with its checks, then the target_cutover asset applies the app-ready migration and records "
                "the cutover, if every table refreshed and every ERROR check passes. Stop the legacy writes first. "
                "Needs ops.target_cutover.config.confirm = the target database's name.")

asset_checks = define_asset_job(
    "asset_checks", selection=AssetSelection.all_asset_checks(),
    description="Evaluate the checks of every table on the target as it is, without loading a row (QA's "
                "re-check and sign-off; `migration-assets check`). Results are recorded in the audit trail and "
                "the validation report.")


@op(description="Rehearse the load of every table in one target transaction, rolled back: per table what the "
                "migration (or, with the run tag migration/mode=differential, the refresh) would insert, update, "
                "delete and quarantine, by reason. Nothing is written to either database.")
def rehearse_every_table(context: OpExecutionContext, legacy: LegacyDatabase, target: PostgresResource,
                         settings: MigrationSettings):
    mode = context.run.tags.get(MODE_TAG) or settings.mode
    results = rehearse(legacy.conninfo(), target.conninfo(), settings.load_options(context.run.run_id, mode),
                       on_progress=context.log.debug)
    path, totals = write_dry_run_report(results, mode, Path(settings.reports_dir))
    context.log.info(f"dry run ({mode}): {totals}; nothing was written; report {path}")
    return Output(None, metadata={"report": MetadataValue.md(path.read_text()), **totals,
                                  "report_path": MetadataValue.path(str(path.resolve()))})


@job(name="dry_run", description="What a migration or a refresh would do, per table, without doing it "
                                 "(`migration-assets migrate --dry-run`, `refresh --dry-run`).")
def dry_run():
    rehearse_every_table()

