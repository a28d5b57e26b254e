"""Benchmark against the anchors a user compares with: the raw COPY, PostgreSQL's own dump and
restore, and the tools a team would pick instead (pgloader, Sling, dlt), on the same legacy
database, in the same rounds, the order rotated between rounds.

    .venv/bin/python -m bench.peers install                       # the peers, each in its own environment
    .venv/bin/python -m bench.peers --scales 0.1 1.0 --runs 3     # writes bench/peers.{md,json}
                                                                  # and its section of BENCHMARKS.md

``install`` puts Sling (PyPI's ``sling-linux-amd64`` wheel, which carries the binary) and dlt
(``dlt[postgres,sql_database]`` with pyarrow) into virtual environments of their own under
``bench/.envs`` and pgloader from Debian's package (apt-get, as root); nothing of theirs enters
the product's environment. A peer that is not installed is skipped, with the reason, in the report.

Per scale the simulator builds one legacy database; then, per round, in rotated order, each
contender copies it into a fresh database of its own:
- ``raw_copy``: every legacy table ``COPY TO STDOUT`` piped into ``COPY FROM STDIN`` of a key-less
  table (bench.run.raw_copy): the floor of this machine;
- ``native_restore``: ``pg_dump -Fc | pg_restore``: data, then the primary keys and indexes (the
  legacy database has no foreign keys), one job (a pipe cannot be restored in parallel);
- ``target_restore``: the same of a target this project migrated from the same legacy database
  before the rounds (untimed): what PostgreSQL itself needs to write the target's shape (UUID
  keys and their indexes, every foreign key validated, jsonb metadata, the quarantine and the
  audit), with no reading, transforming or checking: the floor for this schema;
- ``pgloader``, ``sling`` (full-refresh of ``public.*``), ``dlt`` (sql_database source, pyarrow
  backend, csv loader, replace): each copies the tables as they are, with their own defaults;
- ``migration``: the 45 assets materialized with the checks off (bench.migrate_once);
- ``migration_checked``: the same with every check on and every row's content compared
  (CONTENT_CHECKSUM_SAMPLE_ABOVE=-1).
The peers do none of what the migration does (UUID keys, foreign keys rewritten and validated,
transforms, quarantine): they are what a user would otherwise run, not equivalents.

After the rotation, 1% of the legacy rows change (simulator.mutate) and a differential refresh
runs on the migration's target: its cost against the full migration, at each scale, shows whether
it grows with the change or with the tables.

Each contender's client processes are waited for with ``os.wait4``: their peak RSS is their own
(for the dump and restore, the larger of the two). Every target is verified: per table, the
peers' row counts equal the legacy counts; the migration's target rows plus open quarantine rows
equal them.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from migration_assets.config import PROJECT_DIR, admin_url
from migration_assets.engine.names import QUARANTINE, target_table
from migration_assets.registry import ENTITIES
from migration_assets.simulator import generate, mutate
from migration_assets.migrations import apply_migrations

from .run import drop, legacy_counts, migrate_child, raw_copy, recreate

HERE = Path(__file__).parent
ENVS = HERE / ".envs"
SLING_BIN = "sling_linux_amd64/bin/sling-linux-amd64"
PEERS = ("pgloader", "sling", "dlt")
CONTENDERS = ("raw_copy", "native_restore", "target_restore", "pgloader", "sling", "dlt", "migration",
              "migration_checked")
REFERENCE = "bench_reference"  # a migrated target per scale, made before the rounds: target_restore's source
DLT_SCRIPT = textwrap.dedent('''
    import sys
    import dlt
    from dlt.sources.sql_database import sql_database

    source_url, target_url, workdir = sys.argv[1:4]
    source = sql_database(credentials=source_url, backend="pyarrow")
    pipeline = dlt.pipeline(pipeline_name="bench_peer", pipelines_dir=workdir, dataset_name="legacy",
                            destination=dlt.destinations.postgres(credentials=target_url))
    pipeline.run(source, write_disposition="replace", loader_file_format="csv")
''')


# -- the peers' environments -------------------------------------------------------------------

def _site_packages(env: Path) -> Path:
    return next((env / "lib").glob("python3*/site-packages"))


def sling_binary() -> Path | None:
    env = ENVS / "sling"
    if not env.exists():
        return None
    path = _site_packages(env) / SLING_BIN
    return path if path.exists() else None


@functools.cache  # importing dlt takes seconds: once per benchmark, not once per round
def dlt_python() -> Path | None:
    python = ENVS / "dlt" / "bin" / "python"
    if not python.exists():
        return None
    ok = subprocess.run([str(python), "-c", "import dlt, sqlalchemy, psycopg2, pyarrow"], capture_output=True)
    return python if ok.returncode == 0 else None


def unavailable(peer: str) -> str | None:
    """Why ``peer`` cannot run here, or None."""
    if peer == "pgloader":
        return None if shutil.which("pgloader") else "pgloader is not installed (Debian package pgloader)"
    if peer == "sling":
        return None if sling_binary() else f"no Sling binary in {ENVS / 'sling'} (run `python -m bench.peers install`)"
    if peer == "dlt":
        return None if dlt_python() else f"no dlt environment in {ENVS / 'dlt'} (run `python -m bench.peers install`)"
    if peer in ("native_restore", "target_restore"):
        missing = [b for b in ("pg_dump", "pg_restore") if not shutil.which(b)]
        return f"{' and '.join(missing)} not found" if missing else None
    return None


def install() -> None:
    """Each peer into its own environment; prints what was installed or why not."""
    ENVS.mkdir(exist_ok=True)
    for name, packages in (("sling", ["sling-linux-amd64"]),
                           ("dlt", ["dlt[postgres,sql_database]", "pyarrow", "sqlalchemy", "psycopg2-binary"])):
        env = ENVS / name
        if not env.exists():
            subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        out = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", *packages],
                             capture_output=True, text=True)
        print(f"{name}: " + ("installed" if out.returncode == 0 else f"not installed: {out.stderr.strip()[-500:]}"))
    if shutil.which("pgloader"):
        print("pgloader: already installed")
    elif os.geteuid() == 0 and shutil.which("apt-get"):
        out = subprocess.run(["apt-get", "install", "-y", "-q", "pgloader"], capture_output=True, text=True,
                             env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        print("pgloader: " + ("installed" if out.returncode == 0 else f"not installed: {out.stderr.strip()[-500:]}"))
    else:
        print("pgloader: not installed (needs root and apt-get: `apt-get install pgloader`)")
    for peer in PEERS:
        print(f"{peer}: {unavailable(peer) or 'ready'}")


# -- running a client and measuring it ---------------------------------------------------------

def run_clients(commands: list[list[str]], env: dict | None = None, cwd: Path | None = None) -> tuple[float, float]:
    """Run ``commands`` as one pipeline (each one's stdout into the next one's stdin); returns
    (seconds, the largest peak RSS among them in MB). Raises with the stderr of the one that failed."""
    logs = [tempfile.TemporaryFile() for _ in commands]
    procs: list[subprocess.Popen] = []
    started = time.perf_counter()
    for i, cmd in enumerate(commands):
        procs.append(subprocess.Popen(cmd, env=env, cwd=cwd, stderr=logs[i],
                                      stdin=procs[-1].stdout if procs else subprocess.DEVNULL,
                                      stdout=subprocess.PIPE if i < len(commands) - 1 else logs[i]))
        if i:
            procs[i - 1].stdout.close()  # the reader holds the only copy: the writer sees EPIPE if it dies
    peak_kb, failed = 0, []
    for i, proc in enumerate(procs):
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        peak_kb = max(peak_kb, usage.ru_maxrss)
        if proc.returncode:
            failed.append(i)
    seconds = time.perf_counter() - started
    if failed:
        i = failed[0]
        logs[i].seek(0)
        raise RuntimeError(f"{commands[i][0]} exited with {procs[i].returncode}: "
                           f"{logs[i].read().decode(errors='replace')[-2000:]}")
    return seconds, peak_kb / 1024


def _pg_url(conninfo: str) -> str:
    """A postgresql:// URL for the clients that take no libpq keyword string."""
    p = psycopg.conninfo.conninfo_to_dict(conninfo)
    auth = quote(p.get("user", "postgres"), safe="") + (f":{quote(p['password'], safe='')}" if p.get("password") else "")
    return f"postgresql://{auth}@{p.get('host', '127.0.0.1')}:{p.get('port', 5432)}/{p['dbname']}"


