"""A PNG writer that colours and compresses an image strip by strip.

Pillow wants the whole RGB image in memory; a 20000 x 20000 poster would
need 1.2 GB for it. Here the raw counts (often a `numpy.memmap`) are read a
strip of about half a million pixels at a time, coloured, and fed to one
`zlib.compressobj`, so memory stays at a few strips whatever the size and
shape of the picture; each strip of a memory-mapped file is handed back
(`paging.release`) once coloured.
`PngWriter` takes the strips one call at a time, so the master can paint a
job's picture while its later rows are still being computed.

Every row uses PNG filter type 0 (None). Colours come from a lookup table of
`palette.LUT_SIZE` entries, so the same 3-byte pixels repeat all over the
image and deflate matches them directly; the Sub, Up and Paeth filters turn
those repeats into varied differences and came out 15-25 % larger on whole-set
and deep-zoom renders (measured at 1800 x 1200 and 3600 x 2400), and slower.

The file is written under a temporary name in the destination folder and
renamed into place at the end, so the final name never holds half a PNG.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fraktal.render.files import beside, move
from fraktal.render.paging import release
from fraktal.render.palette import Equalizer, check_palette, colourize

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COMPRESSION_LEVEL = 6
MAX_KEYWORD_LENGTH = 79
# Pixels coloured at once. Colouring takes about 30 bytes a pixel (50 with
# equalisation), so a strip costs at most some 25 MB whatever the shape of
# the image; bigger strips make no faster picture.
STRIP_PIXELS = 1 << 19

_BIT_DEPTH = 8
_COLOUR_TYPE_RGB = 2
_FILTER_NONE = b"\x00"


def write_png(
    path: str | os.PathLike[str],
    raw: np.ndarray,
    palette: str,
    *,
    equalize: bool = False,
    metadata: Mapping[str, str],
    strip_rows: int | None = None,
) -> None:
    """Colour the smooth counts ``raw`` (float32, (H, W)) and write them as PNG.

    :param metadata: written as tEXt chunks; keys are 1 to 79 Latin-1
        characters, values Latin-1 text without NUL.
    :param equalize: colour by the histogram of the whole image; this reads
        ``raw`` twice.
    :param strip_rows: rows coloured at once; by default `strip_height`.
    """
    if strip_rows is None:
        strip_rows = strip_height(raw.shape[1])
    if strip_rows < 1:
        raise ValueError(f"strip_rows must be at least 1, got {strip_rows!r}")
    check_palette(palette)
    equalizer = Equalizer.from_raw(raw, strip_rows) if equalize else None
    writer = PngWriter(path, raw.shape, palette, metadata=metadata, equalizer=equalizer)
    try:
        for y in range(0, raw.shape[0], strip_rows):
            writer.write(raw[y : y + strip_rows])
    except BaseException:
        writer.abort()
        raise
    writer.finish()


def strip_height(width: int) -> int:
    """Rows of a strip of an image ``width`` pixels wide: `STRIP_PIXELS` or one row."""
    return max(1, STRIP_PIXELS // max(1, width))


class PngWriter:
    """One PNG, coloured and compressed strip by strip from the top down.

    The file grows under a temporary name and takes its final name in
    `finish`; `abort` removes it. By default the temporary file gets a fresh
    random name beside ``path``. A caller may keep it elsewhere instead, at
    ``temporary``: a folder that it alone writes to, so that a leftover of a
    crash is its own to overwrite. If that folder is on another file system,
    `finish` copies the picture over before it takes its final name.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        shape: tuple[int, ...],
        palette: str,
        *,
        metadata: Mapping[str, str],
        equalizer: Equalizer | None = None,
        temporary: str | os.PathLike[str] | None = None,
    ) -> None:
        check_palette(palette)
        text_chunks = [_text_chunk(key, value) for key, value in metadata.items()]
        self._palette = palette
        self._equalizer = equalizer
        self._height = shape[0]
        self._rows_written = 0
        self._target = Path(path)
        if temporary is None:
            self._temporary = beside(self._target)
            flags = os.O_EXCL
        else:
            self._temporary = Path(temporary)
            flags = os.O_TRUNC | os.O_NOFOLLOW
        descriptor = os.open(self._temporary, os.O_WRONLY | os.O_CREAT | flags, 0o666)
        self._stream = os.fdopen(descriptor, "wb")
        self._compressor = zlib.compressobj(COMPRESSION_LEVEL)
        try:
            self._stream.write(SIGNATURE)
            self._stream.write(_header(shape))
            self._stream.writelines(text_chunks)
        except BaseException:
            self.abort()
            raise

    def write(self, strip: np.ndarray) -> None:
        """Append the next rows: the smooth counts ``strip`` of shape (h, W)."""
        rgb = colourize(np.asarray(strip), self._palette, self._equalizer)
        release(strip)
        rows = rgb.reshape(rgb.shape[0], -1)
        scanlines = np.empty((rows.shape[0], rows.shape[1] + 1), dtype=np.uint8)
        scanlines[:, 0] = _FILTER_NONE[0]
        scanlines[:, 1:] = rows
        self._write_idat(self._compressor.compress(scanlines))
        self._rows_written += rows.shape[0]

    def finish(self) -> None:
        """Close the image, make it durable and give it its final name.

        If that fails, the temporary file is removed and the error raised.
        """
        try:
            if self._rows_written != self._height:
                raise ValueError(
                    f"a PNG of {self._height} rows got {self._rows_written} rows"
                )
            self._write_idat(self._compressor.flush())
            self._stream.write(_chunk(b"IEND", b""))
            self._stream.flush()
            os.fsync(self._stream.fileno())
            self._stream.close()
            move(self._temporary, self._target)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Forget the picture: close and remove its temporary file.

        Never raises: it runs after something else failed, whose error is
        the one to report.
        """
        # A full disk refuses the buffered bytes; the file is closed anyway.
        with contextlib.suppress(OSError):
            self._stream.close()
        with contextlib.suppress(OSError):
            self._temporary.unlink(missing_ok=True)

    def _write_idat(self, data: bytes) -> None:
        if data:
            self._stream.write(_chunk(b"IDAT", data))


def _header(shape: tuple[int, ...]) -> bytes:
    height, width = shape
    fields = struct.pack(
        ">IIBBBBB", width, height, _BIT_DEPTH, _COLOUR_TYPE_RGB, 0, 0, 0
    )
    return _chunk(b"IHDR", fields)


def _text_chunk(key: str, value: str) -> bytes:
    try:
        keyword = key.encode("latin-1")
        text = value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(
            f"PNG text must be Latin-1; got key {key!r} with value {value!r}"
        ) from None
    if not 1 <= len(keyword) <= MAX_KEYWORD_LENGTH or b"\x00" in keyword + text:
        raise ValueError(
            f"PNG text keys must be 1 to {MAX_KEYWORD_LENGTH} characters and "
            f"neither key nor value may hold NUL; got key {key!r}"
        )
    return _chunk(b"tEXt", keyword + b"\x00" + text)


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
