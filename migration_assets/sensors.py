"""Sensors. For now: a run-failure sensor that records run-level failures in the audit trail.

Step failures are already audited by the IO manager (one FAILED row per entity, with the error
class and the recovery advice). A run can also fail outside any step (the run worker dies, a
resource cannot be initialised, the run is canceled): this sensor writes one FAILED row per such
run with entity ``(run)``, so ``migration_control.migration_runs`` tells the whole story. It starts
stopped, as Dagster users expect; turn it on in the UI.
"""

from dagster import DefaultSensorStatus, RunFailureSensorContext, run_failure_sensor

from .engine import write_audit
from .errors import classify
from .resources import PostgresResource

RUN_ENTITY = "(run)"


@run_failure_sensor(name="record_run_failures", minimum_interval_seconds=30,
                    default_status=DefaultSensorStatus.STOPPED,
                    description="Record failed runs in migration_control.migration_runs (entity '(run)').")
def record_run_failures(context: RunFailureSensorContext, target: PostgresResource) -> None:
    failure = context.failure_event
    message = failure.message or "run failed"
    kind = classify(Exception(message))
    run = context.dagster_run
    with target.connect() as conn:
        write_audit(conn, run.run_id, None, RUN_ENTITY, status="FAILED", error_class=kind.name, error=kind.message,
                    recovery=kind.recovery)
        conn.commit()
    context.log.info(f"recorded failure of run {run.run_id}: {kind.name}")
