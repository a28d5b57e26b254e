"""Command line: ``migration-assets setup | simulate | migrate | mutate | refresh | check | cutover | link-auth |
drop-slot | demo | summary | report | status | server``.

Every command reads ``.env`` for the variables the environment does not set (the environment
wins), checks every setting before it connects anywhere, and reports a bad setting, an
unreachable database or a refused operation in one line on stderr with exit code 2. Only
``setup`` writes ``.env``.

``demo`` is what the README's first command runs: resolve or start the databases, apply the
target schema, simulate the legacy database, materialize every table asset through Dagster (in the
instance under DAGSTER_HOME, as a run of the code location, so ``dg dev`` lists and
re-executes it), print a per-entity summary.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import psycopg

from . import settings, stopping
from .config import PROJECT_DIR, resolve_databases
from .connections import connect
from .redaction import first_line, redact
from .registry import ENTITIES
from .reports import summary_lines
from .migrations import apply_migrations


def load_dotenv(path: Path | None = None) -> Path | None:
    """The variables of ``.env`` (written by ``setup``) that the environment does not set: the
    environment always wins, for every command. Returns the file read, if any.

    The file belongs to the project folder (PROJECT_DIR), beside dagster.yaml and
    workspace.yaml, whatever folder a command runs in: ``./run ui`` starts ``dg dev`` there,
    which loads ``.env`` from its working directory, so the commands and the UI read the same
    file. It names one set of databases: two projects, or two operators with databases of their
    own, use a checkout each or set the variables in their environment."""
    path = path or PROJECT_DIR / ".env"
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            os.environ.setdefault(key.strip(), value.strip())
    return path


def write_dotenv(values: dict[str, str], path: Path | None = None) -> None:
    """Write ``.env`` readable by its owner only (it holds passwords), replacing it atomically."""
    path = path or PROJECT_DIR / ".env"
    tmp = path.with_name(".env.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{k}={v}\n" for k, v in values.items()))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def resolve(refuse_same: bool = True):
    """The databases, with their URLs exported for Dagster; the same database as source and
    target is refused."""
    dbs = resolve_databases()
    if refuse_same:
        settings.refuse_same_database(dbs.source.params, dbs.target.params)
    for key, value in dbs.env().items():
        os.environ[key] = value
    return dbs


def reach(dbs) -> None:
    """Both databases answer and accept the login, or one line says which does not and why: a
    server that refused the connection (libpq quotes the server's own FATAL message: a failed
    password, an unknown role or database) is told from one that did not answer."""
    from .preflight import DatabaseUnreachable

    for which, db in (("legacy", dbs.source), ("target", dbs.target)):
        try:
            connect(db.conninfo(connect_timeout=10)).close()
        except psycopg.OperationalError as exc:
            line = first_line(exc)
            what = "refused the connection" if "FATAL:" in line else "does not answer"
            raise DatabaseUnreachable(f"the {which} database ({db.describe()}) {what}: {line}") from None


def setup(s: settings.Settings, write_env: bool = False, dbs=None):
    """Resolve the databases (unless given), check that both answer, apply the target schema. Only
    the ``setup`` command writes ``.env`` (mode 0600), and only once the schema is applied."""
    dbs = dbs or resolve()
    reach(dbs)
    applied = apply_migrations(dbs.target.conninfo(), timeout_ms=s.migration_timeout_ms, schema=s.target_schema)
    if prepare_instance(dbs):
        print(f"Dagster instance: storage ready in {dbs.dagster.describe()} (DAGSTER_HOME {os.environ['DAGSTER_HOME']})")
    if write_env:
        # dg dev (and dagster dev) load .env from the project folder; the file is git-ignored
        write_dotenv(dbs.env())
        print(f"wrote {PROJECT_DIR / '.env'} (mode 0600): the databases every command and the UI of this project use")
    where = "embedded PostgreSQL (pgserver)" if dbs.embedded else "configured server"
    print(f"databases ({where}): legacy {dbs.source.describe()}, target {dbs.target.describe()}")
    print(f"target schema: {'applied ' + ', '.join(applied) if applied else 'up to date'}")
    return dbs


def prepare_instance(dbs) -> bool:
    """Create the Dagster instance's storage (runs, events, schedules: dagster-postgres creates
    its tables when an instance first opens them) once, here, when DAGSTER_HOME and a Dagster
    database are configured. Workers and step processes started later find it ready: two Celery
    workers opening a fresh database at the same moment raced to create the same tables, and one
    died with ``DuplicateTable``. Returns whether there was an instance to prepare."""
    if not os.environ.get("DAGSTER_HOME") or dbs.dagster is None:
        return False
    from dagster import DagsterInstance

    os.environ.setdefault("DAGSTER_PG_URL", dbs.env()["DAGSTER_PG_URL"])
    with DagsterInstance.get():
        return True


def reports_dir(s: settings.Settings) -> Path:
    folder = s.reports_dir
    return folder if folder.is_absolute() else Path.cwd() / folder


CODE_LOCATION = "migration_assets"  # workspace.yaml's location_name: the UI finds the command line's runs by it
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}  # a line per load, not per event


def _instance():
    """The instance under DAGSTER_HOME (the one ``dg dev`` shows), or an ephemeral one with a
    note when it cannot be opened."""
    from dagster import DagsterInstance

    if os.environ.get("DAGSTER_HOME"):
        try:
            return DagsterInstance.get()
        except Exception as exc:  # dagster.yaml names DAGSTER_PG_URL, which only SOURCE/TARGET users lack
            print(f"the Dagster instance in DAGSTER_HOME cannot be opened ({first_line(exc)[:200]}): this run is "
                  "not kept for the UI; set DAGSTER_PG_URL (a PostgreSQL database for Dagster) to keep runs",
                  file=sys.stderr)
    return DagsterInstance.ephemeral()


def run_job(instance, job_name: str, checks_of: list[str] | None = None, config: dict | None = None,
            tables: list[str] | None = None, tags: dict[str, str] | None = None):
    """Create the run as the code location's own and execute it in this process.

    The run is created the way ``dagster job launch`` and the UI create theirs, with the job's
    snapshot, execution plan and origin in the code location named like workspace.yaml's, so the
    job's page lists it, the timeline shows it and "Re-execute" launches it in the code server
    (``execute_in_process`` stores no origin: the UI could not find such runs and failed to
    re-execute them). It executes here, not through the run launcher, so the command waits for
    it, prints its log and turns a Ctrl-C into a canceled run (stopping.py). ``checks_of``: the
    job's checks of these tables only (the ``asset_checks`` job, ``check --select``); ``tables``:
    these tables and their checks only (``migrate --select``); ``config``: run configuration
    beside the log level's (the cutover's confirmation); ``tags``: the run's, beside the job's."""
    run_config = {**RUN_CONFIG, **(config or {})}
    from dagster._utils.hosted_user_process import recon_job_from_origin
    from dagster._core.execution.api import execute_run
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name="migration_assets.definitions",
                             working_directory=str(PROJECT_DIR)), location_name=CODE_LOCATION)
    with origin.create_location(instance) as location:
        (repo,) = location.get_repositories().values()
        job = repo.get_full_job(job_name)
        check_selection = asset_selection = None
        if checks_of is not None or tables is not None:
            from dagster import AssetKey
            from dagster._core.definitions.selector import JobSubsetSelector

            keys = {AssetKey(n) for n in (checks_of if checks_of is not None else tables)}
            check_selection = {k for k in job.asset_check_selection or repo.asset_graph.asset_check_keys
                               if k.asset_key in keys}
            asset_selection = keys if tables is not None else set()
            job = location.get_job(JobSubsetSelector(location_name=CODE_LOCATION, repository_name=repo.name,
                                                     job_name=job_name, op_selection=None,
                                                     asset_selection=asset_selection,
                                                     asset_check_selection=check_selection))
        plan = location.get_execution_plan(job, run_config, step_keys_to_execute=None, known_state=None,
                                           instance=instance).execution_plan_snapshot
        run = instance.create_run(
            job_name=job_name, run_id=None, run_config=run_config, resolved_op_selection=None,
            step_keys_to_execute=plan.step_keys_to_execute, op_selection=None, status=None, root_run_id=None,
            parent_run_id=None, tags={**job.tags, **(tags or {})}, job_snapshot=job.job_snapshot,
            execution_plan_snapshot=plan,
            parent_job_snapshot=job.parent_job_snapshot, remote_job_origin=job.get_remote_origin(),
            job_code_origin=job.get_python_origin(),
            asset_selection=frozenset(asset_selection) if asset_selection else None,
            asset_check_selection=frozenset(check_selection) if check_selection is not None else None,
            asset_graph=repo.asset_graph)
        return execute_run(recon_job_from_origin(job.get_python_origin()), run, instance)


def migrate(s: settings.Settings, job_name: str = "full_migration", checks_of: list[str] | None = None,
            config: dict | None = None, tables: list[str] | None = None, tags: dict[str, str] | None = None) -> int:
    """Run ``job_name`` (run_job) in the instance under DAGSTER_HOME. Returns the exit code: 0 when
    every table loaded and every ERROR check passed, 1 when not, 130 when a signal stopped it."""
    from dagster import AssetCheckSeverity

    instance = _instance()
    started = time.perf_counter()
    result = run_job(instance, job_name, checks_of, config, tables, tags)
    elapsed = time.perf_counter() - started
    # a signal inside a load is noted by the IO manager; one that lands in Dagster's own code
    # between steps ends the run as "interrupted"
    interrupted = stopping.interrupted(result.run_id) or any(
        ev.is_run_failure and "interrupted" in (ev.message or "") for ev in result.all_events)
    if interrupted:
        instance.report_run_canceled(result.dagster_run, message="stopped by a signal (SIGINT or SIGTERM)")
        stopping.forget(result.run_id)
        print(f"\nrun {result.run_id}: CANCELED by a signal after {elapsed:.1f}s: the table in progress was rolled "
              "back, nothing was retried; re-run to finish (idempotent)")
        summary(s, result.run_id)
        return 130
    failed_checks = sorted(f"{c.asset_key.to_user_string()}.{c.check_name}"
                           for c in result.get_asset_check_evaluations()
                           if not c.passed and c.severity == AssetCheckSeverity.ERROR)
    ok = result.success and not failed_checks
    print(f"\nrun {result.run_id}: {'SUCCESS' if ok else 'FAILURE'} in {elapsed:.1f}s")
    if failed_checks:
        print(f"{len(failed_checks)} ERROR checks failed: {', '.join(failed_checks[:20])}"
              f"{' ...' if len(failed_checks) > 20 else ''}")
    if checks_of is None:
        summary(s, result.run_id)
    return 0 if ok else 1


def dry_run(s: settings.Settings, mode: str) -> int:
    """``migrate --dry-run`` / ``refresh --dry-run``: the rehearsal (engine/rehearsal.py) of every
    table, printed and written to DRY_RUN_REPORT.md. The target must be set up (pre-flight); it is
    left as it was, and the legacy database is only read."""
    from .engine.rehearsal import rehearse
    from .preflight import validate
    from .reports import write_dry_run_report
    from .resources import MigrationSettings

    dbs = resolve()
    reach(dbs)
    for warning in validate(dbs.source.conninfo(), dbs.target.conninfo(), s.legacy_timezone, schema=s.target_schema):
        print(f"pre-flight: {warning}", file=sys.stderr)
    opts = MigrationSettings.from_settings(s).load_options(f"dry-run-{time.strftime('%Y%m%d-%H%M%S')}", mode)
    started = time.perf_counter()
    results = rehearse(dbs.source.conninfo(), dbs.target.conninfo(), opts)
    path, totals = write_dry_run_report(results, mode, reports_dir(s))
    print(path.read_text().split("\n\n", 2)[2].rstrip())
    print(f"\ndry run ({mode}) in {time.perf_counter() - started:.1f}s: would insert {totals['inserted']:,}, update "
          f"{totals['updated']:,}, delete {totals['deleted']:,}, quarantine {totals['quarantined']:,}; nothing was "
          f"written\nwrote {path}")
    return 0


def refuse_after_cutover(dbs, flag: bool, s: settings.Settings) -> None:
    """``migrate`` and ``refresh`` on a target that was cut over: cutover.CutOver (exit 2), unless
    ``--after-cutover`` (``flag``) or MIGRATION_AFTER_CUTOVER; the flag sets the variable, so the
    run's steps (whose pre-flight refuses too) see it."""
    from .cutover import refuse_loads

    if flag:
        os.environ["MIGRATION_AFTER_CUTOVER"] = "true"  # the code location's settings are built after this
    with connect(dbs.target.conninfo(connect_timeout=10)) as conn:
        refuse_loads(conn, flag or s.after_cutover)


