"""Keep freed memory for reuse: glibc's allocator settings for inference with large temporaries.

Decoding many prompts allocates and frees image-sized buffers (4-16 MiB) thousands of times. glibc
returns freed memory at the top of its heap to the system once more than ``M_TRIM_THRESHOLD`` is free,
and serves blocks above ``M_MMAP_THRESHOLD`` with fresh mappings; either way the next buffer is paid
for again with one page fault per 4 KiB (about a quarter of MobileSAM's decoder time on a 2-core VM).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_MAX_MMAP_THRESHOLD = 32 * 2**20  # glibc's upper limit on 64-bit systems
_done = False


def reuse_freed_memory(keep_bytes: int = 256 * 2**20) -> bool:
    """Process-wide, once: serve blocks up to 32 MiB from the heap and keep up to ``keep_bytes`` of freed
    heap for reuse instead of returning it to the system. True if applied; False where the C library
    is not glibc or ``LITESAM_KEEP_FREED_MEMORY=0`` is set (the allocator is then left as it is)."""
    global _done
    if _done:
        return True
    if os.environ.get("LITESAM_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if not (mallopt(_M_MMAP_THRESHOLD, _MAX_MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, keep_bytes)):
        return False
    log.debug("glibc: heap blocks up to 32 MiB, %d MiB of freed memory kept for reuse", keep_bytes >> 20)
    _done = True
    return True
