"""glibc malloc thresholds for long runs of large tensors: :func:`tune_malloc`.

PyTorch's CPU tensors come from ``malloc``. glibc maps a block of at least its *mmap threshold* afresh with
``mmap`` and unmaps it when freed, and gives free memory at the top of its heap back to the kernel once more than
its *trim threshold* is free there. Both thresholds start low (128 KiB) and glibc raises them as mapped blocks are
freed (the mmap threshold to the largest one so far, at most 32 MiB; the trim threshold to twice that), so whether
a model's activations are reused from the heap or mapped, page-faulted and zeroed again on every call depends on
what the process happened to free before. Measured on a 2-core CPU: a 44 M DiT forward in a fresh process took
about 30,000 page faults (10-15 % of its time), and a 20-step generation 600,000; with fixed thresholds, none.

:func:`tune_malloc` fixes the thresholds at the values glibc would reach at most (mmap 32 MiB, trim 64 MiB):
allocations up to 32 MiB are served from the heap, and up to 64 MiB of free heap is kept for the next call. Blocks
above 32 MiB are still mapped per allocation (the autoencoders' residual units tile their long activations for
that reason, :mod:`stable_audio_tools.models.tiled_residual`). The root scripts (``train.py``, ``generate.py``,
``run_gradio.py``, ``pre_encode.py``) and the generation functions call it once per process. It changes nothing
where the choice is the user's or glibc is absent:

* ``STABLE_AUDIO_MALLOC=default`` in the environment keeps glibc's own behaviour;
* ``GLIBC_TUNABLES`` naming ``glibc.malloc.mmap_threshold`` or ``glibc.malloc.trim_threshold``, or
  ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``, are left in charge;
* other C libraries (macOS, Windows, musl) are left alone.

This module is part of the foundation layer: it imports nothing from the package.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import threading
from typing import Optional

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "OPT_OUT_ENV", "malloc_tuning_skipped", "tune_malloc"]

log = logging.getLogger(__name__)

#: glibc's largest dynamic mmap threshold (``DEFAULT_MMAP_THRESHOLD_MAX`` on 64-bit systems)
MMAP_THRESHOLD = 32 << 20
#: twice the mmap threshold, as glibc sets it when it raises the mmap threshold itself
TRIM_THRESHOLD = 64 << 20
#: set to ``default`` to keep glibc's own thresholds
OPT_OUT_ENV = "STABLE_AUDIO_MALLOC"

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_lock = threading.Lock()
_done: Optional[bool] = None


def malloc_tuning_skipped() -> Optional[str]:
    """Why :func:`tune_malloc` leaves the allocator alone in this process, or ``None`` when it tunes it."""
    if os.environ.get(OPT_OUT_ENV, "").strip().lower() == "default":
        return f"{OPT_OUT_ENV}=default"
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.mmap_threshold" in tunables or "glibc.malloc.trim_threshold" in tunables:
        return "GLIBC_TUNABLES sets the malloc thresholds"
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        if name in os.environ:
            return f"{name} is set"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "the C library is not glibc"
    return None


def tune_malloc() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD` and its trim threshold at :data:`TRIM_THRESHOLD` for
    this process (see the module docstring); once per process, later calls return the first call's answer.

    Returns:
        ``True`` when the thresholds were set, ``False`` when :func:`malloc_tuning_skipped` gives a reason to leave
        them (logged at debug level) or ``mallopt`` refused them.
    """
    global _done
    with _lock:
        if _done is not None:
            return _done
        reason = malloc_tuning_skipped()
        if reason is None:
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _done = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                    libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
            except (OSError, AttributeError) as e:
                reason, _done = f"mallopt is unavailable ({e})", False
            if reason is None and not _done:
                reason = "mallopt refused the thresholds"
        else:
            _done = False
        if _done:
            log.debug("malloc: mmap threshold %d, trim threshold %d", MMAP_THRESHOLD, TRIM_THRESHOLD)
        else:
            log.debug("malloc thresholds left to glibc: %s", reason)
        return _done
