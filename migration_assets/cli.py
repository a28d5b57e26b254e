"""Command line: ``migration-assets setup | simulate | mutate | migrate | refresh | demo | summary``.

``demo`` is what the README's first command runs: resolve or start the databases, apply the
target schema, simulate the legacy database, materialize all 45 assets through Dagster (in the
instance under DAGSTER_HOME, so the run shows in ``dagster dev``), print a per-entity summary.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import psycopg

from .config import PROJECT_DIR, resolve_databases
from .connections import connect
from .registry import topological_order
from .target_schema import CONTROL_SCHEMA, apply_migrations


def setup(write_env: bool = True):
    dbs = resolve_databases()
    for key, value in dbs.env().items():
        os.environ[key] = value
    if write_env:
        # dagster dev loads .env from its working directory; the file is git-ignored
        lines = [f"{k}={v}" for k, v in dbs.env().items()]
        (PROJECT_DIR / ".env").write_text("\n".join(lines) + "\n")
    applied = apply_migrations(dbs.target.conninfo())
    where = "embedded PostgreSQL (pgserver)" if dbs.embedded else "configured server"
    print(f"databases ({where}): legacy {dbs.source.describe()}, target {dbs.target.describe()}")
    print(f"target schema: {'applied ' + ', '.join(applied) if applied else 'up to date'}")
    return dbs


def reports_dir():
    from pathlib import Path

    return Path(os.environ.get("MIGRATION_REPORTS_DIR", PROJECT_DIR / "reports"))


def migrate(job_name: str = "full_migration") -> bool:
    from dagster import DagsterInstance

    from .definitions import defs

    instance = DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()
    job = defs.resolve_job_def(job_name)
    started = time.perf_counter()
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    print(f"\nrun {result.run_id}: {'SUCCESS' if result.success else 'FAILURE'} "
          f"in {time.perf_counter() - started:.1f}s")
    summary(result.run_id)
    return result.success


def summary(run_id: str | None = None) -> None:
    print("\n".join(summary_lines(resolve_databases().target.conninfo(), run_id)))


def summary_lines(target: str, run_id: str | None = None) -> list[str]:
    """The per-entity summary table of one run (default: the latest) from the audit trail."""
    with connect(target) as conn:
        if run_id is None:
            row = conn.execute(f"SELECT run_id FROM {CONTROL_SCHEMA}.migration_runs ORDER BY id DESC LIMIT 1").fetchone()
            if not row:
                return ["no migration has run yet"]
            run_id = row[0]
        rows = {r[0]: r[1:] for r in conn.execute(
            f"SELECT entity, status, records_read, inserted, updated, unchanged, quarantined, duration_ms "
            f"FROM {CONTROL_SCHEMA}.migration_runs WHERE run_id = %s ORDER BY id", [run_id]).fetchall()}
    if not rows:
        return [f"run {run_id} loaded no table"]
    header = f"{'level':>5} {'entity':<26} {'status':<17} {'read':>10} {'inserted':>10} {'updated':>8} " \
             f"{'unchanged':>10} {'quarant.':>8} {'secs':>7}"
    out = [header, "-" * len(header)]
    totals = [0] * 6
    for e in topological_order():
        if e.name not in rows:
            out.append(f"{e.level:>5} {e.name:<26} {'(not run)':<17}")
            continue
        status, read, ins, upd, unch, quar, ms = rows[e.name]
        for i, v in enumerate((read, ins, upd, unch, quar, ms)):
            totals[i] += v
        out.append(f"{e.level:>5} {e.name:<26} {status:<17} {read:>10,} {ins:>10,} {upd:>8,} {unch:>10,} {quar:>8,} "
                   f"{ms / 1000:>7.2f}")
    read, ins, upd, unch, quar, ms = totals
    out.append("-" * len(header))
    out.append(f"{'':>5} {'total':<26} {'':<17} {read:>10,} {ins:>10,} {upd:>8,} {unch:>10,} {quar:>8,} "
               f"{ms / 1000:>7.2f}")
    if read:
        out.append(f"accounted for: {read:,} legacy rows = {read - quar:,} in the target + {quar:,} in quarantine "
                   f"({100 * (read - quar) / read:.2f}% loaded)")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="migration-assets", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="resolve or start the databases and apply the target schema")
    sim = sub.add_parser("simulate", help="(re)generate the legacy database")
    sim.add_argument("--scale", type=float, default=0.05)
    sim.add_argument("--seed", type=int, default=7)
    sub.add_parser("migrate", help="materialize all 45 assets")
    mut = sub.add_parser("mutate", help="change a share of the legacy rows, as a live system would")
    mut.add_argument("--fraction", type=float, default=0.01)
    mut.add_argument("--round", type=int, default=1)
    sub.add_parser("refresh", help="differential refresh of all 45 assets, then FINAL_DIFFERENTIAL_MIGRATION_REPORT.md")
    demo = sub.add_parser("demo", help="setup + simulate + migrate + summary")
    demo.add_argument("--scale", type=float, default=float(os.environ.get("DEMO_SCALE", 0.05)))
    demo.add_argument("--seed", type=int, default=7)
    sub.add_parser("summary", help="per-entity summary of the last run")
    sub.add_parser("report", help="write the three markdown reports from the audit trail")
    sub.add_parser("status", help="per-entity health from the audit trail; exit 0 healthy, 1 not, 2 unreachable")
    a = p.parse_args(argv)
    if a.cmd == "setup":
        setup()
    elif a.cmd == "simulate":
        from .simulator import generate

        generate(setup().source.conninfo(), a.scale, a.seed)
    elif a.cmd == "migrate":
        setup()
        return 0 if migrate() else 1
    elif a.cmd == "mutate":
        from .simulator import mutate

        mutate(setup().source.conninfo(), a.fraction, a.round)
    elif a.cmd == "refresh":
        from .reports import write_differential_report

        dbs = setup()
        ok = migrate("differential_refresh")
        path, remaining = write_differential_report(dbs.source.conninfo(), dbs.target.conninfo(), reports_dir())
        print(f"\nwrote {path} (remaining difference: {remaining:,} rows)")
        return 0 if ok else 1
    elif a.cmd == "demo":
        from .simulator import generate

        dbs = setup()
        generate(dbs.source.conninfo(), a.scale, a.seed)
        ok = migrate()
        from .reports import COMPREHENSIVE_REPORT, VALIDATION_REPORT

        print(f"\nReports: {reports_dir() / COMPREHENSIVE_REPORT}\n         {reports_dir() / VALIDATION_REPORT}")
        print("Status:  .venv/bin/migration-assets status")
        print("Look at it in the Dagster UI:  ./run ui   (then open http://127.0.0.1:3000)")
        return 0 if ok else 1
    elif a.cmd == "summary":
        summary()
    elif a.cmd == "report":
        from .reports import write_all

        dbs = resolve_databases()
        out = write_all(dbs.source.conninfo(), dbs.target.conninfo(), reports_dir())
        for path in out["paths"]:
            print(f"wrote {path}")
    elif a.cmd == "status":
        return print_status()
    return 0


def print_status() -> int:
    """The seed's daily status check, for cron: exit 0 when healthy, 1 when not, 2 when unreachable."""
    from .reports import status

    dbs = resolve_databases()
    try:
        rows, healthy = status(dbs.source.conninfo(), dbs.target.conninfo())
    except psycopg.Error as exc:
        print(f"status: cannot read the databases: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return 2
    header = f"{'lvl':>3} {'entity':<26} {'last load (UTC)':<17} {'status':<17} {'mode':<12} {'legacy':>9} " \
             f"{'target':>9} {'quarant.':>8} {'checks':>6}  state"
    print(header)
    print("-" * len(header))
    for r in rows:
        when = f"{r['last_run']:%Y-%m-%d %H:%M}" if r["last_run"] else "-"
        print(f"{r['level']:>3} {r['entity']:<26} {when:<17} {r['status']:<17} {r['mode']:<12} {r['legacy']:>9,} "
              f"{r['target']:>9,} {r['quarantined']:>8,} {r['checks']:>6}  {r['state']}")
    bad = [r["entity"] for r in rows if r["state"] != "OK"]
    print("-" * len(header))
    print("HEALTHY: every entity loaded, reconciled and passing its checks" if healthy
          else f"NOT HEALTHY: {len(bad)} entities need attention: {', '.join(bad)}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
