"""A process pool for tiles that survives the death of any of its processes.

`concurrent.futures.ProcessPoolExecutor` breaks as a whole when one of its
processes dies: every tile in flight fails with `BrokenProcessPool`, and it
cannot tell which tile was running in the process that died. So each of those
tiles becomes a suspect and is computed again alone, one after the other, in
a fresh one-process pool. A suspect whose lone process dies as well is
reported as failed, and the master counts that against the tile; the innocent
ones come back as if nothing had happened. The broken pool is replaced for
the tiles that follow.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from fraktal.worker.task import compute_tile, compute_tiles, start_process

logger = logging.getLogger(__name__)

Task = Callable[
    [dict[str, object], tuple[int, int, int, int]], tuple[bytes, int, float]
]


@dataclass(frozen=True)
class Computed:
    data: bytes
    iterations: int
    seconds: float


@dataclass(frozen=True)
class Failed:
    reason: str


class TilePool:
    """Runs at most ``processes`` tiles at once; see the module docstring."""

    def __init__(
        self, processes: int, task: Task = compute_tile, who: str = "worker"
    ) -> None:
        self.processes = processes
        self.who = who
        self.task = task
        self.busy = 0
        self._context = multiprocessing.get_context("spawn")
        self._slots = asyncio.Semaphore(processes)
        self._executor = self._new_executor(processes)

    def _new_executor(self, processes: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            processes,
            mp_context=self._context,
            initializer=start_process,
            initargs=(os.getpid(),),
        )

    async def run_batch(
        self, spec: dict[str, object], rects: list[tuple[int, int, int, int]]
    ) -> list[Computed | Failed]:
        """Compute tiles in one pool call; never raises for a fault of its process.

        A chunk is handed over in a few batches rather than tile by tile:
        each hand-off to a pool process costs about a millisecond.
        """
        async with self._slots:
            executor = self._executor
            self.busy += len(rects)
            try:
                return await self._attempt(executor, spec, rects)
            except BrokenProcessPool:
                self._replace(executor)
            finally:
                self.busy -= len(rects)
        return await self._isolate(spec, rects)

    async def _attempt(
        self,
        executor: ProcessPoolExecutor,
        spec: dict[str, object],
        rects: list[tuple[int, int, int, int]],
    ) -> list[Computed | Failed]:
        loop = asyncio.get_running_loop()
        outcomes = await loop.run_in_executor(
            executor, compute_tiles, self.task, spec, rects
        )
        results: list[Computed | Failed] = []
        for rect, outcome in zip(rects, outcomes, strict=True):
            if isinstance(outcome, str):
                logger.warning("%s: tile at %s failed: %s", self.who, rect[:2], outcome)
                results.append(Failed(outcome))
            else:
                results.append(Computed(*outcome))
        return results

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if broken is self._executor:
            logger.warning(
                "%s: a pool process died; starting a new pool and "
                "recomputing its tiles one by one",
                self.who,
            )
            broken.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor(self.processes)

    async def _isolate(
        self, spec: dict[str, object], rects: list[tuple[int, int, int, int]]
    ) -> list[Computed | Failed]:
        """Suspects one at a time in a one-process pool: a death names its tile.

        The pool is started again only after a death, so a batch of innocent
        suspects costs one new process, not one each.
        """
        outcomes: list[Computed | Failed] = []
        solo = self._new_executor(1)
        try:
            for rect in rects:
                try:
                    outcomes += await self._attempt(solo, spec, [rect])
                except BrokenProcessPool:
                    logger.warning(
                        "%s: tile at %s killed its process again; reporting it failed",
                        self.who,
                        rect[:2],
                    )
                    outcomes.append(
                        Failed("the tile's process died (crashed or was killed)")
                    )
                    solo.shutdown(wait=False, cancel_futures=True)
                    solo = self._new_executor(1)
        finally:
            solo.shutdown(wait=False, cancel_futures=True)
        return outcomes

    def close(self) -> None:
        """Stop the pool processes now, and wait until they are gone.

        Waiting for tiles in progress could take as long as the slowest tile,
        so the processes are terminated; waiting for the executor afterwards
        lets it close its queues, which would otherwise leak semaphores and
        race with the interpreter's exit.
        """
        self._executor.shutdown(wait=False, cancel_futures=True)
        for child in multiprocessing.active_children():
            child.terminate()
        self._executor.shutdown(wait=True)
