"""The scheduler's rules, driven by a fake clock: no sockets, no sleeping."""

import math

import pytest

from fraktal.errors import ProtocolError, TransitionError
from fraktal.master.scheduler import (
    MAX_ENDED_WORKERS,
    JobStatus,
    Scheduler,
    TileState,
    WorkerStatus,
)
from fraktal.render.spec import make_spec

# 10 x 1 tiles of 8 x 8 pixels
SPEC = make_spec(width=80, height=8, tile_size=8, span=3.0, max_iter=50)


def make(**options):
    options.setdefault("unresponsive_after", 1e9)  # liveness has its own tests
    scheduler = Scheduler(**options)
    job = scheduler.add_job(SPEC, now=0.0)
    return scheduler, job


def finish(scheduler, worker, chunk, now, seconds=1.0):
    return scheduler.complete(
        worker.id,
        chunk.id,
        chunk.tiles,
        [],
        compute_seconds=seconds,
        iterations=10,
        now=now,
    )


def test_first_chunks_probe_one_tile_per_process_and_pipeline_two():
    scheduler, job = make()
    worker = scheduler.register("a", "host", processes=3, now=0.0)

    first = scheduler.next_chunk(worker.id, now=0.0)
    second = scheduler.next_chunk(worker.id, now=0.0)
    third = scheduler.next_chunk(worker.id, now=0.0)

    assert first.tiles == (0, 1, 2) and second.tiles == (3, 4, 5)
    assert third is None
    assert job.count(TileState.LEASED) == 6
    assert first.deadline == 30.0


def test_expired_lease_is_requeued_and_goes_to_another_worker():
    scheduler, job = make(lease_seconds=30.0)
    slow = scheduler.register("slow", "h", processes=2, now=0.0)
    chunk = scheduler.next_chunk(slow.id, now=0.0)

    assert scheduler.expire(now=29.9) == []
    assert scheduler.expire(now=30.0) == [chunk]

    assert job.count(TileState.LEASED) == 0
    assert list(job.pending)[:2] == list(chunk.tiles)
    assert job.attempts[list(chunk.tiles)].tolist() == [1, 1]
    assert scheduler.worker_status(slow, now=30.0) is WorkerStatus.UNRESPONSIVE
    fast = scheduler.register("fast", "h", processes=2, now=31.0)
    assert scheduler.next_chunk(fast.id, now=31.0).tiles == chunk.tiles
    (expired,) = [e for e in scheduler.events if e.kind == "lease-expired"]
    assert expired.text == (
        f"worker {slow.id} (slow): chunk {chunk.id} (2 tiles) requeued after 30.0 s"
    )


def test_disconnect_requeues_at_once_without_counting_an_attempt():
    scheduler, job = make()
    worker = scheduler.register("a", "h", processes=2, now=0.0)
    scheduler.next_chunk(worker.id, now=0.0)

    requeued = scheduler.disconnect(worker.id, 5.0, WorkerStatus.LOST, "EOF")

    assert requeued == [0, 1] and list(job.pending)[:2] == [0, 1]
    assert job.count(TileState.LEASED) == 0
    assert job.attempts.sum() == 0
    assert scheduler.worker_status(worker, now=6.0) is WorkerStatus.LOST
    assert worker.reason == "EOF"
    assert (
        scheduler.events[-1].text
        == f"worker {worker.id} (a) lost: EOF; 2 tiles requeued"
    )


def test_late_result_for_a_still_missing_tile_is_taken():
    scheduler, job = make(lease_seconds=10.0)
    worker = scheduler.register("a", "h", processes=2, now=0.0)
    chunk = scheduler.next_chunk(worker.id, now=0.0)
    scheduler.expire(now=10.0)

    completion = finish(scheduler, worker, chunk, now=11.0)

    assert completion.accepted == chunk.tiles
    assert all(job.states[t] == TileState.DONE for t in chunk.tiles)
    assert not set(chunk.tiles) & set(job.pending)


