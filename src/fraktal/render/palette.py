"""Colouring: from smooth iteration counts to RGB bytes.

Each palette is a handful of evenly spaced colour stops, turned into a
lookup table of `LUT_SIZE` entries by a Catmull-Rom spline, so the gradient
has no kinks at the stops. Interior pixels (count -1) take the palette's
interior colour.

Where a count lands in the gradient
-----------------------------------
Counts grow quickly towards the boundary: a view of the whole set spends
most of its pixels between 1 and 30, while a deep zoom at max-iter 5000 has
most of its detail between a few hundred and a few thousand. A linear cycle
that suits one is a blur or a wash of noise in the other. The position is
therefore ``sqrt(mu) / CYCLE_LENGTH``: the square root stretches the low
counts of the whole set over most of one cycle and still gives a deep zoom
several cycles across its range, each one covering more iterations than the
last, so fine filaments stay readable instead of turning into noise. Cyclic
palettes wrap around; the others bounce between their two ends, so there is
never a jump.

With histogram equalisation (`Equalizer`) the position is instead the
fraction of escaped pixels of the whole image with a smaller count, and the
gradient is traversed once: every colour covers the same area.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from fraktal.errors import UsageError
from fraktal.render.paging import release

LUT_SIZE = 1024

# Iterations' square root per colour cycle; see the module docstring.
CYCLE_LENGTH = 3.0
# Shifts the cycle so the far field of the whole set (mu near 5) starts dark.
PHASE = 0.24

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class Palette:
    """Evenly spaced colour stops, and the colour of the set itself."""

    stops: tuple[Colour, ...]
    cyclic: bool
    interior: Colour = (0, 0, 0)


PALETTES: dict[str, Palette] = {
    "nocturne": Palette(
        stops=(
            (2, 8, 48),
            (18, 64, 150),
            (96, 168, 228),
            (244, 246, 236),
            (250, 200, 72),
            (196, 104, 12),
            (54, 20, 14),
        ),
        cyclic=True,
    ),
    "fire": Palette(
        stops=(
            (8, 0, 0),
            (110, 8, 4),
            (212, 48, 6),
            (252, 142, 20),
            (255, 220, 90),
            (255, 252, 232),
        ),
        cyclic=False,
    ),
    "ice": Palette(
        stops=(
            (2, 10, 28),
            (10, 52, 104),
            (28, 120, 168),
            (110, 200, 220),
            (236, 250, 255),
        ),
        cyclic=False,
    ),
    "gray": Palette(stops=((0, 0, 0), (255, 255, 255)), cyclic=False),
}

DEFAULT_PALETTE = "nocturne"


def palette_names() -> list[str]:
    """Every palette name, the default first."""
    return [DEFAULT_PALETTE, *sorted(set(PALETTES) - {DEFAULT_PALETTE})]


def check_palette(name: object) -> str:
    """Return ``name`` if it names a palette, else raise `UsageError`."""
    if not isinstance(name, str) or name not in PALETTES:
        raise UsageError(
            f"unknown palette {name!r}; choose one of: {', '.join(palette_names())}"
        )
    return name


class Equalizer:
    """The distribution of escaped counts over a whole image.

    Feed it the image strip by strip with `add`; calling it then maps counts
    to their position in [0, 1) by the cumulative distribution, linear inside
    each bin so that the mapping stays continuous. Bins are uniform in
    log2(1 + mu), a relative resolution of 0.03 % from mu = 1 up to 2**32,
    beyond any max-iter fraktal accepts; larger counts share the last bin.
    """

    BINS = 1 << 16
    TOP = 32.0

    def __init__(self) -> None:
        self._counts = np.zeros(self.BINS, dtype=np.int64)
        self._below: np.ndarray | None = None

    @classmethod
    def from_raw(cls, raw: np.ndarray, strip_rows: int = 256) -> Equalizer:
        """Build from a whole image, reading ``strip_rows`` rows at a time."""
        equalizer = cls()
        for y in range(0, raw.shape[0], strip_rows):
            strip = raw[y : y + strip_rows]
            equalizer.add(strip)
            release(strip)
        return equalizer

    def add(self, values: np.ndarray) -> None:
        """Count the escaped pixels among ``values``; interior is ignored."""
        scaled = self._scaled(values[_escaped(values)])
        bins = np.minimum(scaled.astype(np.int64), self.BINS - 1)
        self._counts += np.bincount(bins, minlength=self.BINS)
        self._below = None

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Positions in [0, 1) of ``values`` (float32); interior maps to 0."""
        below = self._cumulative()
        total = below[-1]
        if total == 0:
            return np.zeros(values.shape, dtype=np.float32)

        scaled = self._scaled(np.where(_escaped(values), values, 0))
        bins = np.minimum(scaled.astype(np.int64), self.BINS - 1)
        inside = np.clip(scaled - bins, 0.0, 1.0)
        fraction = (below[bins] + inside * self._counts[bins]) / total
        below_one = np.nextafter(np.float32(1.0), np.float32(0.0))
        return np.minimum(fraction.astype(np.float32), below_one)

    def _scaled(self, values: np.ndarray) -> np.ndarray:
        return np.log2(1.0 + values.astype(np.float64)) * (self.BINS / self.TOP)

    def _cumulative(self) -> np.ndarray:
        if self._below is None:
            self._below = np.concatenate(([0], np.cumsum(self._counts)))
        return self._below


