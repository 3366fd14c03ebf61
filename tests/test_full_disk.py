"""A job folder whose disk fills up mid-job: no result lost, nothing torn.

The job folder sits on a small tmpfs of its own (`smalldisk`), filled up
once the job's raw.npy has reserved its blocks. From then on the journal is
refused; results must still be taken, the picture written, and the worker's
connection kept. A restart computes again only the tiles the journal could
not record.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fraktal.master.service as service
from fraktal.master.picture import LivePicture, Output, write_outputs
from fraktal.master.scheduler import TileState
from fraktal.master.service import MasterConfig
from fraktal.render.compute import render
from fraktal.render.spec import make_spec
from masterdriver import Driver
from smalldisk import fill_up, small_disk

# 4096 tiles: their journal records outgrow the last free block many times.
SPEC = make_spec(width=512, height=512, tile_size=8, max_iter=200)
EXPECTED = render(SPEC)
DISK_BYTES = 2 * 1024 * 1024  # raw.npy takes 1 MiB


def events(driver: Driver, kind: str) -> list[str]:
    return [e["text"] for e in driver.master.snapshot()["events"] if e["kind"] == kind]


def test_the_dashboard_hears_when_the_journal_is_refused_and_taken_again(
    tmp_path, monkeypatch
):
    with small_disk(tmp_path / "jobs", DISK_BYTES) as jobs:
        config = MasterConfig(port=0, jobs_dir=jobs)
        driver = Driver(config, SPEC, EXPECTED, Output(png=tmp_path / "out.png"))
        try:
            filler = fill_up(jobs)
            store = driver.master.stores[driver.job.id]
            while store.journal_error is None:  # the last block had some room
                driver.answer_chunks_until(driver.job.done + 1)
            driver.tick()
            # From now on only the timer retries the journal, not each result.
            begun = []
            monkeypatch.setattr(service, "COMMIT_TILES", 1)
            monkeypatch.setattr(driver.master, "_commit_soon", begun.append)
            before = driver.job.done
            driver.answer_chunks_until(before + 1)
            assert driver.job.done > before and begun == []
            monkeypatch.undo()
            assert events(driver, "journal-failed") == [
                f"job {driver.job.id}: its journal cannot be written (No space "
                f"left on device); results are kept, a restart would compute "
                f"them again"
            ]

            filler.unlink()
            driver.commit()
            driver.tick()
            assert events(driver, "journal-ok") == [
                f"job {driver.job.id}: its journal is written again"
            ]
            driver.finish()
        finally:
            driver.close()
        assert len(events(driver, "journal-failed")) == 1
        write_outputs(SPEC, EXPECTED, Output(png=tmp_path / "expected.png"))
        assert (tmp_path / "out.png").read_bytes() == (
            tmp_path / "expected.png"
        ).read_bytes()


def render_command(tmp_path, jobs) -> list[str]:
    view = SPEC.view
    return [
        sys.executable,
        "-m",
        "fraktal",
        "render",
        f"--size={view.width}x{view.height}",
        f"--center={view.center_re!r},{view.center_im!r}",
        f"--span={view.span!r}",
        f"--max-iter={SPEC.max_iter}",
        f"--tile-size={SPEC.tile_size}",
        "--workers=1",
        f"--job-dir={jobs}",
        f"--output={tmp_path / 'out.png'}",
        f"--raw={tmp_path / 'out.npy'}",
    ]


def fill_once_opened(jobs, found: list) -> None:
    """Fill the disk as soon as a job folder is open: its history says so."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if list(jobs.glob("*/history.jsonl")):
            found.append(fill_up(jobs))
            return
        time.sleep(0.005)


@pytest.mark.slow
def test_a_render_whose_disk_fills_up_loses_nothing_and_resumes_right(tmp_path):
    with small_disk(tmp_path / "jobs", DISK_BYTES) as jobs:
        filler: list = []
        filling = threading.Thread(target=fill_once_opened, args=(jobs, filler))
        filling.start()
        first = subprocess.run(
            render_command(tmp_path, jobs), capture_output=True, text=True, timeout=300
        )
        filling.join()
        assert first.returncode == 0, first.stderr
        assert filler, "the job folder was never opened"
        assert "Traceback" not in first.stderr and "internal error" not in first.stderr
        refused = [line for line in first.stderr.splitlines() if "journal" in line]
        assert len(refused) == 2, first.stderr
        assert "cannot write the journal (No space left on device)" in refused[0]
        missing = re.findall(r"(\d+) done tiles are not in its journal", refused[1])
        assert missing, refused[1]
        assert np.array_equal(np.load(tmp_path / "out.npy"), EXPECTED)
        write_outputs(SPEC, EXPECTED, Output(png=tmp_path / "expected.png"))
        assert (tmp_path / "out.png").read_bytes() == (
            tmp_path / "expected.png"
        ).read_bytes()

        filler[0].unlink()
        os.remove(tmp_path / "out.npy")
        again = subprocess.run(
            render_command(tmp_path, jobs), capture_output=True, text=True, timeout=300
        )
        assert again.returncode == 0, again.stderr
        # Only the tiles journaled before the disk filled up are kept, as
        # the first run said.
        resumed = re.findall(r"resuming: (\d+) of \d+ tiles", again.stderr)
        kept = int(resumed[0]) if resumed else 0
        assert kept + int(missing[0]) == SPEC.grid.count, again.stderr
        assert np.array_equal(np.load(tmp_path / "out.npy"), EXPECTED)


