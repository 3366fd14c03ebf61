"""Previews: the picture as far as it is done, small and cheap."""

import numpy as np
import pytest

from fraktal.render.compute import render
from fraktal.render.palette import Equalizer, colourize
from fraktal.render.preview import BACKGROUND, preview, preview_size
from fraktal.render.spec import make_spec

SPEC = make_spec(width=96, height=64, tile_size=32, span=3.0, max_iter=200)


@pytest.fixture(scope="module")
def raw():
    return render(SPEC)


def test_a_small_finished_image_previews_exactly_as_the_picture(raw):
    done = np.ones((2, 3), dtype=bool)

    assert np.array_equal(preview(raw, done, 32, "fire"), colourize(raw, "fire"))
    assert np.array_equal(
        preview(raw, done, 32, "ice", equalize=True),
        colourize(raw, "ice", Equalizer.from_raw(raw)),
    )


def test_tiles_not_done_show_the_background(raw):
    done = np.zeros((2, 3), dtype=bool)
    done[0, 1] = True  # pixels x 32..63, y 0..31

    rgb = preview(raw, done, 32, "nocturne")

    assert np.array_equal(rgb[:32, 32:64], colourize(raw, "nocturne")[:32, 32:64])
    assert (rgb[:32, :32] == BACKGROUND).all()
    assert (rgb[32:, :] == BACKGROUND).all()


def test_big_image_is_sampled_down_keeping_its_shape(raw):
    done = np.ones((2, 3), dtype=bool)

    rgb = preview(raw, done, 32, "gray", max_side=24)

    assert rgb.shape == (16, 24, 3)
    # each preview pixel is the centre pixel of a 4 x 4 cell
    assert np.array_equal(rgb, colourize(raw, "gray")[2::4, 2::4])


def test_preview_of_a_huge_memory_mapped_job_reads_only_its_samples(tmp_path):
    # 20000 x 20000 float32 is 1.6 GB; the file is sparse, and the preview
    # must not need it in memory to come out the right size and colours.
    huge = np.lib.format.open_memmap(
        tmp_path / "raw.npy", mode="w+", dtype=np.float32, shape=(20_000, 20_000)
    )
    huge[:64, :64] = -1.0  # interior in the first tile
    done = np.zeros((313, 313), dtype=bool)
    done[0, 0] = True

    rgb = preview(huge, done, 64, "nocturne", max_side=500)

    # preview pixels 0 and 1 sample columns and rows 20 and 60, in tile 0
    assert rgb.shape == (500, 500, 3)
    assert (rgb[:2, :2] == 0).all()  # the set itself, not the background
    assert (rgb[2:] == BACKGROUND).all() and (rgb[:, 2:] == BACKGROUND).all()


@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [
        ((1920, 1080), 640, (640, 360)),
        ((10, 5000), 100, (1, 100)),
        ((8, 8), 640, (8, 8)),
    ],
)
def test_preview_size_fits_the_longer_side(size, max_side, expected):
    assert preview_size(*size, max_side) == expected