def test_duplicate_result_is_dropped_and_first_result_wins():
    scheduler, job = make(lease_seconds=10.0)
    a = scheduler.register("a", "h", processes=2, now=0.0)
    b = scheduler.register("b", "h", processes=2, now=0.0)
    chunk_a = scheduler.next_chunk(a.id, now=0.0)
    scheduler.expire(now=10.0)
    chunk_b = scheduler.next_chunk(b.id, now=10.0)
    assert chunk_b.tiles == chunk_a.tiles

    first = finish(scheduler, b, chunk_b, now=11.0)
    second = finish(scheduler, a, chunk_a, now=12.0)

    assert first.accepted == chunk_b.tiles
    assert second.accepted == () and second.dropped == chunk_a.tiles
    assert job.done == 2 and job.duplicates == 2


def test_late_result_wins_over_a_newer_lease_whose_result_is_then_dropped():
    scheduler, job = make(lease_seconds=10.0)
    a = scheduler.register("a", "h", processes=1, now=0.0)
    b = scheduler.register("b", "h", processes=1, now=0.0)
    old = scheduler.next_chunk(a.id, now=0.0)
    scheduler.expire(now=10.0)
    new = scheduler.next_chunk(b.id, now=10.0)

    assert finish(scheduler, a, old, now=11.0).accepted == old.tiles
    assert finish(scheduler, b, new, now=12.0).dropped == new.tiles
    assert job.done == 1 and not job.lease_of


def test_tile_that_fails_max_attempts_times_fails_the_job_naming_it():
    scheduler, job = make(max_attempts=3)
    worker = scheduler.register("a", "h", processes=1, now=0.0)

    for attempt in range(3):
        chunk = scheduler.next_chunk(worker.id, now=attempt)
        assert chunk.tiles == (0,)
        scheduler.complete(
            worker.id,
            chunk.id,
            [],
            [(0, "process died")],
            compute_seconds=0.0,
            iterations=0,
            now=attempt,
        )

    assert job.status is JobStatus.FAILED
    assert "tile 0 (x=0, y=0, 8x8)" in job.error
    assert "failed 3 times" in job.error and "process died" in job.error
    assert scheduler.next_chunk(worker.id, now=5.0) is None
    assert not worker.chunks


def test_tile_that_expires_max_attempts_times_fails_the_job():
    scheduler, job = make(max_attempts=2, lease_seconds=1.0)
    worker = scheduler.register("a", "h", processes=10, now=0.0)
    scheduler.next_chunk(worker.id, now=0.0)
    scheduler.expire(now=1.0)
    scheduler.heartbeat(worker.id, now=1.0, busy=0)
    scheduler.next_chunk(worker.id, now=1.0)
    scheduler.expire(now=2.0)

    assert job.status is JobStatus.FAILED
    assert "lease expired 2 times" in job.error


def test_a_worker_that_joins_mid_job_gets_work_at_once():
    scheduler, _job = make()
    first = scheduler.register("a", "h", processes=1, now=0.0)
    finish(scheduler, first, scheduler.next_chunk(first.id, now=0.0), now=1.0)

    late = scheduler.register("b", "h", processes=2, now=2.0)

    chunk = scheduler.next_chunk(late.id, now=2.0)
    assert chunk is not None and len(chunk.tiles) == 2


def test_ten_chunks_three_workers_all_finish_with_nothing_leased():
    spec = make_spec(width=80, height=80, tile_size=8, span=3.0, max_iter=50)
    scheduler = Scheduler()
    job = scheduler.add_job(spec, now=0.0)
    workers = [scheduler.register(n, "h", processes=1, now=0.0) for n in "abc"]
    now, handed = 0.0, 0
    while job.status is JobStatus.RUNNING:
        now += 1.0
        for worker in workers:
            chunk = scheduler.next_chunk(worker.id, now)
            if chunk:
                handed += 1
                finish(scheduler, worker, chunk, now, seconds=0.1)

    assert job.status is JobStatus.DONE and job.done == 100
    assert handed >= 10
    assert not job.lease_of and not any(w.chunks for w in workers)
    assert job.count(TileState.DONE) == 100


