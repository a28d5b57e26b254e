"""The code location as Dagster loads it, without a database: a snapshot of the 45 table assets'
specs, no import-time side effects, no import cycle (definitions, assets, engine)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from migration_assets.registry import BY_NAME, ENTITIES
from migration_assets.settings import load

PACKAGE = Path(__file__).resolve().parents[2] / "migration_assets"
SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_specs.json"


def _specs() -> dict:
    from migration_assets.definitions import table_assets

    out = {}
    for a in table_assets(load({})):
        (spec,) = a.specs
        policy = a.op.retry_policy
        out[spec.key.to_user_string()] = {
            "deps": sorted(d.asset_key.to_user_string() for d in spec.deps),
            "group": spec.group_name, "tags": dict(sorted(spec.tags.items())), "kinds": sorted(spec.kinds),
            "owners": list(spec.owners), "io_manager_key": a.get_io_manager_key_for_asset_key(spec.key),
            "checks": sorted(c.name + (" (blocking)" if c.blocking else "") for c in a.check_specs),
            "retry": [policy.max_retries, policy.backoff.value, policy.jitter.value],
        }
    return out


def test_the_asset_specs_match_the_snapshot():
    """Any change to what the UI shows of the 45 assets (deps, groups, tags, kinds, checks,
    retries) shows up here. After an intended change: UPDATE_SNAPSHOTS=1 ./run test --unit."""
    specs = _specs()
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(specs, indent=1, sort_keys=True) + "\n")
    assert specs == json.loads(SNAPSHOT.read_text())


def test_the_snapshot_agrees_with_the_registry():
    specs = json.loads(SNAPSHOT.read_text())
    assert sorted(specs) == sorted(e.name for e in ENTITIES)
    for name, spec in specs.items():
        e = BY_NAME[name]
        assert spec["deps"] == sorted([*e.parents, f"legacy/{e.legacy_table}"]) and spec["group"] == e.group_name
        assert spec["tags"] == {"dagster/kind/postgres": "", "level": str(e.level), "priority": e.priority}
        assert "foreign_keys_resolve (blocking)" in spec["checks"]
        assert ("emails_valid" in spec["checks"]) == bool(e.email_columns)


def test_checks_off_removes_the_check_specs_only():
    from migration_assets.definitions import table_assets

    off = table_assets(load({"MIGRATION_ASSET_CHECKS": "false"}))
    assert len(off) == 45 and all(not list(a.check_specs) for a in off)


def test_importing_the_code_location_does_nothing(tmp_path):
    """No server started, no allocator changed, no setting read: Dagster's @definitions call does that."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SOURCE_DB", "TARGET_DB", "MIGRATION_", "DAGSTER_PG"))}
    env.update(MIGRATION_HOME=str(tmp_path), BATCH_SIZE="not-a-number")  # a bad setting: read at import, it would fail
    probe = ("import pyarrow as pa, migration_assets.definitions, migration_assets.cli, migration_assets.engine.load;"
             "print(pa.default_memory_pool().backend_name);"
             "from migration_assets.engine.memory import bound_native_memory; bound_native_memory();"
             "print(pa.default_memory_pool().backend_name)")
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = out.stdout.split()
    assert before != "system" and after == "system"
    assert not (tmp_path / ".pgdata").exists()


