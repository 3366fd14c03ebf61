"""A job folder on disk: the parameters, the raw results, and a journal.

Layout of a job folder:

    job.json       the render parameters, so a restart can check it resumes
                   the same computation
    raw.npy        float32 (H, W) smooth iteration counts, memory-mapped and
                   written tile by tile as results arrive, so an image larger
                   than memory works
    done.journal   what happened, appended as it happens: each record is a
                   kind, a count, that many 32-bit values and a CRC
    history.jsonl  one line each time a master opens the folder or ends the
                   job: tiles resumed, in flight at a crash, lost

Journal records:

    DONE     tile ids whose values were written into raw.npy before the record
    LEASED   tile ids handed to a worker
    SYNC     every record before a journal offset is on disk, and so are the
             values of the tiles they name: raw.npy and the journal were
             fsync'd up to there before this record was written. The offset
             is the record's payload (8 bytes); without one it is the
             record's own start
    SESSION  a master opened the folder; carries the machine's boot id
    FAILED   a flush failed: what came after the last SYNC may not be on
             disk, even if the page cache still shows it

Theory of operation
-------------------
Two kinds of crash need two rules.

A killed master process (SIGKILL, the OOM killer, a bug) loses nothing it
handed to the kernel: bytes given to ``write()`` and stores into the shared
memory map sit in the page cache and reach the disk later. So a DONE record is
written the moment a result is taken, without waiting for fsync, and a master
started again on the same boot trusts every intact record. Only tiles that
were in flight at the crash are computed again.

A machine that goes down (power, kernel panic) keeps only what was fsync'd,
and the disk may hold a DONE record without the tile values it names. After a
reboot, which the boot id in the last SESSION record reveals, only records up
to the offset the last SYNC vouches for are trusted; the tiles of later DONE
records are counted as lost and computed again. SYNC is written every second
or so (`commit`). The slow part of a commit, flushing raw.npy, may run in
another thread (`make_durable`) while results keep arriving: the offset is
taken before the flush starts, so the SYNC never vouches for a tile
written during it.

A record torn by the crash fails its CRC; it and everything after it are
ignored, and the file is cut back to the last trusted record so that new
records never follow untrusted ones.

A disk that refuses writes (full, or failing) costs no result. raw.npy has
its blocks reserved when it is created, so tile values are always stored. A
journal record that cannot be written is cut off again, so that no torn
record sits before later ones; its tiles wait in memory and every `commit`
tries them again. Until one succeeds, a master started again would compute
them anew. `journal_error` says why, for the master to report.

A flush that fails (an I/O error) is worse: Linux may mark the pages it
could not write clean, so a later fsync passes without writing them. From
then on the folder writes no SYNC (`flush_error` says why) and a FAILED
record, so that a restart, even on the same boot, trusts only what the last
SYNC vouched for and computes the rest again.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import json
import logging
import os
import shutil
import struct
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fraktal.errors import JobStoreError, UsageError
from fraktal.render.paging import release
from fraktal.render.spec import RenderSpec
from fraktal.render.tiles import Rect

logger = logging.getLogger(__name__)

JOURNAL_MAGIC = b"FKJ2"
OLD_JOURNAL_MAGIC = b"FKJ1"
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
GIB = 1024**3
MIB = 1024**2

_HEADER = struct.Struct("<BI")
_CRC = struct.Struct("<I")
_UNKNOWN_BOOT = bytes(16)


class Record(enum.IntEnum):
    DONE = 1
    LEASED = 2
    SYNC = 3
    SESSION = 4
    FAILED = 5


@dataclass(frozen=True)
class Entry:
    """One intact journal record and the offset just past it.

    The values of a SYNC entry are the one offset it vouches for.
    """

    kind: Record
    values: np.ndarray
    end: int


@dataclass(frozen=True)
class Recovery:
    """What a journal holds after its last master stopped, cleanly or not.

    ``done`` lists the tiles whose values can be trusted, in journal order.
    ``in_flight`` counts tiles leased by the last master and never reported
    done: they were being computed when it stopped and will be again.
    ``lost`` counts tiles whose results had arrived but were not yet safely on
    disk when the machine went down; they will be computed and received again.
    ``keep`` is the length of the journal's trusted part.
    """

    done: list[int]
    in_flight: int
    lost: int
    same_boot: bool
    keep: int


def boot_id() -> bytes:
    """This machine's boot id (16 bytes), or zeros if the system has none."""
    try:
        return uuid.UUID(BOOT_ID_FILE.read_text().strip()).bytes
    except (OSError, ValueError):
        return _UNKNOWN_BOOT


