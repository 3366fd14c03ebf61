"""What to compute, and the checks every user-facing parameter passes.

The CLI, the dashboard's API and the master all build a `RenderSpec` through
`make_spec`, so a bad value gets the same one-line answer everywhere: what was
wrong and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from functools import cached_property

from fraktal.errors import UsageError
from fraktal.render.tiles import TileGrid
from fraktal.render.view import View

MAX_SIDE = 200_000
MAX_ITER = 1_000_000_000
MAX_COORDINATE = 10.0
MAX_SPAN = 100.0
MIN_TILE = 8
MAX_TILE = 1024
MAX_TILES = 2**21

DEFAULT_WIDTH = 1920
DEFAULT_HEIGHT = 1080
DEFAULT_CENTER = (-0.75, 0.0)
DEFAULT_SPAN = 4.2
DEFAULT_MAX_ITER = 1000
DEFAULT_TILE = 64

# Part of every job's key: raise it whenever the kernel's output changes, so a
# job folder computed by an older kernel is never resumed by a newer one.
KERNEL_VERSION = 1


@dataclass(frozen=True)
class RenderSpec:
    """A view, an iteration limit and a tile size: everything a worker needs."""

    view: View
    max_iter: int
    tile_size: int = DEFAULT_TILE

    @cached_property
    def grid(self) -> TileGrid:
        """The tiles this render is cut into."""
        return TileGrid(self.view.width, self.view.height, self.tile_size)

    def key(self) -> str:
        """A short stable name for this computation, used for job folders."""
        text = json.dumps({**self.to_dict(), "kernel": KERNEL_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, float | int]:
        # Field by field: dataclasses.asdict deep-copies, and even listing
        # the fields costs more than the rest of encoding an assignment.
        view = self.view
        return {
            "center_re": view.center_re,
            "center_im": view.center_im,
            "span": view.span,
            "width": view.width,
            "height": view.height,
            "max_iter": self.max_iter,
            "tile_size": self.tile_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> RenderSpec:
        """Rebuild a spec from `to_dict` output, checking every field again."""
        try:
            return make_spec(
                width=data["width"],
                height=data["height"],
                center_re=data["center_re"],
                center_im=data["center_im"],
                span=data["span"],
                max_iter=data["max_iter"],
                tile_size=data["tile_size"],
            )
        except KeyError as exc:
            raise UsageError(
                f"render parameters lack the field {exc.args[0]!r}"
            ) from None


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``WxH`` (for example ``1920x1080``) into (width, height)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise UsageError(
            f"size {text!r} is not WIDTHxHEIGHT; expected two whole numbers "
            f"such as 1920x1080"
        )
    # Python refuses to read integers of thousands of digits; none is a size,
    # and a side of up to 18 digits gets the range check of `make_spec`.
    width, height = (side.lstrip("0") or "0" for side in match.groups())
    if len(width) > 18 or len(height) > 18:
        raise UsageError(
            f"size {text!r} is too large; each side must be from 1 to {MAX_SIDE}"
        )
    return int(width), int(height)


def parse_center(text: str) -> tuple[float, float]:
    """Parse ``RE,IM`` (for example ``-0.75,0.1``) into two floats."""
    parts = text.split(",")
    if len(parts) != 2:
        raise UsageError(
            f"centre {text!r} is not RE,IM; expected two numbers separated by "
            f"a comma, such as -0.75,0.1"
        )
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise UsageError(
            f"centre {text!r} is not RE,IM; expected two numbers separated by "
            f"a comma, such as -0.75,0.1"
        ) from None


def make_spec(
    *,
    width: object = DEFAULT_WIDTH,
    height: object = DEFAULT_HEIGHT,
    center_re: object = DEFAULT_CENTER[0],
    center_im: object = DEFAULT_CENTER[1],
    span: object = DEFAULT_SPAN,
    max_iter: object = DEFAULT_MAX_ITER,
    tile_size: object = DEFAULT_TILE,
) -> RenderSpec:
    """Check every parameter and build the spec, or raise `UsageError`."""
    view = View(
        center_re=_real("centre real part", center_re, MAX_COORDINATE),
        center_im=_real("centre imaginary part", center_im, MAX_COORDINATE),
        span=_span(span),
        width=_whole("width", width, 1, MAX_SIDE),
        height=_whole("height", height, 1, MAX_SIDE),
    )
    view.check_precision()
    spec = RenderSpec(
        view=view,
        max_iter=_whole("max-iter", max_iter, 1, MAX_ITER),
        tile_size=_whole("tile size", tile_size, MIN_TILE, MAX_TILE),
    )
    _check_tile_count(spec)
    return spec


def _check_tile_count(spec: RenderSpec) -> None:
    """The master keeps about 100 bytes a tile; keep that within reason."""
    count = spec.grid.count
    if count > MAX_TILES:
        side = math.ceil(math.sqrt(spec.view.width * spec.view.height / MAX_TILES))
        raise UsageError(
            f"a {spec.view.width}x{spec.view.height} image in tiles of "
            f"{spec.tile_size} pixels makes {count} tiles, more than the "
            f"{MAX_TILES} allowed; use a tile size of at least {side}"
        )


def _whole(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(
            f"{name} must be a whole number from {low} to {high}, got {value!r}"
        )
    if not low <= value <= high:
        raise UsageError(f"{name} must be from {low} to {high}, got {value}")
    return value


def _real(name: str, value: object, limit: float) -> float:
    number = _number(name, value)
    if not math.isfinite(number) or abs(number) > limit:
        raise UsageError(
            f"{name} must be a finite number from {-limit:g} to {limit:g}, "
            f"got {value!r:.40}"
        )
    return number


def _span(value: object) -> float:
    number = _number("span", value)
    if not (math.isfinite(number) and 0 < number <= MAX_SPAN):
        raise UsageError(
            f"span must be a finite number above 0 and at most {MAX_SPAN:g}, "
            f"got {value!r:.40}"
        )
    return number


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{name} must be a number, got {value!r:.40}")
    try:
        return float(value)
    except OverflowError:  # an integer too large for a float is out of range
        return math.inf
