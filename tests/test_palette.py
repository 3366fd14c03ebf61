"""Colouring: palettes, the count-to-gradient mapping, histogram equalisation."""

import numpy as np
import pytest

from fraktal.errors import UsageError
from fraktal.render.palette import (
    DEFAULT_PALETTE,
    PALETTES,
    Equalizer,
    check_palette,
    colourize,
    gradient_position,
    palette_names,
)


def ramp(low, high, count=20_001):
    return np.linspace(low, high, count, dtype=np.float32)[None, :]


def test_the_default_comes_first_among_at_least_four_palettes():
    names = palette_names()

    assert names[0] == DEFAULT_PALETTE
    assert {"fire", "ice", "gray"} <= set(names)
    assert sorted(names) == sorted(PALETTES)


def test_an_unknown_palette_is_refused_with_every_allowed_name_on_one_line():
    with pytest.raises(UsageError) as caught:
        check_palette("rainbow")

    message = str(caught.value)
    assert "'rainbow'" in message
    assert all(name in message for name in palette_names())
    assert "\n" not in message


def test_colourize_refuses_an_unknown_palette_too():
    with pytest.raises(UsageError, match="unknown palette"):
        colourize(np.zeros((2, 2), dtype=np.float32), "Fire")


def test_check_palette_returns_a_known_name():
    assert check_palette("fire") == "fire"


@pytest.mark.parametrize("name", sorted(PALETTES))
def test_interior_is_black_and_escaped_pixels_are_not(name):
    values = np.array([[-1.0, 3.7], [250.0, -1.0]], dtype=np.float32)

    rgb = colourize(values, name)

    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[1, 1].tolist() == [0, 0, 0]
    assert rgb[0, 1].sum() > 30


def test_the_default_runs_from_deep_blue_through_white_and_gold_to_dark():
    rgb = colourize(ramp(0, 3**2 * 1.0), DEFAULT_PALETTE)[0].astype(int)
    red, green, blue = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    brightness = rgb.sum(axis=1)

    deep_blue = (blue > 2 * red) & (blue > green) & (brightness < 200)
    white = rgb.min(axis=1) > 225
    gold = (red > 230) & (green > 150) & (blue < 100)
    dark = brightness < 120
    assert deep_blue.any() and white.any() and gold.any() and dark.any()
    assert np.argmax(white) < np.argmax(gold)


def test_the_far_field_of_the_whole_set_is_dark():
    # Pixels far outside the set at max-iter 1000 escape with mu near 5.
    rgb = colourize(ramp(4.5, 6.0, 11), DEFAULT_PALETTE)

    assert rgb.astype(int).sum(axis=2).max() < 250


@pytest.mark.parametrize("name", sorted(PALETTES))
def test_colours_change_smoothly_with_the_count(name):
    # Cyclic palettes wrap and the others bounce, so no count makes a jump,
    # over the whole-set range and a deep zoom's alike. Escaped pixels have
    # mu >= 1 unless |c| exceeds the bailout radius.
    for low, high in ((1.0, 60.0), (900.0, 6000.0)):
        rgb = colourize(ramp(low, high), name).astype(int)[0]
        assert np.abs(np.diff(rgb, axis=0)).max() <= 12


def test_a_deep_zoom_range_spans_several_colour_cycles():
    counts = np.linspace(1000, 5000, 100_001)
    position = gradient_position(counts, cyclic=True)

    wraps = np.count_nonzero(np.diff(position) < -0.5)
    assert 5 <= wraps <= 30


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, -0.5])
def test_values_no_kernel_makes_are_coloured_as_interior_without_warnings(value):
    rgb = colourize(np.array([[value, 10.0]], dtype=np.float32), DEFAULT_PALETTE)

    assert rgb[0, 0].tolist() == [0, 0, 0]


def test_huge_counts_still_get_a_colour():
    rgb = colourize(np.array([[1e9, 3.4e38]], dtype=np.float32), "fire")

    assert rgb.shape == (1, 2, 3)


def test_equalizer_maps_counts_to_their_rank():
    rng = np.random.default_rng(7)
    counts = rng.permutation(np.arange(1, 10_001, dtype=np.float32)).reshape(100, 100)
    image = np.where(rng.random((100, 100)) < 0.3, np.float32(-1.0), counts)

    equalizer = Equalizer.from_raw(image, strip_rows=7)
    position = equalizer(image)

    escaped = image >= 0
    rank = np.argsort(np.argsort(image[escaped])) / escaped.sum()
    assert np.abs(position[escaped] - rank).max() < 2e-3
    assert position.min() >= 0 and position.max() < 1
    assert np.all(position[~escaped] == 0)


def test_counts_above_the_whole_histogram_map_just_below_one():
    equalizer = Equalizer.from_raw(ramp(1.0, 100.0, 50))

    position = equalizer(np.array([[1e6, 3e38]], dtype=np.float32))

    assert position.dtype == np.float32
    assert np.all(position < 1) and np.all(position > 0.99)


def test_equalizer_built_in_strips_equals_one_built_at_once():
    values = np.random.default_rng(3).gamma(2.0, 40.0, (64, 50)).astype(np.float32)
    at_once = Equalizer()
    at_once.add(values)

    in_strips = Equalizer.from_raw(values, strip_rows=5)

    assert np.array_equal(in_strips(values), at_once(values))


def test_equalizer_reads_a_memory_mapped_image(tmp_path):
    values = np.random.default_rng(5).gamma(2.0, 40.0, (40, 30)).astype(np.float32)
    mapped = np.memmap(
        tmp_path / "raw.f32", dtype=np.float32, mode="w+", shape=values.shape
    )
    mapped[:] = values
    mapped.flush()

    from_disk = Equalizer.from_raw(
        np.memmap(tmp_path / "raw.f32", dtype=np.float32, mode="r", shape=values.shape),
        8,
    )

    assert np.array_equal(from_disk(values), Equalizer.from_raw(values)(values))


def test_equalized_colours_run_once_through_the_gradient():
    values = ramp(1.0, 500.0, 4096)
    equalizer = Equalizer.from_raw(values)

    rgb = colourize(values, "gray", equalizer)[0].astype(int)

    assert rgb[0].tolist() == [0, 0, 0]
    assert rgb[-1].tolist() == [255, 255, 255]
    assert np.all(np.diff(rgb[:, 0]) >= 0)


def test_an_empty_equalizer_maps_everything_to_the_start():
    equalizer = Equalizer.from_raw(np.full((4, 4), -1.0, dtype=np.float32))

    assert np.all(equalizer(np.array([[1.0, 50.0]], dtype=np.float32)) == 0)
