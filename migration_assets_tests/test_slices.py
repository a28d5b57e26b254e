"""A table loaded in id-range slices (engine/slices.py) ends exactly as the one-step load leaves
it: the same rows (an md5 per table over its rows ordered by id), the same open quarantine
(duplicates and orphans found across slices included), keys rebuilt and validated. Slices load
concurrently on their own connections; a slice whose process is killed with SIGKILL mid-COPY
leaves nothing behind, and a re-run loads it and finishes the table; a plan left unfinished
blocks a one-step load of its table, naming the run.

The reference is the one-step load of the same legacy database (engine.load.migrate_entity)."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from migration_assets.engine.audit import write_audit
from migration_assets.engine.commit import migrate_entity
from migration_assets.engine.load import SliceError
from migration_assets.engine.options import LoadOptions
from migration_assets.engine.slices import finish_slices, load_slice, plan_slices, read_slice_plan
from migration_assets.engine.stream import LegacyStream
from migration_assets.registry import ENTITIES, entity

from .conftest import kill_when, migrated_in_process, query
from .test_plan_and_deletes import open_quarantine, table_checksums

# levels 1 and 2; profiles and patients hold unique emails (duplicates across slices), addresses
# and patients reference parents (orphans across slices)
SUBSET = [e for e in ENTITIES if e.level <= 2]
SLICED = ("profiles", "patients", "addresses")
SLICE_ROWS = 20


@pytest.fixture(scope="module")
def reference(databases, legacy) -> str:
    return migrated_in_process(databases, legacy, SUBSET, "slices_ref")


def _same(target: str, reference: str, names=None) -> None:
    names = set(names or (e.name for e in SUBSET))
    ours, theirs = table_checksums(target), table_checksums(reference)
    assert {n: ours[n] for n in names} == {n: theirs[n] for n in names}
    assert {r for r in open_quarantine(target) if r[0] in names} == \
        {r for r in open_quarantine(reference) if r[0] in names}


def _committed(legacy: str, target: str, name: str, opts: LoadOptions, work):
    """``work(conn, stream)`` in one committed transaction on the target, with a stream of its own."""
    stream = LegacyStream(legacy, entity(name), opts)
    try:
        with psycopg.connect(target) as conn:
            out = work(conn, stream)
            conn.commit()
        return out
    finally:
        stream.close()


def _plan(legacy: str, target: str, name: str, opts: LoadOptions):
    return _committed(legacy, target, name, opts, lambda conn, stream: plan_slices(conn, stream, opts, SLICE_ROWS))


def _load_slice(legacy: str, target: str, name: str, number: int, opts: LoadOptions):
    return _committed(legacy, target, name, opts, lambda conn, stream: load_slice(conn, stream, opts, number))


def _finish(legacy: str, target: str, name: str, opts: LoadOptions):
    def finish(conn, stream):
        result = finish_slices(conn, stream, opts)
        write_audit(conn, opts.run_id, result, name)
        return result

    return _committed(legacy, target, name, opts, finish)


def _migrate_sliced(legacy: str, target: str, opts: LoadOptions, workers: int = 3) -> dict:
    plans = {}
    for e in sorted(SUBSET, key=lambda e: e.level):
        if e.name not in SLICED:
            migrate_entity(legacy, target, e.name, opts)
            continue
        plan = _plan(legacy, target, e.name, opts)
        assert plan is not None and len(plan.slices) > 1, e.name
        with ThreadPoolExecutor(workers) as pool:  # slices at the same time, each on its own connections
            list(pool.map(lambda s: _load_slice(legacy, target, e.name, s.number, opts), plan.slices))
        plans[e.name] = plan
        _finish(legacy, target, e.name, opts)
    return plans


def test_slices_loaded_at_the_same_time_equal_the_one_step_load(legacy, target, reference):
    opts = LoadOptions(run_id="sliced")
    plans = _migrate_sliced(legacy, target, opts)
    _same(target, reference)
    for name, plan in plans.items():
        legacy_rows = query(legacy, f'SELECT count(*) FROM "{entity(name).legacy_table}"')[0][0]
        assert plan.state.rows == legacy_rows
        # the ranges cover the ids from the lowest to the highest, without overlap
        assert plan.slices[0].lo == plan.state.min_id and plan.slices[-1].hi == plan.state.max_id
        assert all(a.hi + 1 == b.lo for a, b in zip(plan.slices, plan.slices[1:]))
        # the record names each slice, its worker and run; the audit row lists them
        rows = query(target, "SELECT status, worker, run_id, rows_read FROM migration_control.slices "
                             "WHERE entity = %s ORDER BY slice", [name])
        assert {r[0] for r in rows} == {"COMPLETED"} and all(r[1] and r[2] == "sliced" for r in rows)
        assert sum(r[3] for r in rows) == legacy_rows
        details = query(target, "SELECT load_path, details->'slices' FROM migration_control.migration_runs "
                                "WHERE entity = %s AND run_id = 'sliced'", [name])
        assert len(details) == 1 and f"in {len(plan.slices)} slices" in details[0][0]
        assert len(details[0][1]) == len(plan.slices)
        assert query(target, "SELECT count(*) FROM migration_control.slice_rejects WHERE entity = %s", [name]) == [(0,)]
        # keys back: the primary key, the unique email and the foreign keys, validated
        kinds = {k for (k,) in query(target, "SELECT contype::text FROM pg_constraint WHERE conrelid = %s::regclass",
                                     [f"public.{name}"])}
        assert {"p", "f"} <= kinds or name == "profiles"
    # a re-run over the loaded tables is a one-step merge that changes nothing
    again = migrate_entity(legacy, target, "profiles", LoadOptions(run_id="again"))
    assert (again.inserted, again.updated) == (0, 0)
    _same(target, reference)


def test_an_unfinished_plan_blocks_a_one_step_load_and_a_finish_before_the_last_slice(legacy, target):
    opts = LoadOptions(run_id="planner")
    for e in sorted(SUBSET, key=lambda e: e.level):
        if e.level == 1 and e.name != "profiles":
            migrate_entity(legacy, target, e.name, opts)
    plan = _plan(legacy, target, "profiles", opts)
    _load_slice(legacy, target, "profiles", 1, opts)
    with pytest.raises(SliceError, match="planned by run planner is unfinished"):
        migrate_entity(legacy, target, "profiles", LoadOptions(run_id="other"))
    with pytest.raises(SliceError, match=f"{len(plan.slices) - 1} of {len(plan.slices)} slices not loaded"):
        _finish(legacy, target, "profiles", opts)
    # a second plan call (a re-run of the job) returns the same plan, the done slice done
    again = _plan(legacy, target, "profiles", LoadOptions(run_id="rerun"))
    assert again.run_id == "planner" and [s.status for s in again.slices][0] == "COMPLETED"
    assert len(again.pending()) == len(plan.slices) - 1


KILLED_SLICE = r"""
import sys, time, pathlib
from migration_assets.engine.options import LoadOptions
from migration_assets.engine.slices import load_slice
from migration_assets.engine.stream import LegacyStream
from migration_assets.registry import entity
import psycopg

