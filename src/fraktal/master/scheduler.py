"""The master's scheduler: jobs, tiles, chunks, leases and workers, no I/O.

Theory of operation
-------------------
A job's image is cut into tiles (`fraktal.render.tiles`). Each tile moves
through these states, and `_move` is the only place that changes one:

    PENDING --lease--> LEASED --result--> DONE
       ^  \\              |
       |   \\-late result-+--------------> DONE
       +------requeue-----+  (lease expired, worker gone, chunk released,
                          |   tile failed on the worker)
                          +--attempts used up--> FAILED (the job fails)

Tiles are handed out in chunks: a set of tiles leased to one worker until a
deadline. Every worker holds up to `pipeline_depth` chunks so that it computes
one while the next is on its way. A chunk is sized so that it takes the worker
about `target_seconds`, from the throughput it has shown so far, and near the
end of a job it shrinks so that all workers finish at about the same time.

Rules every change must keep:

1. A tile is leased to at most one chunk at a time (`Job.lease_of`).
2. A tile becomes DONE once. A later result for it is dropped, so results are
   idempotent and the first one wins. A late result for a tile that is still
   missing (its chunk expired) is taken.
3. An expired lease or a failure reported by a worker counts as an attempt on
   each of its tiles; a disconnect or a release does not, because the tile
   did nothing wrong. A tile that reaches `max_attempts` fails its job.
4. Time comes only from the ``now`` argument, so tests run a 30 s lease out in
   no time.

Callers hold one lock around every call; the scheduler itself is not
thread-safe.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from fraktal.errors import ProtocolError, TransitionError
from fraktal.render.spec import RenderSpec
from fraktal.render.tiles import TileGrid

MAX_RETIRED_CHUNKS = 10_000
MAX_ENDED_WORKERS = 1_000
MIN_TILE_SECONDS = 1e-6  # no tile is computed faster, whatever a worker says


class TileState(enum.IntEnum):
    PENDING = 0
    LEASED = 1
    DONE = 2
    FAILED = 3


# A tile's state from its int8 in `Job.states`, without calling the enum.
_STATES = tuple(TileState)

_ALLOWED_MOVES = {
    TileState.PENDING: {TileState.LEASED, TileState.DONE},
    TileState.LEASED: {TileState.DONE, TileState.PENDING, TileState.FAILED},
    TileState.DONE: set(),
    TileState.FAILED: set(),
}


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class WorkerStatus(str, enum.Enum):
    IDLE = "idle"
    WORKING = "working"
    UNRESPONSIVE = "unresponsive"
    LOST = "lost"
    LEFT = "left"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True)
class Chunk:
    """Tiles of one job leased to one worker until ``deadline``."""

    id: int
    job_id: str
    worker_id: str
    tiles: tuple[int, ...]
    leased_at: float
    deadline: float


@dataclass(frozen=True)
class Event:
    """Something a person watching the cluster wants to know about.

    ``seq`` counts events from 1, so a reader can ask for the ones it missed.
    """

    time: float
    kind: str
    text: str
    seq: int


@dataclass
class Totals:
    """Counters over the scheduler's whole life, for metrics; they never drop."""

    tiles_done: int = 0
    pixels_done: int = 0
    iterations: int = 0
    tiles_requeued: int = 0
    leases_expired: int = 0
    tiles_failed: int = 0
    duplicates: int = 0


@dataclass(frozen=True)
class Completion:
    """What became of a result: which tiles were taken and which dropped."""

    job_id: str
    accepted: tuple[int, ...]
    dropped: tuple[int, ...]


@dataclass
class Job:
    """One render and the state of each of its tiles."""

    id: str
    spec: RenderSpec
    grid: TileGrid
    created: float
    status: JobStatus = JobStatus.QUEUED
    states: np.ndarray = field(init=False)
    attempts: np.ndarray = field(init=False)
    pending: deque[int] = field(default_factory=deque)
    lease_of: dict[int, int] = field(default_factory=dict)
    done: int = 0
    resumed: int = 0
    requeued: int = 0
    duplicates: int = 0
    iterations: int = 0
    pixels_done: int = 0
    started: float | None = None
    finished: float | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        self.states = np.zeros(self.grid.count, dtype=np.int8)
        self.attempts = np.zeros(self.grid.count, dtype=np.int16)
        # About 90 bytes a tile, which is why `make_spec` bounds the count.
        self.pending.extend(range(self.grid.count))

    def count(self, state: TileState) -> int:
        return int(np.count_nonzero(self.states == state))


