"""Benchmark: raw COPY vs the full migration vs a no-op re-run, side by side, at several scales.

    .venv/bin/python -m bench.run --scales 0.1 1.0 --runs 3      # writes BENCHMARKS.md

For each scale, in the same process and on the same server, one after the other:
1. the simulator builds the legacy database (timed);
2. the raw copy: every legacy table ``COPY ... TO STDOUT`` piped into ``COPY ... FROM STDIN`` of a
   plain table with the same columns in another database (no keys, no transforms): the practical
   limit of this machine;
3. the full migration: all 45 assets materialized through Dagster into a fresh target, in a child
   process so that its peak RSS is its own; orchestration cost = wall time - sum of the loads;
4. a no-op re-run over the unchanged source.
Medians over ``--runs`` runs; the ratios are taken within each run, then their median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

from migration_assets.config import PROJECT_DIR, admin_url, ensure_database
from migration_assets.registry import ENTITIES
from migration_assets.simulator import create_table_sql, generate, mutate
from migration_assets.migrations import apply_migrations


def drop(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def recreate(admin: str, name: str) -> str:
    drop(admin, name)
    return ensure_database(admin, name).conninfo()


def legacy_counts(source: str) -> dict[str, int]:
    """Rows of every legacy table."""
    with psycopg.connect(source) as conn:
        return {e.legacy_table: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(e.legacy_table))).fetchone()[0] for e in ENTITIES}


def raw_copy(source: str, dest: str) -> float:
    """COPY every legacy table into plain tables of another database; seconds."""
    with psycopg.connect(dest, autocommit=True) as d:
        for e in ENTITIES:
            d.execute(create_table_sql(e, "public"))
    started = time.perf_counter()
    with psycopg.connect(source) as s, psycopg.connect(dest) as d:
        for e in ENTITIES:
            t = sql.Identifier(e.legacy_table)
            with s.cursor().copy(sql.SQL("COPY {} TO STDOUT").format(t)) as out, \
                    d.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(t)) as inp:
                for chunk in out:
                    inp.write(chunk)
        d.commit()
    return time.perf_counter() - started


def migrate_child(source: str, target: str, dagster_url: str | None, mode: str = "full",
                  extra_env: dict | None = None) -> dict:
    # the engine alone by default: the checks are timed separately (time_checks) so both figures
    # stay readable; ``extra_env`` turns them on (bench.peers)
    env = {**os.environ, "SOURCE_DB_URL": source, "TARGET_DB_URL": target, "MIGRATION_ASSET_CHECKS": "0",
           "MIGRATION_MODE": mode, **(extra_env or {})}
    out = subprocess.run([sys.executable, "-m", "bench.migrate_once"], env=env, capture_output=True, text=True,
                         cwd=PROJECT_DIR)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def regenerate(path: Path) -> None:
    """Rewrite the markdown from the saved JSON (``--from-json``) without measuring again."""
    data = json.loads(path.with_suffix(".json").read_text())
    write_report({float(k): v for k, v in data.items()}, path)


def time_checks(source: str, target: str, full_content: bool = False) -> tuple[float, int, int]:
    """All asset checks of all 45 tables, as they run after each load: (seconds, legacy rows whose
    content was compared, legacy rows). ``full_content``: no table sampled (the default setting);
    otherwise CONTENT_CHECKSUM_SAMPLE_ABOVE=500,000."""
    from migration_assets.engine.accounting import CheckOptions
    from migration_assets.engine.checks import run_checks

    sample_above = -1 if full_content else 500_000  # -1: the default since bench.peers (issue 23)
    compared = legacy_rows = 0
    started = time.perf_counter()
    for e in ENTITIES:
        for r in run_checks(source, target, e, opts=CheckOptions(sample_above=sample_above)):
            if not r.passed and r.severity == "ERROR":
                raise RuntimeError(f"{e.name}.{r.check_name} failed on a clean migration: {r.metadata}")
            if r.check_name == "content_checksum":
                compared += r.metadata["rows_compared"]
            if r.check_name == "rows_reconcile":
                legacy_rows += r.metadata["legacy_rows"]
    return time.perf_counter() - started, compared, legacy_rows


def time_sensor(source: str, target: str, runs: int = 3) -> tuple[float, float]:
    """Evaluations of the legacy_changes sensor on a quiet source, in seconds: (the first, which has
    no cursor and counts every table, as one tick every EXACT_EVERY_S does; the median of ``runs``
    ticks after it, each with the cursor the previous one left, as a running sensor's are)."""
    from dagster import build_sensor_context

    from migration_assets.resources import LegacyDatabase, MigrationSettings, PostgresResource
    from migration_assets.sensors import legacy_changes
    from migration_assets.settings import load as load_settings

    resources = {"legacy": LegacyDatabase(url=source), "target": PostgresResource(url=target),
                 "settings": MigrationSettings.from_settings(load_settings({}))}
    cursor, times = None, []
    for _ in range(runs + 1):
        started = time.perf_counter()
        with build_sensor_context(cursor=cursor, resources=resources) as context:
            legacy_changes(context)
            cursor = context.cursor
        times.append(time.perf_counter() - started)
    return times[0], statistics.median(times[1:])


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scales", type=float, nargs="+", default=[0.1, 1.0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--output", default=str(PROJECT_DIR / "BENCHMARKS.md"))
    p.add_argument("--from-json", action="store_true", help="only rewrite the report from the saved results")
    a = p.parse_args(argv)
    if a.from_json:
        return regenerate(Path(a.output))
    admin, _ = admin_url()
    results = {}
    for scale in a.scales:
        runs = []
        for i in range(a.runs):
            legacy = recreate(admin, "bench_legacy")
            t = time.perf_counter()
            generate(legacy, scale=scale, seed=7, log=lambda *_: None)
            sim_s = time.perf_counter() - t
            rows = sum(legacy_counts(legacy).values())
            raw_s = raw_copy(legacy, recreate(admin, "bench_raw"))
            target = recreate(admin, "bench_target")
            apply_migrations(target)
            full = migrate_child(legacy, target, None)
            checks_s, compared, accounted = time_checks(legacy, target)
            checks_full_s, _, _ = time_checks(legacy, target, full_content=True)
            noop = migrate_child(legacy, target, None)
            mutate(legacy, fraction=0.01, round_no=1, seed=7, log=lambda *_: None)
            diff = migrate_child(legacy, target, None, mode="differential")
            sensor_full_s, sensor_s = time_sensor(legacy, target)
            run = {"diff": diff, "diff_vs_full": diff["wall_s"] / full["wall_s"], "sensor_quiet_s": sensor_s,
                   "sensor_full_count_s": sensor_full_s, "rows": rows, "simulate_s": sim_s, "raw_s": raw_s,
                   "full": full, "noop": noop,
                   "checks_s": checks_s, "checks_vs_full": checks_s / full["wall_s"],
                   "content_compared_share": compared / max(accounted, 1),
                   "checks_full_content_s": checks_full_s, "checks_full_content_vs_full": checks_full_s / full["wall_s"],
                   "full_vs_raw": full["wall_s"] / raw_s, "noop_vs_full": noop["wall_s"] / full["wall_s"],
                   "orchestration_share": full["orchestration_s"] / full["wall_s"]}
            print(json.dumps({"scale": scale, "run": i, **{k: v for k, v in run.items()
                                                          if k not in ("full", "noop", "diff")},
                              "full_s": full["wall_s"], "noop_s": noop["wall_s"], "diff_s": diff["wall_s"],
                              "rss": full["peak_rss_mb"]}),
                  flush=True)
            runs.append(run)
        results[scale] = runs
    Path(a.output).with_suffix(".json").write_text(json.dumps({str(k): v for k, v in results.items()}, indent=1))
    write_report(results, Path(a.output))


