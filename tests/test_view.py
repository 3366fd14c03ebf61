"""The pixel convention: which complex number each pixel samples."""

import numpy as np
import pytest

from fraktal.errors import PrecisionError
from fraktal.render.view import View


def test_small_image_samples_pixel_centres():
    # 4 x 3 pixels, span 4 on the real axis, so 1 unit per pixel and a
    # height of 3; pixel centres sit half a unit inside the edges.
    view = View(center_re=-0.5, center_im=0.25, span=4.0, width=4, height=3)

    assert view.columns(0, 4).tolist() == [-2.0, -1.0, 0.0, 1.0]
    assert view.rows(0, 3) == pytest.approx([1.25, 0.25, -0.75], abs=1e-15)
    assert view.point(3, 2) == pytest.approx(complex(1.0, -0.75), abs=1e-15)


def test_pixels_are_square_for_a_wide_image():
    view = View(center_re=-0.75, center_im=0.0, span=3.2, width=1600, height=900)

    dx = np.diff(view.columns(0, 1600))
    dy = -np.diff(view.rows(0, 900))

    assert dx == pytest.approx(view.pixel_size, rel=1e-12)
    assert dy == pytest.approx(view.pixel_size, rel=1e-12)
    assert view.height_span == pytest.approx(1.8)


def test_row_zero_is_the_top_of_an_asymmetric_view():
    # re from -2 to 1, im from 0 to 1.5, at 600 x 300: 0.005 per pixel.
    view = View(center_re=-0.5, center_im=0.75, span=3.0, width=600, height=300)

    re = view.columns(0, 600)
    im = view.rows(0, 300)

    assert re[0] == pytest.approx(-1.9975) and re[-1] == pytest.approx(0.9975)
    assert im[0] == pytest.approx(1.4975) and im[-1] == pytest.approx(0.0025)
    assert np.all(np.diff(im) < 0)


def test_a_slice_of_rows_equals_the_same_rows_of_the_whole_image():
    view = View(center_re=0.3, center_im=-0.1, span=0.7, width=97, height=61)

    assert view.rows(17, 9).tobytes() == view.rows(0, 61)[17:26].tobytes()
    assert view.columns(40, 57).tobytes() == view.columns(0, 97)[40:].tobytes()


def test_a_span_below_float64_resolution_is_refused_with_the_smallest_allowed():
    view = View(center_re=-1.5, center_im=0.0, span=1e-14, width=1000, height=1000)

    with pytest.raises(PrecisionError) as caught:
        view.check_precision()

    message = str(caught.value)
    assert "below what float64 resolves" in message
    assert "use a span of at least 1.5e-12 at this width" in message
    assert "\n" not in message


def test_a_span_just_above_the_resolution_limit_is_accepted():
    view = View(center_re=-1.5, center_im=0.0, span=1.6e-12, width=1000, height=1000)

    view.check_precision()
