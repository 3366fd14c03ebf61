"""The PNG painted while a job runs: same bytes as one written at the end."""

from __future__ import annotations

import time

import numpy as np
import pytest

import fraktal.render.png as png
from fraktal.master.picture import Output, write_outputs
from fraktal.master.scheduler import JobStatus
from fraktal.master.service import MasterConfig
from fraktal.render.compute import render
from fraktal.render.spec import make_spec
from masterdriver import Driver

# 600 rows of 64-row tiles, and strips of 256 rows (see `strips_of_256_rows`):
# they need tile rows 0-3, 4-7 and 8-9.
SPEC = make_spec(
    width=40, height=600, tile_size=64, center_re=-0.6, span=2.2, max_iter=80
)
EXPECTED = render(SPEC)


def parts(tmp_path):
    """Every unfinished picture under ``tmp_path``, job folders included."""
    return sorted(p.name for p in tmp_path.rglob("*.part"))


def wait_until(condition, what, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def strips_of_256_rows(monkeypatch):
    monkeypatch.setattr(png, "STRIP_PIXELS", 256 * SPEC.view.width)


@pytest.fixture
def driver_for(tmp_path):
    made = []

    def make(output: Output) -> Driver:
        config = MasterConfig(port=0, jobs_dir=tmp_path / "jobs")
        made.append(Driver(config, SPEC, EXPECTED, output))
        return made[-1]

    yield make
    for driver in made:
        driver.close()


def test_strips_are_painted_while_the_job_runs_and_match_a_picture_made_at_the_end(
    tmp_path, driver_for
):
    output = Output(png=tmp_path / "live.png", palette="fire", raw_copy=None)
    driver = driver_for(output)
    columns = SPEC.grid.columns

    driver.answer_chunks_until(4 * columns)  # every tile under rows 0-255
    wait_until(lambda: parts(tmp_path), "the first strip to be painted")
    assert driver.job.done < SPEC.grid.count
    assert driver.master.live[driver.job.id].next_row in (256, 512)
    assert parts(tmp_path) == ["picture.part"]
    assert (tmp_path / "jobs" / driver.job.id / "picture.part").exists()
    assert not (tmp_path / "live.png").exists()

    driver.finish()

    assert driver.job.status is JobStatus.DONE and parts(tmp_path) == []
    write_outputs(SPEC, EXPECTED, Output(png=tmp_path / "end.png", palette="fire"))
    live, end = (
        (tmp_path / "live.png").read_bytes(),
        (tmp_path / "end.png").read_bytes(),
    )
    assert live == end
    assert driver.master.written[driver.job.id] == tmp_path / "live.png"


def test_a_cancelled_job_leaves_neither_a_picture_nor_a_partial_file(
    tmp_path, driver_for
):
    driver = driver_for(Output(png=tmp_path / "live.png"))
    driver.answer_chunks_until(4 * SPEC.grid.columns)
    wait_until(lambda: parts(tmp_path), "the first strip to be painted")

    driver.master.cancel(driver.job.id)
    driver.master.dispatch()
    driver.master._painter.submit(lambda: None).result(10)

    assert driver.job.status is JobStatus.CANCELLED
    assert list(tmp_path.glob("*.png")) == [] and parts(tmp_path) == []


def test_a_stopped_master_removes_its_partial_file_and_the_next_one_resumes(
    tmp_path, driver_for
):
    output = Output(png=tmp_path / "live.png", raw_copy=tmp_path / "raw.npy")
    first = driver_for(output)
    first.answer_chunks_until(8 * SPEC.grid.columns)
    wait_until(lambda: parts(tmp_path), "the first strips to be painted")

    first.stop()

    assert parts(tmp_path) == [] and not (tmp_path / "live.png").exists()
    second = driver_for(output)
    assert second.job.resumed >= 8 * SPEC.grid.columns
    second.finish()
    write_outputs(SPEC, EXPECTED, Output(png=tmp_path / "end.png"))
    assert (tmp_path / "live.png").read_bytes() == (tmp_path / "end.png").read_bytes()
    assert np.array_equal(np.load(tmp_path / "raw.npy"), EXPECTED)


def test_what_a_killed_master_left_is_removed_by_the_next_even_if_it_paints_later(
    tmp_path, driver_for
):
    folder = tmp_path / "jobs" / SPEC.key()
    folder.mkdir(parents=True)
    (folder / "picture.part").write_bytes(b"half a picture")

    driver = driver_for(Output(png=tmp_path / "eq.png", equalize=True))

    assert parts(tmp_path) == []
    driver.finish()
    assert parts(tmp_path) == [] and (tmp_path / "eq.png").exists()


def test_an_output_folder_gone_for_a_while_mid_job_costs_nothing(tmp_path, driver_for):
    out = tmp_path / "out"
    out.mkdir()
    driver = driver_for(Output(png=out / "live.png"))
    driver.answer_chunks_until(4 * SPEC.grid.columns)
    out.rmdir()
    driver.answer_chunks_until(8 * SPEC.grid.columns)
    out.mkdir()

    driver.finish()

    write_outputs(SPEC, EXPECTED, Output(png=tmp_path / "end.png"))
    assert (out / "live.png").read_bytes() == (tmp_path / "end.png").read_bytes()
    assert driver.job.id not in driver.master.picture_errors


def test_a_picture_that_fails_to_paint_is_written_again_from_the_raw_results(
    tmp_path, driver_for, caplog
):
    driver = driver_for(Output(png=tmp_path / "live.png", palette="ice"))
    # A real error from the file system: the partial file cannot be created.
    (tmp_path / "jobs" / driver.job.id / "picture.part").mkdir()
    driver.answer_chunks_until(4 * SPEC.grid.columns)
    wait_until(
        lambda: "painting its picture failed" in caplog.text, "the painting to fail"
    )

    driver.finish()

    write_outputs(SPEC, EXPECTED, Output(png=tmp_path / "end.png", palette="ice"))
    assert (tmp_path / "live.png").read_bytes() == (tmp_path / "end.png").read_bytes()
    assert "Is a directory" in caplog.text
    assert driver.job.id not in driver.master.picture_errors


def test_an_equalised_picture_is_written_at_the_end_from_the_whole_image(
    tmp_path, driver_for
):
    output = Output(png=tmp_path / "eq.png", palette="ice", equalize=True)
    driver = driver_for(output)
    driver.answer_chunks_until(8 * SPEC.grid.columns)
    assert driver.job.id not in driver.master.live and parts(tmp_path) == []

    driver.finish()

    expected = Output(png=tmp_path / "end.png", palette="ice", equalize=True)
    write_outputs(SPEC, EXPECTED, expected)
    assert (tmp_path / "eq.png").read_bytes() == (tmp_path / "end.png").read_bytes()
