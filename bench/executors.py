"""Benchmark of the executors and of slicing (issue 22), and a projection to larger data and machines.

    .venv/bin/python -m bench.executors --scale 1.0 --runs 2     # writes bench/executors.{md,json}
                                                                 # and the Executors section of BENCHMARKS.md

On one legacy database, in the same minutes:
1. ``full_migration`` as the code location defines it, checks off (as bench.run's full migration),
   into a fresh target, once per executor per round, the order rotated between rounds:
   in process (the default: no slices, a step per table); multiprocess with 2 processes; Celery
   with 2 workers started here (skipped, with the reason, when no broker answers). The last two
   run with MIGRATION_SLICE_ROWS=--slice-rows (the large tables in slices) and, multiprocess, a
   step per level for the others. Wall time, steps, and two shares of the lanes' time (wall x
   lanes). Orchestration: the steps' spans in the run's event log (a step's first event to its
   last) less the loads' and slices' own seconds: process starts, imports, resources, Dagster's
   events. Idle: everything not spent in a load, so orchestration plus the waits on dependencies
   (a level's steps wait for the level above). Per step: the orchestration seconds and the start
   latency (first event to STEP_START).
2. The largest table alone (system_messages), its parents loaded: cut into 1, 2, 4 and 8 slices
   loaded two at a time by two processes, then finished: each slice's rows/s, the slices' wall
   time and the last step's (keys) time; and the key build with PostgreSQL's parallel
   maintenance workers off (0) and at the server's setting.
3. A projection of the wall time at 10x and 100x the data on larger targets, from the figures
   above; the model is written beside the table.
On 2 shared cores the parallel executors cannot be faster than one process: both databases and
the workers share the same two cores. No speed-up is claimed from these figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psycopg

from migration_assets.config import PROJECT_DIR, DbSettings, admin_url, sqlalchemy_url
from migration_assets.engine.audit import write_audit
from migration_assets.engine.commit import migrate_entity
from migration_assets.engine.options import LoadOptions
from migration_assets.engine.slices import finish_slices, load_slice, plan_slices
from migration_assets.engine.stream import LegacyStream
from migration_assets.registry import ENTITIES, entity
from migration_assets.simulator import generate
from migration_assets.migrations import apply_migrations

from .run import recreate

HERE = Path(__file__).parent
VENV_BIN = Path(sys.executable).parent
LARGEST = max(ENTITIES, key=lambda e: e.expected_rows).name
LANES = {"in_process": 1, "multiprocess": 2, "celery": 2}


def _broker_answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
        import dagster_celery  # noqa: F401
        return True
    except (OSError, ImportError):
        return False


class CeleryWorkers:
    """Two dagster-celery workers, as the README starts them, for the Celery runs."""

    def __init__(self, env: dict, folder: Path):
        self.env, self.folder, self.procs = env, folder, []

    def __enter__(self):
        env = dict(self.env, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        for i in range(2):
            log = (self.folder / f"worker{i}.log").open("w")
            self.procs.append(subprocess.Popen(
                [str(VENV_BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-n",
                 f"bench-{i}-{os.getpid()}", "--", "-c", "1"], env=env, cwd=self.folder, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            ping = subprocess.run([str(VENV_BIN / "celery"), "-A", "dagster_celery.app", "inspect", "ping",
                                   "--timeout", "2"], env=env, capture_output=True, text=True)
            if ping.stdout.count("pong") >= 2:
                return self
            time.sleep(1)
        raise RuntimeError("the Celery workers did not answer")

    def __exit__(self, *exc):
        for p in self.procs:
            os.killpg(p.pid, 15)
        for p in self.procs:
            p.wait(timeout=60)


def executor_env(env: dict, executor: str, target: str, slice_rows: int) -> dict:
    """The run's environment; Celery workers need the same (their definitions must be the run's)."""
    run_env = dict(env, TARGET_DB_URL=target, MIGRATION_EXECUTOR=executor, MIGRATION_ASSET_CHECKS="0",
                   MIGRATION_MAX_CONCURRENT="2")
    if executor != "in_process":
        run_env["MIGRATION_SLICE_ROWS"] = str(slice_rows)
    return run_env


def run_executor(executor: str, env: dict, legacy: str, admin: str, slice_rows: int) -> dict:
    target = recreate(admin, "bench_exec_target")
    apply_migrations(target)
    run_env = executor_env(env, executor, target, slice_rows)
    out = subprocess.run([sys.executable, "-m", "bench.execute_job"], env=run_env, capture_output=True, text=True,
                         cwd=PROJECT_DIR)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    run = json.loads(out.stdout.strip().splitlines()[-1])
    if not run["success"]:
        raise RuntimeError(f"{executor}: the run failed: {out.stderr[-3000:]}")
    with psycopg.connect(target) as conn:
        loads = conn.execute("SELECT count(*), coalesce(sum(duration_ms), 0) / 1000.0 FROM "
                             "migration_control.migration_runs WHERE run_id = %s AND status = 'COMPLETED'",
                             [run["run_id"]]).fetchone()
        slices = conn.execute("SELECT count(*), coalesce(sum(duration_ms), 0) / 1000.0 FROM migration_control.slices "
                              "WHERE run_id = %s", [run["run_id"]]).fetchone()
        unfinished = conn.execute("SELECT count(*) FROM migration_control.slice_loads WHERE finished_at IS NULL"
                                  ).fetchone()[0]
        per_table = {name: details for name, details in conn.execute(
            "SELECT entity, details || jsonb_build_object('duration_s', duration_ms / 1000.0, 'rows', records_read) "
            "FROM migration_control.migration_runs WHERE run_id = %s", [run["run_id"]]).fetchall()}
    assert loads[0] == len(ENTITIES) and unfinished == 0, (executor, loads, unfinished)
    load_s = float(loads[1]) + float(slices[1])
    lanes = LANES[executor]
    orchestration_s = max(run["step_spans_s"] - load_s, 0)  # inside the steps, outside the loads
    out = {"executor": executor, "wall_s": run["wall_s"], "steps": run["steps"], "slices": slices[0],
           "load_s": load_s, "idle_share": max(run["wall_s"] * lanes - load_s, 0) / (run["wall_s"] * lanes),
           "orchestration_share": orchestration_s / (run["wall_s"] * lanes),
           "per_step_overhead_s": orchestration_s / max(run["steps"], 1),
           "start_latency_s": run["start_latency_s"] / max(run["steps"], 1), "target": target}
    if executor == "in_process":  # the projection's per-table phases
        out["per_table"] = per_table
    return out


def _slice_in_process(args) -> dict:
    legacy, target, number = args
    opts = LoadOptions(run_id="bench-slices")
    stream = LegacyStream(legacy, entity(LARGEST), opts)
    try:
        with psycopg.connect(target) as conn:
            piece = load_slice(conn, stream, opts, number)
            conn.commit()
        return {"rows": piece.rows_read, "s": piece.duration_ms / 1000}
    finally:
        stream.close()


def _reset_largest(target: str) -> None:
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute(f'TRUNCATE public."{entity(LARGEST).target_table}"')
        for table in ("quarantine", "watermarks", "slice_loads"):
            conn.execute(f"DELETE FROM migration_control.{table} WHERE entity = %s", [LARGEST])


def slices_of_largest(legacy: str, target: str, counts=(1, 2, 4, 8), maintenance_workers=(0, None)) -> list[dict]:
    """``target``: a migrated target (the largest table's parents loaded)."""
    out = []
    rows = None
    runs = [(n, None) for n in counts] + [(2, w) for w in maintenance_workers if w is not None]
    runs.sort(key=lambda nw: nw[0] != 1)  # the one-step load first: it gives the row count
    for n, workers in runs:
        _reset_largest(target)
        opts = LoadOptions(run_id="bench-slices")
        if n == 1:  # one slice is the one-step fast path: its streaming phase, then the rest
            r = migrate_entity(legacy, target, LARGEST, opts)
            stream_s = r.phases["stream_and_copy"] + r.phases.get("quarantine_copy", 0.0)
            rows = r.records_read
            out.append({"slices": 1, "maintenance_workers": -1, "rows": rows, "slice_rows_per_s": rows / stream_s,
                        "slices_wall_s": stream_s, "finish_s": r.duration_s - stream_s,
                        "build_keys_s": r.phases.get("build_keys", 0.0)})
            print(json.dumps(out[-1]), flush=True)
            continue
        stream = LegacyStream(legacy, entity(LARGEST), opts)
        rows = rows or stream.snapshot().rows
        with psycopg.connect(target) as conn:
            plan = plan_slices(conn, stream, opts, math.ceil(rows / n))
            conn.commit()
        stream.close()
        started = time.perf_counter()
        with ProcessPoolExecutor(2) as pool:
            pieces = list(pool.map(_slice_in_process, [(legacy, target, s.number) for s in plan.slices]))
        slices_wall = time.perf_counter() - started
        finish_target = target if workers is None else \
            f"{target} options='-c max_parallel_maintenance_workers={workers}'"
        stream = LegacyStream(legacy, entity(LARGEST), opts)
        with psycopg.connect(finish_target) as conn:
            setting = conn.execute("SHOW max_parallel_maintenance_workers").fetchone()[0]
            result = finish_slices(conn, stream, opts)
            write_audit(conn, opts.run_id, result, LARGEST)
            conn.commit()
        stream.close()
        out.append({"slices": len(plan.slices), "maintenance_workers": int(setting), "rows": rows,
                    "slice_rows_per_s": statistics.median(p["rows"] / p["s"] for p in pieces),
                    "slices_wall_s": slices_wall, "finish_s": result.duration_s,
                    "build_keys_s": result.phases.get("build_keys", 0.0)})
        print(json.dumps(out[-1]), flush=True)
    return out


def project(inproc: dict, slices: list[dict], overhead_s: float, slice_rows: int) -> list[dict]:
    """Wall time at ``scale`` x the measured data, from the in-process run's per-table phases and
    the slices' rates (the model: README of this module and the report's text)."""
    one = next(s for s in slices if s["slices"] == 1)  # maintenance_workers -1: the one-step load
    rate = one["slice_rows_per_s"]  # one lane: one worker and one target backend
    p0 = [s for s in slices if s["maintenance_workers"] == 0]
    pn = [s for s in slices if s["slices"] == 2 and s["maintenance_workers"] > 0]
    s2 = (p0[0]["build_keys_s"] / pn[0]["build_keys_s"]) if p0 and pn and pn[0]["build_keys_s"] else 1.0
    f = min(max(2 * (1 - 1 / s2), 0.0), 1.0) if s2 > 1 else 0.0  # Amdahl's parallel fraction from the 2-worker speed-up
    by_level: dict[int, list] = {}
    for name, d in inproc["per_table"].items():
        phases = d.get("phases_s", {})
        stream_s = phases.get("stream_and_copy", 0.0) + phases.get("quarantine_copy", 0.0)
        by_level.setdefault(entity(name).level, []).append((d["rows"], stream_s, max(d["duration_s"] - stream_s, 0)))
    rows_out = []
    for scale in (10, 100):
        baseline = sum(st * scale + rest * scale * _nlogn(r, scale) for tables in by_level.values()
                       for r, st, rest in tables)
        for cores, workers in ((8, 4), (32, 16)):
            lanes = min(workers, cores)
            keys = 1 / ((1 - f) + f / min(cores, 8))  # parallel maintenance workers: min(cores, 8)
            wall, steps = 0.0, 0
            for tables in by_level.values():
                work, critical = 0.0, 0.0
                for r, st, rest in tables:
                    big_rows = r * scale
                    rest_x = rest * scale * _nlogn(r, scale) / keys
                    work += st * scale + rest_x
                    if big_rows > slice_rows:
                        pieces = math.ceil(big_rows / slice_rows)
                        steps += pieces + 2
                        critical = max(critical, slice_rows / rate + rest_x)
                    else:
                        steps += 1
                        critical = max(critical, st * scale + rest_x)
                wall += max(work / lanes, critical)
            wall += steps * overhead_s / lanes
            rows_out.append({"scale": scale, "cores": cores, "workers": workers, "lanes": lanes,
                             "keys_speedup": keys, "wall_s": wall, "in_process_s": baseline, "steps": steps})
    return rows_out


def _nlogn(rows: int, scale: float) -> float:
    """How much more a key build costs per row at ``scale`` x ``rows`` (a sort: n log n)."""
    return math.log(max(rows * scale, 2)) / math.log(max(rows, 2))


def write(results: dict, md: Path) -> None:
    runs = results["runs"]
    lines = ["## Executors and slices (bench.executors)", "",
             f"Written by `.venv/bin/python -m bench.executors` at scale {results['scale']} "
             f"({results['legacy_rows']:,} legacy rows), {results['rounds']} round(s), the executors' order "
             "rotated; checks off, as in the full migration above. Multiprocess and Celery run with "
             f"MIGRATION_SLICE_ROWS={results['slice_rows']:,} (the tables above it in slices) and, "
             "multiprocess, a step per level for the others. Shares of the lanes' time (wall x lanes): "
             "orchestration is the steps' spans in the run's event log (a step's first event to its last) "
             "less the loads' and slices' own seconds (process starts, imports, resources, Dagster's events); "
             "idle is all time not spent in a load or a slice, so orchestration plus the waits on dependencies "
             "(a level waits for the level above). Start latency: a step's first event to its STEP_START. "
             "On these 2 shared cores the workers and both databases compete "
             "for the same cores: no speed-up is expected, and none is claimed.", "",
             "| executor | lanes | median wall s | wall / in process | steps | slices | loads' own s | "
             "orchestration share | idle share | orchestration per step s | start latency per step s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = statistics.median(r["wall_s"] for r in runs if r["executor"] == "in_process")
    for name in ("in_process", "multiprocess", "celery"):
        mine = [r for r in runs if r["executor"] == name]
        if not mine:
            lines.append(f"| {name} | - | skipped: {results.get('skipped', {}).get(name, 'not run')} | | | | | | | | |")
            continue
        med = lambda k: statistics.median(r[k] for r in mine)  # noqa: E731
        lines.append(f"| {name} | {LANES[name]} | {med('wall_s'):.1f} | {med('wall_s') / base:.2f}x | "
                     f"{mine[0]['steps']} | {mine[0]['slices']} | {med('load_s'):.1f} | "
                     f"{100 * med('orchestration_share'):.0f}% | {100 * med('idle_share'):.0f}% | "
                     f"{med('per_step_overhead_s'):.2f} | {med('start_latency_s'):.2f} |")
    lines += ["", f"**The largest table ({LARGEST}, {results['slices'][0]['rows']:,} rows) in slices**, loaded two "
              "at a time by two processes, then its keys built once:", "",
              "| slices | max_parallel_maintenance_workers | rows/s per slice (median) | slices wall s | "
              "last step s | of which key build s |", "|---|---|---|---|---|---|"]
    for s in results["slices"]:
        workers = "server's (one-step fast path)" if s["maintenance_workers"] < 0 else s["maintenance_workers"]
        lines.append(f"| {s['slices']} | {workers} | {s['slice_rows_per_s']:,.0f} | "
                     f"{s['slices_wall_s']:.1f} | {s['finish_s']:.1f} | {s['build_keys_s']:.1f} |")
    p = results["projection"]
    lines += ["", "**Projection** (not a measurement). Model: every table's load at scale 1.0 in process is split "
              "into its streaming part (read, transform, COPY: the `stream_and_copy` phase) and the rest (keys, "
              "orphans, quarantine); at N x the data the streaming part grows N-fold and the rest N log N-fold. A "
              "table above the slice size streams in slices over `lanes` = min(workers, target cores) parallel "
              "lanes at the one-slice rate measured above (one worker, one source and one target backend per lane; "
              "the servers' disks and the network are not modelled); key builds speed up by Amdahl's law with the "
              "parallel fraction implied by the measured speed-up of 2 maintenance workers over 0, at "
              "min(cores, 8) workers. Levels run one after another; a level takes the larger of its work "
              "divided by the lanes and its longest table (a sliced table: one slice, then its keys). Each step "
              f"adds the orchestration per step measured under multiprocess ({results['overhead_s']:.2f} s), divided by the lanes. "
              f"Slice size {results['projection_slice_rows']:,} rows.", "",
              "| data | target cores | workers | lanes | key-build speed-up | steps | projected wall | "
              "in process, projected the same way |", "|---|---|---|---|---|---|---|---|"]
    for r in p:
        lines.append(f"| {r['scale']}x | {r['cores']} | {r['workers']} | {r['lanes']} | {r['keys_speedup']:.2f}x | "
                     f"{r['steps']:,} | {r['wall_s'] / 60:.1f} min | {r['in_process_s'] / 60:.1f} min |")
    md.write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--slice-rows", type=int, default=500_000)
    ap.add_argument("--projection-slice-rows", type=int, default=1_000_000)
    ap.add_argument("--output", default=str(HERE / "executors.md"))
    ap.add_argument("--from-json", action="store_true")
    a = ap.parse_args(argv)
    md = Path(a.output)
    if not a.from_json:
        admin, _ = admin_url()
        legacy = recreate(admin, "bench_legacy")
        generate(legacy, scale=a.scale, seed=7, log=lambda *_: None)
        with psycopg.connect(legacy) as c:
            legacy_rows = sum(c.execute(f'SELECT count(*) FROM "{e.legacy_table}"').fetchone()[0] for e in ENTITIES)
        home = Path(tempfile.mkdtemp(prefix="bench_dagster_home_"))
        (home / "dagster.yaml").write_text((PROJECT_DIR / "dagster.yaml").read_text())
        env = dict(os.environ, SOURCE_DB_URL=legacy, DAGSTER_HOME=str(home),
                   DAGSTER_PG_URL=sqlalchemy_url(DbSettings(url=recreate(admin, "bench_dagster"))))
        executors = ["in_process", "multiprocess"]
        skipped = {}
        if _broker_answers():
            executors.append("celery")
        else:
            skipped["celery"] = "no broker on 127.0.0.1:5672, or dagster-celery not installed"
        runs = []
        for i in range(a.runs):
            order = executors[i % len(executors):] + executors[:i % len(executors)]
            for name in order:
                if name == "celery":
                    target = recreate(admin, "bench_exec_target")  # the same name every run: the workers' URL
                    with CeleryWorkers(executor_env(env, "celery", target, a.slice_rows), home):
                        r = run_executor(name, env, legacy, admin, a.slice_rows)
                else:
                    r = run_executor(name, env, legacy, admin, a.slice_rows)
                print(json.dumps({k: v for k, v in r.items() if k != "per_table"}), flush=True)
                runs.append(r)
        inproc = [r for r in runs if r["executor"] == "in_process"][-1]
        slices = slices_of_largest(legacy, run_executor("in_process", env, legacy, admin, a.slice_rows)["target"])
        multi = [r for r in runs if r["executor"] == "multiprocess"]
        overhead = statistics.median(r["per_step_overhead_s"] for r in multi)
        results = {"scale": a.scale, "legacy_rows": legacy_rows, "rounds": a.runs, "slice_rows": a.slice_rows,
                   "runs": runs, "skipped": skipped, "slices": slices, "overhead_s": overhead,
                   "projection_slice_rows": a.projection_slice_rows,
                   "projection": project(inproc, slices, overhead, a.projection_slice_rows)}
        md.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    write(json.loads(md.with_suffix(".json").read_text()), md)
    print(f"wrote {md}")
    bench_json = PROJECT_DIR / "BENCHMARKS.json"
    if bench_json.exists() and md == HERE / "executors.md":  # BENCHMARKS.md carries this section too
        from .run import regenerate

        regenerate(PROJECT_DIR / "BENCHMARKS.md")


if __name__ == "__main__":
    main()
