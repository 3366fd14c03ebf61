"""Which workers the master offers work to after a message, without sockets."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fraktal.local import RenderFailed, raise_if_failed
from fraktal.master.picture import Output
from fraktal.master.scheduler import JobStatus
from fraktal.master.service import Master, MasterConfig
from fraktal.master.store import JobStore
from fraktal.protocol.messages import Release
from fraktal.protocol.session import MasterSession
from fraktal.render.spec import make_spec
from masterdriver import Wire

SPEC = make_spec(width=32, height=16, tile_size=8, span=3.0, max_iter=50)  # 8 tiles


def join(master: Master, name: str, processes: int):
    wire = Wire()
    connection = master.join(MasterSession(None), wire, name, "host", processes)
    master.dispatch(connection)
    return connection, wire


def test_tiles_handed_back_by_a_leaving_worker_go_to_another_at_once(tmp_path):
    master = Master(MasterConfig(jobs_dir=tmp_path))
    master.submit(SPEC, Output(png=None))
    leaving, leaving_wire = join(master, "leaving", processes=4)
    _, idle_wire = join(master, "idle", processes=1)
    chunks = leaving_wire.assigns()
    assert sum(len(a.tiles) for a in chunks) == 8 and idle_wire.assigns() == []

    release = Release(tuple(a.chunk for a in chunks), leaving=True)
    asyncio.run(master.handle(leaving, release))

    handed = [a.tiles for a in idle_wire.assigns()]
    assert len(handed) == 2 and all(len(tiles) == 1 for tiles in handed)
    assert leaving_wire.assigns() == []


def test_relative_folders_become_absolute_so_downloads_work_from_anywhere(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    master = Master(MasterConfig(jobs_dir=Path("jobs")))

    job = master.submit(SPEC, Output(png=Path("out.png"), raw_copy=Path("raw.npy")))

    assert master.config.jobs_dir == tmp_path / "jobs"
    assert master.outputs[job.id].png == tmp_path / "out.png"
    assert master.outputs[job.id].raw_copy == tmp_path / "raw.npy"
    assert master.folder_output(SPEC).png == tmp_path / "jobs" / job.id / "image.png"


@pytest.mark.slow
def test_a_picture_that_cannot_be_written_fails_the_render(
    start_master, workers, tmp_path
):
    folder = tmp_path / "gone"
    folder.mkdir()
    running = start_master()
    job = running.master.submit(SPEC, Output(png=folder / "x.png"))
    folder.rmdir()
    workers(running.port, name="w")

    running.wait_for(
        lambda: job.id in running.master.picture_errors, 60, "the picture to fail"
    )

    assert "No such file or directory" in running.master.picture_errors[job.id]
    with pytest.raises(RenderFailed, match="writing the picture failed"):
        raise_if_failed(running.master, job)


@pytest.mark.slow
def test_ended_jobs_give_their_folders_back_and_still_preview(
    start_master, workers, tmp_path
):
    running = start_master()
    workers(running.port, name="w")
    first = running.master.submit(SPEC, Output(png=None))
    running.wait_for(lambda: first.status is JobStatus.DONE, 60, "the first job")
    before = len(os.listdir("/proc/self/fd"))

    for n in range(20):
        spec = make_spec(width=32, height=16, tile_size=8, span=3.0 + n, max_iter=50)
        job = running.master.submit(spec, Output(png=None))
        running.wait_for(lambda j=job: j.status is JobStatus.DONE, 60, "a job")

    assert len(os.listdir("/proc/self/fd")) <= before + 2
    assert running.call(lambda: dict(running.master.stores)) == {}
    image = running.master.preview(first.id, max_side=32)
    assert (
        image.shape == (16, 32, 3) and len(np.unique(image.reshape(-1, 3), axis=0)) > 4
    )


def test_a_job_cancelled_and_submitted_again_at_once_resumes_in_the_same_master(
    start_master, tmp_path
):
    running = start_master()
    job = running.master.submit(SPEC, Output(png=None))
    # The event loop is busy when the cancel comes, as it is under load, so
    # it has not given the job's folder back when the same job comes again.
    running.loop.call_soon_threadsafe(time.sleep, 0.5)

    running.master.cancel(job.id)
    again = running.master.submit(SPEC, Output(png=None))

    assert job.status is JobStatus.CANCELLED
    assert again is not job and again.status in (JobStatus.QUEUED, JobStatus.RUNNING)
    assert again.id in running.call(lambda: dict(running.master.stores))


def test_a_job_submitted_again_while_its_folder_is_being_closed_resumes(
    start_master, monkeypatch
):
    closing = threading.Event()
    real_close = JobStore.close

    def slow_close(store):  # the last flush of a job, on a slow disk
        closing.set()
        time.sleep(0.5)
        real_close(store)

    monkeypatch.setattr(JobStore, "close", slow_close)
    running = start_master()
    job = running.master.submit(SPEC, Output(png=None))

    running.master.cancel(job.id)
    assert closing.wait(10)
    again = running.master.submit(SPEC, Output(png=None))

    assert again is not job and again.status in (JobStatus.QUEUED, JobStatus.RUNNING)
