"""Small previews of a picture while its tiles are still arriving.

A preview samples the raw smooth counts on a coarse grid (the centre pixel of
each cell) instead of reading every pixel, so its cost follows the size of the
preview, not of the image: a 20000 x 20000 job read into a 640-pixel preview
touches at most 640 x 640 values of the memory map. Pixels whose tile is not
done yet show a neutral background instead of whatever the raw array holds
before a result arrives.
"""

from __future__ import annotations

import numpy as np

from fraktal.render.palette import Equalizer, colourize

BACKGROUND = (40, 44, 52)


def preview_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) of a preview whose longer side is at most ``max_side``."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def sample_positions(length: int, count: int) -> np.ndarray:
    """The centre pixel of each of ``count`` equal cells along ``length`` pixels."""
    return ((np.arange(count) + 0.5) * (length / count)).astype(np.intp)


def preview(
    raw: np.ndarray,
    tiles_done: np.ndarray,
    tile_size: int,
    palette: str,
    *,
    equalize: bool = False,
    max_side: int = 640,
) -> np.ndarray:
    """RGB bytes (h, w, 3) of ``raw`` shrunk to fit ``max_side``.

    ``tiles_done`` is a boolean array with one entry per tile of the grid
    (rows, columns); pixels of tiles not done take `BACKGROUND`. With
    ``equalize`` the histogram comes from the sampled pixels that are done.
    """
    height, width = raw.shape
    out_width, out_height = preview_size(width, height, max_side)
    rows = sample_positions(height, out_height)
    columns = sample_positions(width, out_width)

    values = np.asarray(raw[np.ix_(rows, columns)], dtype=np.float32)
    done = tiles_done[np.ix_(rows // tile_size, columns // tile_size)]

    equalizer = None
    if equalize:
        equalizer = Equalizer()
        equalizer.add(values[done])
    rgb = colourize(values, palette, equalizer)
    rgb[~done] = BACKGROUND
    return rgb
