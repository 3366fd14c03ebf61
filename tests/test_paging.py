"""Handing back the pages of a memory-mapped raw array keeps its values."""

import numpy as np

from fraktal.render.paging import release


def resident_file_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssFile:"):
                return int(line.split()[1])
    raise AssertionError("no RssFile line in /proc/self/status")


def test_released_pages_leave_the_resident_set_and_keep_their_values(tmp_path):
    raw = np.lib.format.open_memmap(
        tmp_path / "raw.npy", mode="w+", dtype=np.float32, shape=(4096, 4096)
    )
    raw[:] = 7.5
    before = resident_file_kib()

    release(raw)

    assert before - resident_file_kib() > 40_000
    assert np.all(raw[::512, ::512] == 7.5)
    assert np.all(np.load(tmp_path / "raw.npy", mmap_mode="r")[-1] == 7.5)


def test_a_strip_read_from_a_read_only_map_is_released(tmp_path):
    np.save(tmp_path / "raw.npy", np.full((4096, 1024), 2.0, dtype=np.float32))
    raw = np.load(tmp_path / "raw.npy", mmap_mode="r")
    strip = raw[1024:3072]
    assert float(np.asarray(strip).sum()) == 2.0 * strip.size
    before = resident_file_kib()

    release(strip)

    assert before - resident_file_kib() > 7_000
    assert float(raw[2000, 5]) == 2.0


def test_an_array_in_private_memory_is_left_alone():
    values = np.full((2048, 2048), 3.0)

    release(values)

    assert np.all(values == 3.0)
