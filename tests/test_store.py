"""The job folder: what a crash at any moment leaves on disk."""

from __future__ import annotations

import errno
import itertools
import os

import numpy as np
import pytest

import fraktal.master.store as store_module
from fraktal.errors import JobStoreError
from fraktal.master.store import (
    JobStore,
    Record,
    read_history,
    read_recovery,
    scan_journal,
)
from fraktal.render.spec import make_spec
from smalldisk import fill_up, small_disk

SPEC = make_spec(width=40, height=24, tile_size=8, span=3.0, max_iter=50)  # 15 tiles
BOOT = bytes(range(16))
REBOOTED = bytes(range(1, 17))


def fill(store: JobStore, tile: int, value: float) -> None:
    rect = store.grid.rect(tile)
    store.write_tile(rect, np.full((rect.height, rect.width), value, np.float32))
    store.mark_done([tile])


def crash(store: JobStore) -> None:
    """What a killed process leaves: its descriptors closed, nothing flushed."""
    os.close(store._journal)
    os.close(store._lock)


def reopen(tmp_path, boot=BOOT) -> JobStore:
    return JobStore.open(tmp_path / "job", SPEC, boot=boot)


def test_committed_tiles_survive_a_reopen_with_their_values(tmp_path):
    store = reopen(tmp_path)
    fill(store, 0, 1.5)
    fill(store, 7, 2.5)
    assert store.commit() == 2
    crash(store)

    again = reopen(tmp_path, boot=REBOOTED)

    assert again.journal_done == [0, 7]
    assert (again.raw[0:8, 0:8] == 1.5).all() and (again.raw[8:16, 16:24] == 2.5).all()
    again.close()


def test_uncommitted_tiles_survive_a_killed_process_on_the_same_boot(tmp_path):
    store = reopen(tmp_path)
    fill(store, 0, 1.0)
    store.commit()
    fill(store, 1, 2.0)
    crash(store)  # SIGKILL: the page cache still holds the record and the values

    again = reopen(tmp_path)

    assert again.journal_done == [0, 1]
    assert (again.raw[0:8, 8:16] == 2.0).all()
    assert again.recovery.lost == 0 and again.recovery.same_boot


def test_uncommitted_tiles_are_lost_after_a_reboot_and_counted(tmp_path):
    store = reopen(tmp_path)
    fill(store, 0, 1.0)
    store.commit()
    fill(store, 1, 1.0)
    fill(store, 2, 1.0)
    crash(store)

    again = reopen(tmp_path, boot=REBOOTED)

    assert again.journal_done == [0]
    assert again.recovery.lost == 2 and not again.recovery.same_boot


def test_leased_tiles_never_done_are_counted_in_flight(tmp_path):
    store = reopen(tmp_path)
    store.mark_leased((3, 4, 5))
    fill(store, 3, 1.0)
    store.mark_leased((6,))
    crash(store)

    again = reopen(tmp_path)

    assert again.recovery.done == [3]
    assert again.recovery.in_flight == 3  # 4, 5 and 6


def test_leases_of_an_earlier_session_are_not_counted_again(tmp_path):
    store = reopen(tmp_path)
    store.mark_leased((1, 2))
    crash(store)
    second = reopen(tmp_path)
    second.mark_leased((2,))
    crash(second)

    assert reopen(tmp_path).recovery.in_flight == 1


def test_torn_last_record_is_cut_off_and_later_records_are_kept(tmp_path):
    store = reopen(tmp_path)
    fill(store, 3, 1.0)
    fill(store, 4, 1.0)
    store.close()
    journal = tmp_path / "job" / "done.journal"
    journal.write_bytes(journal.read_bytes()[:-3])

    resumed = reopen(tmp_path)
    fill(resumed, 9, 1.0)
    resumed.close()

    assert resumed.journal_done == [3, 4]
    assert reopen(tmp_path).journal_done == [3, 4, 9]


def test_corrupt_record_stops_the_reading_there(tmp_path):
    store = reopen(tmp_path)
    for tile in (1, 2, 3):
        fill(store, tile, 1.0)
    store.close()
    journal = tmp_path / "job" / "done.journal"
    data = bytearray(journal.read_bytes())
    second = data.index(bytes([1, 1, 0, 0, 0, 2, 0, 0, 0]))  # DONE [2]
    data[second + 5] ^= 0xFF

    journal.write_bytes(bytes(data))

    assert read_recovery(tmp_path / "job", SPEC, BOOT).done == [1]


def test_tile_ids_beyond_the_grid_are_not_trusted(tmp_path):
    store = reopen(tmp_path)
    store.mark_done([3])
    store.mark_done([15])
    store.close()

    assert read_recovery(tmp_path / "job", SPEC, BOOT).done == [3]


def test_reading_the_recovery_changes_nothing(tmp_path):
    store = reopen(tmp_path)
    fill(store, 1, 1.0)
    journal = tmp_path / "job" / "done.journal"
    before = journal.read_bytes()

    assert read_recovery(tmp_path / "job", SPEC, REBOOTED).done == []
    assert journal.read_bytes() == before


def test_history_tells_what_each_restart_found(tmp_path):
    store = reopen(tmp_path)
    store.mark_leased((0, 1))
    fill(store, 0, 1.0)
    crash(store)
    reopen(tmp_path)

    events = read_history(tmp_path / "job")

    assert [e["event"] for e in events] == ["created", "resumed"]
    assert events[0]["tiles"] == 15
    assert (events[1]["done"], events[1]["in_flight"], events[1]["lost"]) == (1, 1, 0)


