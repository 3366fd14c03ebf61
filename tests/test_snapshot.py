"""Snapshots for the dashboard, from a scheduler driven by a fake clock."""

import json
from pathlib import Path

from fraktal.master import snapshot
from fraktal.master.picture import Output
from fraktal.master.scheduler import Scheduler, WorkerStatus
from fraktal.render.spec import make_spec

# 10 x 1 tiles of 8 x 8 pixels
SPEC = make_spec(width=80, height=8, tile_size=8, span=3.0, max_iter=50)
OFFSET = 1_000_000.0  # wall clock = monotonic + OFFSET
OUTPUTS = {SPEC.key(): Output(png=Path("x.png"), palette="fire", equalize=True)}


def finish(scheduler, worker, chunk, now, iterations=100):
    scheduler.complete(
        worker.id,
        chunk.id,
        chunk.tiles,
        [],
        compute_seconds=1.0,
        iterations=iterations,
        now=now,
    )


def running_job():
    """Job started at t=100; two tiles done by t=104; four more leased."""
    scheduler = Scheduler(unresponsive_after=6.0)
    job = scheduler.add_job(SPEC, now=100.0)
    worker = scheduler.register("alpha", "10.0.0.7", processes=2, now=100.0)
    finish(scheduler, worker, scheduler.next_chunk(worker.id, now=100.0), now=104.0)
    scheduler.next_chunk(worker.id, now=104.0)
    return scheduler, job, worker


def test_running_job_shows_progress_speed_eta_and_wall_clock_times():
    scheduler, job, _ = running_job()

    info = snapshot.build(scheduler, 110.0, OFFSET, OUTPUTS, {})["job"]

    assert info["id"] == job.id and info["status"] == "running"
    assert info["params"]["width"] == 80 and info["params"]["max_iter"] == 50
    assert info["params"]["palette"] == "fire" and info["params"]["equalize"] is True
    assert info["tiles"] == {
        "total": 10,
        "done": 2,
        "pending": 4,
        "leased": 4,
        "failed": 0,
        "requeued": 0,
        "resumed": 0,
        "duplicates": 0,
    }
    assert info["progress"] == 0.2
    assert info["elapsed"] == 10.0
    assert info["eta"] == 40.0  # 8 tiles left at 2 tiles per 10 s
    assert info["pixels_per_second"] == 2 * 64 / 10.0
    assert info["iterations_per_second"] == 100 / 10.0
    assert info["started"] == 100.0 + OFFSET and info["finished"] is None
    assert info["picture"] is False


def test_workers_show_chunk_throughput_and_heartbeat_age():
    scheduler, _, _ = running_job()

    (info,) = snapshot.build(scheduler, 107.5, OFFSET, OUTPUTS, {})["workers"]

    assert (info["name"], info["host"], info["processes"]) == ("alpha", "10.0.0.7", 2)
    assert info["status"] == "working"
    assert [(c["tiles"], c["deadline"]) for c in info["chunks"]] == [
        (4, 104.0 + 30.0 + OFFSET)
    ]
    assert info["tiles_done"] == 2 and info["pixels_done"] == 128
    assert info["heartbeat_age"] == 3.5
    assert info["pixels_per_second"] == 128 / 7.5
    assert info["ended"] is None and info["reason"] is None


def test_a_lost_worker_stays_listed_after_live_ones_with_when_and_why():
    scheduler, _, lost = running_job()
    survivor = scheduler.register("beta", "10.0.0.8", processes=1, now=105.0)
    scheduler.disconnect(lost.id, 106.0, WorkerStatus.LOST, "connection reset")

    data = snapshot.build(scheduler, 120.0, OFFSET, OUTPUTS, {})

    assert [w["id"] for w in data["workers"]] == [survivor.id, lost.id]
    gone = data["workers"][1]
    assert gone["status"] == "lost" and gone["connected"] is False
    assert gone["ended"] == 106.0 + OFFSET
    assert gone["reason"] == "connection reset"
    assert gone["chunks"] == []
    assert data["workers_connected"] == 1
    assert data["workers_by_status"] == {"lost": 1, "unresponsive": 1}
    assert data["job"]["tiles"]["requeued"] == 4


def test_a_silent_worker_is_shown_unresponsive():
    scheduler, _, _ = running_job()

    (info,) = snapshot.build(scheduler, 111.0, OFFSET, OUTPUTS, {})["workers"]

    assert info["status"] == "unresponsive" and info["heartbeat_age"] == 7.0


def test_finished_job_has_no_eta_and_its_elapsed_time_stops():
    scheduler = Scheduler()
    job = scheduler.add_job(SPEC, now=0.0)
    worker = scheduler.register("a", "h", processes=10, now=0.0)
    finish(scheduler, worker, scheduler.next_chunk(worker.id, now=0.0), now=5.0)

    data = snapshot.build(scheduler, 50.0, OFFSET, OUTPUTS, {job.id: Path("x.png")})

    assert data["job"] is None and data["queue"] == []
    (info,) = data["jobs"]
    assert info["status"] == "done" and info["progress"] == 1.0
    assert info["elapsed"] == 5.0 and info["eta"] is None
    assert info["finished"] == 5.0 + OFFSET and info["picture"] is True


def test_resumed_job_estimates_from_tiles_computed_in_this_run():
    scheduler = Scheduler()
    scheduler.add_job(SPEC, now=0.0, done_tiles=range(6))
    worker = scheduler.register("a", "h", processes=1, now=0.0)
    finish(scheduler, worker, scheduler.next_chunk(worker.id, now=0.0), now=2.0)

    info = snapshot.build(scheduler, 2.0, OFFSET, OUTPUTS, {})["job"]

    assert info["tiles"]["resumed"] == 6 and info["tiles"]["done"] == 7
    assert info["eta"] == 6.0  # 3 tiles left at 1 tile per 2 s


def test_jobs_are_listed_newest_first_and_queued_ones_are_named():
    scheduler = Scheduler()
    first = scheduler.add_job(SPEC, now=0.0)
    other = make_spec(width=16, height=8, tile_size=8, span=2.0, max_iter=20)
    second = scheduler.add_job(other, now=1.0)
    outputs = {**OUTPUTS, other.key(): Output(png=None)}

    data = snapshot.build(scheduler, 2.0, OFFSET, outputs, {})

    assert [j["id"] for j in data["jobs"]] == [second.id, first.id]
    assert data["queue"] == [second.id]
    assert data["jobs"][0]["started"] is None and data["jobs"][0]["eta"] is None


def test_events_after_a_sequence_number_and_the_snapshot_is_json():
    scheduler, _, _ = running_job()
    everything = snapshot.build(scheduler, 110.0, OFFSET, OUTPUTS, {})
    last = everything["events"][-1]["seq"]
    scheduler.expire(now=200.0)

    newer = snapshot.build(scheduler, 200.0, OFFSET, OUTPUTS, {}, events_after=last)

    assert [e["kind"] for e in newer["events"]] == ["lease-expired"]
    assert newer["events"][0]["time"] == 200.0 + OFFSET
    assert "requeued after 96.0 s" in newer["events"][0]["text"]
    assert newer["totals"]["leases_expired"] == 1
    assert json.loads(json.dumps(newer)) == newer
