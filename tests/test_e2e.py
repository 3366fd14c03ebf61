"""A master and real worker processes over loopback TCP, with a worker killed."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from fraktal.master.picture import Output
from fraktal.master.scheduler import JobStatus, WorkerStatus
from fraktal.render.compute import render
from fraktal.render.spec import make_spec

pytestmark = pytest.mark.slow

# Deep in seahorse valley, where pixels take up to 200000 iterations to
# escape: about 2 s on one core, so the job lasts long enough to kill a
# worker in the middle of it.
SPEC = make_spec(
    width=960,
    height=640,
    center_re=-0.743643887037151,
    center_im=0.131825904205330,
    span=1e-7,
    max_iter=200_000,
    tile_size=32,
)


def test_worker_killed_mid_job_costs_nothing(start_master, workers, tmp_path):
    running = start_master(lease_seconds=30.0, target_seconds=0.3)
    output = Output(png=tmp_path / "out.png", raw_copy=tmp_path / "raw.npy")
    victim = workers(running.port, processes=1, name="victim")
    workers(running.port, processes=1, name="survivor")
    running.wait_for(
        lambda: len(running.master.scheduler.workers) == 2, what="both workers"
    )
    job = running.master.submit(SPEC, output)

    def victim_holds_work():
        return any(
            w.name == "victim" and w.tiles_done and w.chunks
            for w in running.master.scheduler.workers.values()
        )

    # Freeze the victim first, so that no result of its lands between the
    # check that it holds a chunk and the kill.
    for _ in range(20):
        running.wait_for(victim_holds_work, what="the victim to hold a chunk")
        os.killpg(victim.pid, signal.SIGSTOP)
        if running.call(victim_holds_work):
            break
        os.killpg(victim.pid, signal.SIGCONT)
    os.killpg(victim.pid, signal.SIGKILL)

    running.wait_for(
        lambda: job.status is JobStatus.DONE, timeout=120, what="the job to finish"
    )
    running.wait_for(lambda: job.id in running.master.written, what="the picture")

    lost = [w for w in running.master.scheduler.workers.values() if w.name == "victim"]
    assert (
        running.call(lambda: running.master.scheduler.worker_status(lost[0], 0.0))
        is WorkerStatus.LOST
    )
    assert job.requeued > 0
    raw = np.load(tmp_path / "raw.npy")
    assert np.array_equal(raw, render(SPEC))
    assert (tmp_path / "out.png").stat().st_size > 0
