"""Shared fixtures: a master running in a background thread, worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numba
import numpy as np
import pytest

from fraktal.local import worker_command
from fraktal.master.service import Master, MasterConfig

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"


@pytest.fixture(autouse=True, scope="session")
def ieee_overflow_is_expected_without_jit():
    """Let pure-Python kernel runs overflow quietly, as compiled code does.

    The kernel lets an escaped orbit run on to inf or NaN inside a block (see
    fraktal.render.kernel). With ``NUMBA_DISABLE_JIT=1`` those are NumPy
    scalar operations, which warn, and warnings are errors in this suite.
    """
    if not numba.config.DISABLE_JIT:
        yield
        return
    with np.errstate(over="ignore", invalid="ignore"):
        yield


class RunningMaster:
    """A `Master` serving on loopback from its own thread and event loop."""

    def __init__(self, config: MasterConfig) -> None:
        self.master = Master(config)
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._started.wait(10), "master did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def serve() -> None:
            await self.master.start()
            self._started.set()
            await self.master.finished.wait()
            await self.master.stop()

        try:
            self.loop.run_until_complete(serve())
        finally:
            self.loop.close()

    @property
    def port(self) -> int:
        assert self.master.port is not None
        return self.master.port

    def call(self, function: Callable[[], object]) -> object:
        """Run ``function`` under the master's lock and return its result."""
        with self.master.lock:
            return function()

    def wait_for(
        self,
        condition: Callable[[], object],
        timeout: float = 60.0,
        what: str = "condition",
    ) -> object:
        """Poll ``condition`` under the lock; return its first true value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.call(condition)
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.master.finished.set)
        self._thread.join(15)


@pytest.fixture
def start_master(tmp_path: Path) -> Iterator[Callable[..., RunningMaster]]:
    masters: list[RunningMaster] = []

    def start(**options: object) -> RunningMaster:
        options.setdefault("jobs_dir", tmp_path / "jobs")
        config = MasterConfig(host="127.0.0.1", port=0, **options)  # type: ignore[arg-type]
        masters.append(RunningMaster(config))
        return masters[-1]

    yield start
    for master in masters:
        master.close()


def spawn_worker(
    port: int,
    *extra: str,
    token: str | None = None,
    processes: int = 1,
    name: str | None = None,
) -> subprocess.Popen[bytes]:
    """A real `fraktal worker` process connected to 127.0.0.1:``port``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("FRAKTAL_TOKEN", None)
    if token is not None:
        env["FRAKTAL_TOKEN"] = token
    command = worker_command(
        f"127.0.0.1:{port}", processes=processes, name=name, extra=extra
    )
    return subprocess.Popen(command, env=env, start_new_session=True)


@pytest.fixture
def workers() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(port: int, *extra: str, **options: object) -> subprocess.Popen[bytes]:
        started.append(spawn_worker(port, *extra, **options))  # type: ignore[arg-type]
        return started[-1]

    yield start
    for process in started:
        kill_group(process)


def spawn_task_worker(
    port: int,
    task: str,
    *,
    name: str,
    processes: int = 1,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """A worker process computing with a `chaos_tasks` function (see there)."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    command = [
        sys.executable,
        str(TESTS / "chaos_worker.py"),
        str(port),
        task,
        "--name",
        name,
        "--processes",
        str(processes),
    ]
    stderr = open(log, "ab") if log else None  # noqa: SIM115 (the child owns it)
    try:
        return subprocess.Popen(
            command, env=environment, stderr=stderr, start_new_session=True
        )
    finally:
        if stderr:
            stderr.close()


@pytest.fixture
def task_workers() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(port: int, task: str, **options: object) -> subprocess.Popen[bytes]:
        started.append(spawn_task_worker(port, task, **options))  # type: ignore[arg-type]
        return started[-1]

    yield start
    for process in started:
        kill_group(process)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the process and its pool, even if it was stopped with SIGSTOP."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
        os.killpg(process.pid, signal.SIGCONT)
    process.wait(10)