def test_chunk_size_follows_throughput_and_shrinks_at_the_tail():
    spec = make_spec(width=800, height=800, tile_size=8, span=3.0, max_iter=50)
    scheduler = Scheduler(target_seconds=2.0)
    job = scheduler.add_job(spec, now=0.0)
    fast = scheduler.register("fast", "h", processes=1, now=0.0)
    slow = scheduler.register("slow", "h", processes=1, now=0.0)
    for worker, seconds in ((fast, 0.01), (slow, 0.03)):  # 100 and 33 tiles/s
        finish(scheduler, worker, scheduler.next_chunk(worker.id, 0.0), 1.0, seconds)

    big_fast = scheduler.next_chunk(fast.id, now=1.0)
    big_slow = scheduler.next_chunk(slow.id, now=1.0)
    assert len(big_fast.tiles) == 200 and len(big_slow.tiles) == 66

    job.pending = type(job.pending)(list(job.pending)[:40])
    tail = scheduler.next_chunk(fast.id, now=1.0)
    assert 1 <= len(tail.tiles) <= 20


def test_release_requeues_without_an_attempt():
    scheduler, job = make()
    worker = scheduler.register("a", "h", processes=2, now=0.0)
    chunk = scheduler.next_chunk(worker.id, now=0.0)

    assert scheduler.release(worker.id, [chunk.id], now=1.0) == 2
    assert job.attempts.sum() == 0 and list(job.pending)[:2] == list(chunk.tiles)


def test_a_leaving_worker_gets_no_new_chunks():
    scheduler, job = make()
    worker = scheduler.register("a", "h", processes=2, now=0.0)
    first = scheduler.next_chunk(worker.id, now=0.0)
    second = scheduler.next_chunk(worker.id, now=0.0)

    scheduler.release(worker.id, [first.id], now=1.0, leaving=True)

    assert scheduler.next_chunk(worker.id, now=1.0) is None
    assert list(worker.chunks) == [second.id]
    assert len(job.pending) == SPEC.view.width // 8 - len(second.tiles)


def test_result_for_a_chunk_never_leased_is_a_protocol_error():
    scheduler, _ = make()
    a = scheduler.register("a", "h", processes=1, now=0.0)
    b = scheduler.register("b", "h", processes=1, now=0.0)
    chunk = scheduler.next_chunk(a.id, now=0.0)

    with pytest.raises(ProtocolError, match="never leased"):
        finish(scheduler, b, chunk, now=1.0)
    with pytest.raises(ProtocolError, match="never leased"):
        scheduler.complete(
            a.id, 999, [0], [], compute_seconds=1.0, iterations=1, now=1.0
        )


def test_result_naming_tiles_outside_the_chunk_is_a_protocol_error():
    scheduler, job = make()
    worker = scheduler.register("a", "h", processes=1, now=0.0)
    chunk = scheduler.next_chunk(worker.id, now=0.0)

    with pytest.raises(ProtocolError, match="expected exactly"):
        scheduler.complete(
            worker.id, chunk.id, [5], [], compute_seconds=1.0, iterations=1, now=1.0
        )
    assert job.done == 0


def test_cancel_drops_leases_and_results_after_it_are_dropped_politely():
    scheduler, job = make()
    worker = scheduler.register("a", "h", processes=2, now=0.0)
    chunk = scheduler.next_chunk(worker.id, now=0.0)

    scheduler.cancel_job(job.id, now=1.0)
    completion = finish(scheduler, worker, chunk, now=2.0)

    assert job.status is JobStatus.CANCELLED
    assert completion.accepted == () and completion.dropped == chunk.tiles
    assert scheduler.next_chunk(worker.id, now=2.0) is None


def test_jobs_queue_up_and_the_next_starts_when_one_finishes():
    scheduler, first = make()
    other = make_spec(width=16, height=8, tile_size=8, span=2.0, max_iter=20)
    second = scheduler.add_job(other, now=0.0)
    assert second.status is JobStatus.QUEUED

    scheduler.cancel_job(first.id, now=1.0)

    assert scheduler.active is second and second.status is JobStatus.RUNNING


def test_resumed_job_leases_only_missing_tiles():
    scheduler = Scheduler()
    job = scheduler.add_job(SPEC, now=0.0, done_tiles=[0, 1, 2, 5])
    worker = scheduler.register("a", "h", processes=10, now=0.0)

    assert job.resumed == 4
    assert scheduler.next_chunk(worker.id, now=0.0).tiles == (3, 4, 6, 7, 8, 9)


