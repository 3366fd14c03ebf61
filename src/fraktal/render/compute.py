"""Turn a spec and a rectangle of pixels into the arrays the kernel fills."""

from __future__ import annotations

import numpy as np

from fraktal.render.kernel import escape_time
from fraktal.render.spec import RenderSpec, make_spec
from fraktal.render.tiles import Rect

DEFAULT_ROWS_PER_CALL = 64


def compute_rect(
    spec: RenderSpec, rect: Rect, *, cardioid: bool = True, periodicity: bool = True
) -> tuple[np.ndarray, int]:
    """Smooth counts of the pixels in ``rect`` and the iterations it took.

    The array is float32, C-contiguous, of shape (rect.height, rect.width);
    interior pixels hold -1.0.
    """
    re = spec.view.columns(rect.x, rect.width)
    im = spec.view.rows(rect.y, rect.height)
    out = np.empty((rect.height, rect.width), dtype=np.float32)
    iterations = escape_time(re, im, spec.max_iter, out, cardioid, periodicity)

    return out, int(iterations)


def render(
    spec: RenderSpec, *, rows_per_call: int = DEFAULT_ROWS_PER_CALL
) -> np.ndarray:
    """The whole image in one process: the reference every render must equal."""
    if rows_per_call < 1:
        raise ValueError(f"rows_per_call must be at least 1, got {rows_per_call!r}")
    view = spec.view
    image = np.empty((view.height, view.width), dtype=np.float32)
    for y in range(0, view.height, rows_per_call):
        rows = min(rows_per_call, view.height - y)
        image[y : y + rows], _ = compute_rect(spec, Rect(0, y, view.width, rows))

    return image


def warm_up() -> None:
    """Compile the kernel, or load it from Numba's cache, before real work."""
    spec = make_spec(width=8, height=8, max_iter=16)
    compute_rect(spec, Rect(0, 0, 8, 8))