def _dump_restore(source: str, dest: str, *restore_options: str) -> tuple[float, float]:
    return run_clients([["pg_dump", "-Fc", "--no-owner", "-d", _pg_url(source)],
                        ["pg_restore", "--no-owner", *restore_options, "-d", _pg_url(dest)]])


def native_restore(source: str, dest: str) -> tuple[float, float]:
    return _dump_restore(source, dest)


def target_restore(reference: str, dest: str) -> tuple[float, float]:
    # the target's grants name Supabase roles that a fresh database need not have
    return _dump_restore(reference, dest, "--no-privileges")


def pgloader(source: str, dest: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as work:
        # With its defaults (100,000 rows prefetched per table) pgloader exhausted its 1 GB heap on
        # the 2.2M-row table at scale 1.0 ("Heap exhausted, game over"); 10,000 is what a user
        # meeting that would set, and what its documentation suggests for large rows
        return run_clients([["pgloader", "--root-dir", work, "--no-ssl-cert-verification",
                             "--with", "prefetch rows = 10000",
                             _pg_url(source).replace("postgresql://", "pgsql://"),
                             _pg_url(dest).replace("postgresql://", "pgsql://")]])


def sling(source: str, dest: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as work:
        config = Path(work) / "replication.yaml"
        config.write_text("source: LEGACY\ntarget: PEER\ndefaults:\n  mode: full-refresh\n"
                          "  object: public.{stream_table}\nstreams:\n  public.*:\n")
        env = dict(os.environ, HOME=work, SLING_HOME_DIR=work, SLING_DISABLE_TELEMETRY="true",
                   LEGACY=_pg_url(source) + "?sslmode=disable", PEER=_pg_url(dest) + "?sslmode=disable")
        return run_clients([[str(sling_binary()), "run", "-r", str(config)]], env=env, cwd=Path(work))


def dlt(source: str, dest: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as work:
        script = Path(work) / "peer_dlt.py"
        script.write_text(DLT_SCRIPT)
        env = dict(os.environ, HOME=work, RUNTIME__DLTHUB_TELEMETRY="false")
        # dlt's postgres destination refuses credentials without a password, even where the server
        # asks for none (trust): a placeholder then, which such a server ignores
        target = _pg_url(dest)
        if not psycopg.conninfo.conninfo_to_dict(dest).get("password"):
            target = target.replace("@", ":unused@", 1)
        return run_clients([[str(dlt_python()), str(script), _pg_url(source).replace("postgresql://",
                                                                                  "postgresql+psycopg2://"),
                             target, work]], env=env, cwd=Path(work))


# -- verification ------------------------------------------------------------------------------

def verify_copy(dest: str, schema: str, expected: dict[str, int]) -> list[str]:
    """Tables of a peer's copy whose row count differs from the legacy one (missing tables too)."""
    wrong = []
    with psycopg.connect(dest) as conn:
        for table, rows in expected.items():
            try:
                got = conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(table))).fetchone()[0]
            except psycopg.errors.UndefinedTable:
                conn.rollback()
                got = None
            if got != rows:
                wrong.append(f"{table}: {got} of {rows}")
    return wrong


def table_counts(conninfo: str) -> dict[str, int]:
    """Rows of every target table and of the control schema's tables (the reference's shape)."""
    with psycopg.connect(conninfo) as conn:
        tables = conn.execute("SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables "
                              "WHERE schemaname IN ('public', 'migration_control') ORDER BY 1").fetchall()
        return {t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(t))).fetchone()[0]
                for (t,) in tables}


