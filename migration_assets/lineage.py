"""The catalog's lineage from the legacy database: the legacy tables as external assets upstream of
the table assets (Dagster observes them, never materializes them), and each target column's
legacy column, as the registry maps them (``dagster/column_lineage`` of every materialization,
io_manager.py), in every shape of a table's asset (a sliced table's graph takes its legacy table
as one more input)."""

from __future__ import annotations

from dagster import AssetKey, AssetSpec, TableColumn, TableColumnDep, TableColumnLineage, TableSchema

from .registry import ENTITIES, Entity

LEGACY_GROUP = "legacy"
OWNER = "team:data-migration"


LEGACY_GROUP = "legacy"


def legacy_key(e: Entity) -> AssetKey:
    """The legacy table's key: an external asset (Dagster observes, never materializes it)."""
    return AssetKey([LEGACY_GROUP, e.legacy_table])


def legacy_specs() -> list[AssetSpec]:
    """The legacy tables as external assets upstream of the table assets: the catalog's lineage
    starts at the legacy database, with each legacy table's columns as the registry maps them."""
    return [AssetSpec(key=legacy_key(e), group_name=LEGACY_GROUP, kinds={"postgres"}, owners=[OWNER],
                      description=f"Legacy table {e.legacy_table}, read (never written) by the {e.name} asset.",
                      metadata={"dagster/table_name": e.legacy_table,
                                "dagster/column_schema": TableSchema(columns=[
                                    TableColumn(e.legacy_pk, "integer", description="primary key")]
                                    + [TableColumn(c.legacy_name, c.kind.legacy_type, description=f"-> {e.name}."
                                                   f"{c.target}") for c in e.columns])})
            for e in ENTITIES]


def column_lineage(e: Entity) -> TableColumnLineage:
    """Each target column's legacy column (``dagster/column_lineage`` of every materialization):
    ``id`` and ``metadata`` from the legacy key, the others as the registry maps them."""
    src = legacy_key(e)
    key = [TableColumnDep(asset_key=src, column_name=e.legacy_pk)]
    return TableColumnLineage(deps_by_column={
        "id": key, "metadata": key,
        **{c.target: [TableColumnDep(asset_key=src, column_name=c.legacy_name)] for c in e.columns}})
