"""The C references of `reference.c`: built by the benchmark, called via ctypes.

`build` compiles the file with ``gcc -O3 -march=native -ffp-contract=off``
into ``benchmarks/build/``. The last flag keeps gcc from fusing a multiply and
an add into one FMA instruction, which would round differently from the
Numba kernel and make the iteration counts incomparable.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "reference.c"
BUILD = HERE / "build"
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-shared", "-fPIC"]


def build() -> ctypes.CDLL:
    """Compile the references (if the source changed) and load them."""
    compiler = shutil.which("gcc")
    if compiler is None:
        raise SystemExit("the C references need gcc: apt-get install gcc libc6-dev")
    library = BUILD / "libreference.so"
    if not library.exists() or library.stat().st_mtime < SOURCE.stat().st_mtime:
        BUILD.mkdir(exist_ok=True)
        command = [compiler, *FLAGS, "-o", str(library), str(SOURCE), "-lm"]
        subprocess.run(command, check=True)
    loaded = ctypes.CDLL(str(library))
    for name in ("scalar_escape_time", "avx2_escape_time"):
        function = getattr(loaded, name)
        function.argtypes = [ctypes.c_void_p, ctypes.c_int64] * 2 + [
            ctypes.c_int64,
            ctypes.c_void_p,
        ]
        function.restype = ctypes.c_int64
    return loaded


def caller(function):
    """Wrap a C reference in the kernel's signature (shortcut flags ignored)."""

    def escape_time(re, im, max_iter, out, cardioid=False, periodicity=False):
        re = np.ascontiguousarray(re, dtype=np.float64)
        im = np.ascontiguousarray(im, dtype=np.float64)
        assert out.dtype == np.float32 and out.flags.c_contiguous
        return function(
            re.ctypes.data, re.size, im.ctypes.data, im.size, max_iter, out.ctypes.data
        )

    return escape_time
