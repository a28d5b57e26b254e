"""Benchmark: how the cost of a differential refresh grows, with the change and with the table,
in both change-capture modes side by side.
    .venv/bin/python -m bench.differential --scales 0.1 1.0 --runs 3   # writes bench/differential.md

For each scale the simulator builds the legacy database on a server of the benchmark's own with
wal_level=logical (initdb, as the tests' servers.TempServer), so that both modes read the same
server; then per mode (MIGRATION_CHANGE_SOURCE watermark, logical) a fresh target gets the full
migration (timed; in logical mode the slot is created before the first snapshot, and the WAL it
retains after the migration is read), and, in each round, on the same target:
1. a differential refresh with nothing changed at the source: the floor every refresh pays;
2. 0.1% of every legacy table changed (simulator.mutate: 60% updates, 30% inserts, 10%
   deletes), then a differential refresh;
3. 1% changed, then a differential refresh.
Each refresh runs in a child process as bench.run does, with DIFFERENTIAL_OVERLAP_SECONDS=0. The
same mutations (same seed and round) are applied to a copy of the legacy database per mode.
Then the cutover lag: a writer keeps changing the legacy tables, one row is stamped, a refresh
starts at once, and the lag is from the stamp's commit to that refresh's end, the stamp checked
in the target. After the last refresh, target rows + open quarantine rows are checked against
every legacy table. Medians over ``--runs`` rounds; ratios against the same mode's full
migration.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

import psycopg

from migration_assets.config import admin_url
from migration_assets.engine.changes import drop as drop_slot, slot_state
from migration_assets.simulator import generate, mutate
from migration_assets.migrations import apply_migrations

from .peers import _top_phases, verify_migration
from .run import _median, drop, legacy_counts, migrate_child, recreate

HERE = Path(__file__).resolve().parent
NO_OVERLAP = {"DIFFERENTIAL_OVERLAP_SECONDS": "0"}
CHANGES = (0.0, 0.001, 0.01)  # fraction of every table changed before the refresh
MODES = ("watermark", "logical")
SLOT = "bench_differential"


def _lag(legacy: str, target: str, env: dict) -> float:
    """Seconds from the commit of a stamped legacy row to the end of the refresh that brought it,
    with a writer changing the legacy tables all along."""
    stop = threading.Event()

    def writer():
        n = 1000
        while not stop.is_set():
            n += 1
            mutate(legacy, fraction=0.0002, round_no=n, seed=11, entities=["tasks", "comments"], log=lambda *_: None)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(2)
    stamp = f"lag-{time.time_ns()}"
    with psycopg.connect(legacy) as conn:
        conn.execute("UPDATE tbl_office SET office_name = %s, last_modified = now() "
                     "WHERE office_id = (SELECT min(office_id) FROM tbl_office)", [stamp])
    committed = time.perf_counter()
    migrate_child(legacy, target, None, mode="differential", extra_env=env)
    lag = time.perf_counter() - committed
    stop.set()
    thread.join()
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM public.offices WHERE name = %s", [stamp]).fetchone()[0] == 1
    return lag


def measure(admin: str, server, scale: float, runs: int, modes=MODES) -> dict:
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS bench_diff_origin WITH (FORCE)")
        conn.execute("CREATE DATABASE bench_diff_origin")
    origin = server.url("bench_diff_origin")
    generate(origin, scale=scale, seed=7, log=lambda *_: None)
    out = {"rows": sum(legacy_counts(origin).values())}
    for mode in modes:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS bench_diff_legacy WITH (FORCE)")
            conn.execute("CREATE DATABASE bench_diff_legacy TEMPLATE bench_diff_origin")
        legacy = server.url("bench_diff_legacy")
        target = recreate(admin, "bench_diff_target")
        apply_migrations(target)
        env = {**NO_OVERLAP, "MIGRATION_CHANGE_SOURCE": mode, "MIGRATION_SLOT": SLOT}
        full = migrate_child(legacy, target, None, extra_env=env)
        res = {"full_s": full["wall_s"], "peak_rss_mb": full["peak_rss_mb"], "rounds": []}
        if mode == "logical":
            with psycopg.connect(legacy) as conn:
                res["wal_retained_mb"] = slot_state(conn, SLOT).lag_bytes / 2**20
        mutation = 0
        for i in range(runs):
            rnd = {}
            for fraction in CHANGES:
                if fraction:
                    mutation += 1
                    mutate(legacy, fraction=fraction, round_no=mutation, seed=7, log=lambda *_: None)
                r = migrate_child(legacy, target, None, mode="differential", extra_env=env)
                rnd[str(fraction)] = {"wall_s": r["wall_s"], "orchestration_s": r["orchestration_s"],
                                      "phases": r["phases"], "peak_rss_mb": r["peak_rss_mb"]}
                print(json.dumps({"scale": scale, "mode": mode, "round": i, "changed": fraction,
                                  "wall_s": round(r["wall_s"], 2)}), flush=True)
            rnd["wrong"] = verify_migration(target, legacy_counts(legacy))
            res["rounds"].append(rnd)
        res["lag_s"] = _lag(legacy, target, env)
        print(json.dumps({"scale": scale, "mode": mode, "lag_s": round(res["lag_s"], 2)}), flush=True)
        if mode == "logical":
            drop_slot(legacy, SLOT)
        out[mode] = res
        drop(admin, "bench_diff_target")
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS bench_diff_legacy WITH (FORCE)")
        conn.execute("DROP DATABASE IF EXISTS bench_diff_origin WITH (FORCE)")
    return out


def report(results: dict) -> list[str]:
    """The section's lines: per scale, mode and change, the refresh's median, its share of the
    same mode's full migration and its part above the same round's refresh with nothing changed."""
    lines = ["## How a differential refresh grows (bench.differential)", "",
             "Written by `.venv/bin/python -m bench.differential`. Per scale, the legacy database on a server with "
             "wal_level=logical, and per change-capture mode a fresh target: one full migration, then rounds of "
             "three differential refreshes: nothing changed, 0.1% of every legacy table changed, 1% changed (60% "
             "updates, 30% inserts, 10% deletes), no overlap window. Materialization time of the 45 assets (in "
             "process, checks off); medians of the rounds. The part above the floor is the refresh minus the "
             "refresh with nothing changed in the same round. Lag: from the commit of a legacy row to the end of "
             "the refresh that brought it, with a writer changing the legacy tables all along. WAL retained: what "
             "the slot held after the full migration.", "",
             "| scale | legacy rows | mode | full s | changed | refresh s | / full | above the floor s | "
             "largest phases (summed over the tables) | rows verified |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    extra = []
    for scale, by_mode in results.items():
        for mode in MODES:
            res = by_mode.get(mode)
            if res is None:
                continue
            rounds = res["rounds"]
            for fraction in CHANGES:
                key = str(fraction)
                wall = _median(rounds, lambda r: r[key]["wall_s"])
                above = _median(rounds, lambda r: r[key]["wall_s"] - r["0.0"]["wall_s"])
                phases: dict[str, list[float]] = {}
                for r in rounds:
                    for k, v in r[key]["phases"].items():
                        phases.setdefault(k, []).append(v)
                top = _top_phases({k: statistics.median(v) for k, v in phases.items()}, 3)
                lines.append(
                    f"| {scale} | {by_mode['rows']:,} | {mode} | {res['full_s']:.1f} | {fraction:.1%} | {wall:.2f} | "
                    f"{wall / res['full_s']:.1%} | {'-' if not fraction else f'{above:.2f}'} | {top} | "
                    f"{'yes' if not any(r['wrong'] for r in rounds) else 'NO'} |")
            retained = f", WAL retained after the full migration {res['wal_retained_mb']:.1f} MB" \
                if "wal_retained_mb" in res else ""
            extra.append(f"- scale {scale}, {mode}: lag {res['lag_s']:.1f} s, peak RSS of the full migration "
                         f"{res['peak_rss_mb']:.0f} MB{retained}")
    return lines + [""] + extra


def write(results: dict) -> None:
    (HERE / "differential.md").write_text("\n".join(report(results)) + "\n")
    from .run import regenerate

    if (HERE.parent / "BENCHMARKS.json").exists():  # BENCHMARKS.md carries this section too
        regenerate(HERE.parent / "BENCHMARKS.md")


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scales", type=float, nargs="+", default=[0.1, 1.0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--from-json", action="store_true", help="only rewrite the report from the saved results")
    a = p.parse_args(argv)
    if a.from_json:
        return write(json.loads((HERE / "differential.json").read_text()))
    from migration_assets_tests.servers import TempServer

    admin, _ = admin_url()
    # plain connections, as the session's server: TLS would tax both modes' reads alike
    server = TempServer(conf={"wal_level": "logical", "max_replication_slots": "4"}, tls=False)
    try:
        results = {str(s): measure(admin, server, s, a.runs, a.modes) for s in a.scales}
    finally:
        server.stop()
    (HERE / "differential.json").write_text(json.dumps(results, indent=1))
    write(results)


if __name__ == "__main__":
    main()
