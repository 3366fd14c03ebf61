"""The shortcuts one by one: speed-up over the plain kernel, pixels changed.

Each configuration renders the whole view in one call of the kernel, timed by
this thread's CPU time, best of ``repeat``. A pixel counts as changed when
its float32 bits differ from the plain kernel's. The iterations a shortcut
saves are shown beside the time it saves: once most iterations are gone, the
time left is the per-pixel work (the two logarithms of the smooth count,
handing the lane a new pixel), which no shortcut removes.
"""

from __future__ import annotations

import math

import numpy as np

from fraktal.render.kernel import escape_time
from kernels import FULL_SIZE, QUICK_SIZE, VIEWS, timed, view
from table import Row

CONFIGURATIONS = {
    "cardioid and bulb test": (True, False),
    "periodicity check": (False, True),
    "both (the default)": (True, True),
}
WHOLE_SET_GOAL = 8.0


def measure(quick: bool, repeat: int) -> list[Row]:
    size = QUICK_SIZE if quick else FULL_SIZE
    rows = []
    for name in VIEWS:
        spec = view(name, size)
        runs = {"plain": (False, False), **CONFIGURATIONS}
        best = {label: (math.inf,) for label in runs}
        for _ in range(repeat):
            for label, flags in runs.items():
                result = timed(escape_time, spec, *flags)
                best[label] = min(best[label], result, key=lambda r: r[0])
        rows += _rows(name, best)
    return rows


def _rows(name, best):
    plain_seconds, plain_iterations, plain = best["plain"]
    rows = []
    for label in CONFIGURATIONS:
        seconds, iterations, image = best[label]
        changed = int(np.count_nonzero(image.view(np.uint32) != plain.view(np.uint32)))
        speedup = plain_seconds / seconds
        default = label.endswith("(the default)")
        goal = "0 pixels changed" if default else ""
        met = changed == 0 if default else None
        if default and name == "whole set":
            goal += f", >= {WHOLE_SET_GOAL:g}x"
            met = met and speedup >= WHOLE_SET_GOAL
        rows.append(
            Row(
                f"shortcuts, {name}",
                label,
                speedup,
                "x faster",
                f"{changed} pixels changed; "
                f"{plain_iterations / iterations:.1f}x fewer iterations",
                goal,
                met,
            )
        )
    return rows
