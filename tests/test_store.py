"""The job folder: what a crash at any moment leaves on disk."""

from __future__ import annotations

import numpy as np
import pytest

from fraktal.errors import JobStoreError
from fraktal.master.store import JobStore, read_journal
from fraktal.render.spec import make_spec

SPEC = make_spec(width=40, height=24, tile_size=8, span=3.0, max_iter=50)


def fill(store: JobStore, tile: int, value: float) -> None:
    rect = store.grid.rect(tile)
    store.write_tile(rect, np.full((rect.height, rect.width), value, np.float32))
    store.mark_done([tile])


def test_committed_tiles_survive_a_reopen_with_their_values(tmp_path):
    store = JobStore.open(tmp_path / "job", SPEC)
    fill(store, 0, 1.5)
    fill(store, 7, 2.5)
    assert store.commit() == 2
    del store  # a crash: nothing closed

    again = JobStore.open(tmp_path / "job", SPEC)

    assert again.journal_done == [0, 7]
    assert (again.raw[0:8, 0:8] == 1.5).all() and (again.raw[8:16, 16:24] == 2.5).all()
    again.close()


def test_tiles_written_but_not_committed_are_not_claimed_done(tmp_path):
    store = JobStore.open(tmp_path / "job", SPEC)
    fill(store, 0, 1.0)
    store.commit()
    fill(store, 1, 1.0)

    assert JobStore.open(tmp_path / "job", SPEC).journal_done == [0]


def test_torn_last_batch_is_ignored_and_earlier_batches_kept(tmp_path):
    store = JobStore.open(tmp_path / "job", SPEC)
    fill(store, 3, 1.0)
    store.commit()
    fill(store, 4, 1.0)
    fill(store, 5, 1.0)
    store.commit()
    store.close()
    journal = tmp_path / "job" / "done.journal"
    journal.write_bytes(journal.read_bytes()[:-3])

    assert read_journal(journal, 15) == [3]


def test_corrupt_batch_stops_the_reading_there(tmp_path):
    store = JobStore.open(tmp_path / "job", SPEC)
    for tile in (1, 2, 3):
        fill(store, tile, 1.0)
        store.commit()
    store.close()
    journal = tmp_path / "job" / "done.journal"
    data = bytearray(journal.read_bytes())
    data[4 + 12 + 5] ^= 0xFF  # inside the second batch

    journal.write_bytes(bytes(data))

    assert read_journal(journal, 15) == [1]


def test_tile_ids_beyond_the_grid_are_not_trusted(tmp_path):
    store = JobStore.open(tmp_path / "job", SPEC)
    fill(store, 14, 1.0)
    store.commit()
    store.close()

    assert read_journal(tmp_path / "job" / "done.journal", 14) == []


def test_folder_of_another_render_is_refused(tmp_path):
    JobStore.open(tmp_path / "job", SPEC).close()
    other = make_spec(width=40, height=24, tile_size=8, span=2.0, max_iter=50)

    with pytest.raises(JobStoreError, match="holds a different render"):
        JobStore.open(tmp_path / "job", other)


def test_damaged_raw_file_is_refused_with_its_name(tmp_path):
    JobStore.open(tmp_path / "job", SPEC).close()
    (tmp_path / "job" / "raw.npy").write_bytes(b"junk")

    with pytest.raises(JobStoreError, match=r"raw\.npy"):
        JobStore.open(tmp_path / "job", SPEC)
