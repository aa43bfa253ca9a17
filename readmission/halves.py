"""A batch's rows split between the calling thread and a helper thread, for compiled code
that runs without the GIL (numba's `nogil=True`): the two halves run on two cores."""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


@functools.cache
def _helper(name: str) -> ThreadPoolExecutor:
    """One helper thread per kind of work (a batch explained and a batch scored at the
    same time do not queue behind each other)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)


def in_halves(
    work: Callable[[np.ndarray, np.ndarray], None],
    rows: np.ndarray,
    out: np.ndarray,
    name: str,
    minimum: int = 2,
) -> None:
    """`work(rows, out)` writes row i's result in `out[i]`; with at least `minimum` rows,
    the second half is done by the `name` helper thread meanwhile."""
    if len(rows) < minimum:
        work(rows, out)
        return
    half = (len(rows) + 1) // 2
    other = _helper(name).submit(work, rows[half:], out[half:])
    try:
        work(rows[:half], out[:half])
    finally:
        other.result()
