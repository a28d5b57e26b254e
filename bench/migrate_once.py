"""Child process of bench.run: one full materialization of the 45 table assets and target_keys (what
`migrate` runs, the reports aside); prints one JSON line. BENCH_WITHOUT_TARGET_KEYS=1 leaves
target_keys out, so each table's fast path rebuilds its own keys (the run before engine/keys.py;
bench/experiments/first_migration_reloads.py compares the two)."""

import json
import os
import logging
import resource
import time

import psycopg
from dagster import DagsterInstance, materialize

from migration_assets.assets import KEYS_ASSET, target_keys
from migration_assets.definitions import build_resources, table_assets
from migration_assets.engine.memory import bound_native_memory


def main() -> None:
    logging.getLogger("dagster").setLevel(logging.WARNING)
    bound_native_memory()  # as the code location does when Dagster loads it
    resources = build_resources()
    started = time.perf_counter()
    finishing = [] if os.environ.get("BENCH_WITHOUT_TARGET_KEYS") else [target_keys]
    result = materialize(table_assets() + finishing, resources=resources, instance=DagsterInstance.ephemeral())
    wall = time.perf_counter() - started
    keys_s = sum(m.metadata["seconds"].value for m in result.asset_materializations_for_node(KEYS_ASSET)) \
        if finishing else 0.0
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
    print(json.dumps({"success": result.success, "wall_s": wall, "load_s": load_s, "keys_s": keys_s,
                      "orchestration_s": max(wall - load_s - keys_s, 0.0), "phases": phases,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "loads": loads}))


if __name__ == "__main__":
    main()
