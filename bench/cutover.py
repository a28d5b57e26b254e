"""Benchmark: the write-freeze window of a cutover.
    .venv/bin/python -m bench.cutover --scales 0.1 1.0 --runs 1   # writes bench/cutover.md

From the moment the legacy application stops writing to the moment the target is the
application's, writes are frozen: that is the ``migration-assets cutover`` command (the final
differential refresh of every table with every check, then the app-ready migration and the
record, cutover.py). For each scale and round: a fresh legacy database and target, the full
migration with every check (a cutover needs them passing), then ``--change`` of every legacy
table changed (simulator.mutate: the last writes before the freeze), then the command in a child
process. Reported: the command's wall time (process start and Dagster's run included), the
window ``migration_control.cutovers`` records (final refresh start to the cutover's commit), its
final refresh and app-ready parts, against the full migration of the same scale.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from migration_assets.config import admin_url
from migration_assets.migrations import apply_migrations
from migration_assets.simulator import generate, mutate

from .run import migrate_child, recreate

HERE = Path(__file__).resolve().parent


def measure(admin: str, scale: float, change: float) -> dict:
    legacy = recreate(admin, "bench_cut_legacy")
    generate(legacy, scale=scale, seed=7, log=lambda *_: None)
    target = recreate(admin, "bench_cut_target")
    apply_migrations(target)
    full = migrate_child(legacy, target, None, extra_env={"MIGRATION_ASSET_CHECKS": "1"})
    mutate(legacy, fraction=change, round_no=1, seed=7, log=lambda *_: None)
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    # this checkout's package, whatever the environment has installed (a worktree's A/B run)
    env.update(SOURCE_DB_URL=legacy, TARGET_DB_URL=target, PYTHONPATH=str(HERE.parent))
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "migration_assets.cli", "cutover"], env=env, cwd=folder,
                             capture_output=True, text=True)
        wall = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
    with psycopg.connect(target) as conn:
        window, refresh, app_ready, changed = conn.execute(
            "SELECT extract(epoch FROM cut_over_at - refresh_started_at), refresh_seconds, cutover_seconds, "
            "inserted + updated + deleted + quarantined FROM migration_control.cutovers").fetchone()
    return {"full_s": full["wall_s"], "command_s": wall, "window_s": float(window), "refresh_s": float(refresh),
            "app_ready_s": float(app_ready), "rows_changed": changed}


def report(results: dict, change: float) -> list[str]:
    lines = ["## The cutover's write-freeze window (bench.cutover)", "",
             f"Written by `.venv/bin/python -m bench.cutover`. Every legacy table {change:.1%} changed after a "
             "full migration with every check, then `migration-assets cutover` in a child process (final "
             "differential refresh with every check, app-ready migration, record). The window is what "
             "`migration_control.cutovers` records: from the final refresh's start to the cutover's commit; the "
             "command adds its process start and Dagster's run. Medians; seconds.", "",
             "| scale | full migration with checks | cutover command | window recorded | of it: final refresh "
             "| app-ready | rows changed | window / full |", "|---|---|---|---|---|---|---|---|"]
    for scale, rounds in results.items():
        m = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        lines.append(f"| {scale} | {m['full_s']:.1f} | {m['command_s']:.1f} | {m['window_s']:.1f} | "
                     f"{m['refresh_s']:.1f} | {m['app_ready_s']:.2f} | {m['rows_changed']:,.0f} | "
                     f"{m['window_s'] / m['full_s']:.2f} |")
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.cutover")
    p.add_argument("--scales", type=float, nargs="+", default=[0.1, 1.0])
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--change", type=float, default=0.001, help="share of every legacy table changed before it")
    a = p.parse_args(argv)
    admin, _ = admin_url()
    results = {}
    for scale in a.scales:
        results[scale] = []
        for _ in range(a.runs):
            r = measure(admin, scale, a.change)
            print(json.dumps({"scale": scale, **{k: round(v, 2) for k, v in r.items()}}), flush=True)
            results[scale].append(r)
    (HERE / "cutover.json").write_text(json.dumps(results, indent=1))
    (HERE / "cutover.md").write_text("\n".join(report(results, a.change)) + "\n")
    print("\n".join(report(results, a.change)))


if __name__ == "__main__":
    main()
