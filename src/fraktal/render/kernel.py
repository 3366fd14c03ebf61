"""Escape-time kernel: the smooth iteration count of every pixel.

Theory of operation
-------------------
Each pixel samples c = re[i] + 1j * im[j] and iterates z <- z * z + c from
z = 0. At iteration n (n = 0 .. max_iter - 1) the textbook loop first tests
|z_n| > R and only then steps, so the last escape that counts is at
n = max_iter - 1. An escaped pixel gets the continuous count

    mu = n + 1 - log2(log |z_n| / log R),   clamped at 0,

which is n + 1 when |z_n| is just above R, and n + 1 again for a
neighbour that escapes one iteration later with |z_(n+1)| near R**2, so
colours flow across iteration boundaries. The large bailout radius R keeps
the error of that formula (it ignores c) far below one colour step. Pixels
that never escape get exactly -1.0.

The kernel gets the textbook answer faster by iterating `LANES` pixels in
lock-step, one lane each, so that the compiler turns the loop over lanes
into packed vector instructions:

* Lanes run `BLOCK` iterations with no test at all, recording each z in a
  small history. Only at the end of a block does a lane check whether it
  escaped; once |z| > R the orbit grows for ever, so a lane that escaped
  anywhere in the block is still outside at its end, even if z overflowed
  to inf or NaN meanwhile (the test is written so that NaN counts as out).
  The history then gives the exact escape iteration and the exact z_n.
* A lane whose pixel is finished takes the next pixel of the image; when
  none is left it idles on c = 0 until the other lanes are done.
* The periodicity check saves z at block ends that lie BLOCK * 2**k
  iterations into the orbit (Brent's doubling) and compares z with it at
  every block end by exact equality.

Rules every change must keep:

* A pixel's value depends on its own c alone. Nothing is carried from one
  pixel to the next, coordinates come from the caller (`View.columns`,
  `View.rows`), and every pixel goes through the same steps whichever lane
  and block it lands in, so any cut of the image into tiles gives
  bit-identical values.
* Arithmetic is plain IEEE double precision: no fast-math, so no FMA
  contraction and no reassociation. The vector loop, any scalar remainder,
  pure Python under ``NUMBA_DISABLE_JIT=1`` and every worker machine
  compute the same orbit bit for bit, and the NaN test above stays valid.
* The shortcuts never change a value. The cardioid and period-2 bulb test
  keeps a margin inside both shapes so rounding cannot claim an outside
  point; an orbit of a deterministic map that returns exactly to an earlier
  point cycles for ever, so it would never have escaped.
"""

from __future__ import annotations

import math

import llvmlite.binding
import numba
import numpy as np


def _use_full_width_vectors() -> None:
    """Let the compiler fill AVX-512 registers where the CPU has them.

    LLVM tunes several Intel AVX-512 CPUs to prefer 256-bit vectors. On an
    AVX-512 Xeon that LLVM names rocketlake that left this kernel at
    0.85-0.95x of the AVX2 C reference; with 512-bit vectors it measured
    1.01-1.12x (`make bench`). Numba keys its cache on these features, so the
    cache stays right. A user's own NUMBA_CPU_FEATURES is left alone.
    """
    if numba.config.CPU_FEATURES is not None:
        return
    try:
        features = llvmlite.binding.get_host_cpu_features().flatten()
    except RuntimeError:  # LLVM cannot tell on this platform: keep its choice
        return
    if "+avx512f" in features.split(","):
        numba.config.CPU_FEATURES = features + ",-prefer-256-bit"


_use_full_width_vectors()
jit = numba.njit(cache=True, nogil=True, inline="always")

# Four AVX-512 registers of doubles: enough independent orbits to hide the
# latency of a step. More lanes would idle longer at the end of a tile.
LANES = 32
# Long enough to pay for the block-end work, short enough that a lane which
# escapes early does not idle long.
BLOCK = 16

BAILOUT = 1024.0
BAILOUT_SQUARED = BAILOUT * BAILOUT
LOG_BAILOUT_SQUARED = math.log(BAILOUT_SQUARED)

INTERIOR = -1.0

# Inside this distance of the cardioid and bulb edges a point is iterated
# rather than trusted to the closed-form test, whose rounding is ~1e-17.
SHAPE_MARGIN = 1e-12

# Iterations before the first saved orbit point. Lanes only look at block
# ends, so it must be a multiple of BLOCK or no point would ever be saved.
FIRST_CHECKPOINT = 4 * BLOCK

# Lane state: one float64 array holding one row of LANES values per field.
# A single array at constant offsets lets the compiler prove that fields do
# not overlap, so it vectorises without runtime alias checks.
C_RE, C_IM, Z_RE, Z_IM, SAVED_RE, SAVED_IM, STEPS, CHECKPOINT, EVENT = range(
    0, 9 * LANES, LANES
)
HISTORY_RE = 9 * LANES
HISTORY_IM = HISTORY_RE + BLOCK * LANES
STATE_SIZE = HISTORY_IM + BLOCK * LANES

# A saved point outside the bailout circle: no orbit still inside can equal
# it, which switches the periodicity check off for a lane.
NOWHERE = 2.0 * BAILOUT
NEVER = -1.0
# An idle lane's step count, which no block can bring up to max_iter.
IDLE_STEPS = -(2.0**60)


