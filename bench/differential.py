"""Benchmark: how the cost of a differential refresh grows, with the change and with the table.
    .venv/bin/python -m bench.differential --scales 0.1 1.0 --runs 3   # writes bench/differential.md

Issue 23 asks that a differential refresh after 1% changed cost at most 10% of the full migration
at scale 1.0, and that its cost grow with the change rather than with the table. This splits it.
For each scale the simulator builds the legacy database and the 45 assets are materialized into a
fresh target (the full migration, timed). Then, in each round, on the same target:
1. a differential refresh with nothing changed at the source: the floor every refresh pays
   (45 Dagster steps, and per table the reads that prove nothing was deleted: the legacy
   table's count and the target's count; see engine/deletes.py);
2. 0.1% of every legacy table changed (simulator.mutate: 60% updates, 30% inserts, 10%
   deletes), then a differential refresh;
3. 1% changed, then a differential refresh.
Each refresh runs in a child process as bench.run does (materialization time, its phases summed
over the tables, orchestration outside the loads), with DIFFERENTIAL_OVERLAP_SECONDS=0: the
default re-reads the rows changed in the last five minutes, which here are the previous
refresh's, and the floor would include them. After the last one, target rows + open
quarantine rows are checked against every legacy table. Medians over ``--runs`` rounds; the
ratios are taken against the full migration of the same scale.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from migration_assets.config import admin_url
from migration_assets.simulator import generate, mutate
from migration_assets.migrations import apply_migrations

from .peers import _top_phases, verify_migration
from .run import _median, drop, legacy_counts, migrate_child, recreate

HERE = Path(__file__).resolve().parent
NO_OVERLAP = {"DIFFERENTIAL_OVERLAP_SECONDS": "0"}
CHANGES = (0.0, 0.001, 0.01)  # fraction of every table changed before the refresh


def measure(admin: str, scale: float, runs: int) -> dict:
    legacy = recreate(admin, "bench_diff_legacy")
    generate(legacy, scale=scale, seed=7, log=lambda *_: None)
    target = recreate(admin, "bench_diff_target")
    apply_migrations(target)
    full = migrate_child(legacy, target, None)
    out = {"rows": sum(legacy_counts(legacy).values()), "full_s": full["wall_s"], "rounds": []}
    mutation = 0
    for i in range(runs):
        rnd = {}
        for fraction in CHANGES:
            if fraction:
                mutation += 1
                mutate(legacy, fraction=fraction, round_no=mutation, seed=7, log=lambda *_: None)
            r = migrate_child(legacy, target, None, mode="differential", extra_env=NO_OVERLAP)
            rnd[str(fraction)] = {"wall_s": r["wall_s"], "orchestration_s": r["orchestration_s"],
                                  "phases": r["phases"]}
            print(json.dumps({"scale": scale, "round": i, "changed": fraction, "wall_s": round(r["wall_s"], 2),
                              "orchestration_s": round(r["orchestration_s"], 2)}), flush=True)
        rnd["wrong"] = verify_migration(target, legacy_counts(legacy))
        out["rounds"].append(rnd)
    drop(admin, "bench_diff_legacy")
    drop(admin, "bench_diff_target")
    return out


def report(results: dict) -> list[str]:
    """The section's lines: per scale and change, the refresh's median, its share of the full
    migration and its part above the same round's refresh with nothing changed."""
    lines = ["## How a differential refresh grows (bench.differential)", "",
             "Written by `.venv/bin/python -m bench.differential`. Per scale: one full migration, then rounds of "
             "three differential refreshes on the same target: nothing changed, 0.1% of every legacy table "
             "changed, 1% changed (60% updates, 30% inserts, 10% deletes), no overlap window. Materialization "
             "time of the 45 assets (in process, checks off); medians of the rounds. The part above the floor "
             "is the refresh minus the refresh with nothing changed in the same round.", "",
             "| scale | legacy rows | full s | changed | refresh s | / full | above the floor s | "
             "orchestration s | largest phases (summed over the tables) | rows verified |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for scale, res in results.items():
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
                f"| {scale} | {res['rows']:,} | {res['full_s']:.1f} | {fraction:.1%} | {wall:.2f} | "
                f"{wall / res['full_s']:.1%} | {'-' if not fraction else f'{above:.2f}'} | "
                f"{_median(rounds, lambda r: r[key]['orchestration_s']):.2f} | {top} | "
                f"{'yes' if not any(r['wrong'] for r in rounds) else 'NO'} |")
    return lines


def write(results: dict) -> None:
    (HERE / "differential.md").write_text("\n".join(report(results)) + "\n")
    from .run import regenerate

    if (HERE.parent / "BENCHMARKS.json").exists():  # BENCHMARKS.md carries this section too
        regenerate(HERE.parent / "BENCHMARKS.md")


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scales", type=float, nargs="+", default=[0.1, 1.0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--from-json", action="store_true", help="only rewrite the report from the saved results")
    a = p.parse_args(argv)
    if a.from_json:
        return write(json.loads((HERE / "differential.json").read_text()))
    admin, _ = admin_url()
    results = {str(s): measure(admin, s, a.runs) for s in a.scales}
    (HERE / "differential.json").write_text(json.dumps(results, indent=1))
    write(results)


if __name__ == "__main__":
    main()
