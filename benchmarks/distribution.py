"""Distribution: chunk round trip, parallel efficiency, wire bytes, memory.

`run_render` starts ``fraktal render`` as a user would and watches it from
outside: the first finished tile shows up in the job's memory-mapped raw
file (the file starts as zeros and no finished pixel is 0: an escaped count
is at least 1 and the interior is -1), and the peak resident memory of the
master and of every process below it is read from /proc (VmHWM).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fraktal.master.service import Master, MasterConfig
from fraktal.protocol.codec import encode_tile
from fraktal.protocol.framing import encode_frame
from fraktal.protocol.messages import Result, TileData, encode
from fraktal.render.compute import compute_rect
from fraktal.render.spec import RenderSpec, make_spec
from fraktal.render.tiles import TileGrid
from kernels import FULL_SIZE, QUICK_SIZE, VIEWS, view
from table import Row

HERE = Path(__file__).resolve().parent
MIB = 1024 * 1024
POLL_SECONDS = 0.002
CHUNK_TILES = 16


@dataclass
class RenderRun:
    """What watching one ``fraktal render`` showed."""

    seconds: float
    first_tile: float
    master_peak: int
    worker_peak: int
    cpu_seconds: float
    others_cores: float


def heavy_view(quick: bool) -> RenderSpec:
    """Deep in the boundary with a high limit: worth distributing."""
    size = 128 if quick else 4096
    return make_spec(
        width=size,
        height=size,
        center_re=-0.743643887037151,
        center_im=0.131825904205330,
        span=2e-6,
        max_iter=5000 if quick else 50000,
    )


def render_arguments(spec: RenderSpec) -> list[str]:
    v = spec.view
    return [
        f"--size={v.width}x{v.height}",
        f"--center={v.center_re!r},{v.center_im!r}",
        f"--span={v.span!r}",
        f"--max-iter={spec.max_iter}",
        f"--tile-size={spec.tile_size}",
    ]


def run_render(spec: RenderSpec, workers: int, folder: Path) -> RenderRun:
    """Run ``fraktal render --workers N`` on ``spec`` and watch it."""
    command = [
        sys.executable,
        "-m",
        "fraktal",
        "--log-level",
        "warning",
        "render",
        "--quiet",
        f"--workers={workers}",
        f"--job-dir={folder / 'jobs'}",
        f"--output={folder / 'out.png'}",
        *render_arguments(spec),
    ]
    raw_path = folder / "jobs" / spec.key() / "raw.npy"
    busy_before = _machine_busy_seconds()
    started = time.perf_counter()
    log = folder / "render.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    watcher = _Watcher(process.pid, spec, raw_path)
    while process.poll() is None:
        watcher.poll(time.perf_counter() - started)
        time.sleep(POLL_SECONDS)
    seconds = time.perf_counter() - started
    busy = _machine_busy_seconds() - busy_before
    if process.returncode != 0:
        raise RuntimeError(
            f"fraktal render exited with {process.returncode}: {log.read_text()}"
        )
    return RenderRun(
        seconds,
        watcher.first_tile if watcher.first_tile is not None else seconds,
        watcher.peaks.get(process.pid, 0),
        max((v for pid, v in watcher.peaks.items() if pid != process.pid), default=0),
        sum(watcher.cpu.values()),
        max(0.0, busy - sum(watcher.cpu.values())) / seconds,
    )


class _Watcher:
    def __init__(self, pid: int, spec: RenderSpec, raw_path: Path) -> None:
        self.pid = pid
        self.raw_path = raw_path
        self.grid = TileGrid(spec.view.width, spec.view.height, spec.tile_size)
        self.raw: np.ndarray | None = None
        self.first_tile: float | None = None
        self.peaks: dict[int, int] = {}
        self.cpu: dict[int, float] = {}
        self._polls = 0

    def poll(self, now: float) -> None:
        if self.first_tile is None and self._any_tile_done():
            self.first_tile = now
        if self._polls % 10 == 0:
            for pid in [self.pid, *_descendants(self.pid)]:
                self.peaks[pid] = max(self.peaks.get(pid, 0), _peak_rss(pid))
                self.cpu[pid] = max(self.cpu.get(pid, 0.0), _cpu_seconds(pid))
        self._polls += 1

    def _any_tile_done(self) -> bool:
        if self.raw is None:
            if not (self.raw_path.parent / "job.json").exists():
                return False
            self.raw = np.load(self.raw_path, mmap_mode="r")
        for tile in range(min(self.grid.count, 8)):
            rect = self.grid.rect(tile)
            if self.raw[rect.y + rect.height - 1, rect.x + rect.width - 1] != 0:
                return True
        return False


def _descendants(pid: int) -> list[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, p in parents.items() if p == parent]
        found += children
        frontier += children
    return found


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used since boot."""
    with open("/proc/stat") as stat:
        ticks = [int(n) for n in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _peak_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def in_process(spec: RenderSpec) -> tuple[float, float, list[np.ndarray]]:
    """Wall and CPU seconds to compute every tile here on one core, the tiles."""
    grid = TileGrid(spec.view.width, spec.view.height, spec.tile_size)
    started, cpu_started = time.perf_counter(), time.thread_time()
    tiles = [compute_rect(spec, grid.rect(t))[0] for t in range(grid.count)]
    return time.perf_counter() - started, time.thread_time() - cpu_started, tiles


def wire_bytes_per_pixel(tiles: list[np.ndarray]) -> float:
    """Bytes of the `Result` frames that carry ``tiles``, per pixel."""
    total = 0
    for first in range(0, len(tiles), CHUNK_TILES):
        chunk = tiles[first : first + CHUNK_TILES]
        done = tuple(
            TileData(first + i, encode_tile(values)) for i, values in enumerate(chunk)
        )
        total += len(encode_frame(encode(Result(1, done, (), 1.0, 1))))
    return total / sum(values.size for values in tiles)


def round_trip(chunks: int) -> list[float]:
    """Seconds from a result sent to the next chunk received, per chunk."""
    spec = make_spec(width=64 * 64, height=64 * 64, max_iter=1000)
    with tempfile.TemporaryDirectory() as folder:
        config = MasterConfig(port=0, jobs_dir=Path(folder), progress_seconds=1e9)
        master = Master(config)
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def serve() -> None:
            await master.start()
            ready.set()
            await master.finished.wait()
            await master.stop()

        thread = threading.Thread(target=loop.run_until_complete, args=(serve(),))
        thread.start()
        try:
            if not ready.wait(30):
                raise RuntimeError("the master did not start within 30 s")
            master.submit(spec)
            echo = [sys.executable, HERE / "echo_worker.py", str(master.port)]
            output = subprocess.run(
                [*echo, str(chunks)],
                check=True,
                capture_output=True,
                text=True,
                timeout=600,
            ).stdout
        finally:
            loop.call_soon_threadsafe(master.finished.set)
            thread.join(60)
            loop.close()
    return json.loads(output)


def measure(quick: bool) -> tuple[list[Row], RenderRun]:
    """The rows of this section, and the render run that dask is held to."""
    rows = _round_trip_rows(quick)
    for name in VIEWS:
        spec = view(name, QUICK_SIZE if quick else FULL_SIZE)
        *_, tiles = in_process(spec)
        rows.append(_bytes_row(f"{name} {spec.view.width}x{spec.view.height}", tiles))

    # The one-core reference runs before and after the render, because the
    # speed of a core on a shared machine drifts by tens of percent within
    # minutes; their mean is the reference, their spread is shown.
    spec = heavy_view(quick)
    before, before_cpu, tiles = in_process(spec)
    with tempfile.TemporaryDirectory() as folder:
        run = run_render(spec, 2, Path(folder))
    after, after_cpu, _ = in_process(spec)
    single, single_cpu = (before + after) / 2, (before_cpu + after_cpu) / 2
    v = spec.view
    name = f"{v.width}x{v.height} deep boundary, max-iter {spec.max_iter}"
    efficiency = single / (2 * run.seconds)
    computing = single / (2 * (run.seconds - run.first_tile))
    rows += [
        Row(
            "distribution",
            f"in-process kernel, one core, {name}",
            single,
            "s",
            f"mean of {before:.2f} s before and {after:.2f} s after the render; "
            f"{single_cpu:.2f} s of CPU",
        ),
        Row(
            "distribution",
            f"`fraktal render --workers 2`, {name}",
            run.seconds,
            "s",
            f"parallel efficiency {efficiency:.0%} of 2 cores on the whole "
            f"command, {computing:.0%} after the first tile; other processes "
            f"kept {run.others_cores:.2f} cores busy meanwhile",
            ">= 90 %",
            efficiency >= 0.9,
        ),
        Row(
            "distribution",
            f"CPU time of `fraktal render --workers 2`, all processes, {name}",
            run.cpu_seconds,
            "s",
            f"{single_cpu / run.cpu_seconds:.0%} of it is the in-process "
            f"kernel's CPU time",
        ),
        Row(
            "distribution",
            f"time to the first finished tile, {name}",
            run.first_tile,
            "s",
        ),
        _bytes_row(name, tiles),
    ]
    return rows, run


def _bytes_row(name: str, tiles: list[np.ndarray]) -> Row:
    per_pixel = wire_bytes_per_pixel(tiles)
    return Row(
        "distribution",
        f"bytes on the wire per pixel, {name}",
        per_pixel,
        "B/px",
        f"raw float32 is 4; result frames of {CHUNK_TILES} tiles of 64x64",
        "<= 1.5",
        per_pixel <= 1.5,
    )


def _round_trip_rows(quick: bool) -> list[Row]:
    latencies = round_trip(200 if quick else 3000)
    median = statistics.median(latencies) * 1e6
    tail = statistics.quantiles(latencies, n=10)[-1] * 1e6
    return [
        Row(
            "distribution",
            "chunk round trip on loopback (master's share, 1 tile of 64x64)",
            median,
            "us",
            f"median of {len(latencies)}, one result in flight; 90th percentile "
            f"{tail:.0f} us",
            "< 100 us",
            median < 100,
        )
    ]