def _median(runs, f):
    return statistics.median(f(r) for r in runs)


def write_report(results: dict, path: Path) -> None:
    lines = ["# Benchmarks", "",
             "Written by `.venv/bin/python -m bench.run` (see bench/run.py for exactly what is measured). "
             "Machine: 2 cores, PostgreSQL 15 on 127.0.0.1 for source and target databases. "
             "Medians over the runs; ratios are taken within each run (same machine, same minute), then "
             "their median.", "",
             "| scale | legacy rows | runs | simulate s | raw COPY s | full migration s | full / raw | "
             "no-op re-run s | no-op / full | orchestration share | peak RSS MB (full) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for scale, runs in results.items():
        lines.append(
            f"| {scale} | {runs[0]['rows']:,} | {len(runs)} | {_median(runs, lambda r: r['simulate_s']):.1f} | "
            f"{_median(runs, lambda r: r['raw_s']):.1f} | {_median(runs, lambda r: r['full']['wall_s']):.1f} | "
            f"{_median(runs, lambda r: r['full_vs_raw']):.2f}x | {_median(runs, lambda r: r['noop']['wall_s']):.1f} | "
            f"{100 * _median(runs, lambda r: r['noop_vs_full']):.0f}% | "
            f"{100 * _median(runs, lambda r: r['orchestration_share']):.1f}% | "
            f"{_median(runs, lambda r: r['full']['peak_rss_mb']):.0f} |")
    # verdicts against the targets of the core-engine issue, computed from the figures above
    big = results[max(results)]
    small = results[min(results)]
    rss_big, rss_small = _median(big, lambda r: r["full"]["peak_rss_mb"]), _median(small, lambda r: r["full"]["peak_rss_mb"])
    checks = [
        ("simulator at the largest scale", "< 180 s", f"{_median(big, lambda r: r['simulate_s']):.1f} s",
         _median(big, lambda r: r["simulate_s"]) < 180),
        ("full migration / raw COPY", "<= 2x", f"{_median(big, lambda r: r['full_vs_raw']):.2f}x",
         _median(big, lambda r: r["full_vs_raw"]) <= 2),
        ("no-op re-run / full migration", "<= 15%", f"{100 * _median(big, lambda r: r['noop_vs_full']):.0f}%",
         _median(big, lambda r: r["noop_vs_full"]) <= 0.15),
        ("orchestration share of the full run", "< 10%",
         f"{100 * _median(big, lambda r: r['orchestration_share']):.1f}%",
         _median(big, lambda r: r["orchestration_share"]) < 0.10),
        ("peak RSS of the full run", "<= 256 MB", f"{rss_big:.0f} MB", rss_big <= 256),
        ("all asset checks / full migration, CONTENT_CHECKSUM_SAMPLE_ABOVE=500000 (the two tables above "
         "500,000 rows compare a 2% sample of their content)", "<= 20%",
         f"{100 * _median(big, lambda r: r.get('checks_vs_full', float('nan'))):.1f}% "
         f"({_median(big, lambda r: r.get('checks_s', float('nan'))):.1f} s; content of "
         f"{100 * _median(big, lambda r: r.get('content_compared_share', float('nan'))):.0f}% of legacy rows compared)",
         _median(big, lambda r: r.get("checks_vs_full", float("inf"))) <= 0.20),
        ("all asset checks / full migration, every row's content compared (the default)", "<= 20%",
         f"{100 * _median(big, lambda r: r.get('checks_full_content_vs_full', float('nan'))):.1f}% "
         f"({_median(big, lambda r: r.get('checks_full_content_s', float('nan'))):.1f} s)",
         _median(big, lambda r: r.get("checks_full_content_vs_full", float("inf"))) <= 0.20),
        ("peak RSS flat between scales", "within 25%", f"{rss_small:.0f} -> {rss_big:.0f} MB",
         rss_big <= 1.25 * rss_small),
    ]
    if all("diff" in r for r in big):
        checks += [
            ("differential refresh after 1% changed / full migration", "<= 5%",
             f"{_median(big, lambda r: r['diff']['wall_s']):.1f} s = "
             f"{100 * _median(big, lambda r: r['diff_vs_full']):.1f}%", _median(big, lambda r: r["diff_vs_full"]) <= 0.05),
            ("sensor evaluation, nothing changed (ticks with the cursor of the previous one; in brackets the "
             "tick that counts every table: the first, then one every 10 minutes)", "< 1 s",
             f"{_median(big, lambda r: r['sensor_quiet_s']):.2f} s ("
             + (f"{_median(big, lambda r: r['sensor_full_count_s']):.2f} s"
                if all("sensor_full_count_s" in r for r in big) else "not measured") + ")",
             _median(big, lambda r: r["sensor_quiet_s"]) < 1.0),
        ]
    lines += ["", f"## Against the targets (scale {max(results)})", "", "| measure | target | measured | met |",
              "|---|---|---|---|"]
    lines += [f"| {m} | {t} | {v} | {'yes' if ok else 'NO'} |" for m, t, v, ok in checks]
    lines += ["", "## Slowest loads (full migration, last run of the largest scale)", "",
              "| entity | rows read | seconds | rows/s | path |", "|---|---|---|---|---|"]
    last = list(results.values())[-1][-1]["full"]["loads"]
    for name, (read, secs, path_) in sorted(last.items(), key=lambda kv: -kv[1][1])[:8]:
        lines.append(f"| {name} | {read:,} | {secs:.2f} | {read / secs if secs else 0:,.0f} | {path_} |")
    for section in ("peers.md", "differential.md", "cutover.md", "executors.md"):  # bench.peers, ...
        if (Path(__file__).parent / section).exists():
            lines += ["", (Path(__file__).parent / section).read_text().rstrip("\n")]
    lines += ["", (Path(__file__).parent / "design_measurements.md").read_text().rstrip("\n")]
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
