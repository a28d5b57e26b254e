"""Imported by the multiprocess executor's forkserver (executors.STEP_PRELOAD), never by the code
location: builds the definitions once in the server, so that every step process forks with them
built (definitions.build_defs keeps them per process and environment) instead of building them
again for the step's plan and for its execution.

The forkserver starts from the run process's environment, which is the one the steps build
from, so the steps find them. Building opens no connection (definitions.py). If the build fails
here (a bad setting), nothing is kept and each step builds them itself and fails with the
error named, as it would without this module. Then ``gc.freeze()`` moves everything the server
holds to the permanent generation: a step's first collections neither walk that heap nor, by
touching it, copy its pages out of the shared memory of the fork.
"""

from __future__ import annotations

import gc

from .definitions import build_defs

try:
    build_defs()
except Exception:  # noqa: BLE001 - the step reports it (see the docstring)
    pass
gc.freeze()
