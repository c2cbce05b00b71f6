"""How the serving process asks the C allocator to give freed memory back to the system.

gRPC reads a large request (an ingest frame may reach `max_frame_bytes`) into
buffers of tens to hundreds of KiB, allocated on its own threads. glibc serves
blocks under its mmap threshold from per-thread arenas and keeps them once
freed; it also raises that threshold (up to 32 MiB) each time a mapped block is
freed, so after one large request even multi-MiB blocks stay in the arenas.
The memory is reused, but the process's RSS keeps the high-water mark of the
largest burst it ever received. A fixed threshold stops the raising and maps
every block of `MMAP_THRESHOLD_BYTES` or more on its own, which returns to the
system when freed. Smaller blocks, the common case, are untouched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("utwin.server")

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Under the size of gRPC's read buffers for a large message, far above most
# allocations of the hot paths (a GetLastMessages answer of 100 topics is ~20 KiB).
MMAP_THRESHOLD_BYTES = 64 << 10
# Free memory at the top of an arena kept for reuse before it is trimmed.
TRIM_THRESHOLD_BYTES = 1 << 20


def return_large_blocks() -> bool:
    """Set glibc's thresholds so freed large blocks leave the process; False where not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl, macOS): nothing to tune
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    done = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)) and done
    if not done:
        log.debug("could not set the allocator's thresholds; RSS may keep its high-water mark")
    return done
