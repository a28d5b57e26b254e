"""The Dagster side of a failure: what a step's error becomes, decided in one place.

:func:`target_transaction` is the guard every step that writes to the target runs in (a table's
load in the IO manager, a sliced table's plan and slice steps): a connection borrowed for the
step, every statement bounded by MIGRATION_TIMEOUT; a signal rolls the work back and stops the run
without a retry (stopping.py); a transient error (errors.classify) is raised as it is, for the
asset's RetryPolicy; any other becomes ``Failure(allow_retries=False)`` made by
:func:`as_failure`, which carries the kind in its metadata, so the step's failure hook
(hooks.record_step_failure) and the run's failure sensor record the kind the step decided instead
of guessing it again from text (:func:`kind_of`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import psycopg
from dagster import Failure

from . import connections, stopping
from .errors import ErrorKind, classify

ERROR_CLASS, ERROR, RECOVERY = "error_class", "error", "recovery"  # a Failure's metadata keys


def as_failure(kind: ErrorKind, what: str) -> Failure:
    """A permanent error as the step's failure: ``what`` (the table, and the phase) names it."""
    return Failure(description=f"{what}: {kind.name}: {kind.message}. {kind.recovery}", allow_retries=False,
                   metadata={ERROR_CLASS: kind.name, ERROR: kind.message, RECOVERY: kind.recovery})


def kind_from_metadata(metadata: dict) -> ErrorKind | None:
    """The kind :func:`as_failure` stored in a failure's metadata (values as Dagster keeps them)."""
    if ERROR_CLASS not in metadata:
        return None
    text = {k: getattr(metadata.get(k), "value", metadata.get(k)) for k in (ERROR_CLASS, ERROR, RECOVERY)}
    return ErrorKind(text[ERROR_CLASS], False, text[ERROR] or "", text[RECOVERY] or "")


def kind_of(exc: BaseException) -> ErrorKind:
    """The kind of a step's exception: the one a :func:`as_failure` failure carries, else
    errors.classify's."""
    if isinstance(exc, Failure) and (kind := kind_from_metadata(exc.metadata or {})) is not None:
        return kind
    return classify(exc)


@contextmanager
def target_transaction(run_id: str, target, timeout_ms: int, what: str,
                       on_error: Callable[[BaseException | None], object] | None = None
                       ) -> Iterator[psycopg.Connection]:
    """A target connection for one step's work, bounded by MIGRATION_TIMEOUT (``timeout_ms``); the
    body commits. ``what`` names the step's work in a failure; ``on_error(exc)`` runs before
    anything is raised (``None``: a signal), e.g. to audit the failure on a connection of its own."""
    try:
        with connections.borrowed(target.conninfo(), "load", opener=target.connect) as conn:
            connections.set_statement_timeout(conn, timeout_ms)
            yield conn
    except stopping.INTERRUPTS:
        stopping.note(run_id)
        if on_error is not None:
            on_error(None)
        raise stopping.stopped(what) from None
    except Failure:
        raise  # decided already (a signal seen before the work began, a Failure of as_failure)
    except Exception as exc:
        if on_error is not None:
            on_error(exc)
        kind = kind_of(exc)
        if kind.transient:
            raise  # the asset's RetryPolicy retries it (exponential backoff, jitter)
        raise as_failure(kind, what) from None