@jit
def escape_time(re, im, max_iter, out, cardioid, periodicity):
    """Write the smooth count of pixel (re[i], im[j]) into ``out[j, i]``.

    Returns the iterations spent, for statistics, counted as the textbook
    loop counts them: n for a pixel that escapes at n, max_iter for one that
    runs out; the shortcuts make it smaller. Lanes idling to the end of a
    block are not counted.
    """
    state = np.empty(STATE_SIZE)
    where = np.empty((LANES, 2), dtype=np.int64)
    queue = 0
    for lane in range(LANES):
        queue = _take_pixel(
            state, where, lane, queue, re, im, out, cardioid, periodicity
        )

    total = 0
    busy = _any_busy(where)
    while busy:
        # One block for every lane, written out here rather than called:
        # Numba wraps each call that passes an array in atomic reference
        # count updates, which cost 4-8 % of the run time once per block.
        any_event = False
        for lane in range(LANES):
            cr = state[C_RE + lane]
            ci = state[C_IM + lane]
            x = state[Z_RE + lane]
            y = state[Z_IM + lane]
            for k in range(BLOCK):
                x2 = x * x
                y2 = y * y
                y = 2.0 * x * y + ci
                x = x2 - y2 + cr
                state[HISTORY_RE + k * LANES + lane] = x
                state[HISTORY_IM + k * LANES + lane] = y
            state[Z_RE + lane] = x
            state[Z_IM + lane] = y
            any_event |= _end_block(state, lane, x, y, max_iter)
        if not any_event:
            continue

        busy = False
        for lane in range(LANES):
            if state[EVENT + lane] != 0.0:
                value, steps = _outcome(state, lane, max_iter)
                out[where[lane, 0], where[lane, 1]] = value
                total += steps
                queue = _take_pixel(
                    state, where, lane, queue, re, im, out, cardioid, periodicity
                )
            busy |= where[lane, 0] >= 0
    return total


@jit
def _any_busy(where):
    # A loop, not any(): Numba compiles no generator expression inside any().
    for lane in range(LANES):  # noqa: SIM110
        if where[lane, 0] >= 0:
            return True
    return False


@jit
def _end_block(state, lane, x, y, max_iter):
    """Count the block, flag and return whether the lane's pixel is finished."""
    steps = state[STEPS + lane] + BLOCK
    state[STEPS + lane] = steps

    escaped = not (x * x + y * y <= BAILOUT_SQUARED)
    cycled = (x == state[SAVED_RE + lane]) & (y == state[SAVED_IM + lane])
    event = escaped | cycled | (steps >= max_iter)
    state[EVENT + lane] = 1.0 if event else 0.0

    save = steps == state[CHECKPOINT + lane]
    state[SAVED_RE + lane] = x if save else state[SAVED_RE + lane]
    state[SAVED_IM + lane] = y if save else state[SAVED_IM + lane]
    state[CHECKPOINT + lane] = 2.0 * steps if save else state[CHECKPOINT + lane]
    return event


@jit
def _outcome(state, lane, max_iter):
    """The (value, iterations) of a lane whose block ended in an event."""
    steps = int(state[STEPS + lane])
    x = state[Z_RE + lane]
    y = state[Z_IM + lane]
    if not (x * x + y * y <= BAILOUT_SQUARED):
        n, magnitude_squared = _escape_in_block(state, lane, steps - BLOCK)
        if n < max_iter:
            return smooth_count(n, magnitude_squared), n
        return INTERIOR, max_iter
    return INTERIOR, min(steps, max_iter)


@jit
def _escape_in_block(state, lane, start):
    """The first n in the last block with |z_n| > R, and |z_n|**2."""
    for k in range(BLOCK):
        x = state[HISTORY_RE + k * LANES + lane]
        y = state[HISTORY_IM + k * LANES + lane]
        magnitude_squared = x * x + y * y
        if magnitude_squared > BAILOUT_SQUARED:
            return start + k + 1, magnitude_squared
    raise AssertionError("a lane flagged as escaped has no escape in its block")


@jit
def _take_pixel(state, where, lane, queue, re, im, out, cardioid, periodicity):
    """Give ``lane`` the next pixel that needs iterating; return the new queue.

    Pixels inside the main cardioid or bulb are written on the way. With no
    pixel left the lane idles, marked by row -1 in ``where``.
    """
    width = re.size
    while queue < width * im.size:
        row, column = divmod(queue, width)
        queue += 1
        if cardioid and in_main_shapes(re[column], im[row]):
            out[row, column] = INTERIOR
            continue
        _start_lane(state, lane, re[column], im[row], periodicity)
        where[lane, 0] = row
        where[lane, 1] = column
        return queue

    _start_lane(state, lane, 0.0, 0.0, False)
    state[STEPS + lane] = IDLE_STEPS
    where[lane, 0] = -1
    return queue


@jit
def _start_lane(state, lane, cr, ci, periodicity):
    state[C_RE + lane] = cr
    state[C_IM + lane] = ci
    state[Z_RE + lane] = 0.0
    state[Z_IM + lane] = 0.0
    state[STEPS + lane] = 0.0
    state[SAVED_RE + lane] = 0.0 if periodicity else NOWHERE
    state[SAVED_IM + lane] = 0.0
    state[CHECKPOINT + lane] = FIRST_CHECKPOINT if periodicity else NEVER


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
