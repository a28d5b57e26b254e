"""The failure hook every table asset carries: a failed step's table gets its FAILED row in the
audit trail, whichever run it was in (a job, a sensor's or schedule's run, a materialization
started in the UI), with the kind and recovery the step decided (failures.kind_of), unless the
IO manager recorded the load's own failure already. Also the names of the steps that load tables,
which the hook reads back: a level step's, a sliced table's, or a table's own.
"""

from __future__ import annotations

import psycopg
from dagster import HookContext, failure_hook
from dagster._core.errors import DagsterAssetCheckFailedError  # not exported; the type Dagster raises

from . import stopping
from .engine.audit import write_audit
from .errors import classify
from .failures import kind_of
from .registry import BY_NAME, ENTITIES

SLICED_STEP = "__"  # a sliced table's steps: <table>__plan, <table>__slice, <table>__finish


def level_step_name(level: int) -> str:
    return f"level_{level:02d}_tables"


def tables_of_step(step: str) -> list[str]:
    """The tables a step of the table assets loads, in the order it loads them (the failure hook
    names the failed table from these): a level step's, a sliced table's, or the step's own."""
    levels = {level_step_name(e.level): e.level for e in ENTITIES}
    if step in levels:
        return [e.name for e in ENTITIES if e.level == levels[step]]
    return [step.split(SLICED_STEP)[0]]


@failure_hook(required_resource_keys={"target"})
def record_step_failure(context: HookContext) -> None:
    """Recovery hook: classify a failed step's error and record it in the audit trail, with the
    recovery the classification prescribes, unless the IO manager already did (it records the
    failures of the load itself; this catches the rest: pre-flight, stream set-up, checks).
    Dagster itself does not run the dependents of a failed step, CRITICAL entities included."""
    step = context.op.name
    if stopping.interrupted(context.run_id):
        return  # a signal: the interrupted table's audit row says CANCELED, the others never started
    if isinstance(context.op_exception, DagsterAssetCheckFailedError):
        # Dagster fails a step whose blocking check failed, after the step's work: the load (if
        # any) committed and the check's result is recorded with its numbers; no load failed
        return
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