def cut_over(s: settings.Settings) -> int:
    """``migration-assets cutover``: refuse (exit 2) unless the migration is complete, every ERROR
    check passes and the target was not cut over; then run the ``cutover`` job (the final
    differential refresh of every table with its checks, then the cutover asset: cutover.py).
    Exit 0 when the target was cut over, 1 when the final refresh or its checks failed (nothing
    was cut over), 130 when a signal stopped it."""
    from . import cutover

    dbs = setup(s)
    with connect(dbs.target.conninfo(connect_timeout=10)) as conn:
        (database,) = conn.execute("SELECT current_database()").fetchone()
        if problems := cutover.problems(conn):
            raise cutover.refusal(problems)
    print(f"cutover of {dbs.target.describe()}: the legacy application's writes must be stopped now (README, "
          "'Cutover'); final differential refresh of every table, then the app-ready migration")
    code = migrate(s, "cutover", config={"ops": {"target_cutover": {"config": {"confirm": database}}}})
    with connect(dbs.target.conninfo(connect_timeout=10)) as conn:
        done = cutover.recorded(conn)
        left = cutover.problems(conn) if done is None else []
    if done is None:
        print("NOT cut over: " + ("; ".join(left[:12]) or "the run failed before the cutover step"))
        return code or 1
    print(cutover.summary(done))
    return 0


