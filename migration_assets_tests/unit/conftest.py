"""The unit tier: no database, no server, no network. ``./run test --unit`` runs it alone.

Statements are rendered with ``as_string(None)`` (psycopg composes identifiers and literals
without a connection), so every SQL builder's shape, quoting and parameters are checked here.
"""

from __future__ import annotations

from psycopg import sql

from migration_assets.registry import ENTITIES

# Names no legacy or target table has: every builder must quote them as identifiers.
HOSTILE = 'we"ird name'


def render(composable: sql.Composable) -> str:
    return composable.as_string(None)


def with_fks(required: bool | None = None, minimum: int = 1):
    """Entities with at least ``minimum`` foreign keys (of which one ``required`` when given)."""
    return [e for e in ENTITIES if len(e.foreign_keys) >= minimum
            and (required is None or any(c.required == required for c in e.foreign_keys))]
