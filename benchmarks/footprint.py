"""Memory and start-up of `fraktal render`, watched from outside."""

from __future__ import annotations

import tempfile
from pathlib import Path

from distribution import MIB, run_render
from fraktal.render.spec import make_spec
from table import Row

MASTER_LIMIT = 1024 * MIB
WORKER_LIMIT = 300 * MIB
FIRST_TILE_LIMIT = 2.0


def memory(quick: bool) -> list[Row]:
    """Peak RSS of the master and of the worker processes on a huge render."""
    size = 512 if quick else 20000
    spec = make_spec(width=size, height=size, max_iter=256, tile_size=256)
    with tempfile.TemporaryDirectory() as folder:
        run = run_render(spec, 2, Path(folder))
    name = f"{size}x{size} whole set, max-iter 256, {run.seconds:.0f} s"
    return [
        Row(
            "memory",
            f"master peak RSS, {name}",
            run.master_peak / MIB,
            "MiB",
            "VmHWM of the `fraktal render` process",
            "< 1024 MiB",
            run.master_peak < MASTER_LIMIT,
        ),
        Row(
            "memory",
            f"worker peak RSS, {name}",
            run.worker_peak / MIB,
            "MiB",
            "largest VmHWM of a worker or pool process",
            "< 300 MiB",
            run.worker_peak < WORKER_LIMIT,
        ),
    ]


def start_up() -> list[Row]:
    """Seconds from starting `fraktal render` (default view) to a finished tile."""
    with tempfile.TemporaryDirectory() as folder:
        # The first run fills Numba's cache on disk if it was empty.
        run_render(make_spec(width=64, height=64), 2, Path(folder))
    spec = make_spec()
    with tempfile.TemporaryDirectory() as folder:
        run = run_render(spec, 2, Path(folder))
    return [
        Row(
            "start-up",
            "`fraktal render` (default 1920x1080 view) to its first finished tile",
            run.first_tile,
            "s",
            f"warm Numba cache; whole command {run.seconds:.2f} s",
            "<= 2 s",
            run.first_tile <= FIRST_TILE_LIMIT,
        )
    ]