def test_journal_of_the_old_format_is_refused_with_advice(tmp_path):
    reopen(tmp_path).close()
    (tmp_path / "job" / "done.journal").write_bytes(b"FKJ1")

    with pytest.raises(JobStoreError, match=r"older fraktal.*delete the job folder"):
        reopen(tmp_path)


def test_folder_of_another_render_is_refused(tmp_path):
    reopen(tmp_path).close()
    other = make_spec(width=40, height=24, tile_size=8, span=2.0, max_iter=50)

    with pytest.raises(JobStoreError, match="holds a different render"):
        JobStore.open(tmp_path / "job", other)


def test_damaged_raw_file_is_refused_with_its_name(tmp_path):
    reopen(tmp_path).close()
    (tmp_path / "job" / "raw.npy").write_bytes(b"junk")

    with pytest.raises(JobStoreError, match=r"raw\.npy"):
        reopen(tmp_path)


def test_a_folder_in_use_by_another_master_is_refused(tmp_path):
    first = reopen(tmp_path)

    with pytest.raises(JobStoreError, match="in use by another fraktal master"):
        reopen(tmp_path)

    first.close()
    reopen(tmp_path).close()


# A disk that fills up: raw.npy (1 MiB) fits, and the journal soon does not.
BIG = make_spec(width=512, height=512, tile_size=8, span=3.0, max_iter=50)


def fill_until_refused(store: JobStore) -> list[int]:
    """Store tiles until the journal is refused, then 50 more; the tiles."""
    tiles = iter(range(BIG.grid.count))
    done = []
    while store.journal_error is None:
        done.append(next(tiles))
        fill(store, done[-1], float(done[-1]))
    for tile in itertools.islice(tiles, 50):
        fill(store, tile, float(tile))
        done.append(tile)
    return done


def test_a_full_disk_loses_no_result_and_the_journal_catches_up_later(tmp_path):
    with small_disk(tmp_path / "disk", 2 * 1024 * 1024) as disk:
        store = JobStore.open(disk / "job", BIG, boot=BOOT)
        filler = fill_up(disk)

        done = fill_until_refused(store)

        assert store.journal_error == os.strerror(errno.ENOSPC)
        assert store.commit() == 0  # still refused: kept for later
        journal = (disk / "job" / "done.journal").read_bytes()
        entries, end = scan_journal(journal, BIG.grid.count)
        assert end == len(journal)  # no torn record left behind
        journaled = [t for e in entries if e.kind == Record.DONE for t in e.values]
        assert 0 < len(journaled) < len(done)
        assert journaled == done[: len(journaled)]

        filler.unlink()
        assert store.commit() == len(done)
        assert store.journal_error is None
        crash(store)
        again = JobStore.open(disk / "job", BIG, boot=REBOOTED)  # fsync'd all
        assert again.journal_done == done
        for tile in done:
            rect = BIG.grid.rect(tile)
            assert (again.raw[rect.y, rect.x : rect.x + rect.width] == tile).all()
        again.close()


def test_tiles_the_full_disk_refused_are_computed_again_after_a_restart(tmp_path):
    with small_disk(tmp_path / "disk", 2 * 1024 * 1024) as disk:
        store = JobStore.open(disk / "job", BIG, boot=BOOT)
        filler = fill_up(disk)
        done = fill_until_refused(store)
        store.close()  # its last commit is refused too, without raising
        journal = (disk / "job" / "done.journal").read_bytes()
        assert scan_journal(journal, BIG.grid.count)[1] == len(journal)

        filler.unlink()
        again = JobStore.open(disk / "job", BIG, boot=BOOT)
        assert 0 < len(again.journal_done) < len(done)
        assert again.journal_done == done[: len(again.journal_done)]
        again.close()


def test_a_job_folder_that_cannot_be_made_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(JobStoreError) as refused:
        JobStore.open(tmp_path / "file" / "job", SPEC)
    assert str(refused.value) == (
        f"cannot use the job folder {str(tmp_path / 'file' / 'job')!r}: "
        f"Not a directory; choose another --job-dir"
    )


def test_a_history_line_the_disk_refuses_half_way_leaves_no_torn_line(
    tmp_path, monkeypatch
):
    store = reopen(tmp_path)
    real = store_module._write_all

    def half_then_full(descriptor, data):
        real(descriptor, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store_module, "_write_all", half_then_full)
    store.record_history("refused")
    monkeypatch.setattr(store_module, "_write_all", real)
    store.record_history("written")
    store.close()

    events = [e["event"] for e in read_history(tmp_path / "job")]
    assert events == ["created", "written"]


def test_a_folder_the_disk_refuses_at_opening_leaves_no_file_open(
    tmp_path, monkeypatch
):
    def refuse(descriptor, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store_module, "_write_all", refuse)
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(JobStoreError, match="No space left on device"):
        reopen(tmp_path)
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_new_folder_the_disk_refuses_half_way_keeps_no_reserved_space(
    tmp_path, monkeypatch
):
    def refuse(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store_module, "_write_json", refuse)
    with pytest.raises(JobStoreError) as refused:
        reopen(tmp_path)
    assert str(refused.value).endswith(
        ": No space left on device; free space there or choose another --job-dir"
    )
    assert sorted(p.name for p in (tmp_path / "job").iterdir()) == ["lock"]

    monkeypatch.undo()
    store = reopen(tmp_path)  # a fresh start, not a resume of half a folder
    assert store.recovery is None
    store.close()


def test_history_with_undecodable_bytes_still_reads(tmp_path):
    store = reopen(tmp_path)
    with open(tmp_path / "job" / "history.jsonl", "ab") as history:
        history.write(b"\xff\xfe not text\n")
    store.record_history("written")
    store.close()

    events = [e["event"] for e in read_history(tmp_path / "job")]
    assert events == ["created", "written"]
