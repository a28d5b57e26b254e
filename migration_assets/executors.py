"""The executor of the code location's jobs, chosen by MIGRATION_EXECUTOR (no code edit).

- ``in_process`` (default): every step in the run's own process, one after the other. On a small
  machine this is the fastest: a step is one streaming COPY, and the database servers do the work.
- ``multiprocess``: Dagster's multiprocess executor, MIGRATION_MAX_CONCURRENT steps at a time, each
  in a new process that imports Dagster and the project first.
- ``celery``: dagster-celery; the run's process queues each step to the broker at
  CELERY_BROKER_URL (bound by name, so a password never reaches the run's snapshot; unset:
  dagster-celery's default, ``pyamqp://guest@localhost:5672//``), and long-lived workers started
  with ``dagster-celery worker start -A dagster_celery.app`` wherever the project is installed
  execute them. Workers need the same databases and a Dagster instance (DAGSTER_HOME) in
  PostgreSQL.
- ``k8s``: dagster-k8s's ``k8s_job_executor``, a Kubernetes job per step; its namespace, image,
  secrets and concurrency come from the run configuration's ``execution: config:``
  (docs/executors.md).

A table's load is still one transaction with its checks (a sliced table: one per slice, one to
finish; engine/slices.py), so what holds in process holds on every executor: each step opens its
own connections (connections.py keys them by process), the audit row commits with the load, and a
crashed step re-runs alone. Which tables are sliced, and whether a level's other tables share a
step, is the asset factory's choice (assets.build_table_assets).
"""

from __future__ import annotations

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

from .settings import BROKER_URL_VARIABLE, Settings, SettingsError


# Modules a multiprocess step imports after the fork, besides the code location: the instance
# and its storages (SQLAlchemy, Alembic, dagster-postgres when the instance is in PostgreSQL), the
# loading of the job from its code pointer, the execution of the plan and the captured logs.
# Without them in the forkserver, every step imported them again, which took longer than the
# step's own Dagster work (BENCHMARKS.md, "orchestration per step"; the commit that added this list).
# Python's forkserver skips a module that cannot be imported (dagster-postgres not installed).
STEP_PRELOAD = (
    "dagster._core.instance.factory",
    "dagster._core.storage.event_log",
    "dagster._core.storage.runs",
    "dagster._core.storage.schedules",
    "dagster._core.storage.root",
    "dagster._core.storage.local_compute_log_manager",
    "dagster._core.secrets.loader",
    "dagster._core.workspace.autodiscovery",
    "dagster._core.execution.api",
    "dagster._utils.test.definitions",
    "dagster_postgres",
    "alembic",
    "upath",
    "migration_assets.step_preload",  # last: the definitions built, then the heap frozen (step_preload.py)
)


def build_executor(s: Settings, broker_configured: bool = False) -> ExecutorDefinition:
    """The executor ``s.executor`` names; ``broker_configured``: CELERY_BROKER_URL is set (the
    definitions read the environment, this module does not)."""
    if s.executor == "multiprocess":
        # forkserver, with Dagster, the code location (its definitions built) and what a step
        # process needs imported once in the server (STEP_PRELOAD): each step forks from it
        # instead of starting a fresh interpreter that imports and builds them again. Neither
        # opens a connection (definitions.py), so the forks inherit none.
        return multiprocess_executor.configured(
            {"max_concurrent": s.max_concurrent,
             "start_method": {"forkserver": {"preload_modules": list(STEP_PRELOAD)}}},
            name="multiprocess")
    if s.executor == "celery":
        try:
            from dagster_celery import celery_executor
        except ImportError:
            raise SettingsError("MIGRATION_EXECUTOR='celery' needs dagster-celery: pip install "
                                "'migration_assets[celery]'") from None
        broker = {"broker": {"env": BROKER_URL_VARIABLE}} if broker_configured else {}
        return celery_executor.configured(broker, name="celery")
    if s.executor == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError:
            raise SettingsError("MIGRATION_EXECUTOR='k8s' needs dagster-k8s: pip install 'migration_assets[k8s]'") \
                from None
        return k8s_job_executor
    return in_process_executor
