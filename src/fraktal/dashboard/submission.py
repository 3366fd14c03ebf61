"""A job submitted through the API, checked exactly as the CLI checks it.

The fields mirror the CLI's options. ``size`` and ``center`` take the CLI's
text forms (``"1920x1080"``, ``"-0.75,0.1"``) or a pair of numbers; numbers
may also come as text, as an HTML form sends them. Every value then goes
through `make_spec` and `check_palette`, so a bad one gets the same one-line
message as on the command line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fraktal.errors import UsageError
from fraktal.render.palette import DEFAULT_PALETTE, check_palette
from fraktal.render.spec import (
    DEFAULT_CENTER,
    DEFAULT_HEIGHT,
    DEFAULT_MAX_ITER,
    DEFAULT_SPAN,
    DEFAULT_TILE,
    DEFAULT_WIDTH,
    RenderSpec,
    make_spec,
    parse_center,
    parse_size,
)

FIELDS = ("size", "center", "span", "max_iter", "palette", "equalize", "tile_size")
# Sign and significant digits; longer numbers stay text for `make_spec` to refuse,
# as Python will not read integers of thousands of digits.
_WHOLE = re.compile(r"\s*([+-]?)0*(\d{1,18})\s*")


@dataclass(frozen=True)
class Submission:
    """What to compute and how to colour it."""

    spec: RenderSpec
    palette: str
    equalize: bool


def parse_submission(data: Any) -> Submission:
    """Check a decoded JSON object; raises `UsageError` naming the bad field."""
    if not isinstance(data, dict):
        raise UsageError(
            f"a job is a JSON object with some of the fields {', '.join(FIELDS)}; "
            f"got {type(data).__name__}"
        )
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise UsageError(
            f"unknown field {unknown[0]!r}; allowed fields: {', '.join(FIELDS)}"
        )

    width, height = _size(data.get("size", (DEFAULT_WIDTH, DEFAULT_HEIGHT)))
    center_re, center_im = _center(data.get("center", DEFAULT_CENTER))
    spec = make_spec(
        width=width,
        height=height,
        center_re=center_re,
        center_im=center_im,
        span=_number(data.get("span", DEFAULT_SPAN)),
        max_iter=_whole(data.get("max_iter", DEFAULT_MAX_ITER)),
        tile_size=_whole(data.get("tile_size", DEFAULT_TILE)),
    )
    return Submission(
        spec,
        _palette(data.get("palette", DEFAULT_PALETTE)),
        _flag(data.get("equalize", False)),
    )


def _size(value: Any) -> tuple[Any, Any]:
    if isinstance(value, str):
        return parse_size(value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return _whole(value[0]), _whole(value[1])
    raise UsageError(
        f"size must be WIDTHxHEIGHT such as 1920x1080, or [width, height]; "
        f"got {value!r}"
    )


def _center(value: Any) -> tuple[Any, Any]:
    if isinstance(value, str):
        return parse_center(value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return _number(value[0]), _number(value[1])
    raise UsageError(
        f"center must be RE,IM such as -0.75,0.1, or [re, im]; got {value!r}"
    )


def _number(value: Any) -> Any:
    """A number given as text becomes a float; anything else `make_spec` judges."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _whole(value: Any) -> Any:
    match = _WHOLE.fullmatch(value) if isinstance(value, str) else None
    if match:
        return int(match.group(1) + match.group(2))
    return value


def _palette(value: Any) -> str:
    return check_palette(value.strip().lower() if isinstance(value, str) else value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"equalize must be true or false, got {value!r}")
    return value
