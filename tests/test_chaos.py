"""Worker faults with real processes, real signals and loopback TCP.

Each scenario ends with the raw array bit-identical to a one-process render
and every tile journaled exactly once. The master runs in a thread of this
process (see `conftest.start_master`), so the tests read its scheduler; the
restart of a killed master has its own file, `test_restart.py`.
"""

from __future__ import annotations

import os
import signal
from collections import defaultdict

import numpy as np
import pytest

from chaos import (
    HEAVY,
    LIGHT,
    descendants,
    each_tile_journaled_once,
    is_running,
    pool_processes,
    reference,
    wait_until,
)
from fraktal.master.picture import Output
from fraktal.master.scheduler import JobStatus, TileState, WorkerStatus
from fraktal.protocol.framing import encode_frame
from fraktal.protocol.messages import Assign, encode
from fraktal.render.spec import make_spec
from rawclient import RawClient, computed_result

pytestmark = pytest.mark.slow


def output(tmp_path):
    return Output(png=tmp_path / "out.png", raw_copy=tmp_path / "raw.npy")


def named(running, name):
    """The latest worker that joined under ``name``, or None."""
    found = [w for w in running.master.scheduler.workers.values() if w.name == name]
    return found[-1] if found else None


def holds_work(running, name):
    """The worker has returned a result and holds a chunk now: mid-chunk."""
    worker = named(running, name)
    return worker is not None and worker.tiles_done > 0 and bool(worker.chunks)


def full_pool(pid):
    """The pool processes of worker ``pid`` once both have started."""
    pool = pool_processes(pid)
    return pool if len(pool) == 2 else None


def status(running, worker):
    scheduler = running.master.scheduler
    return scheduler.worker_status(worker, running.master.clock())


def finish(running, job, tmp_path, spec, timeout=180.0):
    """Wait for the job and its picture; check the values and the journal."""
    running.wait_for(lambda: job.status is JobStatus.DONE, timeout, "the job")
    running.wait_for(lambda: job.id in running.master.written, 60, "the picture")
    assert np.array_equal(np.load(tmp_path / "raw.npy"), reference(spec))
    assert each_tile_journaled_once(running.master.config.jobs_dir / job.id, spec)


def test_a_worker_killed_mid_chunk_three_times_costs_nothing(
    start_master, workers, tmp_path
):
    running = start_master(target_seconds=0.5)
    job = running.master.submit(HEAVY, output(tmp_path))

    for round_ in range(3):
        name = f"victim-{round_}"
        victim = workers(running.port, name=name)
        running.wait_for(lambda n=name: holds_work(running, n), 90, f"{name} busy")
        os.killpg(victim.pid, signal.SIGKILL)
        running.wait_for(
            lambda n=name: named(running, n).end_status is WorkerStatus.LOST,
            30,
            f"{name} to be listed as lost",
        )
    assert job.status is JobStatus.RUNNING
    requeued_by_kills = job.requeued
    workers(running.port, name="survivor")

    finish(running, job, tmp_path, HEAVY)
    assert requeued_by_kills >= 3
    assert job.attempts.sum() == 0  # a lost worker is not the tiles' fault
    assert named(running, "survivor").tiles_done < job.grid.count


def test_stopped_worker_loses_its_chunk_and_its_late_result_does_no_harm(
    start_master, task_workers, tmp_path
):
    running = start_master(lease_seconds=3.0, target_seconds=0.5)
    job = running.master.submit(HEAVY, output(tmp_path))
    # Paced, so that the job outlasts the stopped worker's lease.
    pace = {"FRAKTAL_TEST_PACE": "0.05"}
    sleeper = task_workers(running.port, "paced", name="sleeper", env=pace)
    task_workers(running.port, "paced", name="steady", env=pace)
    running.wait_for(lambda: holds_work(running, "sleeper"), 90, "sleeper busy")

    os.killpg(sleeper.pid, signal.SIGSTOP)
    worker = running.call(lambda: named(running, "sleeper"))
    held = running.call(lambda: set(worker.chunks))
    running.wait_for(
        lambda: (
            status(running, worker) is WorkerStatus.UNRESPONSIVE
            and not set(worker.chunks) & held
        ),
        30,
        "the stopped worker's lease to expire",
    )
    before = running.call(lambda: (worker.tiles_done, job.duplicates))
    expired = [e.text for e in running.master.scheduler.events if "requeued" in e.text]
    assert any(f"worker {worker.id} (sleeper): chunk" in text for text in expired)
    assert job.attempts.sum() >= 1

    os.killpg(sleeper.pid, signal.SIGCONT)
    running.wait_for(
        lambda: (worker.tiles_done, job.duplicates) != before,
        60,
        "the late result to be taken or dropped",
    )

    finish(running, job, tmp_path, HEAVY)
    assert worker.connected
    assert running.call(lambda: status(running, worker)) is WorkerStatus.IDLE


def test_killed_pool_process_is_replaced_and_its_tiles_computed_again(
    start_master, workers, tmp_path
):
    running = start_master(target_seconds=0.5)
    job = running.master.submit(HEAVY, output(tmp_path))
    worker = workers(running.port, processes=2, name="pooled")
    running.wait_for(lambda: holds_work(running, "pooled"), 90, "the worker busy")
    pool = wait_until(lambda: full_pool(worker.pid), 30, "two pool processes")

    os.kill(pool[0], signal.SIGKILL)

    finish(running, job, tmp_path, HEAVY)
    pooled = named(running, "pooled")
    assert pooled.connected and pooled.tiles_done == job.grid.count
    assert job.attempts.sum() == 0 and job.requeued == 0
    assert not set(pool) & set(pool_processes(worker.pid))


