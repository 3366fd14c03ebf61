"""A job's outputs: its PNG and the copy of its raw results.

The PNG of a job with a per-pixel palette (not equalised) is painted while
the job runs: as soon as every tile under the next strip of rows is done,
the strip is coloured and compressed in the master's painter thread
(`LivePicture`). When the last tile arrives only the strips after the last
complete one are left, so the picture is ready moments later instead of
costing a full pass over the image while the workers idle. The file is the
same, byte for byte, as `write_outputs` writes from the finished raw array.

A histogram-equalised picture needs the counts of the whole image first, so
it is written at the end, as are recolourings and the raw copy.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fraktal.master.scheduler import TileState
from fraktal.master.store import open_raw
from fraktal.render.files import beside, move
from fraktal.render.paging import release
from fraktal.render.palette import DEFAULT_PALETTE
from fraktal.render.png import PngWriter, strip_height, write_png
from fraktal.render.spec import RenderSpec

logger = logging.getLogger(__name__)

RAW_COPY_PIXELS = 1 << 22  # 16 MiB of float32 a band
# The picture of a running job, in its folder, until it is complete.
PARTIAL = "picture.part"


@dataclass(frozen=True)
class Output:
    """Where and how a job's picture is written."""

    png: Path | None
    palette: str = DEFAULT_PALETTE
    equalize: bool = False
    raw_copy: Path | None = None

    @property
    def paints_live(self) -> bool:
        """Whether the PNG can be painted strip by strip during the job."""
        return self.png is not None and not self.equalize


class LivePicture:
    """The PNG of a running job, painted strip by strip as rows complete.

    `ready` and `cancel` run on the event loop (`ready` under the master's
    lock, wherever tiles are marked done) and say which strips became
    complete; `paint`, `finish` and `abort` run in the painter thread, one
    at a time, in the order they were handed over.

    The file grows in the job folder (`PARTIAL`), which only the master
    holding the folder's lock writes to: a master killed mid-job leaves it
    there for the next one to overwrite, never in the user's folder. If
    painting fails on the way (a full disk, a folder that went away), `finish`
    writes the picture again from ``raw``, the job's memory-mapped results,
    which outlive even a deleted folder.
    """

    def __init__(
        self,
        job_id: str,
        folder: Path,
        spec: RenderSpec,
        output: Output,
        raw: np.ndarray,
    ) -> None:
        assert output.png is not None and output.paints_live
        self.job_id = job_id
        self.folder = folder
        self.spec = spec
        self.output = output
        self.next_row = 0
        self._cancelled = False
        self._raw = raw
        self._writer: PngWriter | None = None
        self._error: Exception | None = None

    def ready(self, states: np.ndarray) -> list[tuple[int, int]]:
        """The strips (first row, end row) completed since the last call."""
        grid = self.spec.grid
        strips = []
        rows = strip_height(grid.width)
        while self.next_row < grid.height:
            end = min(self.next_row + rows, grid.height)
            first_tile = self.next_row // grid.size * grid.columns
            end_tile = -(-end // grid.size) * grid.columns
            if not np.all(states[first_tile:end_tile] == TileState.DONE):
                break
            strips.append((self.next_row, end))
            self.next_row = end
        return strips

    def cancel(self) -> None:
        """Stop painting at the next strip; `abort` is still to be handed over."""
        self._cancelled = True

    def paint(self, strips: list[tuple[int, int]]) -> None:
        """Colour and compress ``strips``, which follow the ones painted."""
        if self._error is not None:
            return
        try:
            for start, end in strips:
                if self._cancelled:
                    return
                self._painter().write(self._raw[start:end])
        except Exception as exc:  # finish() writes the picture again
            self._failed(exc)
            self.abort()

    def finish(self, strips: list[tuple[int, int]]) -> None:
        """Paint the last ``strips``, then write the file and the raw copy."""
        self.paint(strips)
        if self._error is None:
            try:
                self._painter().finish()  # removes its file if it fails
            except Exception as exc:
                self._failed(exc)
            finally:
                self._writer = None
        if self._error is not None:
            write_outputs(self.spec, self._raw, replace(self.output, raw_copy=None))
        if self.output.raw_copy is not None:
            copy_raw(self._raw, self.output.raw_copy)

    def abort(self) -> None:
        """Drop the unfinished file: the job did not finish, or it failed."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    def _failed(self, error: Exception) -> None:
        logger.warning(
            "job %s: painting its picture failed (%s); it is written again "
            "from the raw results when the job is done",
            self.job_id,
            error,
        )
        self._error = error

    def _painter(self) -> PngWriter:
        if self._writer is None:
            assert self.output.png is not None
            self._writer = PngWriter(
                self.output.png,
                self._raw.shape,
                self.output.palette,
                metadata=metadata(self.spec, self.output),
                temporary=self.folder / PARTIAL,
            )
        return self._writer


def paint_folder(folder: Path, spec: RenderSpec, output: Output) -> None:
    """Write the outputs of the finished job in ``folder``."""
    write_outputs(spec, open_raw(folder, spec), output)


def forget_partial(folder: Path) -> None:
    """Remove what a master that died left of a picture in ``folder``."""
    (folder / PARTIAL).unlink(missing_ok=True)


def write_outputs(spec: RenderSpec, raw: np.ndarray, output: Output) -> None:
    """Write the PNG (and the raw copy) of a finished job."""
    if output.png is not None:
        write_png(
            output.png,
            raw,
            output.palette,
            equalize=output.equalize,
            metadata=metadata(spec, output),
        )
    if output.raw_copy is not None:
        copy_raw(raw, output.raw_copy)


def metadata(spec: RenderSpec, output: Output) -> dict[str, str]:
    """The PNG text chunks that say how a picture was made."""
    return {
        "Software": "fraktal",
        "fraktal:center": f"{spec.view.center_re!r},{spec.view.center_im!r}",
        "fraktal:span": repr(spec.view.span),
        "fraktal:size": f"{spec.view.width}x{spec.view.height}",
        "fraktal:max-iter": str(spec.max_iter),
        "fraktal:palette": output.palette + (" equalized" if output.equalize else ""),
    }


def copy_raw(raw: np.ndarray, path: Path) -> None:
    """Save ``raw`` as a ``.npy`` file, a band of rows at a time.

    Plain writes, not a memory map: a disk that fills up raises an error
    instead of killing the process with SIGBUS. The file takes its name only
    when complete (`files.move`), so a failed or killed copy leaves no half
    file and spares an earlier one.
    """
    header = {"descr": "<f4", "fortran_order": False, "shape": raw.shape}
    rows = max(1, RAW_COPY_PIXELS // max(1, raw.shape[1]))
    temporary = beside(path)
    try:
        with open(temporary, "xb") as copy:
            np.lib.format.write_array_header_1_0(copy, header)
            for start in range(0, raw.shape[0], rows):
                band = raw[start : start + rows]
                copy.write(np.ascontiguousarray(band, dtype="<f4").data)
                release(band)
            copy.flush()
            os.fsync(copy.fileno())
        move(temporary, path)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # say which file the disk refused
        raise
