"""A job folder on disk: the parameters, the raw results, and a journal.

Layout of a job folder:

    job.json       the render parameters, so a restart can check it resumes
                   the same computation
    raw.npy        float32 (H, W) smooth iteration counts, memory-mapped and
                   written tile by tile as results arrive, so an image larger
                   than memory works
    done.journal   which tiles are done: appended in batches, each batch with
                   its own CRC, and fsync'd

The rule that makes a crash cost nothing: a tile id reaches the journal only
after its values were flushed to raw.npy. Every tile the journal names is
therefore on disk. A batch torn by a crash fails its CRC; it and anything after
it are ignored, and those tiles are simply computed again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import time
import zlib
from pathlib import Path

import numpy as np

from fraktal.errors import JobStoreError, UsageError
from fraktal.render.paging import release
from fraktal.render.spec import RenderSpec
from fraktal.render.tiles import Rect, TileGrid

logger = logging.getLogger(__name__)

JOURNAL_MAGIC = b"FKJ1"
_COUNT = struct.Struct("<I")
GIB = 1024**3


class JobStore:
    """The folder of one job; see the module docstring for the layout."""

    def __init__(
        self, folder: Path, spec: RenderSpec, raw: np.memmap, journal_done: list[int]
    ) -> None:
        self.folder = folder
        self.spec = spec
        self.raw = raw
        self.grid = TileGrid(spec.view.width, spec.view.height, spec.tile_size)
        self.journal_done = journal_done
        self._batch: list[int] = []

    @classmethod
    def open(cls, folder: Path | str, spec: RenderSpec) -> JobStore:
        """Create the job folder, or reopen it and read back what is done."""
        folder = Path(folder)
        params = folder / "job.json"
        if params.exists():
            return cls._reopen(folder, spec)

        _check_space(folder, spec)
        folder.mkdir(parents=True, exist_ok=True)
        raw = _create_raw(folder / "raw.npy", spec)
        (folder / "done.journal").write_bytes(JOURNAL_MAGIC)
        _write_json(params, {"spec": spec.to_dict(), "created": time.time()})
        return cls(folder, spec, raw, [])

    @classmethod
    def _reopen(cls, folder: Path, spec: RenderSpec) -> JobStore:
        stored = read_spec(folder)
        if stored != spec:
            raise JobStoreError(
                f"job folder {str(folder)!r} holds a different render "
                f"({stored.to_dict()}); choose another folder"
            )
        try:
            raw = np.load(folder / "raw.npy", mmap_mode="r+")
        except (OSError, ValueError) as exc:
            raise JobStoreError(
                f"cannot open {str(folder / 'raw.npy')!r}: {exc}"
            ) from None
        if raw.shape != (spec.view.height, spec.view.width) or raw.dtype != np.float32:
            raise JobStoreError(
                f"{str(folder / 'raw.npy')!r} holds {raw.dtype} {raw.shape}, "
                f"expected float32 ({spec.view.height}, {spec.view.width})"
            )
        grid = TileGrid(spec.view.width, spec.view.height, spec.tile_size)
        done = read_journal(folder / "done.journal", grid.count)
        return cls(folder, spec, raw, done)

    def write_tile(self, rect: Rect, values: np.ndarray) -> None:
        """Put a tile's values in place; it is durable after `commit`."""
        self.raw[rect.y : rect.y + rect.height, rect.x : rect.x + rect.width] = values

    def mark_done(self, tiles: list[int]) -> None:
        """Remember tiles whose values were written, for the next commit."""
        self._batch.extend(tiles)

    @property
    def uncommitted(self) -> int:
        return len(self._batch)

    def commit(self) -> int:
        """Flush raw values, then journal the batch; returns tiles journaled."""
        if not self._batch:
            return 0
        self.raw.flush()
        release(self.raw)
        ids = np.asarray(self._batch, dtype="<u4").tobytes()
        record = _COUNT.pack(len(self._batch)) + ids
        with open(self.folder / "done.journal", "ab") as journal:
            journal.write(record + _COUNT.pack(zlib.crc32(record)))
            journal.flush()
            os.fsync(journal.fileno())
        count, self._batch = len(self._batch), []
        return count

    def close(self) -> None:
        self.commit()


def read_spec(folder: Path | str) -> RenderSpec:
    """The render parameters stored in a job folder."""
    path = Path(folder) / "job.json"
    try:
        data = json.loads(path.read_text())
        return RenderSpec.from_dict(data["spec"])
    except FileNotFoundError:
        raise JobStoreError(
            f"{str(folder)!r} is not a job folder: it has no job.json"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, UsageError) as exc:
        raise JobStoreError(f"{str(path)!r} is unreadable: {exc}") from None


def open_raw(folder: Path | str) -> np.memmap:
    """The raw results of a job folder, read-only."""
    return np.load(Path(folder) / "raw.npy", mmap_mode="r")


def read_journal(path: Path, tile_count: int) -> list[int]:
    """Tile ids of every intact batch; stops at the first torn or bad one."""
    data = path.read_bytes() if path.exists() else b""
    if not data.startswith(JOURNAL_MAGIC):
        raise JobStoreError(f"{str(path)!r} is not a fraktal journal")
    done: list[int] = []
    offset = len(JOURNAL_MAGIC)
    while offset + _COUNT.size <= len(data):
        (count,) = _COUNT.unpack_from(data, offset)
        end = offset + _COUNT.size * (count + 1)
        if end + _COUNT.size > len(data):
            break
        (crc,) = _COUNT.unpack_from(data, end)
        if zlib.crc32(data[offset:end]) != crc:
            break
        ids = np.frombuffer(data, dtype="<u4", count=count, offset=offset + 4)
        if ids.size and int(ids.max()) >= tile_count:
            break
        done.extend(ids.tolist())
        offset = end + _COUNT.size
    if offset != len(data):
        logger.warning(
            "journal %s: %d bytes after the last intact batch ignored",
            path,
            len(data) - offset,
        )
    return done


def _check_space(folder: Path, spec: RenderSpec) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    needed = spec.view.width * spec.view.height * 4
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise UsageError(
            f"a {spec.view.width}x{spec.view.height} render needs "
            f"{needed / GIB:.1f} GiB of disk for its raw results but "
            f"{str(existing)!r} has {free / GIB:.1f} GiB free; choose a smaller "
            f"size or another --job-dir"
        )


def _create_raw(path: Path, spec: RenderSpec) -> np.memmap:
    shape = (spec.view.height, spec.view.width)
    raw = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    with open(path, "r+b") as handle:
        # Reserve the blocks now: a memory map that runs out of disk later
        # kills the process with SIGBUS instead of raising an error.
        os.posix_fallocate(handle.fileno(), 0, os.path.getsize(path))
    return raw


def _write_json(path: Path, data: dict[str, object]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(temporary, path)
