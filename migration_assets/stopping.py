"""A signal stops the run; it is never retried.

Dagster turns SIGINT and SIGTERM inside a step into ``DagsterExecutionInterruptedError`` and, when
the step has a RetryPolicy, into a retry ("respect retry policy when interrupts occur"): a Ctrl-C
during ``migrate`` reloaded the table and the run ended SUCCESS. Here the table in progress rolls
back (its transaction is never committed), the step fails with ``Failure(allow_retries=False)``,
the process remembers the interrupt, and every later step of the run fails at once without
touching a database; the command line then marks the run canceled and exits non-zero.
"""

from __future__ import annotations

from dagster import DagsterExecutionInterruptedError, Failure

INTERRUPTS = (DagsterExecutionInterruptedError, KeyboardInterrupt)
CANCELED = "CANCELED"  # audit status of the table a signal interrupted

_interrupted: set[str] = set()  # run ids


def note(run_id: str) -> None:
    _interrupted.add(run_id)


def interrupted(run_id: str) -> bool:
    return run_id in _interrupted


def forget(run_id: str) -> None:
    _interrupted.discard(run_id)


def stopped(name: str) -> Failure:
    return Failure(description=f"{name}: stopped by a signal (SIGINT or SIGTERM): the table's load was rolled "
                               "back and nothing is retried", allow_retries=False)


def raise_if_interrupted(run_id: str, name: str) -> None:
    if interrupted(run_id):
        raise Failure(description=f"{name}: not started: the run was stopped by a signal", allow_retries=False)
