"""The options of one load: a frozen value built once per run (resources.MigrationSettings
.load_options) and handed to every phase. Defaults and allowed values are the settings' own
(settings.SETTINGS, their one definition); the checks here catch a value built by hand (tests,
the benchmark) that the settings would have refused."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import DEFAULTS, SETTINGS, zone_name

MODES = next(s.choices for s in SETTINGS if s.field == "mode")
DELETE_POLICIES = next(s.choices for s in SETTINGS if s.field == "delete_policy")
TEXT_ENCODINGS = next(s.choices for s in SETTINGS if s.field == "text_encoding")


@dataclass(frozen=True)
class LoadOptions:
    batch_size: int = DEFAULTS["batch_size"]
    fast_path: bool = DEFAULTS["fast_path"]
    error_recovery: bool = DEFAULTS["error_recovery"]
    mode: str = DEFAULTS["mode"]  # "full": compare everything; "differential": read changes since the watermark
    delete_policy: str = DEFAULTS["delete_policy"]  # what a legacy row deleted at the source does to its target row
    overlap_s: int = DEFAULTS["overlap_s"]  # differential: re-read this much before the watermark
    # LEGACY_TEXT_ENCODING, and whether the legacy server is SQL_ASCII (its text then needs that
    # decoding; any other server converts its own text): set by the stream and the checks from the
    # server they read (source_sql.for_server), never by hand
    text_encoding: str = DEFAULTS["text_encoding"]
    sql_ascii: bool = False
    legacy_timezone: str = DEFAULTS["legacy_timezone"]  # LEGACY_TIMEZONE: the zone of naive legacy timestamps
    run_id: str = "manual"
    incremental: bool = True  # full mode: re-read only the legacy-id buckets whose content changed
    progress_every: int = 10  # batches between progress log lines

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"BATCH_SIZE must be a positive integer, not {self.batch_size!r}")
        if self.mode not in MODES:
            raise ValueError(f"MIGRATION_MODE must be one of {MODES}, not {self.mode!r}")
        if self.text_encoding not in TEXT_ENCODINGS:
            raise ValueError(f"LEGACY_TEXT_ENCODING must be one of {TEXT_ENCODINGS}, not {self.text_encoding!r}")
        try:
            zone_name(self.legacy_timezone)
        except ValueError as why:
            raise ValueError(f"LEGACY_TIMEZONE={self.legacy_timezone!r} is {why}") from None
        if self.delete_policy not in DELETE_POLICIES:
            raise ValueError(f"DELETE_POLICY must be one of {DELETE_POLICIES}, not {self.delete_policy!r}")