legacy, target, marker = sys.argv[1:4]
opts = LoadOptions(run_id="killed", batch_size=5)
stream = LegacyStream(legacy, entity("patients"), opts)
batches = stream.batches

def slow(where=None):
    for n, batch in enumerate(batches(where)):
        yield batch
        if n == 1:  # two batches sent into the open COPY: say so, then hang until killed
            pathlib.Path(marker).write_text("copying")
            time.sleep(600)

stream.batches = slow
with psycopg.connect(target) as conn:
    load_slice(conn, stream, opts, 2)
    conn.commit()
"""


def test_a_slice_killed_mid_copy_leaves_nothing_and_a_rerun_completes_the_table(legacy, target, reference,
                                                                                 tmp_path):
    opts = LoadOptions(run_id="first")
    for e in sorted(SUBSET, key=lambda e: e.level):
        if e.level == 1:
            migrate_entity(legacy, target, e.name, opts)
    plan = _plan(legacy, target, "patients", opts)
    _load_slice(legacy, target, "patients", 1, opts)
    marker = tmp_path / "copying"
    worker = subprocess.Popen([sys.executable, "-c", KILLED_SLICE, legacy, target, str(marker)])

    def copying():  # the COPY is open: the kill lands mid-slice
        assert query(target, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                             "AND query LIKE 'COPY %%patients%%' AND state <> 'idle'")[0][0] == 1

    kill_when(worker, marker.exists, "the slice's process (copying)", before=copying)
    # the server rolls the dead session back: slice 2 is pending and none of its rows is in
    deadline = time.monotonic() + 30
    while query(target, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND query LIKE 'COPY %%patients%%'")[0][0]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    s2 = plan.slices[1]
    assert query(target, "SELECT status FROM migration_control.slices WHERE entity = 'patients' AND slice = 2") == \
        [("PENDING",)]
    assert query(target, "SELECT count(*) FROM public.patients WHERE (metadata->>'legacy_id')::bigint "
                         "BETWEEN %s AND %s", [s2.lo, s2.hi]) == [(0,)]
    # the re-run: the plan as it was, the pending slices, then the keys
    rerun = LoadOptions(run_id="rerun")
    again = _plan(legacy, target, "patients", rerun)
    assert again.run_id == "first" and len(again.pending()) == len(plan.slices) - 1
    for piece in again.pending():
        _load_slice(legacy, target, "patients", piece.number, rerun)
    assert _load_slice(legacy, target, "patients", 1, rerun).run_id == "first"  # done stays done
    _finish(legacy, target, "patients", rerun)
    _same(target, reference, [e.name for e in SUBSET if e.level == 1] + ["patients"])
    assert read_slice_plan(psycopg.connect(target), entity("patients")) is None
