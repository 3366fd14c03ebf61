"""A master killed with SIGKILL half way through and started again 5 s later.

The master is a real `fraktal master` process on a fixed loopback port; the
workers are real worker processes that note every tile they compute
(`chaos_tasks.recording`), so the test counts the tiles computed twice.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from chaos import (
    HEAVY,
    each_tile_journaled_once,
    free_port,
    grid,
    journaled,
    reference,
    wait_until,
)
from fraktal.master.store import Record, read_history, scan_journal
from fraktal.render.palette import colourize

pytestmark = pytest.mark.slow

DOWN_SECONDS = 5.0
FRAKTAL = [sys.executable, "-m", "fraktal"]


def start_master(port, jobs, out, log):
    view = HEAVY.view
    command = [
        *FRAKTAL,
        "--log-level",
        "info",
        "master",
        "--size",
        f"{view.width}x{view.height}",
        "--center",
        f"{view.center_re!r},{view.center_im!r}",
        "--span",
        repr(view.span),
        "--max-iter",
        str(HEAVY.max_iter),
        "--tile-size",
        str(HEAVY.tile_size),
        "--port",
        str(port),
        "--job-dir",
        str(jobs),
        "--output",
        str(out / "out.png"),
        "--raw",
        str(out / "raw.npy"),
        "--lease-timeout",
        "5",
        "--chunk-seconds",
        "0.5",
        "--exit-when-done",
    ]
    with open(log, "wb") as stderr:
        return subprocess.Popen(command, stderr=stderr)


def leased_by_second_master(folder):
    entries, _ = scan_journal((folder / "done.journal").read_bytes(), 10**9)
    kinds = [e.kind for e in entries]
    sessions = [i for i, kind in enumerate(kinds) if kind is Record.SESSION]
    return len(sessions) == 2 and Record.LEASED in kinds[sessions[1] :]


def test_master_killed_half_way_resumes_and_recomputes_only_tiles_in_flight(
    task_workers, tmp_path
):
    port, jobs, folder = free_port(), tmp_path / "jobs", tmp_path / "jobs" / HEAVY.key()
    total = grid(HEAVY).count
    record = tmp_path / "tiles.txt"
    first = start_master(port, jobs, tmp_path, tmp_path / "master-1.log")
    for name in ("a", "b"):
        # Paced, so that the kill lands near half-way however fast the kernel.
        task_workers(
            port,
            "paced",
            name=name,
            env={"FRAKTAL_TEST_RECORD": str(record), "FRAKTAL_TEST_PACE": "0.08"},
            log=tmp_path / f"worker-{name}.log",
        )
    wait_until(
        lambda: (
            (folder / "job.json").exists()
            and len(journaled(folder, HEAVY)) >= total // 2
        ),
        120,
        "half of the tiles",
    )

    first.send_signal(signal.SIGKILL)
    first.wait(10)
    done_at_kill = len(set(journaled(folder, HEAVY)))
    time.sleep(DOWN_SECONDS)
    restarted = time.monotonic()
    second = start_master(port, jobs, tmp_path, tmp_path / "master-2.log")
    wait_until(lambda: leased_by_second_master(folder), 60, "workers to come back")
    back_after = time.monotonic() - restarted

    assert second.wait(180) == 0, (tmp_path / "master-2.log").read_text()
    assert np.array_equal(np.load(tmp_path / "raw.npy"), reference(HEAVY))
    assert each_tile_journaled_once(folder, HEAVY)

    _, resumed, finished = read_history(folder)
    lines = record.read_text().splitlines()
    computed = Counter(tuple(line.split()[1:3]) for line in lines)
    twice = sum(1 for count in computed.values() if count > 1)
    dropped = sum(
        int(line.split("(")[1].split()[0])
        for name in ("a", "b")
        for line in (tmp_path / f"worker-{name}.log").read_text().splitlines()
        if "in hand; they are dropped" in line
    )
    print(
        f"done at the kill {done_at_kill}/{total}, resumed {resumed['done']}, "
        f"in flight at the kill {resumed['in_flight']}, workers dropped "
        f"{dropped} tiles in hand, tiles computed twice {twice}, results "
        f"received twice {finished['received_twice_across_restarts']}, workers "
        f"back {back_after:.1f} s after the restart"
    )
    assert resumed["done"] == done_at_kill >= total // 2 and resumed["lost"] == 0
    assert finished["restarts"] == 1
    assert finished["received_twice_across_restarts"] == 0
    # Only tiles leased at the kill can be computed again or dropped; a lease
    # whose result was already on its way counts as in flight but not dropped.
    assert twice <= resumed["in_flight"] and dropped <= resumed["in_flight"]
    log = (tmp_path / "master-2.log").read_text()
    assert f"{done_at_kill} of {total} tiles already done" in log
    assert "results were received twice" in log

    recoloured = tmp_path / "fire.png"
    recolor = [*FRAKTAL, "recolor", str(folder), "--palette", "fire"]
    done = subprocess.run(
        [*recolor, "--output", str(recoloured)],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    with Image.open(recoloured) as image:
        assert np.array_equal(np.asarray(image), colourize(reference(HEAVY), "fire"))
