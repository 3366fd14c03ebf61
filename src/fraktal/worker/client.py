"""The worker's connection to the master: join, compute, report, reconnect.

A worker keeps one TCP connection to the master. It computes every chunk it
is assigned on its `TilePool` and answers with one `Result` per chunk; the
pool's slots are taken in arrival order, so the chunk in hand starts the moment
the current one runs out of tiles. Heartbeats tell the master it is alive while
it computes.

When the master is not there yet, or goes away, the worker waits and tries
again, doubling the pause up to a cap (with some jitter, so that a cluster of
workers does not reconnect in lock step). Work in progress for a lost master is
dropped: its leases ended with the connection. On SIGTERM or Ctrl-C the worker
hands its chunks back with a `Release` and says goodbye, so they are requeued
at once instead of waiting for the lease to run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from fraktal.errors import AuthenticationError, ProtocolError
from fraktal.protocol.framing import DEFAULT_MAX_FRAME
from fraktal.protocol.messages import (
    MAX_TEXT,
    Assign,
    Drop,
    Error,
    Heartbeat,
    Release,
    Result,
    TileData,
    TileFailure,
    Welcome,
)
from fraktal.protocol.session import WorkerSession
from fraktal.worker.pool import Computed, Task, TilePool
from fraktal.worker.task import compute_tile

logger = logging.getLogger(__name__)

T = TypeVar("T")

READ_BYTES = 256 * 1024
LEAVE_SECONDS = 5.0
# A chunk goes to the pool in this many batches per process: few enough that
# the hand-off to a pool process is paid rarely, enough that a batch of slow
# tiles does not leave the other processes idle at the end of the chunk.
BATCHES_PER_PROCESS = 4


@dataclass(frozen=True)
class WorkerConfig:
    """Settings of a worker; the CLI fills them from its options."""

    host: str = "127.0.0.1"
    port: int = 65433
    token: str | None = None
    processes: int = 1
    name: str = f"{socket.gethostname()}-{os.getpid()}"
    retry_first: float = 0.5
    retry_cap: float = 5.0
    max_frame: int = DEFAULT_MAX_FRAME


def _jitter() -> float:
    return random.uniform(0.8, 1.2)


@dataclass
class Backoff:
    """Pauses between attempts to reach the master.

    The pause doubles from ``first`` up to ``cap``, and each is stretched or
    shrunk by up to 20 % so that a cluster of workers does not come back in
    lock step. The cap bounds how long a worker stays away after the master is
    back: a master restarted after a crash has its workers within ``cap``
    seconds (times 1.2), which is why it is a few seconds, not minutes.
    """

    first: float
    cap: float
    jitter: Callable[[], float] = _jitter
    _next: float = field(init=False)

    def __post_init__(self) -> None:
        self._next = self.first

    def pause(self) -> float:
        """The next pause, in seconds."""
        pause = self._next * self.jitter()
        self._next = min(self._next * 2, self.cap)
        return pause

    def reset(self) -> None:
        """Start again from ``first``, after a connection that worked."""
        self._next = self.first


class Worker:
    """One worker process; `run` serves masters until `stop` is called."""

    def __init__(self, config: WorkerConfig, task: Task = compute_tile) -> None:
        self.config = config
        self.who = f"worker {config.name}"
        self.task = task
        self.stopping = asyncio.Event()
        self._pool: TilePool | None = None

    def stop(self) -> None:
        """Hand chunks back and leave (safe to call from a signal handler)."""
        self.stopping.set()

    async def run(self) -> None:
        """Connect, serve, and reconnect until stopped.

        Raises `AuthenticationError` when the master refuses the token: waiting
        would not fix that.
        """
        self._pool = TilePool(self.config.processes, self.task, self.who)
        backoff = Backoff(self.config.retry_first, self.config.retry_cap)
        address = f"{self.config.host}:{self.config.port}"
        try:
            while not self.stopping.is_set():
                try:
                    reader, writer = await asyncio.open_connection(
                        self.config.host, self.config.port
                    )
                except OSError as exc:
                    pause = backoff.pause()
                    logger.info(
                        "%s: master %s not reachable (%s); retrying in %.1f s",
                        self.who,
                        address,
                        exc.strerror or exc,
                        pause,
                    )
                else:
                    if await self._serve(reader, writer):
                        backoff.reset()
                    if self.stopping.is_set():
                        break
                    pause = backoff.pause()
                    logger.warning(
                        "%s: connection to master %s ended; reconnecting in %.1f s",
                        self.who,
                        address,
                        pause,
                    )
                await self._sleep(pause)
        finally:
            self._pool.close()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """One connection; True if the master welcomed us."""
        config = self.config
        session = WorkerSession(
            config.token,
            config.name,
            socket.gethostname(),
            config.processes,
            config.max_frame,
        )
        link = _Link(self, session, writer)
        try:
            await link.serve(reader)
        except AuthenticationError:
            raise
        except ProtocolError as exc:
            logger.error("%s: the master sent what it cannot accept: %s", self.who, exc)
            link.send_error(str(exc))
        except (OSError, asyncio.IncompleteReadError) as exc:
            logger.info("%s: connection to the master lost: %s", self.who, exc)
        finally:
            await link.close()
        return link.welcomed


async def _read_to_end(reader: asyncio.StreamReader) -> None:
    while await reader.read(READ_BYTES):
        pass


class _Link:
    """The state of one connection: chunks in hand and their tasks."""

    def __init__(
        self, worker: Worker, session: WorkerSession, writer: asyncio.StreamWriter
    ) -> None:
        self.worker = worker
        self.pool = worker._pool
        self.session = session
        self.writer = writer
        self.welcomed = False
        self.chunks: dict[int, tuple[Assign, asyncio.Task[None]]] = {}
        self._heartbeat: asyncio.Task[None] | None = None

    async def serve(self, reader: asyncio.StreamReader) -> None:
        stop = asyncio.ensure_future(self.worker.stopping.wait())
        try:
            while True:
                read = asyncio.ensure_future(reader.read(READ_BYTES))
                await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop.done():
                    read.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await read
                    await self._leave(reader)
                    return
                data = read.result()
                if not data:
                    return
                self._receive(data)
                await self.writer.drain()
        finally:
            stop.cancel()

    def _receive(self, data: bytes) -> None:
        for message in self.session.receive(data):
            if isinstance(message, Welcome):
                self._welcome(message)
            elif isinstance(message, Assign):
                task = asyncio.create_task(self._compute(message))
                self.chunks[message.chunk] = (message, task)
            elif isinstance(message, Drop):
                self._drop(message.job)
            elif isinstance(message, Error):
                self._master_error(message.message)
        self.writer.write(self.session.data_to_send())

    def _welcome(self, welcome: Welcome) -> None:
        self.welcomed = True
        logger.info(
            "%s: joined the master as %s with %d processes",
            self.worker.who,
            welcome.worker_id,
            self.pool.processes,
        )
        self._heartbeat = asyncio.create_task(self._beat(welcome.heartbeat_interval))

    def _master_error(self, text: str) -> None:
        if not self.welcomed:
            raise AuthenticationError(f"the master refused this worker: {text}")
        logger.error("%s: the master closed the connection: %s", self.worker.who, text)

    def _drop(self, job: str) -> None:
        for chunk, (assign, task) in list(self.chunks.items()):
            if assign.job == job:
                task.cancel()
                del self.chunks[chunk]
        logger.info(
            "%s: job %s ended; its chunks in hand were dropped", self.worker.who, job
        )

    async def _compute(self, assign: Assign) -> None:
        spec = assign.spec.to_dict()
        grid = assign.spec.grid
        rects = [grid.rect(tile) for tile in assign.tiles]
        batches = _batches(
            [(r.x, r.y, r.width, r.height) for r in rects], self.pool.processes
        )
        outcomes = [
            outcome
            for batch in await asyncio.gather(
                *(self.pool.run_batch(spec, batch) for batch in batches)
            )
            for outcome in batch
        ]

        done, failed, seconds, iterations = [], [], 0.0, 0
        for tile, outcome in zip(assign.tiles, outcomes, strict=True):
            if isinstance(outcome, Computed):
                done.append(TileData(tile, outcome.data))
                seconds += outcome.seconds
                iterations += outcome.iterations
            else:
                failed.append(TileFailure(tile, outcome.reason))
        self.chunks.pop(assign.chunk, None)
        result = Result(assign.chunk, tuple(done), tuple(failed), seconds, iterations)
        self.writer.write(self._frame(result))
        await self.writer.drain()

    def _frame(self, result: Result) -> bytes:
        """The result's frame, or, if it is over the size limit, its failure.

        The master sizes chunks so that this never happens; if it does, the
        tiles are reported failed rather than the chunk left to expire.
        """
        try:
            return self.session.send(result)
        except ValueError as exc:
            logger.error("%s: chunk %d: %s", self.worker.who, result.chunk, exc)
            reason = f"the result did not fit in one frame: {exc}"
            failed = [TileFailure(t.tile, reason) for t in result.done]
            return self.session.send(
                replace(result, done=(), failed=result.failed + tuple(failed))
            )

    async def _beat(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.writer.write(self.session.send(Heartbeat(self.pool.busy)))

    async def _leave(self, reader: asyncio.StreamReader) -> None:
        """Hand the chunks back, then let the master close the connection.

        Closing at once would race with frames the master is still sending:
        data that reaches a closed socket makes the kernel answer with a
        reset, and the master would see a lost worker instead of one that
        left. So this side only stops writing and reads (and drops) whatever
        still comes until the master closes, for at most `LEAVE_SECONDS`.
        """
        chunks = tuple(self.chunks)
        await self._cancel_tasks()
        logger.info("%s: leaving, handing back %d chunks", self.worker.who, len(chunks))
        self.writer.write(self.session.send(Release(chunks, leaving=True)))
        await self.writer.drain()
        if self.writer.can_write_eof():
            self.writer.write_eof()
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
            await asyncio.wait_for(_read_to_end(reader), LEAVE_SECONDS)

    def send_error(self, text: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            self.writer.write(self.session.send(Error(text[:MAX_TEXT])))

    async def _cancel_tasks(self) -> None:
        tasks = [task for _, task in self.chunks.values()]
        if self._heartbeat is not None:
            tasks.append(self._heartbeat)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        if self.chunks and not self.worker.stopping.is_set():
            logger.warning(
                "%s: connection to the master lost with %d chunks (%d tiles) in "
                "hand; they are dropped",
                self.worker.who,
                len(self.chunks),
                sum(len(assign.tiles) for assign, _ in self.chunks.values()),
            )
        await self._cancel_tasks()
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


def _batches(items: list[T], processes: int) -> list[list[T]]:
    """``items`` cut in order into at most BATCHES_PER_PROCESS per process."""
    count = min(len(items), processes * BATCHES_PER_PROCESS)
    size, extra = divmod(len(items), count)
    cuts = [i * size + min(i, extra) for i in range(count + 1)]
    return [items[cuts[i] : cuts[i + 1]] for i in range(count)]
