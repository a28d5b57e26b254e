"""Issue 35's PostgREST reloads, measured with their price: a first migration (45 tables, checks
off, through Dagster as bench.run runs it) into a fresh target carrying PostgREST's documented
schema watch (an event trigger that NOTIFYs pgrst on DDL), three ways, alternated, on the same
server: the keys of every table set aside for the run and restored by target_keys (what `migrate`
does, engine/keys.py), each table's fast path rebuilding its own keys (target_keys left out), and
the merge path (MIGRATION_FAST_PATH=false). Counts the notifications PostgREST would receive (and
the bursts its 100 ms debounce would still reload for) and the wall seconds.
    .venv/bin/python -m bench.experiments.first_migration_reloads [--scale 0.1] [--rounds 3] [--no-merge]"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import psycopg

from bench.run import migrate_child, recreate
from migration_assets.config import admin_url
from migration_assets.migrations import apply_migrations
from migration_assets.simulator import generate
from migration_assets_tests.test_supabase_shaped import PGRST_WATCH

# PostgREST's documented finer-grained watch, as the Supabase-shaped test target installs it
WATCH = "CREATE SCHEMA IF NOT EXISTS extensions;" + PGRST_WATCH
DEBOUNCE_S = 0.1  # PostgREST groups notifications less than this apart: at most two reloads per burst


def listen(target: str, arrivals: list[float], stop: threading.Event) -> None:
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("LISTEN pgrst")
        while not stop.is_set():
            for _ in conn.notifies(timeout=0.2):
                arrivals.append(time.monotonic())


def reloads_after_debounce(arrivals: list[float]) -> int:
    """Reloads PostgREST's debounce leaves: the notifications split into bursts (gaps under
    DEBOUNCE_S); one reload for a burst of one, two (at its start and after it settles) for more."""
    bursts: list[int] = []
    for i, t in enumerate(arrivals):
        if i == 0 or t - arrivals[i - 1] >= DEBOUNCE_S:
            bursts.append(0)
        bursts[-1] += 1
    return sum(1 if n == 1 else 2 for n in bursts)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=float, default=0.1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-merge", action="store_true", help="leave the merge path out (3.4x the time at scale 1.0)")
    a = p.parse_args()
    admin, _ = admin_url()
    source = recreate(admin, "bench_reloads_legacy")
    generate(source, scale=a.scale, seed=7, log=lambda *_: None)
    ways = {"set aside": {}, "per table": {"BENCH_WITHOUT_TARGET_KEYS": "1"},
            "merge": {"MIGRATION_FAST_PATH": "false"}}
    if a.no_merge:
        del ways["merge"]
    results: dict[str, list[tuple[float, int, int]]] = {way: [] for way in ways}
    for rnd in range(a.rounds):
        for way in (list(ways) if rnd % 2 == 0 else list(reversed(ways))):
            target = recreate(admin, "bench_reloads_target")
            with psycopg.connect(target, autocommit=True) as conn:
                conn.execute(WATCH)
            apply_migrations(target)
            arrivals: list[float] = []
            stop = threading.Event()
            listener = threading.Thread(target=listen, args=(target, arrivals, stop))
            listener.start()
            time.sleep(0.5)
            run = migrate_child(source, target, None, extra_env=ways[way])
            time.sleep(1.0)
            stop.set()
            listener.join()
            assert run["success"]
            results[way].append((run["wall_s"], len(arrivals), reloads_after_debounce(arrivals)))
            print(f"round {rnd + 1} {way}: {run['wall_s']:.1f} s, {len(arrivals)} notifications, "
                  f"{reloads_after_debounce(arrivals)} reloads after PostgREST's debounce", flush=True)
    base = results["set aside"]
    print(f"scale {a.scale}, medians of {a.rounds}: " + "; ".join(
        f"{way} {statistics.median(r[0] for r in rs):.1f} s, {statistics.median(r[1] for r in rs)} notifications"
        + (f" ({statistics.median(o[0] / b[0] for b, o in zip(base, rs)):.2f}x set aside, same round)"
           if way != "set aside" else "")
        for way, rs in results.items()))

if __name__ == "__main__":
    main()
