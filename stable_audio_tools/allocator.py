"""CPU memory allocator settings of the command-line scripts (see docs/inference.md#memory-kept-for-reuse).

glibc's ``malloc`` maps every block above its mmap threshold (at most 32 MiB) afresh and unmaps it when it is
freed, so each large activation (an autoencoder decoder's are hundreds of MB for 12 s of audio) is page-faulted
and zeroed by the kernel again on every call: about half of a float32 decode's time on a 2-core CPU.
:func:`keep_freed_memory` makes ``malloc`` serve large blocks from its heap and keep freed memory there for the
next allocation instead. The scripts (``generate.py``, ``run_gradio.py``, ``pre_encode.py``, ``train.py``) call it
at start unless ``--release-memory`` is given; importing the package changes nothing. Values are unchanged (only
where memory comes from); the process's resident memory stays near its peak instead of shrinking between calls.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

__all__ = ["keep_freed_memory"]

log = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: free memory at the top of the heap that glibc keeps before returning it to the OS (the largest C int)
_KEEP_BYTES = 2 ** 31 - 1


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory for reuse: no mmap for large blocks (``M_MMAP_MAX`` 0) and up to
    2 GiB of free heap kept (``M_TRIM_THRESHOLD``). Process-wide; returns False (and logs why) where the C
    library is not glibc, which is then left as it is."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        log.info("not keeping freed memory: the C library is not glibc (%s)", platform.libc_ver()[0] or "unknown")
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as err:
        log.info("not keeping freed memory: glibc's mallopt is not available (%s)", err)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(_M_MMAP_MAX, 0) != 1 or mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES) != 1:
        log.info("not keeping freed memory: glibc's mallopt refused the settings")
        return False
    return True

