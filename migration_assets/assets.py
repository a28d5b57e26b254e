"""The 45 table assets, built by one factory from the registry.

Each asset is one target table. Its upstream deps are its foreign-key parents as *non-data*
deps (``deps=``): an asset never loads a parent table, it only runs after it. Groups are the
computed dependency levels (``level_01`` .. ``level_11``), tags carry the priority, ``kinds``
says postgres. The asset body is cheap: it opens the legacy table's record-batch stream and
returns it; the Postgres Arrow IO manager consumes the stream into the target in one
transaction.

Every asset carries a RetryPolicy (MAX_RETRY_ATTEMPTS, exponential backoff with jitter).
Permanent errors (schema mismatch, bad configuration, a timeout) are raised as
``Failure(allow_retries=False)`` so they fail at once with a clear message.
"""


from dagster import (
    AssetExecutionContext,
    Output,
    AssetKey,
    Backoff,
    Failure,
    Jitter,
    MetadataValue,
    RetryPolicy,
    asset,
)

from .checks import check_specs, run_checks
from .config import env_bool, env_int
from .engine import LegacyStream
from .errors import classify
from .registry import ENTITIES, Entity
from .resources import LegacyDatabase, MigrationSettings, PostgresResource

OWNER = "team:data-migration"
IO_MANAGER_KEY = "target_io_manager"
MODE_TAG = "migration/mode"  # run tag: "full" or "differential" (set by the sensor and the schedule)


def retry_policy() -> RetryPolicy:
    return RetryPolicy(max_retries=env_int("MAX_RETRY_ATTEMPTS", 3), delay=1.0, backoff=Backoff.EXPONENTIAL,
                       jitter=Jitter.PLUS_MINUS)


def _description(e: Entity) -> str:
    fks = ", ".join(f"{c.target} -> {c.parent}{'' if c.required else ' (optional)'}" for c in e.foreign_keys)
    return (f"{e.description}\n\nLegacy `{e.legacy_table}` (key `{e.legacy_pk}`) -> `public.{e.target_table}`. "
            f"Level {e.level}, priority {e.priority}, about {e.expected_rows:,} rows at scale 1.0."
            + (f"\n\nForeign keys: {fks}." if fks else ""))


def build_table_asset(e: Entity):
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
        check_specs=check_specs(e) if env_bool("MIGRATION_ASSET_CHECKS", True) else None,
        retry_policy=retry_policy(),
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
            yield from run_checks(legacy.conninfo(), target.conninfo(), e)

    return _table_asset


table_assets = [build_table_asset(e) for e in ENTITIES]
