"""Child process of bench.executors: one run of ``full_migration`` as the code location defines it
(MIGRATION_EXECUTOR and the slicing settings from the environment), on the persistent instance at
DAGSTER_HOME; prints one JSON line: success, wall seconds, run id, steps, and from the run's event
log each step's span (its first event to its last: worker start, resources, the body, Dagster's
events) and its start latency (its first event to STEP_START: process start, imports, resources)."""

import json
import logging
import time

from dagster import DagsterInstance, execute_job
from dagster._core.definitions.reconstruct import ReconstructableRepository

from migration_assets.config import PROJECT_DIR


def main() -> None:
    logging.getLogger("dagster").setLevel(logging.WARNING)
    repo = ReconstructableRepository.for_module("migration_assets.definitions", "defs",
                                                working_directory=str(PROJECT_DIR))
    with DagsterInstance.get() as instance:
        started = time.perf_counter()
        result = execute_job(repo.get_reconstructable_job("full_migration"), instance)
        wall = time.perf_counter() - started
        first: dict[str, float] = {}
        last: dict[str, float] = {}
        start: dict[str, float] = {}
        for e in instance.all_logs(result.run_id):
            event = e.dagster_event
            if e.step_key is None or (event is not None and (
                    event.event_type_value.endswith("_PLANNED")  # logged for every step at the run's start
                    or getattr(event.event_specific_data, "marker_start", None) == "celery_queue_wait")):
                continue  # Celery: the step's span starts when a worker takes it, not when it is queued
            first[e.step_key] = min(first.get(e.step_key, e.timestamp), e.timestamp)
            last[e.step_key] = max(last.get(e.step_key, e.timestamp), e.timestamp)
            if event is not None and event.event_type_value == "STEP_START":
                start[e.step_key] = e.timestamp
    print(json.dumps({"success": result.success, "wall_s": wall, "run_id": result.run_id, "steps": len(start),
                      "step_spans_s": sum(last[k] - first[k] for k in start),
                      "start_latency_s": sum(start[k] - first[k] for k in start)}))


if __name__ == "__main__":
    main()