def verify_migration(target: str, expected: dict[str, int]) -> list[str]:
    """Entities whose target rows + open quarantine rows differ from their legacy rows."""
    wrong = []
    with psycopg.connect(target) as conn:
        for e in ENTITIES:
            rows = conn.execute(sql.SQL("SELECT (SELECT count(*) FROM {}) + (SELECT count(*) FROM {} "
                                        "WHERE entity = %s AND resolved_at IS NULL)").format(
                target_table(e, "public"), QUARANTINE), [e.name]).fetchone()[0]
            if rows != expected[e.legacy_table]:
                wrong.append(f"{e.name}: {rows} of {expected[e.legacy_table]}")
    return wrong


# -- one round ---------------------------------------------------------------------------------

def run_contender(name: str, admin: str, legacy: str, expected: dict[str, int], reference: tuple) -> dict:
    dest = recreate(admin, f"bench_{name}")
    try:
        if name == "target_restore":
            wall, rss = target_restore(reference[0], dest)
            got = table_counts(dest)
            wrong = [f"{t}: {got.get(t)} of {n}" for t, n in reference[1].items() if got.get(t) != n]
        elif name == "raw_copy":
            wall, rss = raw_copy(legacy, dest), None  # in this process: its RSS is not its own
            wrong = verify_copy(dest, "public", expected)
        elif name in ("migration", "migration_checked"):
            apply_migrations(dest)
            extra = {"MIGRATION_ASSET_CHECKS": "1", "CONTENT_CHECKSUM_SAMPLE_ABOVE": "-1"} \
                if name == "migration_checked" else {}
            started = time.perf_counter()
            out = migrate_child(legacy, dest, None, extra_env=extra)
            wall = time.perf_counter() - started  # the command's, start and imports included, as the peers'
            if not out["success"]:
                raise RuntimeError(f"{name}: the materialization failed")
            wrong = verify_migration(dest, expected)
            return {"wall_s": wall, "materialize_s": out["wall_s"], "rss_mb": out["peak_rss_mb"], "wrong": wrong,
                    "phases": {**out["phases"], "target_keys": out.get("keys_s", 0.0)},
                    "orchestration_s": out["orchestration_s"], "target": dest}
        else:
            wall, rss = globals()[name](legacy, dest)
            wrong = verify_copy(dest, "legacy" if name == "dlt" else "public", expected)
        return {"wall_s": wall, "rss_mb": rss, "wrong": wrong}
    finally:
        if name != "migration":  # the differential refresh runs on it after the round
            _drop(admin, dest)


