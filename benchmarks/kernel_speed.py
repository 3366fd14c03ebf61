"""Kernel throughput: the lock-step kernel against a plain scalar loop.

Prints a Markdown table of useful iterations per second on one core (the
iterations the textbook loop performs, shortcuts off), both kernels measured
in the same run, best of ``--repeat`` rounds because timings on shared
machines are noisy. It also checks that both kernels give bit-identical
images and counts the packed vector instructions in the compiled kernel.

    .venv/bin/python benchmarks/kernel_speed.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import time

import numba
import numpy as np

from fraktal.render import kernel
from fraktal.render.spec import make_spec
from fraktal.render.tiles import TileGrid

VIEWS = {
    "whole set, 1024x1024, max-iter 1000": make_spec(
        width=1024,
        height=1024,
        center_re=-0.5,
        center_im=0.0,
        span=3.0,
        max_iter=1000,
    ),
    "boundary -0.7436+0.1318i span 0.01, 1024x1024, max-iter 5000": make_spec(
        width=1024,
        height=1024,
        center_re=-0.7436,
        center_im=0.1318,
        span=0.01,
        max_iter=5000,
    ),
}
TILE = 64


@kernel.jit
def scalar_escape_time(re, im, max_iter, out, cardioid, periodicity):
    """The textbook loop, one pixel at a time (shortcut flags ignored)."""
    total = 0
    for j in range(im.size):
        for i in range(re.size):
            value, steps = scalar_pixel(re[i], im[j], max_iter)
            out[j, i] = value
            total += steps
    return total


@kernel.jit
def scalar_pixel(cr, ci, max_iter):
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


def run(escape_time, spec, tile):
    """Render ``spec`` in tiles of ``tile`` pixels; (seconds, iterations, image)."""
    view = spec.view
    image = np.empty((view.height, view.width), dtype=np.float32)
    grid = TileGrid(view.width, view.height, tile)
    iterations = 0
    start = time.perf_counter()
    for tile_id in range(grid.count):
        rect = grid.rect(tile_id)
        out = np.empty((rect.height, rect.width), dtype=np.float32)
        iterations += escape_time(
            view.columns(rect.x, rect.width),
            view.rows(rect.y, rect.height),
            spec.max_iter,
            out,
            False,
            False,
        )
        image[rect.y : rect.y + rect.height, rect.x : rect.x + rect.width] = out
    return time.perf_counter() - start, iterations, image


def packed_instructions():
    """How many packed double-precision arithmetic instructions, by register."""
    # Numba shows no machine code for a kernel loaded from its cache.
    fresh = numba.njit(nogil=True)(kernel.escape_time.py_func)
    fresh(np.zeros(2), np.zeros(2), 4, np.empty((2, 2), np.float32), False, False)
    assembly = "\n".join(fresh.inspect_asm().values())
    found = re.findall(r"\bv?(?:add|sub|mul)pd\s+[^\n]*?%([xyz]mm)", assembly)
    return {register: found.count(register) for register in sorted(set(found))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat

    cases = [
        (name, spec, max(spec.view.width, spec.view.height))
        for name, spec in VIEWS.items()
    ]
    boundary_name, boundary = list(VIEWS.items())[1]
    cases.append((f"{boundary_name}, in {TILE}x{TILE} tiles", boundary, TILE))
    kernels = {"scalar": scalar_escape_time, "lock-step": kernel.escape_time}

    tiny = np.empty((2, 2), dtype=np.float32)
    for escape_time in kernels.values():
        escape_time(np.zeros(2), np.zeros(2), 4, tiny, False, False)

    best = {}
    for _ in range(repeat):
        for name, spec, tile in cases:
            for label, escape_time in kernels.items():
                seconds, iterations, image = run(escape_time, spec, tile)
                previous = best.get((name, label), (math.inf,))
                if seconds < previous[0]:
                    best[(name, label)] = (seconds, iterations, image)

    print_table(cases, best)
    print()
    print(f"Packed double arithmetic in escape_time: {packed_instructions()}")
    print(
        f"Load average while measuring: {os.getloadavg()[0]:.2f} on "
        f"{os.cpu_count()} cores; best of {repeat} rounds."
    )


def print_table(cases, best):
    print("| view | scalar (M it/s) | lock-step (M it/s) | speed-up | identical |")
    print("|---|---:|---:|---:|:---:|")
    for name, _, _ in cases:
        scalar_seconds, iterations, scalar_image = best[(name, "scalar")]
        fast_seconds, fast_iterations, fast_image = best[(name, "lock-step")]
        same = (
            iterations == fast_iterations
            and scalar_image.tobytes() == fast_image.tobytes()
        )
        print(
            f"| {name} | {iterations / scalar_seconds / 1e6:,.0f} | "
            f"{iterations / fast_seconds / 1e6:,.0f} | "
            f"{scalar_seconds / fast_seconds:.2f}x | {'yes' if same else 'NO'} |"
        )


if __name__ == "__main__":
    main()
