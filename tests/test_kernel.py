"""The escape-time kernel against a plain-Python reference, and its promises."""

import itertools
import math
import re

import numba
import numpy as np
import pytest

from fraktal.render.compute import compute_rect, render
from fraktal.render.kernel import BAILOUT, escape_time
from fraktal.render.spec import make_spec
from fraktal.render.tiles import Rect

WHOLE_SET = make_spec(
    width=48, height=32, center_re=-0.5, center_im=0.0, span=3.0, max_iter=200
)
SEAHORSES = make_spec(
    width=40, height=30, center_re=-0.7436, center_im=0.1318, span=0.01, max_iter=600
)
FLAGS = list(itertools.product([True, False], repeat=2))


def reference(c_re, c_im, max_iter):
    """The textbook loop: (smooth count or -1.0, iterations performed)."""
    x = y = 0.0
    log_r2 = math.log(BAILOUT * BAILOUT)
    for n in range(max_iter):
        x2, y2 = x * x, y * y
        if x2 + y2 > BAILOUT * BAILOUT:
            mu = n + 1 - math.log2(math.log(x2 + y2) / log_r2)
            return max(mu, 0.0), n
        y = 2.0 * x * y + c_im
        x = x2 - y2 + c_re
    return -1.0, max_iter


def reference_image(spec):
    view = spec.view
    result = [
        [reference(re, im, spec.max_iter) for re in view.columns(0, view.width)]
        for im in view.rows(0, view.height)
    ]
    values = np.array([[value for value, _ in row] for row in result])
    iterations = sum(steps for row in result for _, steps in row)
    return values, iterations


def kernel_at(c, max_iter, *, cardioid=True, periodicity=True):
    out = np.empty((1, 1), dtype=np.float32)
    escape_time(
        np.array([c.real]), np.array([c.imag]), max_iter, out, cardioid, periodicity
    )
    return float(out[0, 0])


def bits(array):
    return np.ascontiguousarray(array).view(np.uint32)


@pytest.mark.parametrize("spec", [WHOLE_SET, SEAHORSES], ids=["whole", "seahorses"])
def test_kernel_matches_the_reference_loop(spec):
    """Interior and escaped pixels are the same; smooth values agree closely.

    The kernel keeps IEEE arithmetic without FMA, so orbits should match
    exactly, but a compiler that contracted a multiply-add would move chaotic
    boundary pixels in the last bits and their counts by more: allow 0.5 %
    of the escaped pixels to differ beyond 1e-4 as long as they stay within
    one iteration.
    """
    expected, _ = reference_image(spec)
    actual, _ = compute_rect(spec, Rect(0, 0, spec.view.width, spec.view.height))

    assert np.array_equal(actual < 0, expected < 0)
    assert np.all(actual[actual < 0] == -1.0)
    escaped = expected >= 0
    difference = np.abs(actual[escaped] - expected[escaped].astype(np.float32))
    assert np.mean(difference <= 1e-4) >= 0.995
    assert difference.max() <= 1.0


def test_kernel_is_bit_identical_to_the_reference_in_float32():
    """Plain IEEE arithmetic, no FMA: every machine computes the same image.

    Workers on different CPUs must return the same bits as the reference
    render; this holds only while the kernel stays clear of fast-math.
    """
    for spec in (WHOLE_SET, SEAHORSES):
        expected, _ = reference_image(spec)
        assert np.array_equal(bits(render(spec)), bits(expected.astype(np.float32)))


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="no machine code without JIT")
def test_the_lane_loop_compiles_to_packed_vector_instructions():
    # Numba refuses to show the machine code of a kernel loaded from its
    # cache, so compile a fresh copy of the same function.
    fresh = numba.njit(nogil=True)(escape_time.py_func)
    fresh(np.zeros(2), np.zeros(2), 4, np.empty((2, 2), np.float32), True, True)
    assembly = "\n".join(fresh.inspect_asm().values())

    assert re.search(r"\bv?mulpd\b", assembly)


def test_both_views_contain_interior_and_escaped_pixels():
    for spec in (WHOLE_SET, SEAHORSES):
        values = render(spec)
        assert 0.02 < np.mean(values < 0) < 0.9


