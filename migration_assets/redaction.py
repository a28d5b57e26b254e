"""Passwords never leave the process in text: every message the project derives from an error
or a connection string passes through :func:`redact`.

The passwords are registered when the settings are read (settings.load, config), taken from the
URLs however they are shaped: libpq misreads a URL whose password holds an unencoded '/' and
then quotes the password as a host, port or database name in its own error messages, where a
search for ``password=`` finds nothing. Redaction replaces every registered password, raw and
percent-encoded, wherever it appears; ``password=...`` in a conninfo string is hidden too.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import quote, unquote

_secrets: set[str] = set()
_lock = threading.Lock()
MASK = "[redacted]"
_CONNINFO_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(\w+://[^:/@\s]*:)[^@\s]*@")


def register_secret(value: str | None) -> None:
    """Remember a password (and its encoded and decoded forms) so that redact() hides it."""
    if not value or len(value) < 3:  # too short to search for without hiding ordinary words
        return
    with _lock:
        _secrets.update({value, quote(value, safe=""), unquote(value)} - {""})


def redact(text: str) -> str:
    """``text`` without any registered password, conninfo password or URL password."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _CONNINFO_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
    return _URL_USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)


_FAILING_ROW = re.compile(r"Failing row contains \(.*", re.DOTALL)
_KEY_VALUES = re.compile(r"\b(Key \((?P<cols>[^)]*)\)=)\(.*?\)(?=( is | already |$| conflicts ))", re.MULTILINE)


def without_row_values(text: str) -> str:
    """``text`` without the row values PostgreSQL puts in an error's DETAIL: ``Failing row contains
    (...)`` goes whole, ``Key (email)=(a@b.c)`` keeps only the key's column names. A legacy row is
    personal data; the audit trail, logs and events hold metadata only."""
    text = _FAILING_ROW.sub("Failing row contains (values not shown)", text)
    return _KEY_VALUES.sub(lambda m: m.group(1) + "(values not shown)", text)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, redacted (libpq adds hints on later lines)."""
    text = str(exc).strip()
    return redact(text.splitlines()[0]) if text else type(exc).__name__
