"""The streaming PNG writer, checked by decoding its files with Pillow."""

import os
import struct
import tempfile
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fraktal.render.png as png_module
from fraktal.errors import UsageError
from fraktal.render.compute import render
from fraktal.render.palette import Equalizer, colourize
from fraktal.render.png import SIGNATURE, PngWriter, write_png
from fraktal.render.spec import make_spec

SPEC = make_spec(
    width=37, height=23, center_re=-0.75, center_im=0.1, span=0.6, max_iter=300
)
METADATA = {
    "fraktal.center": "-0.75,0.1",
    "fraktal.max-iter": "300",
    "Software": "fraktal 0.1.0",
}


@pytest.fixture(scope="module")
def raw():
    return render(SPEC)


def chunks(path):
    data = path.read_bytes()
    assert data.startswith(SIGNATURE)
    offset = len(SIGNATURE)
    while offset < len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack_from(">I", data, offset + 8 + length)
        yield kind, body, crc == zlib.crc32(kind + body)
        offset += 12 + length


@pytest.mark.parametrize("strip_rows", [1, 5, 23, 256])
def test_decoded_pixels_equal_colourize_for_any_strip_height(tmp_path, raw, strip_rows):
    path = tmp_path / "out.png"

    write_png(path, raw, "nocturne", metadata=METADATA, strip_rows=strip_rows)

    with Image.open(path) as image:
        assert image.mode == "RGB" and image.size == (37, 23)
        assert np.array_equal(np.asarray(image), colourize(raw, "nocturne"))


def test_render_parameters_are_readable_as_png_text(tmp_path, raw):
    path = tmp_path / "out.png"

    write_png(path, raw, "fire", metadata=METADATA)

    with Image.open(path) as image:
        assert image.text == METADATA


def test_every_chunk_has_a_correct_crc_and_the_order_is_legal(tmp_path, raw):
    path = tmp_path / "out.png"

    write_png(path, raw, "ice", metadata=METADATA, strip_rows=4)

    found = list(chunks(path))
    kinds = [kind for kind, _, _ in found]
    assert all(good for _, _, good in found)
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    assert kinds.count(b"tEXt") == 3 and b"IDAT" in kinds
    assert found[0][1] == struct.pack(">IIBBBBB", 37, 23, 8, 2, 0, 0, 0)


def test_a_memory_mapped_image_with_equalisation(tmp_path, raw):
    mapped = np.memmap(
        tmp_path / "raw.f32", dtype=np.float32, mode="w+", shape=raw.shape
    )
    mapped[:] = raw
    mapped.flush()
    path = tmp_path / "eq.png"

    write_png(
        path,
        np.memmap(tmp_path / "raw.f32", dtype=np.float32, mode="r", shape=raw.shape),
        "gray",
        equalize=True,
        metadata={},
        strip_rows=6,
    )

    expected = colourize(raw, "gray", Equalizer.from_raw(raw))
    with Image.open(path) as image:
        assert np.array_equal(np.asarray(image), expected)


def test_an_unknown_palette_is_refused_before_any_file_exists(tmp_path, raw):
    with pytest.raises(UsageError, match="unknown palette 'sepia'"):
        write_png(tmp_path / "out.png", raw, "sepia", metadata=METADATA)

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "metadata", [{"": "x"}, {"k" * 80: "x"}, {"Title": "\u2603"}, {"Title": "a\x00b"}]
)
def test_text_png_cannot_hold_is_refused_before_any_file_exists(
    tmp_path, raw, metadata
):
    with pytest.raises(ValueError, match="PNG text"):
        write_png(tmp_path / "out.png", raw, "gray", metadata=metadata)

    assert list(tmp_path.iterdir()) == []


def test_a_crash_midway_leaves_the_old_file_and_no_half_png(tmp_path, raw, monkeypatch):
    path = tmp_path / "poster.png"
    path.write_bytes(b"previous poster")
    strips = []

    def failing_colourize(values, palette, equalizer=None):
        strips.append(values.shape)
        if len(strips) == 2:
            raise MemoryError("simulated crash in the second strip")
        return colourize(values, palette, equalizer)

    monkeypatch.setattr(png_module, "colourize", failing_colourize)

    with pytest.raises(MemoryError):
        write_png(path, raw, "nocturne", metadata=METADATA, strip_rows=8)

    assert path.read_bytes() == b"previous poster"
    assert [entry.name for entry in tmp_path.iterdir()] == ["poster.png"]


def test_a_finished_write_replaces_the_old_file(tmp_path, raw):
    path = tmp_path / "poster.png"
    path.write_bytes(b"previous poster")

    write_png(str(path), raw, "nocturne", metadata=METADATA)

    assert path.read_bytes().startswith(SIGNATURE)
    assert [entry.name for entry in tmp_path.iterdir()] == ["poster.png"]


def traced_peak_of_writing(tmp_path, height, width=1000, strip_rows=64):
    """Bytes allocated at the peak of writing a memory-mapped image."""
    path = tmp_path / f"raw-{height}.npy"
    mapped = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.float32, shape=(height, width)
    )
    for y in range(0, height, 64):
        rows = np.arange(y, min(y + 64, height), dtype=np.float32)[:, None]
        mapped[y : y + 64] = (rows * 0.3 + np.arange(width) * 0.7) % 900
    mapped[::9, ::7] = -1.0
    mapped.flush()
    tracemalloc.start()
    try:
        write_png(
            tmp_path / "big.png",
            np.load(path, mmap_mode="r"),
            "fire",
            equalize=True,
            metadata={},
            strip_rows=strip_rows,
        )
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_follows_the_strip_not_the_height_of_the_image(tmp_path):
    short = traced_peak_of_writing(tmp_path, height=256)
    tall = traced_peak_of_writing(tmp_path, height=8192)

    whole_rgb = 8192 * 1000 * 3
    assert tall < whole_rgb / 4
    assert tall < 1.25 * short + 1_000_000


def test_memory_follows_the_strip_not_the_width_of_a_panorama(tmp_path):
    narrow = traced_peak_of_writing(tmp_path, height=8000, width=2500, strip_rows=None)
    wide = traced_peak_of_writing(tmp_path, height=200, width=100_000, strip_rows=None)

    whole_rgb = 200 * 100_000 * 3
    assert wide < whole_rgb / 2
    assert wide < 1.25 * narrow + 1_000_000


def test_a_picture_kept_on_another_file_system_is_copied_into_place(tmp_path, raw):
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a file system of its own")
    with tempfile.TemporaryDirectory(dir=shm) as elsewhere:
        writer = PngWriter(
            tmp_path / "out.png",
            raw.shape,
            "nocturne",
            metadata=METADATA,
            temporary=Path(elsewhere) / "picture.part",
        )
        writer.write(raw)
        writer.finish()
        assert os.listdir(elsewhere) == []

    write_png(tmp_path / "end.png", raw, "nocturne", metadata=METADATA)
    assert (tmp_path / "out.png").read_bytes() == (tmp_path / "end.png").read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["end.png", "out.png"]