@pytest.mark.parametrize(("cardioid", "periodicity"), FLAGS)
def test_centre_of_the_cardioid_and_of_the_period_2_bulb_are_interior(
    cardioid, periodicity
):
    assert kernel_at(0j, 500, cardioid=cardioid, periodicity=periodicity) == -1.0
    assert kernel_at(-1 + 0j, 500, cardioid=cardioid, periodicity=periodicity) == -1.0


def test_escape_at_the_last_allowed_iteration_is_finite():
    c = 0.2501 + 0.0j
    _, n = reference(c.real, c.imag, 10_000)
    assert 100 < n < 10_000

    last_chance = kernel_at(c, n + 1)
    too_late = kernel_at(c, n)

    assert math.isfinite(last_chance)
    assert n <= last_chance <= n + 1.01
    assert too_late == -1.0


def test_a_point_far_outside_escapes_at_once_with_a_count_of_at_least_zero():
    assert kernel_at(9.0 + 9.0j, 100) >= 0.0
    assert kernel_at(-60.0 + 50.0j, 100) >= 0.0
    assert kernel_at(2.0 + 0.0j, 100) == pytest.approx(reference(2.0, 0.0, 100)[0])


def test_smooth_count_is_continuous_across_iteration_boundaries():
    # Along the real axis from 0.5 to 2 the integer count drops from 7 to 4;
    # the smooth count must slide down without a jump.
    re = np.linspace(0.5, 2.0, 1501)
    out = np.empty((1, re.size), dtype=np.float32)
    escape_time(re, np.zeros(1), 1000, out, True, True)

    steps = np.diff(out[0])
    assert np.all(steps < 0)
    assert np.abs(steps).max() < 0.05
    assert out[0, 0] - out[0, -1] > 2


def test_iterations_reported_are_those_of_the_plain_loop_without_shortcuts():
    _, expected = reference_image(SEAHORSES)
    view = SEAHORSES.view

    _, iterations = compute_rect(
        SEAHORSES,
        Rect(0, 0, view.width, view.height),
        cardioid=False,
        periodicity=False,
    )

    assert iterations == expected


def test_shortcuts_change_no_pixel_and_save_iterations():
    rect = Rect(0, 0, WHOLE_SET.view.width, WHOLE_SET.view.height)
    results = {
        flags: compute_rect(WHOLE_SET, rect, cardioid=flags[0], periodicity=flags[1])
        for flags in FLAGS
    }

    plain, plain_iterations = results[(False, False)]
    for values, _ in results.values():
        assert np.array_equal(bits(values), bits(plain))
    assert results[(True, True)][1] < plain_iterations / 2
    assert results[(False, True)][1] < plain_iterations


def test_rows_cut_into_any_height_give_bit_identical_values():
    spec = make_spec(
        width=50, height=150, center_re=-0.75, center_im=0.1, span=0.3, max_iter=300
    )
    whole = render(spec, rows_per_call=150)

    for rows in (1, 64):
        assert np.array_equal(bits(render(spec, rows_per_call=rows)), bits(whole))


def test_columns_cut_anywhere_give_bit_identical_values():
    spec = make_spec(
        width=150, height=40, center_re=-0.75, center_im=0.1, span=0.3, max_iter=300
    )
    whole = render(spec)

    for cuts in ([0, 1, 150], [0, 64, 128, 150], [0, 37, 38, 101, 150]):
        pieces = [
            compute_rect(spec, Rect(left, 0, right - left, 40))[0]
            for left, right in itertools.pairwise(cuts)
        ]
        assert np.array_equal(bits(np.hstack(pieces)), bits(whole))


def test_compute_rect_returns_a_c_contiguous_float32_block_of_the_rect():
    values, _ = compute_rect(SEAHORSES, Rect(3, 5, 17, 11))

    assert values.shape == (11, 17)
    assert values.dtype == np.float32
    assert values.flags.c_contiguous
    assert np.all(np.isfinite(values))
    assert np.array_equal(bits(values), bits(render(SEAHORSES)[5:16, 3:20]))


def test_render_refuses_fewer_than_one_row_per_call():
    with pytest.raises(ValueError, match="rows_per_call must be at least 1, got 0"):
        render(WHOLE_SET, rows_per_call=0)
