"""What runs inside a worker's pool processes.

`start_process` prepares a fresh pool process: it leaves Ctrl-C to the worker's
main process, watches that the main process is still alive (a pool process
whose parent was killed exits within a second instead of lingering as an
orphan), and loads the kernel so the first tile is not slowed by compiling.
`compute_tile` computes one tile and encodes it for the wire, so compression
runs in parallel on every core. `compute_tiles` runs a task over several
tiles in one call, so that handing work to a pool process (pickling, pipes,
the executor's threads: about 0.8 ms of CPU a call) is paid once per batch
rather than once per tile; a tile whose task raises is reported as text and
does not stop the others.

Both import the kernel (and so Numba) when they first run, not when this
module is imported: the worker's main process imports this module to hand
its functions to the pool, and loading Numba there would cost every worker
half a second of CPU at start-up for nothing.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

from fraktal.protocol.codec import encode_tile
from fraktal.protocol.messages import MAX_TEXT
from fraktal.render.spec import RenderSpec
from fraktal.render.tiles import Rect

PARENT_POLL_SECONDS = 0.5


def start_process(parent_pid: int) -> None:
    """Pool initializer; see the module docstring."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(
        target=_exit_with_parent, args=(parent_pid,), daemon=True, name="parent-watch"
    ).start()
    from fraktal.render.compute import warm_up

    warm_up()


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


def compute_tile(
    spec: dict[str, object], rect: tuple[int, int, int, int]
) -> tuple[bytes, int, float]:
    """Encoded values, iteration count and seconds spent for one tile."""
    from fraktal.render.compute import compute_rect

    started = time.perf_counter()
    values, iterations = compute_rect(RenderSpec.from_dict(spec), Rect(*rect))
    return encode_tile(values), iterations, time.perf_counter() - started


def compute_tiles(
    task: Callable[
        [dict[str, object], tuple[int, int, int, int]], tuple[bytes, int, float]
    ],
    spec: dict[str, object],
    rects: list[tuple[int, int, int, int]],
) -> list[tuple[bytes, int, float] | str]:
    """``task`` over every rect: its result, or the error it raised as text."""
    outcomes: list[tuple[bytes, int, float] | str] = []
    for rect in rects:
        try:
            outcomes.append(task(spec, rect))
        except Exception as exc:  # the tile's own error travels back as text
            outcomes.append(f"{exc.__class__.__name__}: {exc}"[:MAX_TEXT])
    return outcomes
