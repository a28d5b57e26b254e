"""Bounds on the native memory of a load, set by an explicit call (the code location's
definitions, the command line and the benchmark call :func:`bound_native_memory` once), never on
import.

A load allocates and frees the same few megabytes per batch, in three allocators: pyarrow's pool,
the ADBC driver's and pgpq's (both plain malloc). With pyarrow's default pool (mimalloc) and
glibc's adaptive mmap threshold, which keeps rising after large frees, peak RSS grew with the
largest table; mapping every block above 128 KiB bounded it but made every batch fault its pages
in afresh. So Arrow uses the system allocator, blocks up to 4 MiB (every batch-sized buffer) come
from the heap and are reused, and the heap gives back whatever lies free above 16 MiB (the
measurements: BENCHMARKS.md, design measurements). Only glibc has ``mallopt``; elsewhere this
keeps the defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import pyarrow as pa

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_bound = False


def bound_native_memory() -> None:
    """Apply the bounds (once per process; later calls do nothing)."""
    global _bound
    if _bound:
        return
    _bound = True
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 4 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 16 << 20)
    except (OSError, AttributeError):  # not glibc (musl, macOS): keep the allocator's defaults
        pass
