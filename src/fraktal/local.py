"""`fraktal render`: a master and local worker processes in one command.

The master runs in this process on an ephemeral loopback port with a fresh
random token; the workers are separate processes started with this Python, so
the render goes through exactly the same TCP path as a cluster does. A
progress bar follows the job; when it ends, the workers are told to leave.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from fraktal.errors import FraktalError, Interrupted
from fraktal.master.picture import Output
from fraktal.master.scheduler import Job, JobStatus
from fraktal.master.service import Master, MasterConfig
from fraktal.render.spec import RenderSpec

logger = logging.getLogger(__name__)

WORKER_STOP_SECONDS = 5.0


class RenderFailed(FraktalError):
    """The render's job failed; the message says which tile and why."""


@dataclass(frozen=True)
class LocalRender:
    """How a local render went."""

    seconds: float
    reused: bool  # every tile was already done in the job folder
    folder: Path


def render_locally(
    spec: RenderSpec,
    output: Output,
    *,
    workers: int,
    jobs_dir: Path,
    progress: bool = True,
    lease_seconds: float = 30.0,
) -> LocalRender:
    """Render with ``workers`` local worker processes.

    Raises `RenderFailed` if the job or its picture fails, and `Interrupted`
    on SIGINT or SIGTERM, with the job folder kept for a resume.
    """
    config = MasterConfig(
        host="127.0.0.1",
        port=0,
        token=secrets.token_hex(16),
        jobs_dir=jobs_dir,
        exit_when_done=True,
        lease_seconds=lease_seconds,
        progress_seconds=1e9,
    )
    return asyncio.run(_render(Master(config), spec, output, workers, progress))


async def _render(
    master: Master, spec: RenderSpec, output: Output, workers: int, progress: bool
) -> LocalRender:
    loop = asyncio.get_running_loop()
    started = loop.time()
    job = master.submit(spec, output)
    folder = master.config.jobs_dir / job.id
    reused = job.resumed == job.grid.count
    if job.resumed and not reused and progress:
        tqdm.write(
            f"resuming: {job.resumed} of {job.grid.count} tiles were done in {folder}",
            file=sys.stderr,
        )
    await master.start()
    processes = [] if reused else [_start_worker(master, i) for i in range(workers)]
    interrupted = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _interrupt, master, interrupted)
    bar = tqdm(
        total=job.grid.count,
        initial=job.done,
        unit="tile",
        disable=None if progress else True,  # None: only on a terminal
        dynamic_ncols=True,
        desc="rendering",
    )
    try:
        await _follow(master, job, bar, processes)
    finally:
        bar.close()
        # Ctrl-C may have reached them as well; SIGTERM only to this process
        # (kill, docker stop) did not. Either way they hand their chunks back.
        await asyncio.to_thread(_stop_workers, processes)
        await master.stop()
    if interrupted.is_set() and job.status is not JobStatus.DONE:
        with master.lock:
            done = job.done
        raise Interrupted(
            f"interrupted: {done} of {job.grid.count} tiles are saved in "
            f"{folder}; run the same command again to resume"
        )
    raise_if_failed(master, job)
    return LocalRender(loop.time() - started, reused, folder)


def _interrupt(master: Master, interrupted: asyncio.Event) -> None:
    interrupted.set()
    master.finished.set()


async def _follow(
    master: Master, job: Job, bar: tqdm, processes: list[subprocess.Popen[bytes]]
) -> None:
    while not master.finished.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(master.finished.wait(), 0.2)
        with master.lock:
            done = job.done
        bar.update(done - bar.n)
        if processes and not _alive(processes):
            raise RenderFailed(
                "every local worker process exited; see the messages above"
            )


def raise_if_failed(master: Master, job: Job) -> None:
    """Raise `RenderFailed` unless the job is done and its picture written."""
    with master.lock:
        status, error = job.status, job.error
        picture_error = master.picture_errors.get(job.id)
    if status is not JobStatus.DONE:
        raise RenderFailed(f"the render {status.value}: {error or 'stopped'}")
    if picture_error is not None:
        raise RenderFailed(f"writing the picture failed: {picture_error}")


def _start_worker(master: Master, index: int) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "FRAKTAL_TOKEN": master.config.token or ""}
    command = worker_command(
        f"127.0.0.1:{master.port}",
        processes=1,
        name=f"local-{index + 1}",
        extra=("--stop-with-parent",),
    )
    return subprocess.Popen(command, env=environment)


def worker_command(
    address: str,
    *,
    processes: int,
    name: str | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The command line of a quiet `fraktal worker` run by this Python."""
    return [
        sys.executable,
        "-m",
        "fraktal",
        "--log-level",
        "warning",
        "worker",
        "--master",
        address,
        "--processes",
        str(processes),
        *(["--name", name] if name else []),
        *extra,
    ]


def _alive(processes: list[subprocess.Popen[bytes]]) -> bool:
    return any(p.poll() is None for p in processes)


def _stop_workers(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            logger.warning("worker %d did not stop; killing it", process.pid)
            process.kill()
            process.wait()
