"""Jobs over the table assets (the checks of the selected assets run with them).

``full_migration`` compares every row (the mode of the run's ``migration/mode`` tag, default
MIGRATION_MODE); ``differential_refresh`` reads only what changed since each entity's watermark.
``asset_checks`` evaluates the checks alone. The sensor requests subsets of
``differential_refresh``; the nightly schedule runs ``full_migration``. A failed step is audited
by the hook the table assets carry (hooks.py), in these jobs and in any run the UI starts.
"""

from dagster import AssetSelection, define_asset_job

from .assets import MODE_TAG
from .registry import BY_NAME


full_migration = define_asset_job(
    "full_migration", selection=AssetSelection.all(),
    description=f"Migrate all {len(BY_NAME)} entities in dependency order (the seed's comprehensive migration); on "
                "a loaded target, compares every row and applies inserts, updates and deletes.")

differential_refresh = define_asset_job(
    "differential_refresh", selection=AssetSelection.all(), tags={MODE_TAG: "differential"},
    description="Refresh from the legacy rows changed, added or deleted since each entity's watermark.")

asset_checks = define_asset_job(
    "asset_checks", selection=AssetSelection.all_asset_checks(),
    description="Evaluate the checks of every table on the target as it is, without loading a row (QA's "
                "re-check and sign-off; `migration-assets check`). Results are recorded in the audit trail and "
                "the validation report.")

