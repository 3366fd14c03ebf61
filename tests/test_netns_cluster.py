"""The Compose topology without Docker: a master and workers on virtual hosts.

The master and each worker run in their own network namespace and reach one
another by address over a virtual switch, as the services of
docker-compose.yml do over Compose's network. During the job one worker sits
behind a bad link and another loses its link entirely:

* ``lossy`` drops 5% of its packets both ways (iptables `statistic` match)
  and its link is limited to 2 Mbit/s by `tc tbf`, whose queue also delays
  packets. This kernel has no `tc netem`, so there is no fixed added delay;
* ``cut`` has its cable pulled at the switch a quarter into the job, right
  after the master took a result from it and leased it more. Nothing tells
  the master: those tiles come back only when their 3 s lease expires, in
  the middle of the job;
* ``steady`` has a clean link;
* ``intruder`` knows the wrong token and must be turned away.

The job must still finish, and its raw values must equal a one-process
render bit for bit.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fraktal.render.compute import render
from fraktal.render.spec import make_spec
from fraktal.render.tiles import TileGrid
from netlab import Network, network

pytestmark = [pytest.mark.slow, pytest.mark.netns]

TOKEN = "netns-cluster-secret"
# A deep view with a high iteration limit: about 7 s of one core here, so the
# cut worker's lease expires while the others still have work to do.
SIZE = (1280, 800)
CENTER = (-0.743643887037151, 0.131825904205330)
SPAN = 1e-6
MAX_ITER = 200_000
TILE = 32
LEASE_SECONDS = 3
SPEC = make_spec(
    width=SIZE[0],
    height=SIZE[1],
    center_re=CENTER[0],
    center_im=CENTER[1],
    span=SPAN,
    max_iter=MAX_ITER,
    tile_size=TILE,
)
TILES = TileGrid(SIZE[0], SIZE[1], TILE).count

JOINED = re.compile(r"worker (w\d+): joined \((\S+) on ")
TAKEN = re.compile(r"worker (w\d+): chunk \d+: (\d+) tiles taken")
EXPIRED = re.compile(r"worker (w\d+): chunk \d+ \(\d+ tiles\) requeued after")


class Log:
    """Lines of a process's stderr, collected by a thread as they come."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        with stream:
            for line in stream:
                with self._lock:
                    self.lines.append(line.rstrip("\n"))

    def count(self) -> int:
        with self._lock:
            return len(self.lines)

    def text(self, start: int = 0) -> str:
        """The lines from line number ``start`` on."""
        with self._lock:
            return "\n".join(self.lines[start:])

    def worker_ids(self) -> dict[str, str]:
        """Worker name -> id the master gave it."""
        return {name: wid for wid, name in JOINED.findall(self.text())}

    def tiles_taken(self, start: int = 0) -> dict[str, int]:
        """Worker id -> tiles the master took from it since line ``start``."""
        taken: dict[str, int] = {}
        for wid, count in TAKEN.findall(self.text(start)):
            taken[wid] = taken.get(wid, 0) + int(count)
        return taken

    def first_expiry(self, worker: str, start: int = 0) -> int | None:
        """Number of the first line from ``start`` on where a lease of
        ``worker`` expired, or None."""
        with self._lock:
            lines = self.lines[start:]
        for number, line in enumerate(lines, start):
            found = EXPIRED.search(line)
            if found and found.group(1) == worker:
                return number
        return None


def wait_until(condition, timeout: float, what: str, log: Log) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(
        f"timed out after {timeout} s waiting for {what}; master log:\n{log.text()}"
    )


def fraktal(*args: str) -> list[str]:
    return [sys.executable, "-m", "fraktal", *args]


def start_master(net: Network, host, tmp_path: Path):
    env = {**os.environ, "FRAKTAL_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    process = net.start(
        host,
        *fraktal(
            "--log-level",
            "debug",
            "master",
            "--host",
            host.address,
            f"--size={SIZE[0]}x{SIZE[1]}",
            f"--center={CENTER[0]!r},{CENTER[1]!r}",
            f"--span={SPAN!r}",
            f"--max-iter={MAX_ITER}",
            f"--tile-size={TILE}",
            f"--lease-timeout={LEASE_SECONDS}",
            "--chunk-seconds=0.5",
            # Slow but live workers on a busy machine may also miss a lease;
            # that must not fail the job, only requeue the tiles.
            "--max-attempts=50",
            "--exit-when-done",
            "--output",
            str(tmp_path / "cluster.png"),
            "--raw",
            str(tmp_path / "cluster.npy"),
            "--job-dir",
            str(tmp_path / "jobs"),
        ),
        env=env,
        stderr=subprocess.PIPE,
    )
    return process, Log(process.stderr)


def worker_command(master, name: str) -> list[str]:
    return fraktal(
        "--log-level",
        "warning",
        "worker",
        "--master",
        f"{master.address}:65433",
        "--processes",
        "1",
        "--name",
        name,
    )


def test_job_survives_a_lossy_link_and_a_cut_one(tmp_path):
    with network() as net:
        master = net.add_host("m", 1)
        lossy = net.add_host("w1", 11)
        steady = net.add_host("w2", 12)
        cut = net.add_host("w3", 13)
        intruder = net.add_host("x", 99)
        net.lose_packets(lossy, 0.05)
        net.limit_rate(lossy, "2mbit")

        process, log = start_master(net, master, tmp_path)
        env = {**os.environ, "FRAKTAL_TOKEN": TOKEN}
        for host, name in ((lossy, "lossy"), (steady, "steady"), (cut, "cut")):
            net.start(host, *worker_command(master, name), env=env)
        refused = net.run(
            intruder,
            *worker_command(master, "intruder"),
            env={**env, "FRAKTAL_TOKEN": "wrong-token"},
        )

        cut_at = cut_mid_job(net, cut, log)
        assert process.wait(300) == 0, log.text()

        ids = log.worker_ids()
        assert set(ids) == {"lossy", "steady", "cut"}
        # A result already past the switch when the cable went is still
        # taken; once the lease has expired, nothing more comes from there.
        expired_at = log.first_expiry(ids["cut"], start=cut_at)
        assert expired_at is not None, log.text()
        assert ids["cut"] not in log.tiles_taken(start=expired_at)
        taken = log.tiles_taken()
        assert taken.get(ids["lossy"], 0) > 0
        assert taken.get(ids["steady"], 0) > 0
        assert net.dropped_packets(lossy) > 0
        assert refused.returncode == 1
        assert "refused" in refused.stderr

        raw = np.load(tmp_path / "cluster.npy")
        assert np.array_equal(raw, render(SPEC))
        assert (tmp_path / "cluster.png").stat().st_size > 0


def cut_mid_job(net: Network, host, log: Log) -> int:
    """Pull the cut worker's cable a quarter into the job; the log line then.

    The cable goes the moment the master takes a fresh result from that
    worker: the master leases it more work at once, so it holds leased tiles
    that can only come back through lease expiry.
    """

    def quarter_done() -> bool:
        ids = log.worker_ids()
        return "cut" in ids and sum(log.tiles_taken().values()) >= TILES // 4

    wait_until(quarter_done, 180, "a quarter of the tiles", log)
    worker = log.worker_ids()["cut"]
    before = log.tiles_taken().get(worker, 0)
    wait_until(
        lambda: log.tiles_taken().get(worker, 0) > before,
        120,
        "a fresh result from the worker to cut",
        log,
    )
    at = log.count()
    net.cut(host)
    return at