def test_a_picture_painted_on_a_full_disk_is_written_again_from_the_raw_results(
    tmp_path,
):
    with small_disk(tmp_path / "job", DISK_BYTES) as folder:
        fill_up(folder)  # picture.part has no room
        output = Output(png=tmp_path / "out.png")
        live = LivePicture("job", folder, SPEC, output, EXPECTED)
        every_tile = np.full(SPEC.grid.count, TileState.DONE)

        live.finish(live.ready(every_tile))

        assert list(folder.glob("*.part")) == []
    write_outputs(SPEC, EXPECTED, Output(png=tmp_path / "expected.png"))
    assert (tmp_path / "out.png").read_bytes() == (
        tmp_path / "expected.png"
    ).read_bytes()


def test_outputs_on_a_full_disk_give_one_line_and_leave_nothing(tmp_path):
    jobs = tmp_path / "jobs"
    with small_disk(tmp_path / "out", 256 * 1024) as out:
        command = render_command(tmp_path, jobs)
        command[-1] = f"--raw={out / 'raw.npy'}"  # 1 MiB: it does not fit
        render = subprocess.run(command, capture_output=True, text=True, timeout=300)

        assert render.returncode == 1, render.stderr
        assert render.stderr.splitlines()[-1] == (
            "fraktal: error: writing the picture failed: [Errno 28] No space left "
            f"on device: '{out / 'raw.npy'}'"
        )
        assert "Traceback" not in render.stderr
        assert sorted(p.name for p in out.iterdir()) == []

        fill_up(out)
        folder = next(jobs.iterdir())
        recolor = subprocess.run(
            [
                *(sys.executable, "-m", "fraktal", "recolor", str(folder)),
                *("--palette", "fire", "--output", str(out / "fire.png")),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert recolor.returncode == 1
        assert recolor.stderr == (
            f"fraktal: error: writing the picture {str(out / 'fire.png')!r} "
            f"failed: No space left on device\n"
        )
        assert sorted(p.name for p in out.iterdir()) == ["filler"]


@pytest.mark.slow
def test_a_job_whose_folder_is_removed_mid_job_still_gives_its_picture(tmp_path):
    jobs = tmp_path / "jobs"

    def remove_once_opened() -> None:
        deadline = time.monotonic() + 60
        while not list(jobs.glob("*/history.jsonl")):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        shutil.rmtree(jobs)

    removing = threading.Thread(target=remove_once_opened)
    removing.start()
    render = subprocess.run(
        render_command(tmp_path, jobs), capture_output=True, text=True, timeout=300
    )
    removing.join()

    assert render.returncode == 0, render.stderr
    assert "was removed while it ran; asked for again, it begins afresh" in (
        render.stderr
    )
    assert np.array_equal(np.load(tmp_path / "out.npy"), EXPECTED)
    write_outputs(SPEC, EXPECTED, Output(png=tmp_path / "expected.png"))
    assert (tmp_path / "out.png").read_bytes() == (
        tmp_path / "expected.png"
    ).read_bytes()


def test_a_refused_raw_copy_spares_the_picture_and_an_earlier_copy(tmp_path, caplog):
    with small_disk(tmp_path / "out", 256 * 1024) as out:
        (out / "raw.npy").write_bytes(b"an earlier copy")
        output = Output(png=tmp_path / "out.png", raw_copy=out / "raw.npy")
        live = LivePicture("job", tmp_path, SPEC, output, EXPECTED)
        every_tile = np.full(SPEC.grid.count, TileState.DONE)

        with pytest.raises(OSError, match="No space left on device") as refused:
            live.finish(live.ready(every_tile))

        assert refused.value.filename == str(out / "raw.npy")
        assert sorted(p.name for p in out.iterdir()) == ["raw.npy"]
        assert (out / "raw.npy").read_bytes() == b"an earlier copy"
    assert "painting its picture failed" not in caplog.text  # painted once
    write_outputs(SPEC, EXPECTED, Output(png=tmp_path / "expected.png"))
    assert (tmp_path / "out.png").read_bytes() == (
        tmp_path / "expected.png"
    ).read_bytes()
