"""Output files that appear whole or not at all.

A picture or a raw copy is written under a hidden temporary name in its
destination folder (`beside`), flushed, and then given its name (`move`), so
the name never holds half a file, and an earlier file of that name stays
until the new one is complete.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from pathlib import Path

COPY_BYTES = 1 << 20


def beside(target: Path) -> Path:
    """A fresh hidden name in the folder of ``target``."""
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")


def move(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``, copying it first across file systems."""
    try:
        os.replace(source, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    copy = beside(target)
    try:
        with open(source, "rb") as original, open(copy, "xb") as duplicate:
            shutil.copyfileobj(original, duplicate, COPY_BYTES)
            duplicate.flush()
            os.fsync(duplicate.fileno())
        os.replace(copy, target)
    except BaseException:
        copy.unlink(missing_ok=True)
        raise
    source.unlink()
