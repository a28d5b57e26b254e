"""The options of one load: a frozen value built once per run (resources.MigrationSettings
.load_options) and handed to every phase.

Its fields are the settings marked ``engine`` in settings.SETTINGS (their one declaration: name,
default, bounds; today batch_size, fast_path, error_recovery, mode, delete_policy, overlap_s,
text_encoding, legacy_timezone) followed by the run's own fields below. A value built by hand
(tests, the benchmark) is checked as the settings check the environment, the variable named in
the error."""

from __future__ import annotations

from dataclasses import field, make_dataclass

from ..settings import SETTINGS

ENGINE_SETTINGS = tuple(s for s in SETTINGS if s.engine)

_RUN_FIELDS = [
    # whether the legacy server is SQL_ASCII (its text then needs LEGACY_TEXT_ENCODING's decoding;
    # any other server converts its own text): set by the stream and the checks from the server
    # they read (source_sql.for_server), never by hand
    ("sql_ascii", bool, field(default=False)),
    ("run_id", str, field(default="manual")),
    ("incremental", bool, field(default=True)),  # full mode: re-read only the id buckets whose content changed
    ("progress_every", int, field(default=10)),  # batches between progress log lines
]


def _check(self) -> None:
    for s in ENGINE_SETTINGS:
        if (problem := s.problem(getattr(self, s.field))) is not None:
            raise ValueError(problem)


LoadOptions = make_dataclass(
    "LoadOptions",
    [(s.field, s.python_type, field(default=s.default)) for s in ENGINE_SETTINGS] + _RUN_FIELDS,
    frozen=True, namespace={"__post_init__": _check, "__module__": __name__,
                            "__doc__": "The settings of one load (settings marked engine) and its run's own fields."})
