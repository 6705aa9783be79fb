"""Keep freed memory in the process: a remedy for the page faults of CPU training under glibc.

A training step in PyTorch allocates its large temporaries afresh (activations, their
gradients, the optimizer's scratch). Under glibc's default malloc, a block above the mmap
threshold (128 KiB at first, raised up to 32 MiB as the process frees larger ones) is mapped
from the operating system when allocated and unmapped when freed, and free memory at the top
of the heap is trimmed; so the next step's blocks are fresh pages again, and each page faults
on first touch. Measured here (docs/performance.md, "Torch's page faults"): a step of
``lstmkit.nn.LSTM(32, 128)`` with a linear head and Adam at a batch of 64 x 100 faulted about
1,000 times (1.3 µs a fault on that machine) and took 12.6-13.1 ms; with freed memory kept,
8 faults and 10.3-10.7 ms. ``torch.nn.LSTM``'s own training call faults about 8,100 times at
that size.

``keep_freed_memory()`` sets glibc's malloc to serve every block from its heap and never hand
freed memory back (``mallopt(M_MMAP_MAX, 0)`` and ``mallopt(M_TRIM_THRESHOLD, 2**31 - 1)``), as
jemalloc and tcmalloc keep freed memory by design. It acts on the whole process from the call
on, and its cost is that the process keeps the largest heap it has needed until it exits. The
C++ kernel backend needs none of it for its own buffers (it reuses them: csrc/pool.h); the rest
of a training step does.
"""

from __future__ import annotations

import ctypes
import logging
import platform

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
NEVER_TRIM = 2**31 - 1  # the largest value mallopt takes (an int)


def keep_freed_memory_unavailable() -> str | None:
    """Why ``keep_freed_memory`` cannot act in this process (its C library is not glibc), or
    None."""
    libc = platform.libc_ver()[0]
    if libc == "glibc":
        return None
    return (
        "keeping freed memory needs glibc's malloc; this process runs on "
        f"{libc or 'another C library'} (an allocator that keeps memory, such as jemalloc, "
        "does the same)"
    )


def keep_freed_memory() -> str | None:
    """Keep memory this process frees for its later allocations (glibc only; see the module's
    docstring). Returns None once set, or why it could not be."""
    reason = keep_freed_memory_unavailable()
    if reason is not None:
        return reason
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if not mallopt(M_MMAP_MAX, 0) or not mallopt(M_TRIM_THRESHOLD, NEVER_TRIM):
        return "glibc's mallopt refused M_MMAP_MAX=0 or M_TRIM_THRESHOLD=2**31-1"
    logger.info("malloc keeps freed memory from now on (no mmap, no trimming)")
    return None
