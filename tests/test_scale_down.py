"""Graceful scale-down: a worker stopped with SIGTERM hands its chunks back.

`docker-compose up --scale worker=N` with a smaller N, `docker stop` and
Ctrl-C all end a worker with SIGTERM (or SIGINT). Its chunks must go back to
the queue at once, not when their lease expires, and the master must list it
as having left, not as lost.
"""

from __future__ import annotations

import signal

import numpy as np
import pytest

from fraktal.master.picture import Output
from fraktal.master.scheduler import JobStatus, WorkerStatus
from fraktal.render.compute import render
from fraktal.render.spec import make_spec

pytestmark = pytest.mark.slow

# Deep and with a high iteration limit: a few seconds of one core, so the
# victim is sure to hold chunks when it is stopped.
SPEC = make_spec(
    width=320,
    height=200,
    center_re=-0.743643887037151,
    center_im=0.131825904205330,
    span=1e-6,
    max_iter=200_000,
    tile_size=32,
)
# Far longer than the test waits: a chunk that comes back did not expire.
LEASE_SECONDS = 600.0


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"]
)
def test_a_stopped_worker_releases_its_chunks_and_is_listed_as_left(
    start_master, workers, tmp_path, signum
):
    running = start_master(lease_seconds=LEASE_SECONDS, target_seconds=1.0)
    scheduler = running.master.scheduler
    job = running.master.submit(SPEC, Output(png=None, raw_copy=tmp_path / "raw.npy"))
    victim = workers(running.port, processes=1, name="victim")

    def victim_record():
        return next(w for w in scheduler.workers.values() if w.name == "victim")

    running.wait_for(
        lambda: (
            job.done >= 1
            and any(w.name == "victim" and w.chunks for w in scheduler.workers.values())
        ),
        what="the victim to hold chunks after its first result",
    )
    victim.send_signal(signum)

    running.wait_for(
        lambda: scheduler.worker_status(victim_record(), 0.0) is WorkerStatus.LEFT,
        timeout=30,
        what="the victim to be listed as left",
    )
    assert victim.wait(30) == 0
    record = running.call(victim_record)
    assert record.chunks == {}
    assert job.status is JobStatus.RUNNING
    assert job.requeued > 0
    assert job.pending
    released = [e for e in scheduler.events if e.kind == "chunk-released"]
    assert any(record.id in e.text for e in released)
    assert not any(e.kind == "lease-expired" for e in scheduler.events)

    workers(running.port, processes=1, name="successor")
    running.wait_for(
        lambda: job.status is JobStatus.DONE, timeout=180, what="the job to finish"
    )
    running.wait_for(lambda: job.id in running.master.written, what="the raw copy")
    assert np.array_equal(np.load(tmp_path / "raw.npy"), render(SPEC))