def test_illegal_tile_move_names_the_tile_and_both_states():
    scheduler, job = make()
    worker = scheduler.register("a", "h", processes=1, now=0.0)
    finish(scheduler, worker, scheduler.next_chunk(worker.id, now=0.0), now=1.0)

    with pytest.raises(TransitionError, match="tile 0 cannot move from DONE to LEASED"):
        scheduler._move(job, 0, TileState.LEASED)


def test_unresponsive_worker_gets_no_new_chunks_until_it_speaks_again():
    scheduler, job = make(lease_seconds=10.0, unresponsive_after=6.0)
    stopped = scheduler.register("stopped", "h", processes=1, now=0.0)
    scheduler.next_chunk(stopped.id, now=0.0)
    scheduler.next_chunk(stopped.id, now=0.0)

    scheduler.expire(now=10.0)

    assert scheduler.worker_status(stopped, 10.0) is WorkerStatus.UNRESPONSIVE
    assert scheduler.next_chunk(stopped.id, now=10.0) is None
    assert job.attempts.sum() == 2
    scheduler.heartbeat(stopped.id, now=11.0, busy=1)
    assert scheduler.worker_status(stopped, 11.0) is WorkerStatus.UNRESPONSIVE
    assert scheduler.next_chunk(stopped.id, now=11.0) is None
    scheduler.heartbeat(stopped.id, now=12.0, busy=0)
    assert scheduler.worker_status(stopped, 12.0) is WorkerStatus.IDLE
    assert scheduler.next_chunk(stopped.id, now=12.0) is not None


def test_silent_worker_is_unresponsive_after_the_heartbeat_window():
    scheduler, _ = make(unresponsive_after=6.0)
    worker = scheduler.register("a", "h", processes=1, now=0.0)
    scheduler.next_chunk(worker.id, now=0.0)

    assert scheduler.worker_status(worker, 6.0) is WorkerStatus.WORKING
    assert scheduler.worker_status(worker, 6.1) is WorkerStatus.UNRESPONSIVE


def test_totals_count_work_requeues_expiries_failures_and_duplicates():
    scheduler, job = make(lease_seconds=10.0)
    a = scheduler.register("a", "h", processes=2, now=0.0)
    b = scheduler.register("b", "h", processes=2, now=0.0)
    expired = scheduler.next_chunk(a.id, now=0.0)
    scheduler.expire(now=10.0)
    retry = scheduler.next_chunk(b.id, now=10.0)
    finish(scheduler, b, retry, now=11.0)
    finish(scheduler, a, expired, now=12.0)
    failing = scheduler.next_chunk(b.id, now=12.0)
    scheduler.complete(
        b.id,
        failing.id,
        failing.tiles[1:],
        [(failing.tiles[0], "process died")],
        compute_seconds=1.0,
        iterations=7,
        now=13.0,
    )

    totals = scheduler.totals
    assert totals.leases_expired == 1
    assert totals.tiles_requeued == 2 + 1
    assert totals.tiles_failed == 1
    assert totals.duplicates == 2
    assert totals.tiles_done == 2 + 1 == job.done
    assert totals.pixels_done == 3 * 64 == job.pixels_done
    assert totals.iterations == 10 + 10 + 7 == job.iterations


def test_events_are_numbered_in_order_and_survive_the_cap():
    scheduler = Scheduler(max_events=3)
    for name in "abcde":
        scheduler.register(name, "h", processes=1, now=0.0)

    assert [e.seq for e in scheduler.events] == [3, 4, 5]
    assert scheduler.events[-1].text.startswith("worker w5 (e on h")


def test_only_the_last_thousand_ended_workers_are_remembered():
    scheduler, job = make()
    keeper = scheduler.register("keeper", "h", processes=1, now=0.0)
    for n in range(MAX_ENDED_WORKERS + 5):
        worker = scheduler.register(f"flap-{n}", "h", processes=1, now=n)
        scheduler.next_chunk(worker.id, now=n)
        scheduler.disconnect(worker.id, n, WorkerStatus.LOST, "EOF")

    names = [w.name for w in scheduler.workers.values()]

    assert len(names) == MAX_ENDED_WORKERS + 1
    assert "keeper" in names and "flap-4" not in names and "flap-5" in names
    assert scheduler.next_chunk(keeper.id, now=2000.0).tiles == (0,)
    assert job.attempts.sum() == 0


