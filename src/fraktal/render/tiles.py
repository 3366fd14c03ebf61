"""Cutting an image into square tiles, numbered row-major from the top left.

Tiles on the right and bottom edges are cut short where the image ends. A
tile's id is the only thing that travels between master and worker; both sides
rebuild the rectangle from the grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Rect:
    """A rectangle of pixels: columns x .. x+width-1, rows y .. y+height-1."""

    x: int
    y: int
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class TileGrid:
    """The tiles of a ``width`` x ``height`` image with square tiles of ``size``.

    Its counts are worked out once: every tile of every result asks for them.
    """

    width: int
    height: int
    size: int

    @cached_property
    def columns(self) -> int:
        return -(-self.width // self.size)

    @cached_property
    def rows(self) -> int:
        return -(-self.height // self.size)

    @cached_property
    def count(self) -> int:
        return self.columns * self.rows

    def rect(self, tile_id: int) -> Rect:
        """The pixels covered by tile ``tile_id``."""
        if not 0 <= tile_id < self.count:
            raise IndexError(f"tile {tile_id} is outside 0..{self.count - 1}")
        row, column = divmod(tile_id, self.columns)
        x, y = column * self.size, row * self.size
        return Rect(
            x, y, min(self.size, self.width - x), min(self.size, self.height - y)
        )