@dataclass
class Worker:
    """A connection that joined; kept after it ends so people see what happened."""

    id: str
    name: str
    host: str
    processes: int
    joined: float
    last_seen: float
    connected: bool = True
    chunks: dict[int, Chunk] = field(default_factory=dict)
    rate: float | None = None
    tiles_done: int = 0
    pixels_done: int = 0
    iterations: int = 0
    ended: float | None = None
    end_status: WorkerStatus | None = None
    reason: str = ""
    expired_recently: bool = False
    leaving: bool = False


class Scheduler:
    """Pure scheduling logic; see the module docstring for its rules."""

    def __init__(
        self,
        *,
        lease_seconds: float = 30.0,
        max_attempts: int = 3,
        target_seconds: float = 2.0,
        pipeline_depth: int = 2,
        max_chunk_tiles: int = 4096,
        max_chunk_bytes: int = 32 * 1024 * 1024,
        unresponsive_after: float = 6.0,
        max_events: int = 500,
    ) -> None:
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.target_seconds = target_seconds
        # A chunk waits behind the others in the worker's hand while its lease
        # runs, so the whole pipeline must fit well inside one lease.
        self._chunk_seconds = min(target_seconds, lease_seconds / (2 * pipeline_depth))
        self.pipeline_depth = pipeline_depth
        self.max_chunk_tiles = max_chunk_tiles
        self.max_chunk_bytes = max_chunk_bytes
        self.unresponsive_after = unresponsive_after
        self.jobs: dict[str, Job] = {}
        self.queue: deque[str] = deque()
        self.active: Job | None = None
        self.workers: dict[str, Worker] = {}
        self._ended_workers: deque[str] = deque()
        self.events: deque[Event] = deque(maxlen=max_events)
        self.finished_jobs: list[Job] = []
        self.totals = Totals()
        self._chunks: dict[int, Chunk] = {}
        self._retired: OrderedDict[int, Chunk] = OrderedDict()
        self._chunk_ids = itertools.count(1)
        self._worker_ids = itertools.count(1)
        self._event_ids = itertools.count(1)

    # -- jobs -------------------------------------------------------------

    def add_job(
        self, spec: RenderSpec, now: float, done_tiles: Iterable[int] = ()
    ) -> Job:
        """Queue a render; tiles in ``done_tiles`` are already computed."""
        job_id = spec.key()
        if job_id in self.jobs and self.jobs[job_id].status in (
            JobStatus.QUEUED,
            JobStatus.RUNNING,
            JobStatus.DONE,
        ):
            return self.jobs[job_id]

        job = Job(job_id, spec, spec.grid, created=now)
        done = set(done_tiles)
        previous = self.jobs.get(job_id)
        if previous is not None:  # cancelled or failed: keep what it computed
            done.update(np.flatnonzero(previous.states == TileState.DONE).tolist())
        for tile in sorted(done):
            self._move(job, tile, TileState.DONE)
        job.resumed = job.done
        job.pending = deque(np.flatnonzero(job.states == TileState.PENDING).tolist())
        self.jobs[job_id] = job
        self.queue.append(job_id)
        self.record(
            now,
            "job-queued",
            f"job {job_id} queued ({job.grid.count} tiles, {job.resumed} already done)",
        )
        self._activate_next(now)
        return job

    def cancel_job(self, job_id: str, now: float) -> Job:
        """Stop a queued or running job; its leased tiles are forgotten."""
        job = self.jobs[job_id]
        if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
            self._end_job(job, JobStatus.CANCELLED, now, "on request")
        return job

    def _activate_next(self, now: float) -> None:
        while self.active is None and self.queue:
            job = self.jobs[self.queue.popleft()]
            if job.status is not JobStatus.QUEUED:
                continue
            job.status, job.started = JobStatus.RUNNING, now
            self.active = job
            self.record(now, "job-started", f"job {job.id} started")
            if job.done == job.grid.count:
                self._end_job(job, JobStatus.DONE, now, "all tiles were done before")

    def _end_job(self, job: Job, status: JobStatus, now: float, why: str) -> None:
        for chunk in [c for c in self._chunks.values() if c.job_id == job.id]:
            self._forget_chunk(chunk, retire=True)
        for tile in job.lease_of:
            self._move(job, tile, TileState.PENDING)
        job.lease_of.clear()
        job.pending.clear()
        job.status, job.finished = status, now
        if status is JobStatus.FAILED:
            job.error = why
        self.finished_jobs.append(job)
        if self.active is job:
            self.active = None
        self.record(now, f"job-{status.value}", f"job {job.id} {status.value}: {why}")
        self._activate_next(now)

    # -- workers ----------------------------------------------------------

    def register(self, name: str, host: str, processes: int, now: float) -> Worker:
        """A worker joined and proved the token."""
        worker = Worker(
            f"w{next(self._worker_ids)}",
            name,
            host,
            processes,
            joined=now,
            last_seen=now,
        )
        self.workers[worker.id] = worker
        self.record(
            now,
            "worker-joined",
            f"worker {worker.id} ({name} on {host}, {processes} "
            f"{'process' if processes == 1 else 'processes'}) joined",
        )
        return worker

    def disconnect(
        self, worker_id: str, now: float, status: WorkerStatus, reason: str
    ) -> list[int]:
        """A worker's connection ended; its leased tiles go back to the queue."""
        worker = self.workers[worker_id]
        if not worker.connected:
            return []
        requeued: list[int] = []
        for chunk in list(worker.chunks.values()):
            requeued += self._requeue(chunk, count_attempt=False, now=now)
        worker.connected, worker.ended = False, now
        worker.end_status, worker.reason = status, reason
        self._forget_old_workers(worker_id)
        self.record(
            now,
            f"worker-{status.value}",
            f"{self._who(worker)} {status.value}: {reason}; "
            f"{len(requeued)} tiles requeued",
        )
        return requeued

    def _forget_old_workers(self, ended: str) -> None:
        """Keep the last `MAX_ENDED_WORKERS` ended workers for people to see.

        Without a bound, every connection that ever joined (a flapping worker,
        a hostile peer on an open port) would stay in memory and in every
        chunk-size computation.
        """
        self._ended_workers.append(ended)
        while len(self._ended_workers) > MAX_ENDED_WORKERS:
            del self.workers[self._ended_workers.popleft()]

    def heartbeat(self, worker_id: str, now: float, busy: int) -> None:
        """The worker is alive, computing ``busy`` tiles right now.

        A worker that let a lease expire gets no new chunk until it reports a
        result or says it is idle: otherwise it would lease the tiles it just
        lost straight back, from the front of the queue, and queue them
        behind the work it is still stuck on.
        """
        worker = self.workers[worker_id]
        worker.last_seen = now
        if busy == 0:
            worker.expired_recently = False

    def release(
        self,
        worker_id: str,
        chunk_ids: Iterable[int],
        now: float,
        leaving: bool = False,
    ) -> int:
        """The worker hands chunks back unfinished; returns tiles requeued.

        A worker that is ``leaving`` gets no new chunks: they would only come
        back with its disconnect.
        """
        worker = self.workers[worker_id]
        worker.last_seen = now
        worker.leaving = worker.leaving or leaving
        count = 0
        for chunk_id in chunk_ids:
            chunk = worker.chunks.get(chunk_id)
            if chunk is not None:
                count += len(self._requeue(chunk, count_attempt=False, now=now))
        if count:
            self.record(
                now, "chunk-released", f"{self._who(worker)} released {count} tiles"
            )
        return count

    # -- leases -----------------------------------------------------------

    def next_chunk(self, worker_id: str, now: float) -> Chunk | None:
        """Lease a chunk to the worker if it has room and there is work."""
        worker = self.workers[worker_id]
        job = self.active
        if (
            len(worker.chunks) >= self.pipeline_depth
            or worker.leaving
            or job is None
            or not job.pending
            or self.worker_status(worker, now)
            not in (WorkerStatus.IDLE, WorkerStatus.WORKING)
        ):
            return None

        tiles = tuple(
            job.pending.popleft()
            for _ in range(min(self._chunk_size(worker, job), len(job.pending)))
        )
        chunk = Chunk(
            next(self._chunk_ids),
            job.id,
            worker_id,
            tiles,
            leased_at=now,
            deadline=now + self.lease_seconds,
        )
        for tile in tiles:
            self._move(job, tile, TileState.LEASED)
            job.lease_of[tile] = chunk.id
        self._chunks[chunk.id] = chunk
        worker.chunks[chunk.id] = chunk
        return chunk

    def _chunk_size(self, worker: Worker, job: Job) -> int:
        # The result must fit in one frame; a tile's values are 4 bytes a
        # pixel before compression, which never grows them by much.
        tile_bytes = 4 * job.spec.tile_size**2
        largest = max(1, min(self.max_chunk_tiles, self.max_chunk_bytes // tile_bytes))
        if worker.rate is None:
            return min(largest, max(1, worker.processes))

        connected = [w for w in self.workers.values() if w.connected]
        total_rate = sum(w.rate or worker.rate for w in connected)
        seconds_left = len(job.pending) / total_rate
        seconds = min(self._chunk_seconds, seconds_left / self.pipeline_depth)
        return max(1, min(largest, math.floor(worker.rate * seconds)))

    def expire(self, now: float) -> list[Chunk]:
        """Requeue every chunk whose lease ended; may fail a job."""
        due = [c for c in self._chunks.values() if c.deadline <= now]
        expired = []
        for chunk in due:
            if chunk.id not in self._chunks:
                continue  # its job failed on an earlier chunk of this loop
            expired.append(chunk)
            worker = self.workers[chunk.worker_id]
            worker.expired_recently = True
            self.totals.leases_expired += 1
            self.record(
                now,
                "lease-expired",
                f"{self._who(worker)}: chunk "
                f"{chunk.id} ({len(chunk.tiles)} tiles) requeued after "
                f"{now - chunk.leased_at:.1f} s",
            )
            self._requeue(
                chunk,
                count_attempt=True,
                now=now,
                why=f"its lease expired {self.max_attempts} times",
            )
        return expired

    # -- results ----------------------------------------------------------

    def complete(
        self,
        worker_id: str,
        chunk_id: int,
        done: Iterable[int],
        failed: Iterable[tuple[int, str]],
        *,
        compute_seconds: float,
        iterations: int,
        now: float,
    ) -> Completion:
        """A worker reports on a chunk; decide which tiles are taken.

        Raises `ProtocolError` when the worker names a chunk it never held or
        tiles outside that chunk, or does not account for every tile.
        """
        worker = self.workers[worker_id]
        worker.last_seen = now
        worker.expired_recently = False
        chunk = self.lookup_chunk(worker_id, chunk_id)
        self._retired.pop(chunk_id, None)
        done, failed = list(done), list(failed)
        named = set(done) | {tile for tile, _ in failed}
        if named != set(chunk.tiles) or len(done) + len(failed) != len(named):
            raise ProtocolError(
                f"result for chunk {chunk_id} names tiles {sorted(named)[:8]}..., "
                f"expected exactly the chunk's {len(chunk.tiles)} tiles"
            )

        job = self.jobs[chunk.job_id]
        accepted, dropped = self._take_results(job, chunk, done)
        if chunk.id in self._chunks:
            self._forget_chunk(chunk)
        for tile, reason in failed:
            self._fail_attempt(job, chunk, tile, reason, now)

        self._credit(worker, job, accepted, compute_seconds, iterations, len(done))
        if job.status is JobStatus.RUNNING and job.done == job.grid.count:
            self._end_job(job, JobStatus.DONE, now, "all tiles done")
        return Completion(job.id, tuple(accepted), tuple(dropped))

    def lookup_chunk(self, worker_id: str, chunk_id: int) -> Chunk:
        """The chunk a result refers to, leased now or retired not long ago."""
        chunk = self._chunks.get(chunk_id) or self._retired.get(chunk_id)
        if chunk is None or chunk.worker_id != worker_id:
            raise ProtocolError(
                f"result for chunk {chunk_id}, which was never leased to worker "
                f"{worker_id} or is long gone"
            )
        return chunk

    def _take_results(
        self, job: Job, chunk: Chunk, done: list[int]
    ) -> tuple[list[int], list[int]]:
        accepted, dropped = [], []
        for tile in done:
            state = _STATES[job.states[tile]]
            if job.status is not JobStatus.RUNNING or state in (
                TileState.DONE,
                TileState.FAILED,
            ):
                dropped.append(tile)
                job.duplicates += 1
                self.totals.duplicates += 1
                continue
            job.lease_of.pop(tile, None)
            if state is TileState.PENDING:
                job.pending.remove(tile)
            self._move(job, tile, TileState.DONE)
            accepted.append(tile)
        return accepted, dropped

    def _credit(
        self,
        worker: Worker,
        job: Job,
        accepted: list[int],
        compute_seconds: float,
        iterations: int,
        computed: int,
    ) -> None:
        pixels = sum(job.grid.rect(t).pixels for t in accepted)
        worker.tiles_done += len(accepted)
        worker.pixels_done += pixels
        worker.iterations += iterations
        job.iterations += iterations
        job.pixels_done += pixels
        self.totals.tiles_done += len(accepted)
        self.totals.pixels_done += pixels
        self.totals.iterations += iterations
        if computed and compute_seconds > 0:
            # A worker's figure is not trusted to be sane: a tiny one (5e-324)
            # made the rate infinite and every later chunk size NaN.
            seconds = max(compute_seconds, computed * MIN_TILE_SECONDS)
            sample = computed * worker.processes / seconds
            worker.rate = (
                sample if worker.rate is None else 0.5 * (worker.rate + sample)
            )

    def _fail_attempt(
        self, job: Job, chunk: Chunk, tile: int, reason: str, now: float
    ) -> None:
        if job.lease_of.get(tile) != chunk.id:
            return
        job.lease_of.pop(tile, None)
        self.totals.tiles_failed += 1
        self.record(
            now,
            "tile-failed",
            f"{self._who(self.workers[chunk.worker_id])}: tile {tile} failed: {reason}",
        )
        why = f"it failed {self.max_attempts} times, last: {reason}"
        if self._count_attempt(job, tile, now, why):
            self._move(job, tile, TileState.PENDING)
            job.pending.appendleft(tile)
            job.requeued += 1
            self.totals.tiles_requeued += 1

    # -- internals --------------------------------------------------------

    def _requeue(
        self, chunk: Chunk, *, count_attempt: bool, now: float, why: str = ""
    ) -> list[int]:
        job = self.jobs[chunk.job_id]
        self._forget_chunk(chunk, retire=count_attempt)
        back: list[int] = []
        for tile in chunk.tiles:
            if job.status is not JobStatus.RUNNING:
                return back  # a tile used up its attempts and ended the job
            if job.lease_of.get(tile) != chunk.id:
                continue  # taken by a late result
            del job.lease_of[tile]
            if not count_attempt or self._count_attempt(job, tile, now, why):
                self._move(job, tile, TileState.PENDING)
                back.append(tile)
        job.pending.extendleft(reversed(back))
        job.requeued += len(back)
        self.totals.tiles_requeued += len(back)
        return back

    def _count_attempt(self, job: Job, tile: int, now: float, why: str) -> bool:
        """Count a failed attempt; True if the tile may be tried again."""
        job.attempts[tile] += 1
        if job.attempts[tile] < self.max_attempts:
            return True
        self._move(job, tile, TileState.FAILED)
        rect = job.grid.rect(tile)
        self._end_job(
            job,
            JobStatus.FAILED,
            now,
            f"tile {tile} (x={rect.x}, y={rect.y}, {rect.width}x"
            f"{rect.height}) gave up because {why}",
        )
        return False

    def _forget_chunk(self, chunk: Chunk, *, retire: bool = False) -> None:
        """Drop a lease; a retired chunk's late result is still recognised."""
        self._chunks.pop(chunk.id, None)
        self.workers[chunk.worker_id].chunks.pop(chunk.id, None)
        if retire:
            self._retired[chunk.id] = chunk
            while len(self._retired) > MAX_RETIRED_CHUNKS:
                self._retired.popitem(last=False)

    def _move(self, job: Job, tile: int, new: TileState) -> None:
        old = _STATES[job.states[tile]]
        if new not in _ALLOWED_MOVES[old]:
            raise TransitionError(
                f"job {job.id}: tile {tile} cannot move from {old.name} to {new.name}"
            )
        job.states[tile] = new
        if new is TileState.DONE:
            job.done += 1

    def _who(self, worker: Worker) -> str:
        """How events name a worker: its id, and the name it gave."""
        return f"worker {worker.id} ({worker.name})"

    def record(self, now: float, kind: str, text: str) -> None:
        """Add an event to the log the dashboard shows."""
        self.events.append(Event(now, kind, text, next(self._event_ids)))

    # -- reading ----------------------------------------------------------

    def worker_status(self, worker: Worker, now: float) -> WorkerStatus:
        if not worker.connected:
            return worker.end_status or WorkerStatus.DISCONNECTED
        if worker.expired_recently or now - worker.last_seen > self.unresponsive_after:
            return WorkerStatus.UNRESPONSIVE
        return WorkerStatus.WORKING if worker.chunks else WorkerStatus.IDLE