@pytest.mark.parametrize("seconds", [5e-324, 1e-300, 1e-12])
def test_absurdly_small_compute_times_keep_chunk_sizes_finite(seconds):
    spec = make_spec(width=800, height=800, tile_size=8, span=3.0, max_iter=50)
    scheduler = Scheduler(max_chunk_tiles=4096)
    scheduler.add_job(spec, now=0.0)
    liar = scheduler.register("liar", "h", processes=4096, now=0.0)
    honest = scheduler.register("honest", "h", processes=1, now=0.0)
    finish(scheduler, liar, scheduler.next_chunk(liar.id, now=0.0), 1.0, seconds)

    for worker in (liar, honest):
        chunk = scheduler.next_chunk(worker.id, now=1.0)
        assert 1 <= len(chunk.tiles) <= 4096
    assert math.isfinite(liar.rate)


def test_short_leases_cap_chunks_so_the_pipeline_fits_in_half_a_lease():
    spec = make_spec(width=800, height=800, tile_size=8, span=3.0, max_iter=50)
    scheduler = Scheduler(target_seconds=2.0, lease_seconds=5.0)
    scheduler.add_job(spec, now=0.0)
    worker = scheduler.register("w", "h", processes=1, now=0.0)
    finish(scheduler, worker, scheduler.next_chunk(worker.id, 0.0), 1.0, 0.01)

    chunk = scheduler.next_chunk(worker.id, now=1.0)

    assert len(chunk.tiles) == 125  # 100 tiles/s for 5 / (2 x 2) s, not 2 s


def test_worker_whose_lease_expired_does_not_lease_its_tiles_back_while_busy():
    scheduler, _job = make(lease_seconds=10.0)
    slow = scheduler.register("slow", "h", processes=2, now=0.0)
    lost = scheduler.next_chunk(slow.id, now=0.0)
    scheduler.expire(now=10.0)

    scheduler.heartbeat(slow.id, now=11.0, busy=2)

    assert scheduler.next_chunk(slow.id, now=11.0) is None
    other = scheduler.register("other", "h", processes=2, now=11.0)
    assert scheduler.next_chunk(other.id, now=11.0).tiles == lost.tiles
    finish(scheduler, slow, lost, now=12.0)  # its late result clears it
    assert scheduler.next_chunk(slow.id, now=12.0) is not None


def test_cancelled_job_submitted_again_keeps_the_tiles_it_had_done():
    scheduler, job = make()
    worker = scheduler.register("a", "h", processes=3, now=0.0)
    finish(scheduler, worker, scheduler.next_chunk(worker.id, now=0.0), now=1.0)
    scheduler.cancel_job(job.id, now=2.0)

    again = scheduler.add_job(SPEC, now=3.0)

    assert again is not job and again.status is JobStatus.RUNNING
    assert again.done == again.resumed == 3
    assert scheduler.next_chunk(worker.id, now=3.0).tiles[0] == 3


def test_ended_job_leaves_no_tile_leased_and_nothing_pending():
    scheduler, job = make(max_attempts=1, lease_seconds=1.0)
    worker = scheduler.register("a", "h", processes=4, now=0.0)
    other = scheduler.register("b", "h", processes=2, now=0.0)
    first = scheduler.next_chunk(worker.id, now=0.0)
    scheduler.next_chunk(other.id, now=0.5)

    expired = scheduler.expire(now=1.0)

    assert expired == [first]
    assert job.status is JobStatus.FAILED and "tile 0" in job.error
    assert job.count(TileState.LEASED) == 0 and not job.pending
    assert job.count(TileState.FAILED) == 1


def test_chunks_are_capped_so_that_a_result_fits_in_one_frame():
    spec = make_spec(width=4096, height=4096, tile_size=1024, span=3.0, max_iter=50)
    scheduler = Scheduler(max_chunk_bytes=10 * 1024 * 1024)
    scheduler.add_job(spec, now=0.0)
    worker = scheduler.register("big", "h", processes=8, now=0.0)

    probe = scheduler.next_chunk(worker.id, now=0.0)
    assert len(probe.tiles) == 2  # 10 MiB hold two 4 MiB tiles, not eight
    finish(scheduler, worker, probe, now=1.0, seconds=0.001)
    assert len(scheduler.next_chunk(worker.id, now=1.0).tiles) == 2
