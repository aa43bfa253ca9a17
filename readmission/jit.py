"""The compiled loops' numba options: no GIL, numpy's error model, and machine code cached
on disk where numba can write it.

Compiling the TreeSHAP and tree-walking loops takes seconds in every new process (an
Airflow training task, the API when it loads a model). numba caches the machine code
beside the source (`__pycache__`) or under `NUMBA_CACHE_DIR`; where neither can be written
(an image whose package directory is read-only, as the API's is), asking for a cache would
make the import fail, so there each process compiles as before.
"""

from __future__ import annotations

import os
from pathlib import Path

from numba import njit

#: Whether compiled code is cached on disk (numba checks the source's time stamp and size).
CACHED = bool(os.environ.get("NUMBA_CACHE_DIR")) or os.access(Path(__file__).parent, os.W_OK)


def compiled(**options):
    """`numba.njit` without the GIL, with numpy's error model, cached where possible."""
    return njit(nogil=True, error_model="numpy", cache=CACHED, **options)
