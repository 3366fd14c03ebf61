"""View geometry: which complex number each pixel of the image samples.

Pixel (column i, row j) of a W x H image samples the point

    re = center_re + ((i + 0.5) / W - 0.5) * span
    im = center_im + (0.5 - (j + 0.5) / H) * (span * H / W)

so row 0 is the top (largest imaginary part), pixels are square for every
aspect ratio, and ``span`` is the width of the view on the real axis.

Coordinates are always computed from the global pixel index with exactly the
expressions above, never by stepping from a neighbour, so that a pixel's value
cannot depend on how the image was cut into tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fraktal.errors import PrecisionError

# float64 has a 53-bit mantissa (~1.1e-16 relative); below ~1e-15 relative
# spacing neighbouring pixels start to collapse onto the same float.
RELATIVE_PRECISION_LIMIT = 1e-15


@dataclass(frozen=True)
class View:
    """A rectangle of the complex plane sampled on a W x H pixel grid."""

    center_re: float
    center_im: float
    span: float
    width: int
    height: int

    @property
    def pixel_size(self) -> float:
        """Distance between neighbouring pixel centres, on both axes."""
        return self.span / self.width

    @property
    def height_span(self) -> float:
        """Height of the view on the imaginary axis."""
        return self.span * self.height / self.width

    def columns(self, x0: int, count: int) -> np.ndarray:
        """Real parts sampled by columns ``x0 .. x0 + count - 1`` (float64)."""
        i = np.arange(x0, x0 + count, dtype=np.float64)
        return self.center_re + ((i + 0.5) / self.width - 0.5) * self.span

    def rows(self, y0: int, count: int) -> np.ndarray:
        """Imaginary parts sampled by rows ``y0 .. y0 + count - 1`` (float64)."""
        j = np.arange(y0, y0 + count, dtype=np.float64)
        height_span = self.span * self.height / self.width
        return self.center_im + (0.5 - (j + 0.5) / self.height) * height_span

    def point(self, i: int, j: int) -> complex:
        """The complex number sampled by pixel (column ``i``, row ``j``)."""
        return complex(self.columns(i, 1)[0], self.rows(j, 1)[0])

    def check_precision(self) -> None:
        """Refuse a view whose pixel spacing float64 cannot resolve."""
        magnitude = max(1.0, abs(complex(self.center_re, self.center_im)))
        smallest = RELATIVE_PRECISION_LIMIT * magnitude
        if self.pixel_size < smallest:
            smallest_span = smallest * self.width
            raise PrecisionError(
                f"pixel spacing {self.pixel_size:.3g} (span {self.span:.3g} over "
                f"{self.width} pixels) is below what float64 resolves at this "
                f"centre ({smallest:.3g} = 1e-15 x max(1, |centre|)); use a span "
                f"of at least {smallest_span:.3g} at this width"
            )
