"""Escape-time kernel: the smooth iteration count of every pixel.

Theory of operation
-------------------
Each pixel samples c = re[i] + 1j * im[j] and iterates z <- z * z + c from
z = 0. At iteration n (n = 0 .. max_iter - 1) the kernel first tests
|z_n| > R and only then steps, so the last escape that counts is at
n = max_iter - 1. An escaped pixel gets the continuous count

    mu = n + 1 - log2(log |z_n| / log R),   clamped at 0,

which is n + 1 when |z_n| is just above R, and n + 1 again for a
neighbour that escapes one iteration later with |z_(n+1)| near R**2, so
colours flow across iteration boundaries. The large bailout radius R keeps the error of
that formula (it ignores c) far below one colour step. Pixels that never
escape get exactly -1.0.

Rules every change must keep:

* A pixel's value depends on its own c alone. Nothing is carried from one
  pixel to the next, and coordinates come from the caller (`View.columns`,
  `View.rows`), so any cut of the image into tiles gives bit-identical
  values.
* The shortcuts never change a value. The cardioid and period-2 bulb test
  keeps a margin inside both shapes so rounding cannot claim an outside
  point; the periodicity check compares z with a saved orbit point by exact
  equality, and an orbit of a deterministic map that returns exactly to an
  earlier point cycles forever, so it would never have escaped.
* No fast-math flag that can change a finite result is enabled: without
  contraction into FMA or reassociation every machine (and NumPy or pure
  Python with ``NUMBA_DISABLE_JIT=1``) computes the same orbit bit for bit.
"""

from __future__ import annotations

import math

import numba

# nnan/ninf are promises we keep (orbits stay finite, see BAILOUT); nsz only
# drops the sign of zero, which neither |z| nor the equality test can see.
jit = numba.njit(cache=True, nogil=True, fastmath={"nnan", "ninf", "nsz"})

BAILOUT = 1024.0
BAILOUT_SQUARED = BAILOUT * BAILOUT
LOG_BAILOUT_SQUARED = math.log(BAILOUT_SQUARED)

INTERIOR = -1.0

# Inside this distance of the cardioid and bulb edges a point is iterated
# rather than trusted to the closed-form test, whose rounding is ~1e-17.
SHAPE_MARGIN = 1e-12

# The first orbit point saved for the periodicity check; the distance to the
# next save doubles after each (Brent), so every cycle is eventually seen.
FIRST_CHECKPOINT = 8


@jit
def escape_time(re, im, max_iter, out, cardioid, periodicity):
    """Write the smooth count of pixel (re[i], im[j]) into ``out[j, i]``.

    Returns the number of iterations performed, for statistics.
    """
    total = 0
    for j in range(im.size):
        for i in range(re.size):
            value, steps = _pixel(re[i], im[j], max_iter, cardioid, periodicity)
            out[j, i] = value
            total += steps
    return total


@jit
def _pixel(cr, ci, max_iter, cardioid, periodicity):
    if cardioid and in_main_shapes(cr, ci):
        return INTERIOR, 0

    x = 0.0
    y = 0.0
    saved_x = 0.0
    saved_y = 0.0
    checkpoint = FIRST_CHECKPOINT
    for n in range(max_iter):
        x2 = x * x
        y2 = y * y
        if x2 + y2 > BAILOUT_SQUARED:
            return smooth_count(n, x2 + y2), n
        y = 2.0 * x * y + ci
        x = x2 - y2 + cr
        if periodicity:
            if x == saved_x and y == saved_y:
                return INTERIOR, n + 1
            if n + 1 == checkpoint:
                saved_x = x
                saved_y = y
                checkpoint *= 2
    return INTERIOR, max_iter


@jit
def smooth_count(n, magnitude_squared):
    """The continuous count of a pixel with |z_n|**2 = magnitude_squared > R**2."""
    ratio = math.log(magnitude_squared) / LOG_BAILOUT_SQUARED
    return max(n + 1.0 - math.log2(ratio), 0.0)


@jit
def in_main_shapes(cr, ci):
    """True if c lies safely inside the main cardioid or the period-2 bulb."""
    ci2 = ci * ci
    shifted = cr - 0.25
    q = shifted * shifted + ci2
    if q * (q + shifted) < 0.25 * ci2 - SHAPE_MARGIN:
        return True
    return (cr + 1.0) * (cr + 1.0) + ci2 < 0.0625 - SHAPE_MARGIN
