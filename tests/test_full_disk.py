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
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fraktal.master.service as service
from fraktal.master.picture import Output, write_outputs
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
            driver.answer_chunks_until(SPEC.grid.count // 4)
            driver.tick()
            # From now on only the timer retries the journal, not each result.
            begun = []
            monkeypatch.setattr(service, "COMMIT_TILES", 1)
            monkeypatch.setattr(driver.master, "_commit_soon", begun.append)
            driver.answer_chunks_until(SPEC.grid.count // 2)
            assert begun == []
            monkeypatch.undo()
            assert events(driver, "journal-failed") == [
                f"job {driver.job.id}: its journal cannot be written (No space "
                f"left on device); results are kept, a restart would compute "
                f"them again"
            ]

            filler.unlink()
            driver.loop.run_until_complete(driver.master.commit())
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
        assert len(refused) == 1, first.stderr
        assert "cannot write the journal (No space left on device)" in refused[0]
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
        # Only the tiles journaled before the disk filled up are kept (the
        # journal's last block had room for a few records, or none).
        resumed = re.findall(r"resuming: (\d+) of \d+ tiles", again.stderr)
        kept = int(resumed[0]) if resumed else 0
        assert kept < SPEC.grid.count, again.stderr
        assert np.array_equal(np.load(tmp_path / "out.npy"), EXPECTED)