def _module_imports(path: Path) -> set[str]:
    """The project modules ``path`` imports at module level (imports inside functions are calls)."""
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            module = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            if module and module.startswith("migration_assets"):
                found.add(module)
                found |= {f"{module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("migration_assets")}
    return found


def test_no_import_cycle_and_the_engine_imports_no_dagster():
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    graph = {m: {d for d in _module_imports(p) if d in modules and d != m} for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in graph[m]:
            assert state.get(d) != 1, "import cycle: " + " -> ".join(path + [d])
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    graph = {m: ds - {"migration_assets"} for m, ds in graph.items()}  # "from .. import x" names x, seen above
    for m, p in modules.items():
        if m.startswith("migration_assets.engine"):
            assert "dagster" not in p.read_text(), m
            assert not {d for d in graph[m] if not d.startswith("migration_assets.engine")} - {
                "migration_assets.registry", "migration_assets.transforms", "migration_assets.settings",
                "migration_assets.connections", "migration_assets.errors"}, m
    assert "dagster" not in modules["migration_assets.errors"].read_text()  # the engine's error types


def test_a_sliced_asset_shows_the_same_spec_and_runs_as_plan_slices_finish():
    """MIGRATION_SLICE_ROWS makes the large tables graphs of steps (assets.build_sliced_asset):
    the UI's asset (key, deps, group, tags, kinds, owners, IO manager, checks) stays the same,
    and each of its three steps carries the table's retry policy."""
    from dagster import GraphDefinition

    from migration_assets.definitions import table_assets

    snapshot = json.loads(SNAPSHOT.read_text())
    s = load({"MIGRATION_SLICE_ROWS": "300000"})
    assets = table_assets(s)
    sliced = {a.key.to_user_string(): a for a in assets if isinstance(a.node_def, GraphDefinition)}
    assert set(sliced) == {e.name for e in ENTITIES if e.expected_rows >= 300_000} == {"system_messages", "tasks",
                                                                                           "files"}
    for name, a in sliced.items():
        (spec,) = a.specs
        seen = {"deps": sorted(d.asset_key.to_user_string() for d in spec.deps), "group": spec.group_name,
                "tags": dict(sorted(spec.tags.items())), "kinds": sorted(spec.kinds), "owners": list(spec.owners),
                "io_manager_key": a.get_io_manager_key_for_asset_key(spec.key),
                "checks": sorted(c.name + (" (blocking)" if c.blocking else "") for c in a.check_specs)}
        assert seen == {k: v for k, v in snapshot[name].items() if k != "retry"}
        ops = {n.name: n for n in a.node_def.iterate_op_defs()}
        assert sorted(ops) == [f"{name}__finish", f"{name}__plan", f"{name}__slice"]
        assert {(o.retry_policy.max_retries, o.retry_policy.backoff.value) for o in ops.values()} == \
            {tuple(snapshot[name]["retry"][:2])}
    # a list of tables picks exactly those
    chosen = table_assets(load({"MIGRATION_SLICE_ROWS": "1000", "MIGRATION_SLICED_TABLES": "profiles, tasks"}))
    assert {a.key.to_user_string() for a in chosen if isinstance(a.node_def, GraphDefinition)} == {"profiles", "tasks"}


def test_slicing_settings_are_checked_by_name():
    import pytest

    from migration_assets.settings import SettingsError

    with pytest.raises(SettingsError, match=r"MIGRATION_SLICED_TABLES='profiles,nope' is naming no table .*\(nope\)"):
        load({"MIGRATION_SLICE_ROWS": "10", "MIGRATION_SLICED_TABLES": "profiles,nope"})
    with pytest.raises(SettingsError, match="MIGRATION_SLICED_TABLES is set but MIGRATION_SLICE_ROWS is not"):
        load({"MIGRATION_SLICED_TABLES": "profiles"})
    with pytest.raises(SettingsError, match="MIGRATION_SLICE_ROWS='-1' is out of range"):
        load({"MIGRATION_SLICE_ROWS": "-1"})
    assert not any(load({}).sliced(e.name, e.expected_rows) for e in ENTITIES)  # the default slices nothing


def test_under_a_process_per_step_executor_a_level_s_tables_share_a_step_and_keep_their_specs():
    from migration_assets.definitions import table_assets

    snapshot = json.loads(SNAPSHOT.read_text())
    assets = table_assets(load({"MIGRATION_EXECUTOR": "multiprocess", "MIGRATION_SLICE_ROWS": "300000"}))
    steps = {a.node_def.name: sorted(k.to_user_string() for k in a.keys) for a in assets}
    assert len(assets) == 11 + 3  # a step per level, plus the three sliced tables
    assert steps["level_01_tables"] == sorted(e.name for e in ENTITIES if e.level == 1)
    seen = {}
    for a in assets:
        assert a.can_subset or len(a.keys) == 1
        for spec in a.specs:
            seen[spec.key.to_user_string()] = {
                "deps": sorted(d.asset_key.to_user_string() for d in spec.deps), "group": spec.group_name,
                "tags": dict(sorted(spec.tags.items())), "kinds": sorted(spec.kinds), "owners": list(spec.owners),
                "io_manager_key": a.get_io_manager_key_for_asset_key(spec.key),
                "checks": sorted(c.name + (" (blocking)" if c.blocking else "") for c in a.check_specs
                                 if c.asset_key == spec.key)}
    assert seen == {name: {k: v for k, v in spec.items() if k != "retry"} for name, spec in snapshot.items()}


def test_the_catalog_knows_each_table_before_any_run():
    """Table name, columns (with their legacy origin) and a code version per table in the
    definitions, before anything ran; the code version changes with the registry entry."""
    import dataclasses

    from migration_assets.assets import code_version
    from migration_assets.definitions import table_assets

    specs = {spec.key.path[-1]: spec for a in table_assets(load({})) for spec in a.specs}
    for e in ENTITIES:
        spec = specs[e.name]
        assert spec.metadata["dagster/table_name"] == f"public.{e.target_table}"
        columns = spec.metadata["dagster/column_schema"].columns
        assert [(c.name, c.type) for c in columns] == [("id", "uuid")] + [(c.target, c.target_type)
                                                                         for c in e.columns] + [("metadata", "jsonb")]
        assert spec.code_version == code_version(e)
    assert len({spec.code_version for spec in specs.values()}) == len(ENTITIES)
    e = BY_NAME["offices"]
    changed = dataclasses.replace(e, columns=tuple(dataclasses.replace(c, required=not c.required)
                                                   if c.target == "phone" else c for c in e.columns))
    assert code_version(changed) != code_version(e)


def test_unattended_runs_show_staleness_stay_bounded_and_retry_only_what_a_crash_stopped():
    """Every table (one-step, level and sliced shapes) is in the target's pool with a freshness
    policy; dagster.yaml is in the current form: queued runs, a pool limit, run retries that
    leave asset failures to the assets' RetryPolicy, run monitoring."""
    import yaml
    from dagster import AssetsDefinition

    from migration_assets.assets import FRESHNESS, POOL
    from migration_assets.definitions import table_assets

    for env in ({}, {"MIGRATION_EXECUTOR": "multiprocess"}, {"MIGRATION_SLICE_ROWS": "100000"}):
        assets = [a for a in table_assets(load(env)) if isinstance(a, AssetsDefinition)]
        specs = [spec for a in assets for spec in a.specs]
        assert len(specs) == len(ENTITIES) and all(spec.freshness_policy == FRESHNESS for spec in specs), env
        pools = {node.pool for a in assets for node in a.node_def.iterate_op_defs()}
        assert pools == {POOL}, (env, pools)
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "dagster.yaml").read_text())
    assert "run_coordinator" not in config and config["concurrency"]["runs"]["max_concurrent_runs"] == 2
    assert config["concurrency"]["pools"]["default_limit"] >= 1
    assert config["run_retries"] == {"enabled": True, "max_retries": 1, "retry_on_asset_or_op_failure": False}
    assert config["run_monitoring"]["enabled"] is True


def test_a_driverless_dagster_url_is_refused_saying_what_to_write():
    from migration_assets.settings import SettingsError

    for url in ("postgresql://u:secret-pw@h/db", "postgres://u:secret-pw@h/db"):
        with pytest.raises(SettingsError) as refused:
            load({"DAGSTER_PG_URL": url})
        assert str(refused.value) == ("invalid settings:\n  DAGSTER_PG_URL names no driver, which dagster-postgres "
                                      "needs: write it as postgresql+psycopg2://... (value not shown: it may hold a "
                                      "password)")
    load({"DAGSTER_PG_URL": "postgresql+psycopg2://u:secret-pw@h/db"})
