"""Tile functions for the worker processes of the chaos tests.

`fraktal.worker.client.Worker` takes its tile function as an argument and
runs it in spawned pool processes, which import this module by name
(`chaos_worker.py` has this folder on the path they inherit). Each function
computes the real tile, so every image stays bit-identical to the reference;
what differs is what else happens. Settings come from ``FRAKTAL_TEST_*``
environment variables, which the pool processes inherit:

    FRAKTAL_TEST_PACE     seconds a tile takes at least (`paced`)
    FRAKTAL_TEST_RECORD   file that gets one line per computed tile
    FRAKTAL_TEST_POISON   "x,y,span": the tile at (x, y) of the render with
                          that span kills its process (`poison`)
"""

from __future__ import annotations

import os
import signal
import time

from fraktal.worker.task import compute_tile


def recording(
    spec: dict[str, object], rect: tuple[int, int, int, int]
) -> tuple[bytes, int, float]:
    """Compute the tile and note it: ``<worker name> <x> <y> <unix time>``."""
    result = compute_tile(spec, rect)
    _record(rect)
    return result


def paced(
    spec: dict[str, object], rect: tuple[int, int, int, int]
) -> tuple[bytes, int, float]:
    """Compute the tile, then wait until it took FRAKTAL_TEST_PACE seconds."""
    started = time.perf_counter()
    data, iterations, _ = compute_tile(spec, rect)
    pace = float(os.environ["FRAKTAL_TEST_PACE"])
    time.sleep(max(0.0, pace - (time.perf_counter() - started)))
    _record(rect)
    return data, iterations, time.perf_counter() - started


def poison(
    spec: dict[str, object], rect: tuple[int, int, int, int]
) -> tuple[bytes, int, float]:
    """Compute the tile, unless it is the poisoned one: then die like a segfault."""
    x, y, span = os.environ["FRAKTAL_TEST_POISON"].split(",")
    if (rect[0], rect[1], spec["span"]) == (int(x), int(y), float(span)):
        os.kill(os.getpid(), signal.SIGKILL)
    return compute_tile(spec, rect)


def _record(rect: tuple[int, int, int, int]) -> None:
    path = os.environ.get("FRAKTAL_TEST_RECORD")
    if path:
        name = os.environ.get("FRAKTAL_TEST_NAME", "?")
        with open(path, "a") as record:
            record.write(f"{name} {rect[0]} {rect[1]} {time.time():.6f}\n")
