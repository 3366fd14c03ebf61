"""The master process: scheduler, worker connections and job folders together.

Everything runs on one asyncio event loop, except three kinds of threads:
the dashboard, which calls `submit`, `cancel` and the read methods
(`snapshot`, `job_info`, `preview`, `picture`, `healthy`) from its own; the
painter, which colours and writes pictures; and commits, which flush job
folders to disk (`JobStore.make_durable`). Every touch of the scheduler
happens under `Master.lock`, and work that the loop must react to (a
submitted job) is handed over with `call_soon_threadsafe`.

What happens to a result, in this order, so that nothing is lost:
1. every tile's data is decoded and checked against the tile's shape;
2. the scheduler decides which tiles are taken (first result wins);
3. taken tiles are written into the job's memory-mapped raw array;
4. their ids are journaled at once, which a killed master does not lose;
5. about once a second a commit flushes the array and the journal and marks
   them safe from a machine crash too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fraktal.errors import ProtocolError, UnknownJobError
from fraktal.master import snapshot
from fraktal.master.picture import (
    LivePicture,
    Output,
    forget_partial,
    paint_folder,
    write_outputs,
)
from fraktal.master.scheduler import (
    Completion,
    Job,
    JobStatus,
    Scheduler,
    TileState,
    WorkerStatus,
)
from fraktal.master.server import Connection, handle_connection
from fraktal.master.store import (
    Commit,
    JobStore,
    Recovery,
    open_raw,
    read_history,
)
from fraktal.protocol.codec import decode_tile
from fraktal.protocol.framing import DEFAULT_MAX_FRAME
from fraktal.protocol.messages import (
    Assign,
    Drop,
    Heartbeat,
    Message,
    Release,
    Result,
)
from fraktal.protocol.session import MasterSession
from fraktal.render.palette import DEFAULT_PALETTE
from fraktal.render.preview import preview
from fraktal.render.spec import RenderSpec

logger = logging.getLogger(__name__)

COMMIT_SECONDS = 1.0
COMMIT_TILES = 2048
INLINE_DECODE_BYTES = 256 * 1024
TICK_SECONDS = 0.2
SETTLE_SECONDS = 5.0


@dataclass(frozen=True)
class MasterConfig:
    """Settings of a master; the CLI fills them from its options."""

    host: str = "127.0.0.1"
    port: int = 65433
    token: str | None = None
    jobs_dir: Path = Path("fraktal-jobs")
    lease_seconds: float = 30.0
    max_attempts: int = 3
    target_seconds: float = 2.0
    heartbeat_seconds: float = 2.0
    handshake_seconds: float = 10.0
    max_frame: int = DEFAULT_MAX_FRAME
    max_connections: int = 1024
    progress_seconds: float = 5.0
    exit_when_done: bool = False


class Master:
    """Serves workers, keeps job folders, writes pictures; see module doc."""

    def __init__(self, config: MasterConfig, clock=time.monotonic) -> None:
        # Absolute, so that the dashboard serves files wherever it runs from.
        self.config = replace(config, jobs_dir=config.jobs_dir.resolve())
        self.clock = clock
        # Measured once, so that a moment always shows as the same wall time.
        self.wall_offset = time.time() - clock()
        self.lock = threading.Lock()
        self.scheduler = Scheduler(
            lease_seconds=config.lease_seconds,
            max_attempts=config.max_attempts,
            target_seconds=config.target_seconds,
            unresponsive_after=3 * config.heartbeat_seconds,
            max_chunk_bytes=config.max_frame // 2,
        )
        # Folders of queued and running jobs only: an open one holds four file
        # descriptors, and a long-lived master may see thousands of jobs.
        self.stores: dict[str, JobStore] = {}
        self.outputs: dict[str, Output] = {}
        # Pictures painted while their jobs run; see `fraktal.master.picture`.
        self.live: dict[str, LivePicture] = {}
        self.written: dict[str, Path] = {}
        self.picture_errors: dict[str, str] = {}
        self.connections: dict[str, Connection] = {}
        self.port: int | None = None
        self.finished = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._open_sockets = 0
        self._handlers: set[asyncio.Task[None]] = set()
        self.stopping = False
        self._pending_pictures: set[asyncio.Future[None]] = set()
        # One picture at a time: two colourings of one job write one file.
        self._painter = ThreadPoolExecutor(1, thread_name_prefix="picture")
        self._opening = threading.Lock()
        self._last_progress = 0.0
        self._last_commit = 0.0
        self._disk_errors: dict[str, tuple[str | None, str | None]] = {}
        self._commits: dict[JobStore, asyncio.Task[None]] = {}

    # -- jobs, callable from any thread ----------------------------------

    def submit(self, spec: RenderSpec, output: Output | None = None) -> Job:
        """Queue a render; resumes from its job folder if one exists.

        A job already done in this master's life is not computed again; if
        it is asked for with another output, only its picture is rewritten.
        """
        output = _absolute(output or self.folder_output(spec))
        key, folder = spec.key(), self.config.jobs_dir / spec.key()
        with self._opening:
            with self.lock:
                existing = self.scheduler.jobs.get(key)
                if existing and existing.status is JobStatus.DONE:
                    return self._recolour(existing, output)
                if existing and existing.status in (
                    JobStatus.QUEUED,
                    JobStatus.RUNNING,
                ):
                    return existing
                ended_but_held = key in self.stores
            if ended_but_held:
                # Cancelled or failed a moment ago: the event loop has yet to
                # give its folder back.
                self._settle_ended_jobs()
            # Opening may reserve gigabytes and read a long journal: never
            # while the event loop and the dashboard wait for the lock.
            store = JobStore.open(folder, spec)
            forget_partial(folder)
            with self.lock:
                self.stores[key] = store
                self.outputs[key] = output
                if output.paints_live:
                    self.live[key] = LivePicture(key, folder, spec, output, store.raw)
                job = self.scheduler.add_job(spec, self.clock(), store.journal_done)
        if store.recovery is not None:
            _log_resume(job, folder, store.recovery)
        else:
            logger.info(
                "job %s: %dx%d, centre %r,%r, span %g, max-iter %d, "
                "%d tiles, folder %s",
                job.id,
                spec.view.width,
                spec.view.height,
                spec.view.center_re,
                spec.view.center_im,
                spec.view.span,
                spec.max_iter,
                job.grid.count,
                folder,
            )
        self._wake()
        return job

    def _settle_ended_jobs(self) -> None:
        """Let the event loop finish off ended jobs now; wait a little for it."""
        loop = self._loop
        if loop is None or _running_loop() is loop:
            self.dispatch()
            return
        try:
            asyncio.run_coroutine_threadsafe(self._dispatch_now(), loop).result(
                SETTLE_SECONDS
            )
        except (concurrent.futures.TimeoutError, RuntimeError) as exc:
            # Opening the folder then says that it is in use.
            logger.warning("master: ended jobs were not settled: %r", exc)

    async def _dispatch_now(self) -> None:
        self.dispatch()

    def _recolour(self, job: Job, output: Output) -> Job:
        """A done job asked for again: write its picture if the output differs."""
        if self.outputs.get(job.id) != output and self._loop is not None:
            self.outputs[job.id] = output
            logger.info("job %s: already done, writing %s", job.id, output.png)
            self._loop.call_soon_threadsafe(self._write_picture, job)
        return job

    def folder_output(
        self, spec: RenderSpec, palette: str = DEFAULT_PALETTE, equalize: bool = False
    ) -> Output:
        """An output that writes the picture into the job's own folder."""
        folder = self.config.jobs_dir / spec.key()
        return Output(png=folder / "image.png", palette=palette, equalize=equalize)

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job; a job that ended stays as it was."""
        with self.lock:
            self._known_job(job_id)
            job = self.scheduler.cancel_job(job_id, self.clock())
        self._wake()
        return job

    # -- reading, callable from any thread -------------------------------

    def snapshot(self, events_after: int = 0) -> dict[str, Any]:
        """The whole cluster as plain data; see `fraktal.master.snapshot`."""
        with self.lock:
            return snapshot.build(
                self.scheduler,
                self.clock(),
                self.wall_offset,
                self.outputs,
                self.written,
                events_after,
            )

    def job_info(self, job_id: str) -> dict[str, Any]:
        """One job as plain data; raises `UnknownJobError`."""
        with self.lock:
            job = self._known_job(job_id)
            picture = self.written.get(job_id) is not None
            return snapshot.job_info(
                job, self.clock(), self.wall_offset, self.outputs[job_id], picture
            )

    def preview(self, job_id: str, max_side: int) -> np.ndarray:
        """RGB preview of a job as far as it is done; raises `UnknownJobError`.

        Only the tile states are copied under the lock. The raw values are
        read after it is released: a tile marked done was written before the
        lock was let go and is never written again, and every other tile is
        painted over with the background, so the read needs no lock.
        """
        with self.lock:
            job = self._known_job(job_id)
            store = self.stores.get(job_id)
            output = self.outputs[job_id]
            done = job.states == TileState.DONE
        raw = store.raw if store else open_raw(self._folder(job_id), job.spec)
        return preview(
            raw,
            done.reshape(job.grid.rows, job.grid.columns),
            job.spec.tile_size,
            output.palette,
            equalize=output.equalize,
            max_side=max_side,
        )

    def picture(self, job_id: str) -> Path | None:
        """The finished PNG of a job, once written; raises `UnknownJobError`."""
        with self.lock:
            self._known_job(job_id)
            return self.written.get(job_id)

    def healthy(self, timeout: float) -> bool:
        """True if the event loop runs and the lock is free within ``timeout``."""
        if self._loop is None or not self._loop.is_running():
            return False
        if not self.lock.acquire(timeout=timeout):
            return False
        self.lock.release()
        return True

    def _folder(self, job_id: str) -> Path:
        return self.config.jobs_dir / job_id

    def _known_job(self, job_id: str) -> Job:
        job = self.scheduler.jobs.get(job_id)
        if job is None:
            raise UnknownJobError(f"no job has the id {job_id!r}")
        return job

    def _wake(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.dispatch)

    # -- running ----------------------------------------------------------

    async def start(self) -> None:
        """Listen for workers; `port` holds the bound port afterwards."""
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(
            self._serve_connection,
            self.config.host,
            self.config.port,
            limit=2**16,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ticker = asyncio.create_task(self._tick())
        self.dispatch()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await handle_connection(self, reader, writer)
        finally:
            self._handlers.discard(task)

    async def stop(self) -> None:
        """Close every connection, finish pictures, and flush the job folders."""
        self.stopping = True
        self._ticker.cancel()
        if self._server is not None:
            self._server.close()
        for handler in list(self._handlers):
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._pending_pictures:
            await asyncio.gather(*self._pending_pictures, return_exceptions=True)
        await asyncio.gather(*self._commits.values(), return_exceptions=True)
        with self.lock:
            unfinished = list(self.live.values())
            self.live.clear()
        for live in unfinished:
            self._drop(live)
        self._painter.shutdown()
        with self.lock:
            for store in self.stores.values():
                store.close()
            self.stores.clear()

    async def _tick(self) -> None:
        # The only thing that expires leases: it must outlive any one failure.
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                self._tick_once()
            except Exception:
                logger.exception("master: a periodic check failed; trying again")

    def _tick_once(self) -> None:
        now = self.clock()
        with self.lock:
            expired = self.scheduler.expire(now)
        for chunk in expired:
            logger.warning(
                "worker %s: chunk %d (%d tiles) requeued after %.1f s without a result",
                chunk.worker_id,
                chunk.id,
                len(chunk.tiles),
                now - chunk.leased_at,
            )
        if now - self._last_commit >= COMMIT_SECONDS:
            self._commit_all()
        self._report_journals(now)
        if now - self._last_progress >= self.config.progress_seconds:
            self._log_progress(now)
        self.dispatch()

    def _commit_all(self) -> None:
        self._last_commit = self.clock()
        with self.lock:
            stores = list(self.stores.values())
        for store in stores:
            self._commit_soon(store)

    def _commit_soon(self, store: JobStore) -> None:
        """Make a job's results safe from a machine crash, off the event loop.

        Flushing a second of results takes tens of milliseconds on a good
        disk and far longer on a slow one; every connection would wait.
        """
        if store in self._commits:
            return  # one at a time; the next one takes what came meanwhile
        step = store.begin_commit()
        if step is not None:
            task = asyncio.get_running_loop().create_task(self._commit(store, step))
            self._commits[store] = task

    async def _commit(self, store: JobStore, step: Commit) -> None:
        try:
            durable = await asyncio.to_thread(store.make_durable, step)
        except Exception:  # a bug: the next commit tries again
            logger.exception("job folder %s: a commit failed", store.folder)
            durable = False
        finally:
            del self._commits[store]
        if durable:
            store.end_commit(step)
        else:
            store.abort_commit(step)

    def _report_journals(self, now: float) -> None:
        """Put a job folder's disk trouble in the event log when it starts
        or ends; the store has logged the details."""
        with self.lock:
            for job_id, store in self.stores.items():
                seen = self._disk_errors.get(job_id, (None, None))
                journal, flush = store.journal_error, store.flush_error
                if journal != seen[0] and journal is None:
                    text = f"job {job_id}: its journal is written again"
                    self.scheduler.record(now, "journal-ok", text)
                elif journal != seen[0]:
                    text = (
                        f"job {job_id}: its journal cannot be written "
                        f"({journal}); results are kept, a restart would "
                        f"compute them again"
                    )
                    self.scheduler.record(now, "journal-failed", text)
                if flush != seen[1]:  # a flush failure never clears
                    text = (
                        f"job {job_id}: flushing its folder to disk failed "
                        f"({flush}); a restart would compute what came since "
                        f"again"
                    )
                    self.scheduler.record(now, "flush-failed", text)
                self._disk_errors[job_id] = (journal, flush)
            for job_id in self._disk_errors.keys() - self.stores.keys():
                del self._disk_errors[job_id]  # the job ended

    def dispatch(self, only: Connection | None = None) -> None:
        """Hand out work, tell workers about ended jobs, finish jobs.

        With ``only``, work is offered to that connection alone: enough after
        a message that made room there and put no tile back in the queue, and
        it keeps the cost of a message from growing with the number of
        workers. The timer offers work to everyone a few times a second.
        """
        assignments = []
        targets = [only] if only else list(self.connections.values())
        targets = [c for c in targets if not c.leaving]
        with self.lock:
            ended = list(self.scheduler.finished_jobs)
            self.scheduler.finished_jobs.clear()
            for connection in targets:
                while chunk := self.scheduler.next_chunk(
                    connection.worker_id, self.clock()
                ):
                    self.stores[chunk.job_id].mark_leased(chunk.tiles)
                    spec = self.scheduler.jobs[chunk.job_id].spec
                    assign = Assign(
                        chunk.id,
                        chunk.job_id,
                        spec,
                        chunk.tiles,
                        self.config.lease_seconds,
                    )
                    assignments.append((connection, assign))
        for job in ended:
            self._job_ended(job)
        for connection, assign in assignments:
            connection.held_jobs.add(assign.job)
            connection.send(assign)
        self._check_finished()

    def _job_ended(self, job: Job) -> None:
        for connection in self.connections.values():
            if job.id in connection.held_jobs:
                connection.held_jobs.discard(job.id)
                if job.status is not JobStatus.DONE:
                    connection.send(Drop(job.id))
        with self.lock:
            store = self.stores[job.id]
            live = self.live.pop(job.id, None)
        # TODO: close in a thread too. Its last flush runs on the event loop
        # (and waits for a commit under way) because a job submitted again at
        # once waits for the loop to give the folder back, its lock let go
        # (`_settle_ended_jobs`); the dashboard need not wait meanwhile.
        store.close()
        with self.lock:
            del self.stores[job.id]
        _warn_if_not_resumable(job, store)
        if live is not None and job.status is not JobStatus.DONE:
            self._drop(live)
        if job.status is JobStatus.DONE:
            elapsed = (job.finished or 0) - (job.started or 0)
            logger.info(
                "job %s: all %d tiles done in %.1f s", job.id, job.grid.count, elapsed
            )
            _record_finish(job, store)
            self._write_picture(job, live, store.raw)
        elif job.status is JobStatus.FAILED:
            logger.error("job %s failed: %s", job.id, job.error)
            store.record_history("failed", error=job.error)
        else:
            logger.info("job %s %s", job.id, job.status.value)

    def _drop(self, live: LivePicture) -> None:
        """Stop painting a picture that will not be finished; remove its file."""
        live.cancel()
        self._painter.submit(live.abort)

    def _write_picture(
        self,
        job: Job,
        live: LivePicture | None = None,
        raw: np.ndarray | None = None,
    ) -> None:
        """Write a done job's picture, or finish the one painted meanwhile.

        ``raw`` is the job's results if still mapped; else they are read from
        its folder.
        """
        if live is not None:
            with self.lock:
                last_strips = live.ready(job.states)
            output = live.output
            work = functools.partial(live.finish, last_strips)
        else:
            with self.lock:
                output = self.outputs[job.id]
            if raw is not None:
                work = functools.partial(write_outputs, job.spec, raw, output)
            else:
                work = functools.partial(
                    paint_folder, self._folder(job.id), job.spec, output
                )
        future = asyncio.get_running_loop().run_in_executor(self._painter, work)
        self._pending_pictures.add(future)

        def written(done: asyncio.Future[None]) -> None:
            self._pending_pictures.discard(done)
            if done.exception() is not None:
                logger.error(
                    "job %s: writing the picture failed: %s", job.id, done.exception()
                )
                with self.lock:
                    self.picture_errors[job.id] = str(done.exception())
            else:
                with self.lock:
                    self.written[job.id] = output.png
                logger.info("job %s: wrote %s", job.id, output.png)
            self._check_finished()

        future.add_done_callback(written)

    def _check_finished(self) -> None:
        if not self.config.exit_when_done or self._pending_pictures:
            return
        with self.lock:
            idle = self.scheduler.active is None and not self.scheduler.queue
        if idle and self.scheduler.jobs:
            self.finished.set()

    def _log_progress(self, now: float) -> None:
        self._last_progress = now
        with self.lock:
            job = self.scheduler.active
            if job is None:
                return
            workers = sum(w.connected for w in self.scheduler.workers.values())
            done, total, resumed = job.done, job.grid.count, job.resumed
            elapsed = now - (job.started or now)
        rate = (done - resumed) / elapsed if elapsed > 0 else 0.0
        eta = f"{(total - done) / rate:.0f} s" if rate > 0 else "unknown"
        logger.info(
            "job %s: %.1f%% (%d/%d tiles), %d workers, ETA %s",
            job.id,
            100 * done / total,
            done,
            total,
            workers,
            eta,
        )

    # -- called by the connection handler --------------------------------

    def accept_connection(self) -> bool:
        if self._open_sockets >= self.config.max_connections:
            return False
        self._open_sockets += 1
        return True

    def connection_closed(self) -> None:
        self._open_sockets -= 1

    def join(
        self,
        session: MasterSession,
        writer: asyncio.StreamWriter,
        name: str,
        host: str,
        processes: int,
    ) -> Connection:
        with self.lock:
            worker = self.scheduler.register(name, host, processes, self.clock())
        connection = Connection(worker.id, session, writer)
        self.connections[worker.id] = connection
        logger.info(
            "worker %s: joined (%s on %s, %d processes)",
            worker.id,
            name,
            host,
            processes,
        )
        return connection

    def leave(self, connection: Connection, status: WorkerStatus, reason: str) -> None:
        self.connections.pop(connection.worker_id, None)
        with self.lock:
            requeued = self.scheduler.disconnect(
                connection.worker_id, self.clock(), status, reason
            )
        expected = status is WorkerStatus.LEFT or self.stopping
        log = logger.info if expected else logger.warning
        log(
            "worker %s: %s (%s); %d tiles requeued",
            connection.worker_id,
            status.value,
            reason,
            len(requeued),
        )
        if not self.stopping:
            self.dispatch()

    async def handle(self, connection: Connection, message: Message) -> None:
        """Act on one checked message from a worker."""
        now = self.clock()
        before = self._queue_state()
        if isinstance(message, Result):
            await self._take_result(connection, message)
        elif isinstance(message, Heartbeat):
            with self.lock:
                self.scheduler.heartbeat(connection.worker_id, now, message.busy)
        elif isinstance(message, Release):
            connection.leaving = connection.leaving or message.leaving
            with self.lock:
                released = self.scheduler.release(
                    connection.worker_id, message.chunks, now, message.leaving
                )
            logger.info(
                "worker %s: handed back %d chunks (%d tiles)%s",
                connection.worker_id,
                len(message.chunks),
                released,
                ", leaving" if message.leaving else "",
            )
        after = self._queue_state()
        more_work = after[0] != before[0] or after[1] > before[1]
        self.dispatch(None if more_work else connection)

    def _queue_state(self) -> tuple[str | None, int]:
        """The active job and how many of its tiles wait for a worker."""
        with self.lock:
            job = self.scheduler.active
            return (job.id, len(job.pending)) if job else (None, 0)

    async def _take_result(self, connection: Connection, result: Result) -> None:
        with self.lock:
            chunk = self.scheduler.lookup_chunk(connection.worker_id, result.chunk)
            spec = self.scheduler.jobs[chunk.job_id].spec
        # Inflating and checking megabytes of tiles would stall every other
        # connection, so a big result goes to a thread (zlib and NumPy let go
        # of the GIL); for a small one the hop would cost more than it saves.
        if sum(len(t.data) for t in result.done) > INLINE_DECODE_BYTES:
            values = await asyncio.to_thread(_decode_result, result, chunk.tiles, spec)
        else:
            values = _decode_result(result, chunk.tiles, spec)

        with self.lock:
            completion = self.scheduler.complete(
                connection.worker_id,
                result.chunk,
                list(values),
                [(f.tile, f.reason) for f in result.failed],
                compute_seconds=result.compute_seconds,
                iterations=result.iterations,
                now=self.clock(),
            )
            if completion.accepted:  # only a running job takes tiles
                self._store_tiles(completion, spec, values)
        self._log_result(connection, result, completion)

    def _store_tiles(
        self, completion: Completion, spec: RenderSpec, values: dict[int, np.ndarray]
    ) -> None:
        store = self.stores[completion.job_id]
        for tile in completion.accepted:
            store.write_tile(spec.grid.rect(tile), values[tile])
        store.mark_done(list(completion.accepted))
        if store.uncommitted >= COMMIT_TILES and store.journal_error is None:
            self._commit_soon(store)  # a refusing disk is tried once a second
        live = self.live.get(completion.job_id)
        if live is not None:
            strips = live.ready(self.scheduler.jobs[completion.job_id].states)
            if strips:
                self._painter.submit(live.paint, strips)

    def _log_result(
        self, connection: Connection, result: Result, completion: Completion
    ) -> None:
        logger.debug(
            "worker %s: chunk %d: %d tiles taken, %d already done, %d failed",
            connection.worker_id,
            result.chunk,
            len(completion.accepted),
            len(completion.dropped),
            len(result.failed),
        )
        for failure in result.failed:
            logger.warning(
                "worker %s: tile %d failed: %s",
                connection.worker_id,
                failure.tile,
                failure.reason,
            )


def _decode_result(
    result: Result, leased: tuple[int, ...], spec: RenderSpec
) -> dict[int, np.ndarray]:
    """Every tile of a result decoded and checked; raises `ProtocolError`."""
    allowed = set(leased)
    values = {}
    for tile in result.done:
        if tile.tile not in allowed:
            raise ProtocolError(
                f"result for chunk {result.chunk} has tile {tile.tile}, which is "
                f"not in that chunk"
            )
        rect = spec.grid.rect(tile.tile)
        values[tile.tile] = decode_tile(
            tile.data, rect.height, rect.width, spec.max_iter
        )
    return values


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _absolute(output: Output) -> Output:
    """The output with absolute paths, fixed against the current folder."""
    return replace(
        output,
        png=output.png.resolve() if output.png else None,
        raw_copy=output.raw_copy.resolve() if output.raw_copy else None,
    )


def _log_resume(job: Job, folder: Path, recovery: Recovery) -> None:
    logger.info(
        "job %s: resuming from %s: %d of %d tiles already done; %d tiles were "
        "in flight when the last master stopped and %d results were lost with "
        "the machine, all computed again",
        job.id,
        folder,
        job.resumed,
        job.grid.count,
        recovery.in_flight,
        recovery.lost,
    )


def _warn_if_not_resumable(job: Job, store: JobStore) -> None:
    """Say so when the job folder no longer holds all the job has done."""
    if not store.folder.exists():
        logger.warning(
            "job %s: its folder %s was removed while it ran; asked for again, "
            "it begins afresh",
            job.id,
            store.folder,
        )
    elif store.unjournaled:
        logger.warning(
            "job %s: %d done tiles are not in its journal (%s); asked for "
            "again, it computes them anew",
            job.id,
            store.unjournaled,
            store.journal_error,
        )
    elif store.flush_error:
        logger.warning(
            "job %s: flushing its folder failed (%s); asked for again, it "
            "computes anew what came since its last flush",
            job.id,
            store.flush_error,
        )


def _record_finish(job: Job, store: JobStore) -> None:
    """Log and keep in history.jsonl what restarts cost this job."""
    # Opening a finished job again (to colour it anew) is no restart.
    resumes = [
        e
        for e in read_history(store.folder)
        if e.get("event") == "resumed" and e.get("done", 0) < job.grid.count
    ]
    in_flight = sum(int(e.get("in_flight", 0)) for e in resumes)
    received_twice = sum(int(e.get("lost", 0)) for e in resumes)
    store.record_history(
        "finished",
        restarts=len(resumes),
        in_flight_at_restarts=in_flight,
        received_twice_across_restarts=received_twice,
        duplicates_dropped=job.duplicates,
    )
    if resumes:
        logger.info(
            "job %s: across %d restarts, %d tiles in flight at a stop were "
            "leased again and %d results were received twice",
            job.id,
            len(resumes),
            in_flight,
            received_twice,
        )
