"""Commits: off the event loop, and vouching only for what they flushed.

A commit flushes raw.npy and the journal so that a machine crash keeps the
results taken before it. The flush runs in a thread while results keep
arriving; after a reboot only the tiles journaled before the flush began may
be trusted, and those that came during it are computed again.
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading

import numpy as np

import fraktal.master.store as store_module
from fraktal.master.picture import Output
from fraktal.master.scheduler import TileState
from fraktal.master.service import MasterConfig
from fraktal.master.store import JobStore, read_recovery
from fraktal.render.compute import render
from fraktal.render.spec import make_spec
from masterdriver import Driver
from test_store import BOOT, REBOOTED, crash, fill

SPEC = make_spec(width=256, height=256, tile_size=16, max_iter=100)  # 256 tiles
EXPECTED = render(SPEC)
ANOTHER_BOOT = bytes(range(100, 116))


def done_tiles(driver: Driver) -> set[int]:
    return set(np.flatnonzero(driver.job.states == TileState.DONE).tolist())


def test_results_are_taken_while_a_commit_flushes_and_it_vouches_for_none(
    tmp_path, monkeypatch
):
    flushing, go_on = threading.Event(), threading.Event()

    def slow_flush(raw):  # raw.npy has just been flushed: the disk is slow
        flushing.set()
        assert go_on.wait(30), "the test never let the flush finish"

    monkeypatch.setattr(store_module, "release", slow_flush)
    config = MasterConfig(port=0, jobs_dir=tmp_path / "jobs")
    driver = Driver(config, SPEC, EXPECTED, Output(png=None))
    folder = tmp_path / "jobs" / driver.job.id
    try:
        driver.answer_chunks_until(1)
        before = done_tiles(driver)

        async def start_commit() -> None:
            driver.master._commit_all()
            await asyncio.to_thread(flushing.wait, 30)

        driver.loop.run_until_complete(start_commit())
        # The commit waits in its thread; the event loop takes results.
        driver.answer_chunks_until(len(before) + 1)
        during = done_tiles(driver) - before
        assert during and len(before | during) < SPEC.grid.count
        assert driver.master._commits  # still flushing

        go_on.set()
        driver.loop.run_until_complete(asyncio.gather(*driver.master._commits.values()))
        after_reboot = read_recovery(folder, SPEC, boot=ANOTHER_BOOT)
        assert set(after_reboot.done) == before
        assert after_reboot.lost == len(during)

        driver.commit()
        after_reboot = read_recovery(folder, SPEC, boot=ANOTHER_BOOT)
        assert set(after_reboot.done) == before | during
    finally:
        go_on.set()
        driver.close()


def test_a_tile_marked_done_during_a_commit_is_not_trusted_after_a_reboot(tmp_path):
    store = JobStore.open(tmp_path / "job", SPEC, boot=BOOT)
    fill(store, 0, 1.0)
    step = store.begin_commit()
    fill(store, 1, 2.0)  # arrives while raw.npy is being flushed
    assert step is not None and store.make_durable(step)
    assert store.end_commit(step) == 1
    assert store.uncommitted == 1
    crash(store)

    again = JobStore.open(tmp_path / "job", SPEC, boot=REBOOTED)
    assert again.journal_done == [0]
    assert again.recovery.lost == 1
    again.close()


def test_a_sync_record_that_vouches_for_records_after_itself_is_not_trusted(
    tmp_path,
):
    store = JobStore.open(tmp_path / "job", SPEC, boot=BOOT)
    fill(store, 0, 1.0)
    crash(store)
    journal = tmp_path / "job" / "done.journal"
    beyond = journal.stat().st_size + 1000
    record = store_module.encode_record(
        store_module.Record.SYNC, beyond.to_bytes(8, "little")
    )
    with open(journal, "ab") as handle:
        handle.write(record)

    assert read_recovery(tmp_path / "job", SPEC, boot=REBOOTED).done == []


def test_a_commit_never_flushes_through_the_memory_map(tmp_path, monkeypatch):
    # CPython's mmap.flush keeps the GIL for the whole msync: the event loop
    # would stall as if the commit ran on it. fsync on the file does the same
    # work and lets other threads run.
    def refuse(self):
        raise AssertionError("raw.npy flushed through the memory map")

    monkeypatch.setattr(np.memmap, "flush", refuse)
    store = JobStore.open(tmp_path / "job", SPEC, boot=BOOT)
    fill(store, 0, 1.0)
    assert store.commit() == 1
    store.close()


def test_after_a_failed_flush_no_sync_vouches_for_anything_more(tmp_path, monkeypatch):
    store = JobStore.open(tmp_path / "job", SPEC, boot=BOOT)
    fill(store, 0, 1.0)
    assert store.commit() == 1
    fill(store, 1, 2.0)
    real_fsync = os.fsync

    def failing_fsync(descriptor):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    assert store.commit() == 0
    assert store.flush_error == os.strerror(errno.EIO)
    assert store.journal_error is None  # records are still written
    # Linux marks pages it failed to write clean: a second fsync would pass
    # without writing them. No later SYNC may vouch for tile 1.
    monkeypatch.setattr(os, "fsync", real_fsync)
    fill(store, 2, 3.0)
    assert store.commit() == 0
    store.close()

    after_reboot = read_recovery(tmp_path / "job", SPEC, boot=REBOOTED)
    assert after_reboot.done == [0]
    assert after_reboot.lost == 2
    # Nor may a master started again on the same boot: its own flush would
    # pass and its session's SYNC vouch for what the disk dropped.
    again = JobStore.open(tmp_path / "job", SPEC, boot=BOOT)
    assert again.journal_done == [0]
    again.close()
    assert read_recovery(tmp_path / "job", SPEC, boot=REBOOTED).done == [0]


def test_closing_vouches_for_what_a_commit_under_way_took_on(tmp_path):
    store = JobStore.open(tmp_path / "job", SPEC, boot=BOOT)
    fill(store, 0, 1.0)
    step = store.begin_commit()  # its thread has yet to start flushing
    assert step is not None
    store.close()  # the job ended meanwhile

    assert not store.make_durable(step)  # too late: the store is closed
    assert read_recovery(tmp_path / "job", SPEC, boot=REBOOTED).done == [0]


def refuse_done_records(monkeypatch, refusing: list[bool]) -> None:
    """While ``refusing[0]``, the disk refuses DONE records."""
    real = store_module._write_all

    def write(descriptor, data):
        if refusing[0] and data[0] == store_module.Record.DONE:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(descriptor, data)

    monkeypatch.setattr(store_module, "_write_all", write)


def test_the_journal_is_not_called_healthy_while_tiles_still_wait(
    tmp_path, monkeypatch
):
    refusing = [False]
    refuse_done_records(monkeypatch, refusing)
    store = JobStore.open(tmp_path / "job", SPEC, boot=BOOT)
    fill(store, 0, 1.0)
    step = store.begin_commit()
    refusing[0] = True
    fill(store, 1, 2.0)  # refused while the commit flushes
    refusing[0] = False
    assert step is not None and store.make_durable(step)
    store.end_commit(step)
    assert store.journal_error == os.strerror(errno.ENOSPC)  # tile 1 waits

    assert store.commit() == 1
    assert store.journal_error is None
    store.close()
    assert read_recovery(tmp_path / "job", SPEC, boot=REBOOTED).done == [0, 1]


def test_the_dashboard_hears_once_when_a_flush_fails(tmp_path, monkeypatch):
    config = MasterConfig(port=0, jobs_dir=tmp_path / "jobs")
    driver = Driver(config, SPEC, EXPECTED, Output(png=None))
    try:
        driver.answer_chunks_until(1)

        def failing_fsync(descriptor):
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        monkeypatch.setattr(os, "fsync", failing_fsync)
        driver.commit()
        monkeypatch.undo()
        driver.answer_chunks_until(driver.job.done + 1)
        driver.commit()
        driver.tick()
        driver.tick()
    finally:
        driver.close()

    kinds = [e["kind"] for e in driver.master.snapshot()["events"]]
    assert kinds.count("flush-failed") == 1 and "journal-failed" not in kinds
