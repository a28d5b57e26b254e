"""Child process of bench.run: one full materialization of the 45 assets; prints one JSON line."""

import json
import os
import logging
import resource
import time

import psycopg
from dagster import DagsterInstance, materialize

from migration_assets.definitions import build_resources, table_assets
from migration_assets.engine.memory import bound_native_memory


def main() -> None:
    logging.getLogger("dagster").setLevel(logging.WARNING)
    bound_native_memory()  # as the code location does when Dagster loads it
    resources = build_resources()
    started = time.perf_counter()
    result = materialize(table_assets(), resources=resources, instance=DagsterInstance.ephemeral())
    wall = time.perf_counter() - started
    with psycopg.connect(os.environ["TARGET_DB_URL"]) as conn:
        rows = conn.execute(
            "SELECT entity, records_read, duration_ms, load_path, details->'phases_s' "
            "FROM migration_control.migration_runs WHERE run_id = %s", [result.run_id]).fetchall()
    loads = {name: (read, ms / 1000, path) for name, read, ms, path, _ in rows}
    phases: dict[str, float] = {}  # seconds per load phase, summed over the tables
    for *_, per_table in rows:
        for phase, seconds in (per_table or {}).items():
            phases[phase] = phases.get(phase, 0.0) + seconds
    load_s = sum(v[1] for v in loads.values())
    print(json.dumps({"success": result.success, "wall_s": wall, "load_s": load_s,
                      "orchestration_s": max(wall - load_s, 0.0), "phases": phases,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "loads": loads}))


if __name__ == "__main__":
    main()
