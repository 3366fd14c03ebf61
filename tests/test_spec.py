"""Checks on every user-facing render parameter, and their one-line answers."""

import math

import pytest

from fraktal.errors import PrecisionError, UsageError
from fraktal.render.spec import (
    DEFAULT_CENTER,
    DEFAULT_MAX_ITER,
    RenderSpec,
    make_spec,
    parse_center,
    parse_size,
)


def test_defaults_give_the_classic_full_view():
    spec = make_spec()

    assert (spec.view.width, spec.view.height) == (1920, 1080)
    assert (spec.view.center_re, spec.view.center_im) == DEFAULT_CENTER
    assert spec.max_iter == DEFAULT_MAX_ITER


@pytest.mark.parametrize(
    ("text", "size"),
    [("1920x1080", (1920, 1080)), (" 640 X 480 ", (640, 480)), ("1x1", (1, 1))],
)
def test_parse_size_accepts_width_x_height(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["1920", "1920x", "x1080", "-5x3", "2.5x3", "axb", ""])
def test_parse_size_refuses_anything_else_and_shows_the_form(text):
    with pytest.raises(
        UsageError, match=r"expected two whole numbers such as 1920x1080"
    ):
        parse_size(text)


@pytest.mark.parametrize(
    "text", ["1" * 5000 + "x1", "1x" + "9" * 4301, "1" * 19 + "x1"]
)
def test_parse_size_refuses_sides_of_too_many_digits(text):
    # Python will not even read an integer of thousands of digits.
    with pytest.raises(UsageError) as caught:
        parse_size(text)

    assert str(caught.value) == (
        f"size {text!r} is too large; each side must be from 1 to 200000"
    )


def test_parse_size_reads_leading_zeros_as_the_number():
    assert parse_size("0" * 5000 + "64x048") == (64, 48)


@pytest.mark.parametrize(
    ("text", "center"),
    [("-0.75,0.1", (-0.75, 0.1)), ("0,0", (0.0, 0.0)), (" 1e-3 , -2 ", (1e-3, -2.0))],
)
def test_parse_center_accepts_re_comma_im(text, center):
    assert parse_center(text) == center


@pytest.mark.parametrize("text", ["-0.75", "-0.75,0.1,3", "a,b", "1;2", ""])
def test_parse_center_refuses_anything_else_and_shows_the_form(text):
    with pytest.raises(UsageError, match=r"two numbers separated by a comma"):
        parse_center(text)


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("width", 0, "from 1 to 200000"),
        ("width", 200_001, "from 1 to 200000"),
        ("width", 12.0, "a whole number from 1 to 200000"),
        ("width", "640", "a whole number from 1 to 200000"),
        ("height", True, "a whole number from 1 to 200000"),
        ("height", -1, "from 1 to 200000"),
        ("max_iter", 0, "from 1 to 1000000000"),
        ("max_iter", 10**9 + 1, "from 1 to 1000000000"),
        ("tile_size", 7, "from 8 to 1024"),
        ("tile_size", 1025, "from 8 to 1024"),
        ("center_re", 10.5, "a finite number from -10 to 10"),
        ("center_im", math.nan, "a finite number from -10 to 10"),
        ("center_im", "0.1", "must be a number"),
        ("span", 0, "above 0 and at most 100"),
        ("span", -1.0, "above 0 and at most 100"),
        ("span", math.inf, "above 0 and at most 100"),
        ("span", 100.5, "above 0 and at most 100"),
        # integers too large for a float, as JSON can carry them
        ("span", 10**400, "above 0 and at most 100"),
        ("center_re", -(10**400), "a finite number from -10 to 10"),
    ],
)
def test_make_spec_refuses_each_bad_value_and_names_the_allowed_range(
    field, value, allowed
):
    with pytest.raises(UsageError) as caught:
        make_spec(**{field: value})

    message = str(caught.value)
    assert allowed in message
    assert repr(value)[:40] in message  # long values are cut short
    assert "\n" not in message


@pytest.mark.parametrize("field", ["span", "center_re", "center_im"])
def test_an_integer_too_large_for_a_float_is_refused_in_one_short_line(field):
    with pytest.raises(UsageError, match="must be a finite number") as caught:
        make_spec(**{field: 10**400})

    assert len(str(caught.value)) < 200


def test_make_spec_refuses_a_span_float64_cannot_resolve():
    with pytest.raises(PrecisionError, match="below what float64 resolves"):
        make_spec(span=1e-13, width=1000)


def test_a_spec_survives_the_round_trip_through_a_dict():
    spec = make_spec(
        width=300,
        height=200,
        center_re=-0.7436,
        center_im=0.1318,
        span=0.01,
        max_iter=5000,
        tile_size=32,
    )

    again = RenderSpec.from_dict(spec.to_dict())

    assert again == spec
    assert again.key() == spec.key()
    assert make_spec(max_iter=5001).key() != make_spec(max_iter=5000).key()


def test_from_dict_names_a_missing_field():
    data = make_spec().to_dict()
    del data["span"]

    with pytest.raises(UsageError, match="lack the field 'span'"):
        RenderSpec.from_dict(data)


def test_from_dict_checks_the_values_again():
    data = {**make_spec().to_dict(), "max_iter": -5}

    with pytest.raises(UsageError, match="max-iter must be from 1 to 1000000000"):
        RenderSpec.from_dict(data)


def test_too_many_tiles_are_refused_with_the_tile_size_that_would_do():
    with pytest.raises(UsageError, match=r"makes 625000000 tiles.*at least 139"):
        make_spec(width=200_000, height=200_000, tile_size=8)

    assert make_spec(width=200_000, height=200_000, tile_size=139).grid.count <= 2**21