def test_killed_worker_leaves_no_pool_process_behind(start_master, workers, tmp_path):
    running = start_master(target_seconds=0.5)
    job = running.master.submit(HEAVY, output(tmp_path))
    worker = workers(running.port, processes=2, name="parent")
    running.wait_for(lambda: holds_work(running, "parent"), 90, "the worker busy")
    wait_until(lambda: full_pool(worker.pid), 30, "two pool processes")
    family = descendants(worker.pid)

    os.kill(worker.pid, signal.SIGKILL)  # the main process only

    wait_until(
        lambda: not any(is_running(pid) for pid in family),
        10,
        f"processes {family} of the killed worker to exit",
    )
    running.wait_for(
        lambda: named(running, "parent").end_status is WorkerStatus.LOST,
        30,
        "the worker to be listed as lost",
    )
    assert job.requeued > 0 and not job.lease_of


def test_result_cut_off_halfway_is_discarded_and_its_chunk_requeued(
    start_master, workers, tmp_path
):
    running = start_master(target_seconds=0.5)
    job = running.master.submit(LIGHT, output(tmp_path))
    client = RawClient(running.port)
    client.join(token=None, name="halfway")
    assign = client.read_until(Assign)
    frame = encode_frame(encode(computed_result(assign)))

    client.send(frame[: len(frame) // 2])
    client.close()

    running.wait_for(
        lambda: named(running, "halfway").end_status is WorkerStatus.LOST,
        30,
        "the worker to be listed as lost",
    )
    assert "middle of a frame" in named(running, "halfway").reason
    assert job.done == 0
    assert all(job.states[t] == TileState.PENDING for t in assign.tiles)
    assert job.attempts.sum() == 0

    workers(running.port, name="healthy")
    finish(running, job, tmp_path, LIGHT)


def test_worker_joining_mid_job_gets_work_at_once(
    start_master, workers, task_workers, tmp_path
):
    running = start_master(target_seconds=0.5)
    job = running.master.submit(HEAVY, output(tmp_path))
    # Paced so that the job outlasts the late worker's start-up however fast
    # the kernel gets: 192 tiles of at least 50 ms each.
    task_workers(running.port, "paced", name="early", env={"FRAKTAL_TEST_PACE": "0.05"})
    running.wait_for(lambda: job.done >= job.grid.count // 5, 90, "20% done")

    workers(running.port, name="late")
    late = running.wait_for(
        lambda: (w := named(running, "late")) and w.chunks and w,
        60,
        "the late worker to hold a chunk",
    )
    first_lease = running.call(lambda: min(c.leased_at for c in late.chunks.values()))

    assert job.status is JobStatus.RUNNING
    assert first_lease - late.joined < 1.0  # handed out on joining, not polled
    finish(running, job, tmp_path, HEAVY)
    assert late.tiles_done > 0


SPREAD = make_spec(width=480, height=320, span=3.0, max_iter=200, tile_size=16)


def test_workers_three_times_apart_finish_together(
    start_master, task_workers, tmp_path
):
    target = 1.0
    running = start_master(target_seconds=target)
    job = running.master.submit(SPREAD, output(tmp_path))
    record = tmp_path / "tiles.txt"
    for name, pace in (("fast", "0.015"), ("slow", "0.045")):
        task_workers(
            running.port,
            "paced",
            name=name,
            env={"FRAKTAL_TEST_PACE": pace, "FRAKTAL_TEST_RECORD": str(record)},
        )

    finish(running, job, tmp_path, SPREAD)

    last, counts = defaultdict(float), defaultdict(int)
    for line in record.read_text().splitlines():
        name, _, _, when = line.split()
        last[name] = max(last[name], float(when))
        counts[name] += 1
    end = max(last.values())
    idle = {name: end - when for name, when in last.items()}
    print(f"idle at the end: {idle}, tiles computed: {dict(counts)}")
    assert max(idle.values()) <= 1.5 * target
    assert 2.0 <= counts["fast"] / counts["slow"] <= 4.5
    assert job.duplicates == 0 and sum(counts.values()) == job.grid.count
    assert named(running, "fast").tiles_done + named(running, "slow").tiles_done == (
        job.grid.count
    )


POISONED = make_spec(
    width=160,
    height=120,
    center_re=-0.7436,
    center_im=0.1318,
    span=0.021,
    max_iter=2000,
    tile_size=16,
)


def test_tile_that_always_kills_its_process_fails_only_its_job(
    start_master, task_workers, tmp_path
):
    running = start_master(max_attempts=3, target_seconds=0.5)
    bad = running.master.submit(POISONED, Output(png=tmp_path / "bad.png"))
    good = running.master.submit(LIGHT, output(tmp_path))
    task_workers(
        running.port,
        "poison",
        name="unlucky",
        processes=2,
        env={"FRAKTAL_TEST_POISON": "32,48,0.021"},
    )

    running.wait_for(lambda: bad.status is JobStatus.FAILED, 180, "the job to fail")

    assert "tile 32 (x=32, y=48, 16x16)" in bad.error
    assert "failed 3 times" in bad.error and "process died" in bad.error
    assert not (tmp_path / "bad.png").exists()
    finish(running, good, tmp_path, LIGHT)
    assert named(running, "unlucky").connected
