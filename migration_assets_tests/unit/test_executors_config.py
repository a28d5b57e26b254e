"""MIGRATION_EXECUTOR builds the executor it names (executors.py), and the Kubernetes
configuration of docs/executors.md is one the k8s executor and the job accept (it cannot run here)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml

from migration_assets.executors import build_executor
from migration_assets.settings import SettingsError, load

README = Path(__file__).resolve().parents[2] / "docs" / "executors.md"


@pytest.mark.parametrize("name", ["in_process", "multiprocess", "celery", "k8s"])
def test_the_setting_names_the_executor(name):
    assert build_executor(load({"MIGRATION_EXECUTOR": name})).name == name


def test_an_unknown_executor_is_refused_by_name():
    with pytest.raises(SettingsError, match="MIGRATION_EXECUTOR='dask'"):
        load({"MIGRATION_EXECUTOR": "dask"})


def test_the_broker_is_bound_by_name_never_by_value(monkeypatch):
    monkeypatch.setenv("CELERY_BROKER_URL", "pyamqp://user:s3cret@broker.internal:5672//")
    executor = build_executor(load({"MIGRATION_EXECUTOR": "celery"}), broker_configured=True)
    assert "s3cret" not in repr(executor.config_schema) and "s3cret" not in repr(vars(executor))


def _readme_k8s_config() -> dict:
    blocks = re.findall(r"```yaml\n(.*?)^\s*```", README.read_text(), re.S | re.M)
    (block,) = [b for b in blocks if "k8s" in b or "job_namespace" in b]
    return yaml.safe_load(textwrap.dedent(block))


def test_the_readme_k8s_configuration_validates(monkeypatch):
    from dagster import validate_run_config
    from dagster._config import validate_config
    from dagster_k8s import k8s_job_executor

    config = _readme_k8s_config()
    checked = validate_config(k8s_job_executor.config_schema.config_type, config["execution"]["config"])
    assert checked.success, checked.errors
    # and the job of the code location built with MIGRATION_EXECUTOR=k8s accepts it as run config
    monkeypatch.setenv("MIGRATION_EXECUTOR", "k8s")
    monkeypatch.setenv("SOURCE_DB_URL", "postgresql://u@legacy.internal:5432/legacy")
    monkeypatch.setenv("TARGET_DB_URL", "postgresql://u@db.supabase.internal:5432/postgres")
    from migration_assets.definitions import build_defs

    job = build_defs().resolve_job_def("full_migration")
    assert job.executor_def.name == "k8s"
    validate_run_config(job, config)
    config["execution"]["config"]["max_concurrent"] = "four"
    with pytest.raises(Exception, match="max_concurrent"):
        validate_run_config(job, config)


def test_the_definitions_are_built_once_per_environment(monkeypatch):
    # Dagster loads the job from its code pointer twice per multiprocess step; the second load and
    # the steps forked from the forkserver (step_preload) reuse the build, a changed setting does not
    monkeypatch.setenv("SOURCE_DB_URL", "postgresql://u@legacy.internal:5432/legacy")
    monkeypatch.setenv("TARGET_DB_URL", "postgresql://u@db.supabase.internal:5432/postgres")
    monkeypatch.setenv("MIGRATION_EXECUTOR", "multiprocess")
    from migration_assets.definitions import build_defs

    first = build_defs()
    assert build_defs() is first
    monkeypatch.setenv("MIGRATION_EXECUTOR", "in_process")
    other = build_defs()
    assert other is not first and other.resolve_job_def("full_migration").executor_def.name == "in_process"
    monkeypatch.setenv("MIGRATION_EXECUTOR", "dask")
    with pytest.raises(SettingsError, match="MIGRATION_EXECUTOR"):
        build_defs()


def test_the_forkserver_preloads_importable_modules_and_the_built_definitions(monkeypatch):
    # Python's forkserver skips a preload module only when it raises ImportError; any other error
    # would stop the server, so step_preload keeps a failed build to the step
    import importlib
    import sys

    from migration_assets.executors import STEP_PRELOAD

    assert STEP_PRELOAD[-1] == "migration_assets.step_preload"
    monkeypatch.setenv("MIGRATION_EXECUTOR", "dask")  # a bad setting: the import must not raise
    sys.modules.pop("migration_assets.step_preload", None)
    importlib.import_module("migration_assets.step_preload")
    for name in STEP_PRELOAD[:-1]:
        if name != "dagster_postgres":  # optional (the instance may not be in PostgreSQL)
            importlib.import_module(name)
