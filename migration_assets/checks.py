"""The Dagster side of the asset checks QA signs the migration off with (engine/checks.py holds
what they assert, their SQL and their evaluation).

The checks are declared as ``check_specs`` on each table asset, one per entry of
engine.checks.CHECKS that applies to the entity (severity and blocking from there), and
evaluated right after its load, in the same step, so they cost no extra process and no extra
orchestration step. :func:`run_checks` evaluates them and turns each plain outcome into Dagster's
``AssetCheckResult`` (lists and dicts as JSON metadata).
"""

from __future__ import annotations

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey, MetadataValue

from .engine import checks as engine_checks
from .engine.accounting import CheckOptions
from .engine.checks import CHECKS, CheckOutcome
from .registry import Entity


def check_specs(e: Entity) -> list[AssetCheckSpec]:
    return [AssetCheckSpec(c.name, asset=AssetKey(e.name), description=c.description, blocking=c.blocking)
            for c in CHECKS.values() if c.applies(e)]


def as_result(e: Entity, outcome: CheckOutcome) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=outcome.check_name, asset_key=AssetKey(e.name), passed=outcome.passed,
        severity=AssetCheckSeverity.WARN if outcome.severity == "WARN" else AssetCheckSeverity.ERROR,
        description=outcome.description,
        metadata={k: MetadataValue.json(v) if isinstance(v, (list, dict)) else v for k, v in outcome.metadata.items()})


def run_checks(source_conninfo: str, target_conninfo: str, e: Entity, run_id: str | None = None,
               opts: CheckOptions = CheckOptions()) -> list[AssetCheckResult]:
    """engine.checks.run_checks, as Dagster's results."""
    return [as_result(e, o) for o in engine_checks.run_checks(source_conninfo, target_conninfo, e, run_id, opts)]
