"""Jobs over the table assets (the checks of the selected assets run with them).

``full_migration`` compares every row (the mode of the run's ``migration/mode`` tag, default
MIGRATION_MODE); ``differential_refresh`` reads only what changed since each entity's watermark.
The sensor requests subsets of ``differential_refresh``; the nightly schedule runs
``full_migration``.
"""

from dagster import AssetSelection, HookContext, define_asset_job, failure_hook

import psycopg

from . import stopping
from .assets import MODE_TAG, tables_of_step
from .engine.audit import write_audit
from .errors import classify
from .failures import kind_of
from .registry import BY_NAME


@failure_hook(required_resource_keys={"target"})
def record_step_failure(context: HookContext) -> None:
    """Recovery hook: classify a failed step's error and record it in the audit trail, with the
    recovery the classification prescribes, unless the IO manager already did (it records the
    failures of the load itself; this catches the rest: pre-flight, stream set-up, checks).
    Dagster itself does not run the dependents of a failed step, CRITICAL entities included."""
    step = context.op.name
    if stopping.interrupted(context.run_id):
        return  # a signal: the interrupted table's audit row says CANCELED, the others never started
    # the run may have selected some of a level step's tables only
    run = context.instance.get_run_by_id(context.run_id)
    selected = {k.to_user_string() for k in run.asset_selection} if run and run.asset_selection else None
    candidates = [n for n in tables_of_step(step) if selected is None or n in selected]
    candidates = [n for n in candidates if n in BY_NAME]
    if not candidates:
        return
    kind = kind_of(context.op_exception) if context.op_exception else None
    try:
        with context.resources.target.connect(connect_timeout=5) as conn:
            # the failed table: the step's first one this run has no audit row of (a level step
            # commits its tables one after the other)
            done = {n for (n,) in conn.execute("SELECT entity FROM migration_control.migration_runs WHERE run_id = %s "
                                               "AND entity = ANY(%s) AND status <> 'FAILED'",
                                               [context.run_id, candidates])}
            name = next((n for n in candidates if n not in done), candidates[0])
            seen = conn.execute("SELECT 1 FROM migration_control.migration_runs WHERE run_id = %s AND entity = %s "
                                "AND status = 'FAILED'", [context.run_id, name]).fetchone()
            if seen is None:
                write_audit(conn, context.run_id, None, name, status="FAILED",
                            error_class=kind.name if kind else "UNKNOWN",
                            error=kind.message if kind else "step failed", recovery=kind.recovery if kind else None)
                conn.commit()
    except psycopg.Error as exc:  # the target may be what failed: say so in one line
        context.log.warning(f"{step}: could not record the failure in the audit trail: {classify(exc).message}")
        return
    context.log.warning(f"{name} ({BY_NAME[name].priority}) failed: {kind.name if kind else 'UNKNOWN'}; "
                        "its dependents will not run in this run")

full_migration = define_asset_job(
    "full_migration", selection=AssetSelection.all(), hooks={record_step_failure},
    description=f"Migrate all {len(BY_NAME)} entities in dependency order (the seed's comprehensive migration); on "
                "a loaded target, compares every row and applies inserts, updates and deletes.")

differential_refresh = define_asset_job(
    "differential_refresh", selection=AssetSelection.all(), tags={MODE_TAG: "differential"},
    hooks={record_step_failure},
    description="Refresh from the legacy rows changed, added or deleted since each entity's watermark.")
