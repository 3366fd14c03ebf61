"""What the chaos tests share: heavy views, reference images, /proc, journals."""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fraktal.master.store import Record, scan_journal
from fraktal.render.compute import render
from fraktal.render.spec import RenderSpec, make_spec
from fraktal.render.tiles import TileGrid

# Astride the edge of the period-2 bulb: interior points there converge so
# slowly that they cost thousands of iterations each. 192 tiles of 16 x 16,
# about 20 ms each on one core (a few take 400 ms): every worker is in the
# middle of a chunk most of the time, so a kill lands mid-chunk.
HEAVY = make_spec(
    width=256,
    height=192,
    center_re=-0.8649244235329651,
    center_im=0.21036774620197413,
    span=1e-4,
    max_iter=100_000,
    tile_size=16,
)

# Seahorse valley: 80 tiles, cheap enough for a test to compute by hand.
LIGHT = make_spec(
    width=160,
    height=120,
    center_re=-0.7436,
    center_im=0.1318,
    span=0.02,
    max_iter=2000,
    tile_size=16,
)


@functools.lru_cache(maxsize=8)
def reference(spec: RenderSpec) -> np.ndarray:
    """The one-process render every distributed render must equal bit for bit."""
    image = render(spec)
    image.flags.writeable = False
    return image


def grid(spec: RenderSpec) -> TileGrid:
    return TileGrid(spec.view.width, spec.view.height, spec.tile_size)


def journaled(folder: Path, spec: RenderSpec, kind: Record = Record.DONE) -> list[int]:
    """Tile ids of every intact journal record of ``kind``, in order."""
    entries, _ = scan_journal((folder / "done.journal").read_bytes(), grid(spec).count)
    return [t for e in entries if e.kind is kind for t in e.values.tolist()]


def each_tile_journaled_once(folder: Path, spec: RenderSpec) -> bool:
    return sorted(journaled(folder, spec)) == list(range(grid(spec).count))


def wait_until(
    condition: Callable[[], object], timeout: float, what: str, step: float = 0.05
) -> object:
    """Poll ``condition`` until it is true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- processes, from /proc ----------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def is_running(pid: int) -> bool:
    """True unless the process is gone or a zombie waiting to be reaped."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] == pid and stat[0] != "Z":
                found.append(int(entry))
    return found


def descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        kids = [c for p in frontier for c in children(p)]
        found += kids
        frontier = kids
    return found


def pool_processes(pid: int) -> list[int]:
    """The worker's pool processes (spawned by multiprocessing)."""
    return [c for c in children(pid) if b"spawn_main" in _cmdline(c)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