def colourize(
    values: np.ndarray, palette: str, equalizer: Equalizer | None = None
) -> np.ndarray:
    """RGB bytes, shape (h, w, 3), for smooth counts ``values`` of shape (h, w)."""
    chosen = PALETTES[check_palette(palette)]
    escaped = _escaped(values)
    if equalizer is None:
        position = gradient_position(np.where(escaped, values, 0), chosen.cyclic)
    else:
        position = equalizer(values)

    index = np.minimum((position * LUT_SIZE).astype(np.intp), LUT_SIZE - 1)
    rgb = _lut(palette)[index]
    rgb[~escaped] = chosen.interior
    return rgb


def gradient_position(counts: np.ndarray, cyclic: bool) -> np.ndarray:
    """Where smooth counts (all >= 0) fall in a gradient, in [0, 1]."""
    root = np.sqrt(counts.astype(np.float32))
    cycles = root / np.float32(CYCLE_LENGTH) + np.float32(PHASE)
    if cyclic:
        return cycles - np.floor(cycles)
    half = cycles / np.float32(2.0)
    return np.abs(np.float32(2.0) * (half - np.floor(half)) - np.float32(1.0))


def _escaped(values: np.ndarray) -> np.ndarray:
    return np.isfinite(values) & (values >= 0)


@functools.cache
def _lut(name: str) -> np.ndarray:
    """The palette's gradient sampled at `LUT_SIZE` points, as uint8 RGB."""
    palette = PALETTES[name]
    stops = np.asarray(palette.stops, dtype=np.float64)
    if palette.cyclic:
        # The entry after the last is the first again.
        padded = np.concatenate((stops[-1:], stops, stops[:2]))
        segments, last = len(stops), LUT_SIZE
    else:
        padded = np.concatenate((stops[:1], stops, stops[-1:]))
        segments, last = len(stops) - 1, LUT_SIZE - 1

    where = np.arange(LUT_SIZE) * (segments / last)
    segment = np.minimum(where.astype(np.intp), segments - 1)
    t = (where - segment)[:, None]
    p0, p1, p2, p3 = (padded[segment + k] for k in range(4))
    curve = 0.5 * (
        2 * p1
        + (p2 - p0) * t
        + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
        + (3 * p1 - p0 - 3 * p2 + p3) * t**3
    )
    return np.clip(np.rint(curve), 0, 255).astype(np.uint8)
