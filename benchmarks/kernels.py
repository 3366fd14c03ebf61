"""Kernel throughput: the lock-step kernel against C and Numba scalar loops.

Every contender renders each view in one call with the shortcuts off and is
timed by the CPU time of this thread (so another process on the core slows
the clock, not the figure), best of ``repeat`` rounds with the contenders
interleaved in each round. Useful iterations are what the textbook loop
performs: for each pixel the iteration it escaped at, or max-iter. All
contenders must agree on them and on every float32 value.
"""

from __future__ import annotations

import math
import re
import time

import numba
import numpy as np

from creference import build, caller
from fraktal.render import kernel
from fraktal.render.spec import make_spec
from table import Row

VIEWS = {
    "whole set": {"center_re": -0.5, "center_im": 0.0, "span": 3.0, "max_iter": 1000},
    "boundary": {
        "center_re": -0.7436,
        "center_im": 0.1318,
        "span": 0.01,
        "max_iter": 5000,
    },
}
FULL_SIZE = 1024
QUICK_SIZE = 64


def view(name: str, size: int):
    """The benchmark view ``name`` at ``size`` x ``size`` pixels."""
    return make_spec(width=size, height=size, **VIEWS[name])


@kernel.jit
def scalar_numba_escape_time(re, im, max_iter, out, cardioid, periodicity):
    """The textbook loop in Numba, one pixel at a time (flags ignored)."""
    total = 0
    for j in range(im.size):
        for i in range(re.size):
            value, steps = _scalar_pixel(re[i], im[j], max_iter)
            out[j, i] = value
            total += steps
    return total


@kernel.jit
def _scalar_pixel(cr, ci, max_iter):
    x = 0.0
    y = 0.0
    for n in range(max_iter):
        x2 = x * x
        y2 = y * y
        if x2 + y2 > kernel.BAILOUT_SQUARED:
            return kernel.smooth_count(n, x2 + y2), n
        y = 2.0 * x * y + ci
        x = x2 - y2 + cr
    return kernel.INTERIOR, max_iter


def contenders():
    library = build()
    return {
        "scalar C": caller(library.scalar_escape_time),
        "AVX2 C": caller(library.avx2_escape_time),
        "scalar Numba": scalar_numba_escape_time,
        "fraktal kernel": kernel.escape_time,
    }


def timed(escape_time, spec, cardioid=False, periodicity=False):
    """(CPU seconds, iterations, image) of one call over the whole view."""
    v = spec.view
    re, im = v.columns(0, v.width), v.rows(0, v.height)
    out = np.empty((v.height, v.width), dtype=np.float32)
    start = time.thread_time()
    iterations = escape_time(re, im, spec.max_iter, out, cardioid, periodicity)
    return time.thread_time() - start, int(iterations), out


def measure(quick: bool, repeat: int) -> list[Row]:
    size = QUICK_SIZE if quick else FULL_SIZE
    kernels = contenders()
    for escape_time in kernels.values():
        timed(escape_time, view("boundary", 4))

    rows = []
    for name in VIEWS:
        spec = view(name, size)
        best = {label: (math.inf,) for label in kernels}
        for _ in range(repeat):
            for label, escape_time in kernels.items():
                result = timed(escape_time, spec)
                best[label] = min(best[label], result, key=lambda r: r[0])
        rows += _rows(name, size, spec.max_iter, best)
    rows.append(_packed_row())
    return rows


def _rows(name, size, max_iter, best):
    _, iterations, image = best["fraktal kernel"]
    agree = all(
        other_iterations == iterations and other.tobytes() == image.tobytes()
        for _, other_iterations, other in best.values()
    )
    rate = {label: r[1] / r[0] / 1e9 for label, r in best.items()}
    area = f"kernel, {name} {size}x{size}, max-iter {max_iter}"
    rows = [
        Row(area, f"{label}, one core", rate[label], "G it/s")
        for label in ("scalar C", "AVX2 C", "scalar Numba")
    ]
    avx2 = rate["fraktal kernel"] / rate["AVX2 C"]
    rows.append(
        Row(
            area,
            "fraktal kernel, one core",
            rate["fraktal kernel"],
            "G it/s",
            f"{avx2:.2f}x AVX2 C, {rate['fraktal kernel'] / rate['scalar C']:.1f}x "
            f"scalar C; all four agree on every value: {'yes' if agree else 'NO'}",
            ">= 1.0x AVX2 C",
            avx2 >= 1.0 and agree,
        )
    )
    return rows


def _packed_row() -> Row:
    # Numba shows no machine code for a kernel loaded from its cache.
    fresh = numba.njit(nogil=True)(kernel.escape_time.py_func)
    fresh(np.zeros(2), np.zeros(2), 4, np.empty((2, 2), np.float32), False, False)
    assembly = "\n".join(fresh.inspect_asm().values())
    found = re.findall(r"\bv(?:add|sub|mul)pd\s+[^\n]*?%([xyz]mm)", assembly)
    counts = ", ".join(f"{found.count(r)} on {r}" for r in sorted(set(found)))
    return Row(
        "kernel",
        "packed double add/sub/mul instructions in escape_time",
        len(found),
        "",
        counts,
        "packed vectors",
        len(found) > 0,
    )
