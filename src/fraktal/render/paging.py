"""Giving back the memory that reading or writing a memory-mapped array took.

A job's raw results live in a file mapped into the master's memory. Every
page of it the master writes (a tile arrives) or reads (the PNG is written
strip by strip) stays in the master's resident set until the process ends,
so a 20000 x 20000 render would hold its whole 1.6 GB file resident although
it never needs more than a strip at a time.

`release` tells the kernel (madvise MADV_DONTNEED) that this process no
longer needs the pages under an array. For a shared file mapping that only
unmaps them here: their contents, written or not yet flushed, stay in the
page cache and the file, and the next access maps them in again. On private
memory the same call would throw the data away, so anything but a shared
`numpy.memmap` is left alone.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os

import numpy as np

logger = logging.getLogger(__name__)

_SHARED_MODES = ("r", "r+", "w+")
_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_DONTNEED = getattr(mmap, "MADV_DONTNEED", 4)


def release(array: np.ndarray) -> None:
    """Unmap from this process the pages under ``array`` if it is shared."""
    if not isinstance(array, np.memmap) or array.mode not in _SHARED_MODES:
        return
    if array.size == 0 or any(stride < 0 for stride in array.strides):
        return

    first = array.ctypes.data
    steps = zip(array.shape, array.strides, strict=True)
    last = first + sum((n - 1) * stride for n, stride in steps)
    page = mmap.PAGESIZE
    start = first - first % page
    stop = last + array.itemsize
    length = -(-(stop - start) // page) * page
    if _libc.madvise(start, length, _DONTNEED) != 0:
        error = ctypes.get_errno()
        logger.debug("madvise on %d bytes failed: %s", length, os.strerror(error))