def encode_record(kind: Record, values: list[int] | np.ndarray | bytes = ()) -> bytes:
    """One journal record with its CRC."""
    if isinstance(values, bytes):
        payload = values
    else:
        payload = np.asarray(values, dtype="<u4").tobytes()
    body = _HEADER.pack(kind, len(payload) // 4) + payload
    return body + _CRC.pack(zlib.crc32(body))


def scan_journal(data: bytes, tile_count: int) -> tuple[list[Entry], int]:
    """Every intact record from the start, and the offset where they end."""
    if not data.startswith(JOURNAL_MAGIC):
        raise JobStoreError(_bad_magic_message(data))
    entries: list[Entry] = []
    offset = len(JOURNAL_MAGIC)
    while offset + _HEADER.size <= len(data):
        kind, count = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        end = start + 4 * count
        if end + _CRC.size > len(data) or not _legal(kind, count):
            break
        (crc,) = _CRC.unpack_from(data, end)
        if zlib.crc32(data[offset:end]) != crc:
            break
        values = np.frombuffer(data, dtype="<u4", count=count, offset=start)
        if kind == Record.SYNC:
            vouched = int(values[0]) | int(values[1]) << 32 if count else offset
            if vouched > offset:  # it cannot know of records after itself
                break
            values = np.array([vouched], dtype=np.int64)
        elif kind != Record.SESSION and values.size and values.max() >= tile_count:
            break
        offset = end + _CRC.size
        entries.append(Entry(Record(kind), values, offset))
    return entries, offset


def _legal(kind: int, count: int) -> bool:
    if kind == Record.SYNC:
        return count in (0, 2)
    if kind == Record.FAILED:
        return count == 0
    if kind == Record.SESSION:
        return count == 4
    return kind in (Record.DONE, Record.LEASED)


def _bad_magic_message(data: bytes) -> str:
    if data.startswith(OLD_JOURNAL_MAGIC):
        return (
            "the journal was written by an older fraktal whose format this one "
            "does not read; delete the job folder to compute the job afresh"
        )
    return "the journal is not a fraktal journal"


def recover(entries: list[Entry], boot: bytes) -> Recovery:
    """Decide which records to trust; see the module docstring for the rules."""
    synced = max(
        (int(e.values[0]) for e in entries if e.kind is Record.SYNC),
        default=len(JOURNAL_MAGIC),
    )
    sessions = [e for e in entries if e.kind is Record.SESSION]
    last_boot = sessions[-1].values.tobytes() if sessions else _UNKNOWN_BOOT
    same_boot = boot != _UNKNOWN_BOOT and last_boot == boot
    failed = any(e.kind is Record.FAILED for e in entries)
    if same_boot and not failed:
        trusted = entries
    else:
        trusted = [e for e in entries if e.end <= synced]

    done = _unique(e.values for e in trusted if e.kind is Record.DONE)
    received = set(_unique(e.values for e in entries if e.kind is Record.DONE))
    lost = len(received) - len(done)
    last_start = max(
        (i for i, e in enumerate(entries) if e.kind is Record.SESSION), default=0
    )
    leased = set(
        _unique(e.values for e in entries[last_start:] if e.kind is Record.LEASED)
    )
    keep = trusted[-1].end if trusted else len(JOURNAL_MAGIC)
    return Recovery(done, len(leased - received), lost, same_boot, keep)


def _unique(arrays: Any) -> list[int]:
    seen: dict[int, None] = {}
    for values in arrays:
        seen.update(dict.fromkeys(values.tolist()))
    return list(seen)


class JobStore:
    """The folder of one job; see the module docstring for the layout."""

    def __init__(
        self,
        folder: Path,
        spec: RenderSpec,
        raw: np.memmap,
        recovery: Recovery | None,
    ) -> None:
        self.folder = folder
        self.spec = spec
        self.raw = raw
        # The same memory without the Python bookkeeping memmap does per slice.
        self._pixels = raw.view(np.ndarray)
        self.grid = spec.grid
        self.recovery = recovery
        self.journal_done = recovery.done if recovery else []
        # fsync on this flushes what the memory map wrote, like msync, but
        # lets other threads run meanwhile.
        self._raw_file = os.open(folder / "raw.npy", os.O_RDONLY)
        try:
            self._journal = _open_journal(folder / "done.journal")
        except BaseException:
            os.close(self._raw_file)
            raise
        self._lock = -1
        self._unsynced = 0
        # Where the last whole record ends, and the done tiles that the disk
        # refused to journal; see the module docstring.
        self._journal_end = os.fstat(self._journal).st_size
        self._unjournaled: list[int] = []
        self.journal_error: str | None = None
        # Set once a flush failed: the kernel may have dropped what it could
        # not write, so no later SYNC may vouch for it.
        self.flush_error: str | None = None
        # A commit may run in another thread: `_appending` keeps records
        # whole, `_io` keeps `close` from closing the journal under it.
        self._appending = threading.Lock()
        self._io = threading.RLock()

    @classmethod
    def open(
        cls, folder: Path | str, spec: RenderSpec, boot: bytes | None = None
    ) -> JobStore:
        """Create the job folder, or reopen it and recover what is done.

        ``boot`` stands in for this machine's boot id in tests.
        """
        folder = Path(folder)
        boot = boot_id() if boot is None else boot
        try:
            if not (folder / "job.json").exists():
                _check_space(folder, spec)
                folder.mkdir(parents=True, exist_ok=True)
            lock = _lock(folder)
            try:
                store = cls._open_locked(folder, spec, boot)
            except BaseException:
                os.close(lock)
                raise
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise JobStoreError(
                f"cannot use the job folder {str(folder)!r}: "
                f"{exc.strerror or exc}; "
                f"{'free space there or ' if full else ''}choose another --job-dir"
            ) from None
        store._lock = lock
        return store

    @classmethod
    def _open_locked(cls, folder: Path, spec: RenderSpec, boot: bytes) -> JobStore:
        if (folder / "job.json").exists():
            return cls._reopen(folder, spec, boot)

        try:
            raw = _create_raw(folder / "raw.npy", spec)
            (folder / "done.journal").write_bytes(JOURNAL_MAGIC)
            params = {"spec": spec.to_dict(), "created": time.time()}
            _write_json(folder / "job.json", params)
            _fsync_file(folder)
            store = cls(folder, spec, raw, None)
            store._begin(boot, "created", tiles=store.grid.count)
        except BaseException:
            # Half a folder would hold its reserved space and look like a job.
            for name in ("job.json", "raw.npy", "done.journal", "history.jsonl"):
                with contextlib.suppress(OSError):
                    (folder / name).unlink(missing_ok=True)
            raise
        return store

    @classmethod
    def _reopen(cls, folder: Path, spec: RenderSpec, boot: bytes) -> JobStore:
        stored = read_spec(folder)
        if stored != spec:
            raise JobStoreError(
                f"job folder {str(folder)!r} holds a different render "
                f"({stored.to_dict()}); choose another folder"
            )
        raw = _open_raw(folder, spec, "r+")
        path = folder / "done.journal"
        recovery = read_recovery(folder, spec, boot)
        if recovery.keep < path.stat().st_size:
            logger.warning(
                "journal %s: %d bytes after the last trusted record dropped",
                path,
                path.stat().st_size - recovery.keep,
            )
            os.truncate(path, recovery.keep)

        store = cls(folder, spec, raw, recovery)
        store._begin(
            boot,
            "resumed",
            done=len(recovery.done),
            in_flight=recovery.in_flight,
            lost=recovery.lost,
            same_boot=recovery.same_boot,
        )
        return store

    def _begin(self, boot: bytes, event: str, **figures: Any) -> None:
        """Start this master's session in the journal, or close the files.

        Raises: a folder refused at the start is the user's to fix.
        """
        record = encode_record(Record.SESSION, boot) + encode_record(Record.SYNC)
        try:
            # The SYNC vouches for what an earlier master on this boot wrote.
            os.fsync(self._raw_file)
            _write_all(self._journal, record)
            os.fsync(self._journal)
        except BaseException:
            with contextlib.suppress(OSError):  # a torn record is ignored anyway
                os.ftruncate(self._journal, self._journal_end)
            self._close_files()
            raise
        self._journal_end += len(record)
        self.record_history(event, **figures)

    def write_tile(self, rect: Rect, values: np.ndarray) -> None:
        """Put a tile's values in place; call `mark_done` after."""
        rows = slice(rect.y, rect.y + rect.height)
        self._pixels[rows, rect.x : rect.x + rect.width] = values

    def mark_done(self, tiles: list[int]) -> None:
        """Journal tiles whose values were written: safe from a process crash
        at once, from a machine crash after the next `commit`."""
        if not tiles:
            return
        self._unsynced += len(tiles)
        if self._unjournaled or not self._append(encode_record(Record.DONE, tiles)):
            self._unjournaled.extend(tiles)  # in order, behind the refused ones

    def mark_leased(self, tiles: tuple[int, ...] | list[int]) -> None:
        """Journal tiles handed to a worker, to count them after a crash.

        Skipped while the disk refuses records: the count is only a report.
        """
        if self.journal_error is None:
            self._append(encode_record(Record.LEASED, list(tiles)))

    @property
    def unjournaled(self) -> int:
        """Done tiles whose journal records the disk refused so far."""
        return len(self._unjournaled)

    @property
    def uncommitted(self) -> int:
        """Tiles marked done since the last commit began."""
        return self._unsynced

    def commit(self) -> int:
        """Make every tile marked done so far safe from a machine crash.

        Returns the tiles synced; 0, keeping them for the next commit, if
        the disk refused (see `journal_error`). The three steps below do the
        same with the slow middle one in another thread.
        """
        return self._commit(force=False)

    def _commit(self, force: bool) -> int:
        step = self.begin_commit(force)
        if step is None:
            return 0
        if not self.make_durable(step):
            self.abort_commit(step)
            return 0
        return self.end_commit(step)

    def begin_commit(self, force: bool = False) -> Commit | None:
        """Start a commit of what is journaled now; None if nothing is done
        since the last one began (unless ``force``) or nothing can be."""
        if self._journal < 0 or self.flush_error is not None:
            return None
        if not (self._unsynced or self._unjournaled or force):
            return None
        caught_up = len(self._unjournaled)
        if caught_up:
            if not self._append(encode_record(Record.DONE, self._unjournaled)):
                return None
            self._unjournaled = []
        step = Commit(self._journal_end, self._unsynced, caught_up)
        self._unsynced = 0
        return step

    def make_durable(self, step: Commit) -> bool:
        """Flush raw.npy and the journal, then write and flush the SYNC that
        vouches for them; False if the disk refused or the store is closed.
        Safe to call from another thread while results keep arriving."""
        with self._io:
            if self._journal < 0 or self.flush_error is not None:
                return False
            if not self._flush():
                return False
            if not self._append(encode_record(Record.SYNC, _offset(step))):
                return False
            return self._flush(raw=False)

    def _flush(self, raw: bool = True) -> bool:
        try:
            if raw:
                os.fsync(self._raw_file)
                release(self.raw)
            os.fsync(self._journal)
        except OSError as exc:
            self.flush_error = exc.strerror or str(exc)
            self._append(encode_record(Record.FAILED))
            logger.error(
                "job folder %s: flushing to disk failed (%s); the job goes on, "
                "but a master started again computes what it did since the "
                "last flush anew: check the disk",
                self.folder,
                self.flush_error,
            )
            return False
        return True

    def end_commit(self, step: Commit) -> int:
        """Finish a commit whose `make_durable` succeeded; its tile count."""
        if self.journal_error is not None and not self._unjournaled:
            self.journal_error = None
            logger.info(
                "job folder %s: the journal is written again; %d waiting tiles "
                "caught up",
                self.folder,
                step.caught_up,
            )
        return step.tiles

    def abort_commit(self, step: Commit) -> None:
        """A commit that failed: its tiles wait for the next one."""
        self._unsynced += step.tiles

    def _append(self, record: bytes) -> bool:
        """Append one record whole, or nothing and say why; False if refused."""
        with self._appending:
            try:
                _write_all(self._journal, record)
            except OSError as exc:
                self._cut_back()
                self._failed(exc)
                return False
            self._journal_end += len(record)
            return True

    def _cut_back(self) -> None:
        """Remove what a refused write left of a record."""
        try:
            os.ftruncate(self._journal, self._journal_end)
        except OSError as exc:
            # A torn record fails its CRC; a restart ignores it and the rest.
            logger.error(
                "journal of %s: a torn record stays (%s)",
                self.folder,
                exc.strerror or exc,
            )

    def _failed(self, exc: OSError) -> None:
        if self.journal_error is None:
            logger.error(
                "job folder %s: cannot write the journal (%s); the job goes on "
                "and no result is lost, but until this clears a master started "
                "again would compute the tiles done from now on again",
                self.folder,
                exc.strerror or exc,
            )
        self.journal_error = exc.strerror or str(exc)

    def record_history(self, event: str, **figures: Any) -> None:
        """Append one line to history.jsonl: what happened to this job, when.

        A disk that refuses the line only costs the line.
        """
        line = json.dumps({"time": round(time.time(), 3), "event": event, **figures})
        try:
            _append_whole(self.folder / "history.jsonl", (line + "\n").encode())
        except OSError as exc:
            logger.warning(
                "job folder %s: history.jsonl not written (%s)",
                self.folder,
                exc.strerror or exc,
            )

    def close(self) -> None:
        """Commit everything journaled, even what a commit under way in
        another thread took on (it waits for that one), and close."""
        with self._io:
            if self._journal < 0:
                return
            self._commit(force=True)
            self._close_files()
        if self._lock >= 0:
            os.close(self._lock)  # lets another master open the folder
            self._lock = -1

    def _close_files(self) -> None:
        journal, self._journal = self._journal, -1
        for descriptor in (journal, self._raw_file):
            try:
                os.close(descriptor)
            except OSError as exc:  # NFS may only now report a failed write
                logger.error(
                    "job folder %s: closing a file failed (%s)",
                    self.folder,
                    exc.strerror or exc,
                )


def _lock(folder: Path) -> int:
    """Hold the folder for this process: two masters on one job would each
    compute it and take the other's results for a restart's."""
    lock = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise JobStoreError(
            f"job folder {str(folder)!r} is in use by another fraktal master; "
            f"wait for it to finish or choose another --job-dir"
        ) from None
    return lock


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


def read_recovery(
    folder: Path | str, spec: RenderSpec, boot: bytes | None = None
) -> Recovery:
    """What the journal of a job folder says is done; changes nothing."""
    path = Path(folder) / "done.journal"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise JobStoreError(f"cannot read {str(path)!r}: {exc}") from None
    grid = spec.grid
    try:
        entries, _ = scan_journal(data, grid.count)
    except JobStoreError as exc:
        raise JobStoreError(f"{str(path)!r}: {exc}") from None
    return recover(entries, boot_id() if boot is None else boot)


def read_history(folder: Path | str) -> list[dict[str, Any]]:
    """The events of history.jsonl; a line torn by a crash is skipped."""
    path = Path(folder) / "history.jsonl"
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        logger.warning("%s is unreadable: %s", path, exc.strerror or exc)
        return []
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def open_raw(folder: Path | str, spec: RenderSpec) -> np.memmap:
    """The raw results of a job folder, read-only."""
    return _open_raw(Path(folder), spec, "r")


def _open_raw(folder: Path, spec: RenderSpec, mode: str) -> np.memmap:
    path = folder / "raw.npy"
    try:
        raw = np.load(path, mmap_mode=mode)
    except (OSError, ValueError) as exc:
        raise JobStoreError(f"cannot open {str(path)!r}: {exc}") from None
    if raw.shape != (spec.view.height, spec.view.width) or raw.dtype != np.float32:
        raise JobStoreError(
            f"{str(path)!r} holds {raw.dtype} {raw.shape}, "
            f"expected float32 ({spec.view.height}, {spec.view.width})"
        )
    return raw


@dataclass(frozen=True)
class Commit:
    """A commit under way: the journal offset its SYNC vouches for, the
    tiles it makes safe, and how many of them the disk had refused before."""

    offset: int
    tiles: int
    caught_up: int


def _offset(step: Commit) -> bytes:
    return struct.pack("<Q", step.offset)


def _write_all(descriptor: int, data: bytes) -> None:
    """Write all of ``data``: a short write is followed by one that raises."""
    view = memoryview(data)
    while view:
        written = os.write(descriptor, view)
        if written == 0:
            raise OSError(errno.EIO, "the journal took no bytes")
        view = view[written:]


def _append_whole(path: Path, data: bytes) -> None:
    """Append ``data`` to a file, or leave the file as it was and raise."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(descriptor).st_size
        try:
            _write_all(descriptor, data)
        except OSError:
            os.ftruncate(descriptor, size)
            raise
    finally:
        os.close(descriptor)


def _open_journal(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND)


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _check_space(folder: Path, spec: RenderSpec) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    needed = spec.view.width * spec.view.height * 4
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise UsageError(
            f"a {spec.view.width}x{spec.view.height} render needs "
            f"{_amount(needed)} of disk for its raw results but "
            f"{str(existing)!r} has {_amount(free)} free; choose a smaller "
            f"size or another --job-dir"
        )


def _amount(size: int) -> str:
    return f"{size / GIB:.1f} GiB" if size >= GIB else f"{size / MIB:.1f} MiB"


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
