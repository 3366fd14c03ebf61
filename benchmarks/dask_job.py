"""The same render on dask.distributed: a LocalCluster of 2 processes.

Each tile is one task running fraktal's own `compute_tile` (the same kernel,
the same encoding); the client decodes the results into a memory-mapped
array as they complete and writes the same PNG, so both sides do the same
work from start to picture. Without dask installed (``pip install
.[bench]``) the section says so and measures nothing.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from fraktal.protocol.codec import decode_tile
from fraktal.render.png import write_png
from fraktal.render.spec import RenderSpec
from fraktal.render.tiles import TileGrid
from fraktal.worker.task import compute_tile
from table import Row


def available() -> bool:
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def run(spec: RenderSpec, folder: Path) -> tuple[float, float]:
    """(seconds from cluster start to PNG, seconds of the job alone)."""
    from distributed import Client, LocalCluster, as_completed

    # The client side of distributed sets its own loggers to INFO.
    logging.getLogger("distributed").setLevel(logging.ERROR)
    started = time.perf_counter()
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        job_started = time.perf_counter()
        grid = TileGrid(spec.view.width, spec.view.height, spec.tile_size)
        raw = np.lib.format.open_memmap(
            folder / "raw.npy",
            mode="w+",
            dtype=np.float32,
            shape=(spec.view.height, spec.view.width),
        )
        rects = [grid.rect(t) for t in range(grid.count)]
        futures = client.map(
            compute_tile,
            [spec.to_dict()] * grid.count,
            [(r.x, r.y, r.width, r.height) for r in rects],
            pure=False,
        )
        where = {future.key: rect for future, rect in zip(futures, rects, strict=True)}
        for future in as_completed(futures):
            data, _, _ = future.result()
            rect = where[future.key]
            raw[rect.y : rect.y + rect.height, rect.x : rect.x + rect.width] = (
                decode_tile(data, rect.height, rect.width, spec.max_iter)
            )
        raw.flush()
        write_png(folder / "dask.png", raw, "nocturne", metadata={})
        job = time.perf_counter() - job_started
    return time.perf_counter() - started, job


def measure(spec: RenderSpec, fraktal_seconds: float) -> list[Row]:
    v = spec.view
    name = f"{v.width}x{v.height} deep boundary, max-iter {spec.max_iter}"
    if not available():
        return [
            Row(
                "distribution",
                f"dask.distributed LocalCluster, {name}",
                float("nan"),
                "s",
                "not measured: dask is not installed (pip install '.[bench]')",
            )
        ]
    with tempfile.TemporaryDirectory() as folder:
        total, job = run(spec, Path(folder))
    return [
        Row(
            "distribution",
            f"dask.distributed LocalCluster, 2 processes, same tiles, {name}",
            total,
            "s",
            f"fraktal is {total / fraktal_seconds:.2f}x as fast, start to PNG; "
            f"dask's job alone on a running cluster: {job:.2f} s",
            "fraktal faster",
            total > fraktal_seconds,
        )
    ]
