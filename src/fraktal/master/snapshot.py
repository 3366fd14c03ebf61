"""Plain, JSON-ready pictures of the scheduler's state, for the dashboard.

Nothing here changes the scheduler. The master calls these functions under
its lock and hands the result to other threads, so the dicts hold only
numbers, strings and lists, never a reference into live scheduler state.

The scheduler counts time in monotonic seconds, which mean nothing to a
person; every moment in a snapshot is a Unix time instead, the monotonic
value plus ``wall_offset``, which the master measures once for its whole
life so that all the moments it reports agree with each other. Durations
(elapsed, ETA, heartbeat age) are plain seconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fraktal.master.scheduler import (
    Event,
    Job,
    JobStatus,
    Scheduler,
    TileState,
    Worker,
)

if TYPE_CHECKING:
    from fraktal.master.picture import Output

# Workers whose connection ended are listed, newest first, up to this many,
# so that a worker restarting in a loop cannot grow every snapshot forever.
MAX_ENDED_WORKERS = 100

Info = dict[str, Any]


def build(
    scheduler: Scheduler,
    now: float,
    wall_offset: float,
    outputs: Mapping[str, Output],
    pictures: Mapping[str, Path | None],
    events_after: int = 0,
) -> Info:
    """Everything the dashboard shows, as one consistent snapshot."""
    active = scheduler.active
    jobs = sorted(scheduler.jobs.values(), key=lambda job: job.created, reverse=True)

    def describe(job: Job) -> Info:
        picture = pictures.get(job.id) is not None
        return job_info(job, now, wall_offset, outputs[job.id], picture)

    workers = worker_infos(scheduler, now, wall_offset)
    by_status = Counter(
        scheduler.worker_status(worker, now).value
        for worker in scheduler.workers.values()
    )
    return {
        "time": now + wall_offset,
        "job": describe(active) if active is not None else None,
        "queue": [
            job_id
            for job_id in scheduler.queue
            if scheduler.jobs[job_id].status is JobStatus.QUEUED
        ],
        "jobs": [describe(job) for job in jobs],
        "workers": workers,
        "workers_connected": sum(w["connected"] for w in workers),
        "workers_by_status": dict(sorted(by_status.items())),
        "events": [
            event_info(event, wall_offset)
            for event in scheduler.events
            if event.seq > events_after
        ],
        "totals": asdict(scheduler.totals),
    }


def job_info(
    job: Job, now: float, wall_offset: float, output: Output, picture: bool
) -> Info:
    """One job: parameters, tile counts, speed, times, outcome."""
    counts = np.bincount(job.states, minlength=len(TileState))
    total = job.grid.count
    elapsed = None
    if job.started is not None:
        elapsed = (job.finished if job.finished is not None else now) - job.started

    return {
        "id": job.id,
        "status": job.status.value,
        "params": {
            **job.spec.to_dict(),
            "palette": output.palette,
            "equalize": output.equalize,
        },
        "tiles": {
            "total": total,
            "done": job.done,
            "pending": int(counts[TileState.PENDING]),
            "leased": int(counts[TileState.LEASED]),
            "failed": int(counts[TileState.FAILED]),
            "requeued": job.requeued,
            "resumed": job.resumed,
            "duplicates": job.duplicates,
        },
        "progress": job.done / total,
        "iterations": job.iterations,
        "pixels_per_second": _per_second(job.pixels_done, elapsed),
        "iterations_per_second": _per_second(job.iterations, elapsed),
        "created": job.created + wall_offset,
        "started": _wall(job.started, wall_offset),
        "finished": _wall(job.finished, wall_offset),
        "elapsed": elapsed,
        "eta": _eta(job, elapsed),
        "error": job.error,
        "picture": picture,
    }


def _eta(job: Job, elapsed: float | None) -> float | None:
    """Seconds left at the pace of the tiles computed so far in this run."""
    computed = job.done - job.resumed
    if job.status is not JobStatus.RUNNING or not elapsed or computed <= 0:
        return None
    return (job.grid.count - job.done) * elapsed / computed


def worker_infos(scheduler: Scheduler, now: float, wall_offset: float) -> list[Info]:
    """Connected workers in the order they joined, then ended ones, newest first."""
    connected = [w for w in scheduler.workers.values() if w.connected]
    ended = sorted(
        (w for w in scheduler.workers.values() if not w.connected),
        key=lambda worker: worker.ended or 0.0,
        reverse=True,
    )
    return [
        worker_info(scheduler, worker, now, wall_offset)
        for worker in connected + ended[:MAX_ENDED_WORKERS]
    ]


def worker_info(
    scheduler: Scheduler, worker: Worker, now: float, wall_offset: float
) -> Info:
    """One worker: who it is, what it holds, what it did, how it ended."""
    until = worker.ended if worker.ended is not None else now
    return {
        "id": worker.id,
        "name": worker.name,
        "host": worker.host,
        "processes": worker.processes,
        "status": scheduler.worker_status(worker, now).value,
        "connected": worker.connected,
        "chunks": [
            {
                "id": chunk.id,
                "job": chunk.job_id,
                "tiles": len(chunk.tiles),
                "first_tile": chunk.tiles[0],
                "leased": chunk.leased_at + wall_offset,
                "deadline": chunk.deadline + wall_offset,
            }
            for chunk in worker.chunks.values()
        ],
        "tiles_done": worker.tiles_done,
        "pixels_done": worker.pixels_done,
        "iterations": worker.iterations,
        "tiles_per_second": worker.rate,
        "pixels_per_second": _per_second(worker.pixels_done, until - worker.joined),
        "heartbeat_age": max(0.0, now - worker.last_seen),
        "joined": worker.joined + wall_offset,
        "ended": _wall(worker.ended, wall_offset),
        "reason": worker.reason or None,
    }


def event_info(event: Event, wall_offset: float) -> Info:
    return {
        "seq": event.seq,
        "time": event.time + wall_offset,
        "kind": event.kind,
        "text": event.text,
    }


def _per_second(amount: int, seconds: float | None) -> float | None:
    return amount / seconds if seconds else None


def _wall(moment: float | None, wall_offset: float) -> float | None:
    return None if moment is None else moment + wall_offset
