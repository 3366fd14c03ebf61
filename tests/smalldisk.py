"""A small filesystem for a test, to fill up: a tmpfs mounted in its folder.

Needs root. `small_disk()` skips the test when it cannot mount, or fails it
when the environment variable FRAKTAL_REQUIRE_MOUNT is 1 (as in CI).
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from netlab import skip_or_fail

REQUIRED = "FRAKTAL_REQUIRE_MOUNT"


@contextmanager
def small_disk(folder: Path, size: int) -> Iterator[Path]:
    """A filesystem of ``size`` bytes mounted at ``folder`` while in use."""
    if os.geteuid() != 0:
        skip_or_fail("mounting a small filesystem needs root", REQUIRED)
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs: {mounted.stderr.strip()}", REQUIRED)
    try:
        yield folder
    finally:
        # Lazily: a process of a failed test may still hold a file there.
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def fill_up(folder: Path) -> Path:
    """Take every free block of ``folder``'s filesystem with one file.

    Returns the file: removing it frees the space again. Files that already
    exist keep the unused rest of their last block, as on any disk.
    """
    filler = folder / "filler"
    block = bytes(64 * 1024)
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(block)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler
