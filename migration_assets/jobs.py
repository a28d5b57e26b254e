"""Jobs over the 45 table assets (the checks of the selected assets run with them).

``full_migration`` compares every row (the mode of the run's ``migration/mode`` tag, default
MIGRATION_MODE); ``differential_refresh`` reads only what changed since each entity's watermark.
The sensor requests subsets of ``differential_refresh``; the nightly schedule runs
``full_migration``.
"""

from dagster import AssetSelection, define_asset_job

from .assets import MODE_TAG

full_migration = define_asset_job(
    "full_migration", selection=AssetSelection.all(),
    description="Migrate all 45 entities in dependency order (the seed's comprehensive migration); on a loaded "
                "target, compares every row and applies inserts, updates and deletes.")

differential_refresh = define_asset_job(
    "differential_refresh", selection=AssetSelection.all(), tags={MODE_TAG: "differential"},
    description="Refresh from the legacy rows changed, added or deleted since each entity's watermark.")
