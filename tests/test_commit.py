"""Commits: off the event loop, and vouching only for what they flushed.

A commit flushes raw.npy and the journal so that a machine crash keeps the
results taken before it. The flush runs in a thread while results keep
arriving; after a reboot only the tiles journaled before the flush began may
be trusted, and those that came during it are computed again.
"""

from __future__ import annotations

import asyncio
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

        driver.loop.run_until_complete(driver.master.commit())
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