def link_auth(s: settings.Settings) -> int:
    """``migration-assets link-auth``: auth_link.link in one target transaction."""
    from .auth_link import INVALID, TAKEN, link
    from .connections import set_statement_timeout

    dbs = resolve(refuse_same=False)
    reach(dbs)
    with connect(dbs.target.conninfo(connect_timeout=10)) as conn:
        set_statement_timeout(conn, s.migration_timeout_ms)
        done = link(conn, f"link-auth-{time.strftime('%Y%m%d-%H%M%S')}", s.target_schema)
        conn.commit()
    print(f"profiles linked to Supabase Auth users: {done['linked']:,} ({done['matched']:,} matched to existing users "
          f"now, {done['created']:,} users created without a password); in quarantine: {done['quarantined']:,} "
          f"({INVALID}, {TAKEN}: migration_control.quarantine, entity profiles_auth_link)")
    return 0


def summary(s: settings.Settings, run_id: str | None = None) -> None:
    print("\n".join(summary_lines(resolve(refuse_same=False).target.conninfo(), run_id,
                                  timeout_ms=s.migration_timeout_ms)))


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog="migration-assets", description=__doc__.split("\n\n")[0], formatter_class=fmt,
                                epilog="./run adds: ./run test (the test suite), ./run ui (dg dev). Settings: "
                                       "README, 'Settings'; the environment wins over .env.")
    sub = p.add_subparsers(dest="cmd", metavar="command")
    sub.add_parser("setup", help="resolve or start the databases, apply the target schema, write .env (0600)")
    sim = sub.add_parser("simulate", help="(re)generate the legacy database (only one the simulator created)",
                         formatter_class=fmt)
    sim.add_argument("--scale", type=float, default=0.05, help="1.0 = about 4.5M rows")
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--force", metavar="DATABASE", help="replace the tables of DATABASE although the simulator did "
                                                         "not create them")
    mig = sub.add_parser("migrate", help=f"materialize all {len(ENTITIES)} assets and their checks; exit 1 if a table "
                                         "or an ERROR check failed, 130 if stopped by a signal")
    mig.add_argument("--dry-run", action="store_true", help="what the migration would do, per table, without doing it")
    mig.add_argument("--after-cutover", action="store_true", help="load although the target was cut over "
                     "(MIGRATION_AFTER_CUTOVER): overwrites what the application changed in migrated rows")
    mig.add_argument("--select", nargs="+", metavar="TABLE", choices=sorted(e.name for e in ENTITIES),
                     help="only these tables (and their checks); their parents must be loaded")
    mig.add_argument("--full", action="store_true", help="re-read and compare every legacy row of the tables "
                     "(a corrected transform, a suspected drift), not only the id buckets whose content changed")
    mut = sub.add_parser("mutate", help="change a share of the legacy rows, as a live system would",
                         formatter_class=fmt)
    mut.add_argument("--fraction", type=float, default=0.01)
    mut.add_argument("--round", type=int, default=1)
    ref = sub.add_parser("refresh", help=f"differential refresh of all {len(ENTITIES)} assets, then "
                                         "FINAL_DIFFERENTIAL_MIGRATION_REPORT.md")
    ref.add_argument("--dry-run", action="store_true", help="what the refresh would do, per table, without doing it")
    ref.add_argument("--after-cutover", action="store_true", help="refresh although the target was cut over "
                     "(MIGRATION_AFTER_CUTOVER): overwrites what the application changed in migrated rows")
    sub.add_parser("cutover", help="final differential refresh with every check, then the app-ready migration and "
                                   "the cutover's record; stop the legacy writes first (README, 'Cutover'); exit 2 "
                                   "when a precondition is not met, 1 when the final refresh failed")
    demo = sub.add_parser("demo", help="setup + simulate + migrate + reports + summary", formatter_class=fmt)
    demo.add_argument("--scale", type=float, default=float(os.environ.get("DEMO_SCALE", 0.05)),
                      help="legacy database size (1.0 = about 4.5M rows); env DEMO_SCALE")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--force", metavar="DATABASE", help="let the simulator replace the tables of DATABASE")
    chk = sub.add_parser("check", help="evaluate the checks on the target as it is, loading nothing; exit 0 when "
                                       "every ERROR check passes, 1 when one fails (quarantine over budget included)")
    chk.add_argument("--select", nargs="+", metavar="TABLE", choices=sorted(e.name for e in ENTITIES),
                     help="only these tables' checks")
    sub.add_parser("link-auth", help="link each migrated profile to a Supabase Auth user with its email (created "
                                     "without a password where none exists); profiles Auth cannot take are "
                                     "quarantined; exit 2 on a target without auth.users")
    sub.add_parser("drop-slot", help="drop the logical replication slot and publication (MIGRATION_SLOT) on the legacy "
                                     "server: an abandoned slot makes the legacy server keep its WAL")
    sub.add_parser("summary", help="per-entity summary of the last run")
    sub.add_parser("report", help="write the three markdown reports from the audit trail")
    sub.add_parser("status", help="per-entity health from the audit trail; exit 0 healthy, 1 not, 2 unreachable")
    srv = sub.add_parser("server", help="the embedded PostgreSQL (used when no database is configured)")
    srv.add_argument("action", choices=["status", "stop"])
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.cmd is None:
        parser.print_help()
        return 0
    if (read := load_dotenv()) is not None:  # says which file, so nobody reads another's databases unawares
        print(f"migration-assets {a.cmd}: settings the environment does not set read from {read}", file=sys.stderr)
    from .errors import PermanentError
    from .simulator import NotASimulatedDatabase

    try:
        s = settings.load()  # every setting checked before anything connects
        return _run(a, s)
    except (settings.SettingsError, PermanentError, NotASimulatedDatabase) as exc:
        # a refused operation: set-up, drift, unreachable database, a cutover (or its refusal)
        print(f"migration-assets {a.cmd}: {redact(str(exc))}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as exc:
        print(f"migration-assets {a.cmd}: a database does not answer: {first_line(exc)}", file=sys.stderr)
        return 2


def _run(a, s: settings.Settings) -> int:
    if a.cmd == "setup":
        setup(s, write_env=True)
    elif a.cmd == "simulate":
        from .simulator import generate

        generate(resolve().source.conninfo(), a.scale, a.seed, force=a.force)
    elif a.cmd == "migrate":
        if a.dry_run:
            return dry_run(s, "full")
        refuse_after_cutover(setup(s), a.after_cutover, s)
        from .assets import MODE_TAG, READ_TAG

        return migrate(s, tables=a.select, tags={MODE_TAG: "full", READ_TAG: "all"} if a.full else None)
    elif a.cmd == "mutate":
        from .simulator import mutate

        mutate(resolve().source.conninfo(), a.fraction, a.round)
    elif a.cmd == "refresh":
        from .reports import write_differential_report

        if a.dry_run:
            return dry_run(s, "differential")
        dbs = setup(s)
        refuse_after_cutover(dbs, a.after_cutover, s)
        code = migrate(s, "differential_refresh")
        path, remaining = write_differential_report(dbs.source.conninfo(), dbs.target.conninfo(), reports_dir(s),
                                                    timeout_ms=s.migration_timeout_ms, schema=s.target_schema)
        print(f"\nwrote {path} (remaining difference: {remaining:,} rows)")
        return code
    elif a.cmd == "demo":
        from .reports import COMPREHENSIVE_REPORT, DIFFERENTIAL_REPORT, VALIDATION_REPORT
        from .simulator import generate

        dbs = resolve()
        generate(dbs.source.conninfo(), a.scale, a.seed, force=a.force)  # refuses a database it did not create
        setup(s, dbs=dbs)  # the same resolution: says whether the server is the embedded one
        code = migrate(s)
        folder = reports_dir(s)
        print(f"\nReports: {folder / COMPREHENSIVE_REPORT}\n         {folder / VALIDATION_REPORT}"
              f"\n         {folder / DIFFERENTIAL_REPORT}")
        print("Status:  .venv/bin/migration-assets status")
        print("Look at it in the Dagster UI:  ./run ui   (then open http://127.0.0.1:3000)")
        return code
    elif a.cmd == "check":
        from .reports import budget_lines

        dbs = setup(s)
        code = migrate(s, "asset_checks", a.select or [e.name for e in ENTITIES])
        print("\n".join(budget_lines(dbs.target.conninfo(), timeout_ms=s.migration_timeout_ms)))
        return code
    elif a.cmd == "cutover":
        return cut_over(s)
    elif a.cmd == "link-auth":
        return link_auth(s)
    elif a.cmd == "drop-slot":
        from .engine.changes import drop

        dbs = resolve(refuse_same=False)
        reach(dbs)
        existed = drop(dbs.source.conninfo(), s.slot)
        print(f"replication slot {s.slot}: {'dropped' if existed else 'did not exist'}; publication {s.slot} dropped "
              "if it existed. A later load in logical mode creates them again (and compares its tables in full)")
    elif a.cmd == "summary":
        summary(s)
    elif a.cmd == "report":
        from .reports import write_all

        dbs = resolve(refuse_same=False)
        out = write_all(dbs.source.conninfo(), dbs.target.conninfo(), reports_dir(s),
                        timeout_ms=s.migration_timeout_ms, schema=s.target_schema)
        for path in out["paths"]:
            print(f"wrote {path}")
    elif a.cmd == "status":
        return print_status(s)
    elif a.cmd == "server":
        from .config import embedded_server_status, stop_embedded_server

        running = embedded_server_status()
        if a.action == "stop" and running:
            stop_embedded_server()
            print(f"embedded PostgreSQL in {running}: stopped")
        else:
            print(f"embedded PostgreSQL in {running}: running" if running else "embedded PostgreSQL: not running")
    return 0


def print_status(s: settings.Settings) -> int:
    """The seed's daily status check, for cron: exit 0 when healthy, 1 when not, 2 when unreachable."""
    from . import cutover
    from .engine import keys
    from .reports import status

    dbs = resolve(refuse_same=False)
    reach(dbs)  # names the database that does not answer or refuses the login (exit 2, on stderr)
    try:
        rows, healthy = status(dbs.source.conninfo(), dbs.target.conninfo(), timeout_ms=s.migration_timeout_ms,
                               schema=s.target_schema)
    except psycopg.Error as exc:
        print(f"migration-assets status: cannot read the databases: {first_line(exc)}", file=sys.stderr)
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
    with connect(dbs.target.conninfo(connect_timeout=10)) as conn:
        if (done := cutover.recorded(conn)) is not None:
            print(f"CUT OVER: {cutover.summary(done)}; loads are refused")
        if aside := keys.set_aside_since(conn):
            n, tables, since, run_id = aside
            print(f"KEYS SET ASIDE: {n} keys and indexes of {tables} tables, by run {run_id} at {since:%Y-%m-%d %H:%M} "
                  "UTC (a first migration that has not reached target_keys): re-run `migration-assets migrate`, or "
                  "materialize target_keys, to restore them")
    if s.change_source == "logical":
        from .engine.changes import lag

        held = lag(dbs.source.conninfo(), s.slot)
        print(f"replication slot {s.slot} on the legacy server: " + (
            "none (the next load creates it)" if held is None else
            f"{held[0]:,} bytes of WAL retained, the oldest pending change committed "
            + (f"{held[1]:,.0f} s ago" if held[1] is not None else "- (none pending)")
            + f"; `migration-assets drop-slot` when it is no longer needed"))
    print("HEALTHY: every entity loaded, reconciled and passing its checks" if healthy
          else f"NOT HEALTHY: {len(bad)} entities need attention: {', '.join(bad)}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