def _drop(admin: str, conninfo: str) -> None:
    drop(admin, psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"])


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("command", nargs="?", choices=["install", "run"], default="run")
    p.add_argument("--scales", type=float, nargs="+", default=[0.1, 1.0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--only", nargs="+", choices=CONTENDERS, help="these contenders only")
    p.add_argument("--from-json", action="store_true", help="only rewrite the report from the saved results")
    a = p.parse_args(argv)
    if a.command == "install":
        return install()
    if a.from_json:
        return write(json.loads((HERE / "peers.json").read_text()))
    admin, _ = admin_url()
    contenders = list(a.only or CONTENDERS)
    skipped = {c: why for c in contenders if (why := unavailable(c))}
    contenders = [c for c in contenders if c not in skipped]
    results = {"skipped": skipped, "scales": {}}
    for scale in a.scales:
        legacy = recreate(admin, "bench_legacy")
        generate(legacy, scale=scale, seed=7, log=lambda *_: None)
        reference = None
        if "target_restore" in contenders:  # the target's shape, to restore in each round
            reference = recreate(admin, REFERENCE)
            apply_migrations(reference)
            migrate_child(legacy, reference, None)
            reference = (reference, table_counts(reference))
        rounds = []
        for i in range(a.runs):
            expected = legacy_counts(legacy)  # the differential refresh of the round before changed it
            order = contenders[i % len(contenders):] + contenders[:i % len(contenders)]
            row = {"rows": sum(expected.values()), "order": order}
            for name in order:
                try:
                    row[name] = run_contender(name, admin, legacy, expected, reference)
                except Exception as exc:  # recorded and reported; the other contenders still run
                    row[name] = {"error": str(exc).strip().splitlines()[0][:300] if str(exc).strip() else repr(exc)}
                print(json.dumps({"scale": scale, "round": i, "contender": name,
                                  **{k: v for k, v in row[name].items() if k not in ("phases", "target")}}),
                      flush=True)
            if "migration" in row:
                target = row["migration"].pop("target")
                mutate(legacy, fraction=0.01, round_no=i + 1, seed=7, log=lambda *_: None)
                started = time.perf_counter()
                diff = migrate_child(legacy, target, None, mode="differential")
                row["differential"] = {"wall_s": time.perf_counter() - started, "materialize_s": diff["wall_s"],
                                       "phases": diff["phases"],
                                       "orchestration_s": diff["orchestration_s"],
                                       "wrong": verify_migration(target, legacy_counts(legacy))}
                print(json.dumps({"scale": scale, "round": i, "contender": "differential",
                                  **{k: v for k, v in row["differential"].items() if k != "phases"}}), flush=True)
                _drop(admin, target)
            rounds.append(row)
        results["scales"][str(scale)] = rounds
        if reference:
            _drop(admin, reference[0])
        (HERE / "peers.json").write_text(json.dumps(results, indent=1))
    _drop(admin, legacy)
    write(results)


# -- the report --------------------------------------------------------------------------------

LABELS = {
    "raw_copy": "raw COPY into key-less tables (the floor)",
    "native_restore": "`pg_dump -Fc` piped to `pg_restore` of the legacy database (data, primary keys, indexes)",
    "target_restore": "the same of the migrated target (UUID keys, foreign keys validated, jsonb, quarantine)",
    "pgloader": "pgloader (Debian package; prefetch rows = 10000: with its default it ran out of heap at 1.0)",
    "sling": "Sling full-refresh (PyPI sling-linux-amd64)",
    "dlt": "dlt sql_database (pyarrow backend, csv loader, replace)",
    "migration": "this project, checks off",
    "migration_checked": "this project, every check, every row's content",
}


def _get(r: dict, c: str, key: str):
    """``key`` of contender ``c`` in round ``r``; None when it did not run or failed."""
    return r[c].get(key) if c in r and "error" not in r[c] else None


def _median(rounds: list[dict], f) -> float:
    values = [v for v in map(f, rounds) if v is not None]
    return statistics.median(values) if values else float("nan")


def _ratio(rounds, a: str, b: str, key_a: str = "wall_s") -> float:
    def one(r):
        x, y = _get(r, a, key_a), _get(r, b, "wall_s")
        return x / y if x is not None and y else None
    return _median(rounds, one)


def _x(value: float) -> str:
    return "n/a" if value != value else f"{value:.2f}x"


def _phases(rounds, c: str) -> dict:
    """Median seconds per load phase of ``c`` (summed over the tables), and outside the loads."""
    names = {k for r in rounds for k in (_get(r, c, "phases") or {})}
    out = {k: _median(rounds, lambda r: (_get(r, c, "phases") or {}).get(k)) for k in names}
    out["orchestration (outside the loads)"] = _median(rounds, lambda r: _get(r, c, "orchestration_s"))
    return out


def _top_phases(phases: dict, n: int = 4) -> str:
    ranked = sorted(((k, v) for k, v in phases.items() if v == v), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v:.1f} s" for k, v in ranked[:n])


def write(results: dict) -> None:
    scales = results["scales"]
    lines = ["## Against the tools a user would pick instead (bench.peers)", "",
             "Written by `.venv/bin/python -m bench.peers` (peers installed by `python -m bench.peers install`, "
             "each in an environment of its own). One legacy database per scale; in each round every contender "
             "copies it into a fresh database, the order rotated between rounds; medians of the rounds, ratios "
             "taken within a round. The peers copy the tables as they are: no UUID keys, no foreign keys "
             "rewritten or validated, no transforms, no quarantine. Rows verified in every target (peers: "
             "each table's count equals the legacy count; this project: target rows + open quarantine rows "
             "equal it; the target's restore: every table's count equals the restored target's). Every wall "
             "time is the command's, from its process start to its exit, as a user running it meets it; for "
             "this project the materialization alone is in brackets (the rest is Python, Dagster and the code "
             "location starting). Peak RSS of the client processes (the dump and the restore: the larger); "
             "the raw COPY runs inside the benchmark's own process.", ""]
    if results.get("skipped"):
        lines += [f"Skipped: {name}: {why}." for name, why in results["skipped"].items()] + [""]
    for scale, rounds in scales.items():
        lines += [f"**Scale {scale}** ({rounds[0]['rows']:,} legacy rows, {len(rounds)} rounds)", "",
                  "| contender | median wall s | / raw COPY | / native restore | peak RSS MB | rows verified |",
                  "|---|---|---|---|---|---|"]
        for c in (c for c in CONTENDERS if any(c in r for r in rounds)):
            failed = [r[c]["error"] for r in rounds if c in r and "error" in r[c]]
            rss = _median(rounds, lambda r: _get(r, c, "rss_mb"))
            wrong = [w for r in rounds for w in (_get(r, c, "wrong") or [])]
            inner = _median(rounds, lambda r: _get(r, c, "materialize_s"))
            wall = _median(rounds, lambda r: _get(r, c, "wall_s"))
            wall_text = "failed" if wall != wall else f"{wall:.1f}" + ("" if inner != inner else
                                                                       f" ({inner:.1f} materializing)")
            verdict = ("NO: " + "; ".join(wrong[:3])) if wrong else "yes" if wall == wall else "-"
            if failed:
                verdict += f" (failed in {len(failed)} of {len(rounds)} rounds: {failed[0][:160]})"
            lines.append(f"| {LABELS[c]} | {wall_text} | {_x(_ratio(rounds, c, 'raw_copy'))} | "
                         f"{_x(_ratio(rounds, c, 'native_restore'))} | {'n/a' if rss != rss else f'{rss:.0f}'} | "
                         f"{verdict} |")
        lines.append("")
    lines += _targets(scales)
    path = HERE / "peers.md"
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")
    from .run import regenerate
    regenerate(PROJECT_DIR / "BENCHMARKS.md")


def _differential_floor(scale: str) -> str:
    """What a differential refresh costs with nothing changed, as bench.differential measured it in
    watermark mode (MIGRATION_CHANGE_SOURCE's default, the mode of this benchmark's refresh)."""
    path = HERE / "differential.json"
    measured = (json.loads(path.read_text()).get(str(float(scale))) or {}).get("watermark") if path.exists() else None
    if not measured:
        return ""
    floor = statistics.median(r["0.0"]["wall_s"] for r in measured["rounds"])
    orchestration = statistics.median(r["0.0"]["orchestration_s"] for r in measured["rounds"])
    return (f"; with nothing changed it takes {floor:.1f} s = {floor / measured['full_s']:.1%} of the full "
            f"materialization, {orchestration:.1f} s of it orchestration (bench.differential)")


def _targets(scales: dict) -> list[str]:
    """The issue's targets, each as met or with its measured gap, and where the time goes."""
    big_scale = max(scales, key=float)
    big = scales[big_scale]
    rows = []

    def add(measure, target, value, met, where=""):
        met = "-" if met is None or value.startswith("nan") else "yes" if met else "NO"
        rows.append(f"| {measure} | {target} | {value} | {met} | {where} |")

    where = _top_phases(_phases(big, "migration"))
    v, inner = _ratio(big, "migration", "native_restore"), _ratio(big, "migration", "native_restore", "materialize_s")
    add("full migration (checks off) / native restore of the legacy database", "<= 1.5x",
        f"{v:.2f}x ({inner:.2f}x materializing alone)", v <= 1.5, where)
    v, inner = _ratio(big, "migration", "target_restore"), _ratio(big, "migration", "target_restore", "materialize_s")
    add("full migration / native restore of the target it wrote (this schema's floor by hand; no target set)",
        "-", f"{v:.2f}x ({inner:.2f}x materializing alone)", None)
    for c in PEERS:
        v = _ratio(big, "migration", c)
        add(f"full migration / {c}", "< 1.0x (aim 0.67x)", f"{v:.2f}x", v < 1.0,
            "" if v < 1.0 else f"the full migration's phases above; {c} itself "
            f"{_median(big, lambda r: _get(r, c, 'wall_s')):.1f} s")
    v = _ratio(big, "migration_checked", "migration")
    extra = _median(big, lambda r: (_get(r, "migration_checked", "wall_s") or float("nan"))
                    - (_get(r, "migration", "wall_s") or float("nan")))
    checked, plain = _phases(big, "migration_checked"), _phases(big, "migration")
    outside = "orchestration (outside the loads)"
    add("every check, every row's content / full migration", "<= 1.2x", f"{v:.2f}x ({extra:.1f} s more)", v <= 1.2,
        f"the checks (outside the loads) {checked[outside] - plain[outside]:.1f} s, the loads "
        f"{sum(x for k, x in checked.items() if k != outside) - sum(x for k, x in plain.items() if k != outside):+.1f} s")
    for scale, rounds in scales.items():
        v = _ratio(rounds, "differential", "migration")
        d = _median(rounds, lambda r: _get(r, "differential", "wall_s"))
        inner = _median(rounds, lambda r: (_get(r, "differential", "materialize_s") or float("nan"))
                        / (_get(r, "migration", "materialize_s") or float("nan")))
        add(f"differential refresh after 1% changed / full migration (scale {scale})", "<= 10% at 1.0",
            f"{d:.1f} s = {100 * v:.1f}% ({100 * inner:.1f}% materializing alone)",
            v <= 0.10 if float(scale) >= 1.0 else None,
            _top_phases(_phases(rounds, "differential")) + _differential_floor(scale))
    rss = {s: _median(r, lambda x: _get(x, "migration", "rss_mb")) for s, r in scales.items()}
    add("peak RSS of the migration, flat between scales", "<= 256 MB",
        " -> ".join(f"{v:.0f} MB" for v in rss.values()), max(rss.values()) <= 256)
    return [f"**Targets (scale {big_scale})**", "", "| measure | target | measured | met | where the time goes "
            "(largest phases, summed over the tables) |", "|---|---|---|---|---|", *rows, "",
            "The levers measured against the unmet targets, with their numbers, are rows of the design "
            "measurements below: the orphan search on the batch, the JSON metadata in COPY, the key builds and "
            "ANALYZE, the memory floor (issue 38), and the content of every row compared by default (issue 23)."]


if __name__ == "__main__":
    main()
