"""Memory of a long-running data stream: allocator settings and returning freed pages.

A stream tokenizes for days next to training, on several threads, and each tokenizer call
makes hundreds of thousands of small allocations (an `Encoding` per document, a string per
token). With glibc's defaults the process's resident memory then creeps up with the number of
documents seen, not with what is alive: each thread's malloc arena keeps what was freed in it,
the mmap threshold rises after the first large free (so later large buffers land in the heaps
and fragment them), and Arrow's mimalloc pool keeps its own freed pages for reuse.

`steady_allocator` (``data.steady_memory``, on by default for streams) fixes glibc's mmap
threshold at `MMAP_THRESHOLD` (a buffer of that size or more is its own mapping, unmapped when
freed) and its trim threshold at `TRIM_THRESHOLD` (a heap returns its free top beyond that),
and makes Arrow allocate through the system allocator; `return_freed_memory` is glibc's
``malloc_trim``, called by the tokenizing threads (`dprope.data.encode`). These settings are the
process's: they stay for its life. Elsewhere than glibc they are skipped, with the reason logged.
"""

from __future__ import annotations

import ctypes
import functools
import logging

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 1 << 20  # bytes: buffers of 1 MiB or more are mapped on their own
TRIM_THRESHOLD = 8 << 20  # bytes of free heap top kept for reuse before it goes back to the system
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)


@functools.cache
def _libc():
    """The C library if it is glibc (has ``mallopt`` and ``malloc_trim``), else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both exist, or this is not glibc
    except (OSError, AttributeError):
        return None
    return libc


def return_freed_memory() -> None:
    """Give the free pages of every thread's malloc arena back to the system (glibc only)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def steady_allocator() -> bool:
    """Apply the settings of the module docstring, once per process; False where they cannot be."""
    libc = _libc()
    if libc is None:
        log.info("data: memory settings skipped (the C library is not glibc)")
        return False
    if not (
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    ):
        log.info("data: memory settings skipped (mallopt refused them)")
        return False
    import pyarrow

    pyarrow.set_memory_pool(pyarrow.system_memory_pool())
    log.info(
        "data: steady memory (malloc mmap threshold %d MiB, trim threshold %d MiB, Arrow system pool)",
        MMAP_THRESHOLD >> 20,
        TRIM_THRESHOLD >> 20,
    )
    return True
