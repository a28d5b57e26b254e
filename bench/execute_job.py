"""Child process of bench.executors: one run of ``full_migration`` as the code location defines it
(MIGRATION_EXECUTOR and the slicing settings from the environment), on the persistent instance at
DAGSTER_HOME; prints one JSON line: success, wall seconds, run id."""

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
        steps = sum(1 for e in instance.all_logs(result.run_id)
                    if e.dagster_event is not None and e.dagster_event.event_type_value == "STEP_START")
    print(json.dumps({"success": result.success, "wall_s": wall, "run_id": result.run_id, "steps": steps}))


if __name__ == "__main__":
    main()
