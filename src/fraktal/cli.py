"""The `fraktal` command: render, master, worker, recolor.

Every bad value is answered with one line on stderr that says what was wrong
and what is allowed, and exit code 2; never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from fraktal.errors import FraktalError, Interrupted, JobStoreError, UsageError
from fraktal.render.palette import DEFAULT_PALETTE, check_palette, palette_names
from fraktal.render.spec import (
    DEFAULT_CENTER,
    DEFAULT_MAX_ITER,
    DEFAULT_SPAN,
    DEFAULT_TILE,
    MAX_COORDINATE,
    MAX_ITER,
    MAX_SIDE,
    MAX_SPAN,
    RenderSpec,
    make_spec,
    parse_center,
    parse_size,
)

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT = "mandelbrot_advanced.png"
DEFAULT_WORKER_PORT = 65433
DEFAULT_DASHBOARD_PORT = 5001
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class SizeType(click.ParamType):
    name = "WxH"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, int]:
        try:
            return parse_size(value)
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


class CenterType(click.ParamType):
    name = "RE,IM"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[float, float]:
        try:
            return parse_center(value)
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


class AddressType(click.ParamType):
    name = "HOST:PORT"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, int]:
        host, _, port = value.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            self.fail(
                f"{value!r} is not HOST:PORT with a port from 1 to 65535, "
                f"such as 192.168.1.10:65433",
                param,
                ctx,
            )
        return host, int(port)


PORT = click.IntRange(1, 65535)
PALETTE = click.Choice(palette_names(), case_sensitive=False)


def job_options(command: Any) -> Any:
    """The options that describe what to render, shared by render and master."""
    options = [
        click.option(
            "--size",
            type=SizeType(),
            default="1920x1080",
            show_default=True,
            help=f"Image size in pixels, WIDTHxHEIGHT, each 1 to {MAX_SIDE}.",
        ),
        click.option(
            "--center",
            type=CenterType(),
            default=f"{DEFAULT_CENTER[0]},{DEFAULT_CENTER[1]}",
            show_default=True,
            help=f"Centre of the view, RE,IM, each from -{MAX_COORDINATE:g} to "
            f"{MAX_COORDINATE:g} "
            "(a leading minus works: --center -0.75,0.1).",
        ),
        click.option(
            "--span",
            type=float,
            default=DEFAULT_SPAN,
            show_default=True,
            help=f"Width of the view on the real axis, above 0 and at most "
            f"{MAX_SPAN:g}.",
        ),
        click.option(
            "--max-iter",
            type=int,
            default=DEFAULT_MAX_ITER,
            show_default=True,
            help=f"Iteration limit per pixel, 1 to {MAX_ITER}.",
        ),
        click.option(
            "--palette",
            type=PALETTE,
            default=DEFAULT_PALETTE,
            show_default=True,
            help="Colour palette.",
        ),
        click.option(
            "--equalize", is_flag=True, help="Spread colours by histogram equalisation."
        ),
        click.option(
            "--tile-size",
            type=int,
            default=DEFAULT_TILE,
            show_default=True,
            help="Tile edge in pixels, 8 to 1024.",
        ),
        click.option(
            "--output",
            type=click.Path(dir_okay=False, path_type=Path),
            default=DEFAULT_OUTPUT,
            show_default=True,
            help="Where to write the PNG.",
        ),
        click.option(
            "--raw",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Also save the raw smooth counts as a float32 .npy.",
        ),
        click.option(
            "--job-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default="fraktal-jobs",
            show_default=True,
            help="Folder that keeps each job's raw results; a job "
            "started again with the same view resumes from it.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def spec_from_options(
    size: tuple[int, int],
    center: tuple[float, float],
    span: float,
    max_iter: int,
    tile_size: int,
) -> RenderSpec:
    return make_spec(
        width=size[0],
        height=size[1],
        center_re=center[0],
        center_im=center[1],
        span=span,
        max_iter=max_iter,
        tile_size=tile_size,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="How much to log on stderr.",
)
@click.version_option(package_name="fraktal")
def cli(log_level: str) -> None:
    """fraktal: a distributed Mandelbrot renderer.

    A master splits a render into tiles and leases batches of them to workers
    over TCP; workers compute with every CPU they may use. `fraktal render`
    does all of it on this machine in one command.
    """
    logging.basicConfig(
        level=log_level.upper(),
        datefmt="%H:%M:%S",
        format="%(asctime)s %(levelname)-7s %(message)s",
    )


@cli.command()
@job_options
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    help="Local worker processes [default: the CPUs this process may use].",
)
@click.option("--quiet", is_flag=True, help="No progress bar, only warnings.")
def render(
    size,
    center,
    span,
    max_iter,
    palette,
    equalize,
    tile_size,
    output,
    raw,
    job_dir,
    workers,
    quiet,
) -> None:
    """Render on this machine: a master and local workers over loopback TCP."""
    from fraktal.local import render_locally
    from fraktal.master.picture import Output
    from fraktal.worker.cpus import usable_cpus

    spec = spec_from_options(size, center, span, max_iter, tile_size)
    check_palette(palette)
    _check_png(output, "--output")
    _check_folder(output, "--output")
    _check_folder(raw, "--raw")
    workers = workers or usable_cpus()
    # The progress bar (or silence) says it all; warnings still show.
    logging.getLogger("fraktal").setLevel(
        max(logging.getLogger().level, logging.WARNING)
    )
    result = render_locally(
        spec,
        Output(output, palette, equalize, raw),
        workers=workers,
        jobs_dir=job_dir,
        progress=not quiet,
    )
    how = (
        f"every tile was already done in {result.folder}; delete it to compute again"
        if result.reused
        else f"{workers} {_plural(workers, 'worker')}"
    )
    click.echo(
        f"wrote {output} ({spec.view.width}x{spec.view.height}, {how}, "
        f"{result.seconds:.1f} s)",
        err=True,
    )


def _plural(count: int, word: str) -> str:
    return word if count == 1 else word + "s"


@cli.command()
@job_options
@click.option(
    "--host",
    help="Address to listen on for workers [default: 127.0.0.1 "
    "without a token, all interfaces (0.0.0.0) with one].",
)
@click.option(
    "--port",
    type=PORT,
    default=DEFAULT_WORKER_PORT,
    show_default=True,
    help="TCP port for workers.",
)
@click.option(
    "--lease-timeout",
    type=click.FloatRange(0.5, 86400),
    default=30.0,
    show_default=True,
    help="Seconds a worker has to return a chunk before it goes to another worker.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1, 100),
    default=3,
    show_default=True,
    help="Failures or expiries of one tile that fail the job.",
)
@click.option(
    "--chunk-seconds",
    type=click.FloatRange(0.05, 600),
    default=2.0,
    show_default=True,
    help="Target compute time of one chunk.",
)
@click.option(
    "--token",
    envvar="FRAKTAL_TOKEN",
    help="Shared secret that workers "
    "must prove (or env FRAKTAL_TOKEN, which `ps` does not show).",
)
@click.option(
    "--exit-when-done",
    is_flag=True,
    help="Exit after the picture is written instead of serving on.",
)
@click.option(
    "--dashboard-port",
    type=PORT,
    default=DEFAULT_DASHBOARD_PORT,
    show_default=True,
    help="TCP port of the web dashboard.",
)
@click.option(
    "--dashboard-host",
    help="Address the dashboard listens on [default: 127.0.0.1 without a "
    "token, all interfaces (0.0.0.0) with one].",
)
@click.option("--no-dashboard", is_flag=True, help="Do not serve the dashboard.")
def master(
    size,
    center,
    span,
    max_iter,
    palette,
    equalize,
    tile_size,
    output,
    raw,
    job_dir,
    host,
    port,
    lease_timeout,
    max_attempts,
    chunk_seconds,
    token,
    exit_when_done,
    dashboard_port,
    dashboard_host,
    no_dashboard,
) -> None:
    """Run the master: serve workers and write the picture when the job is done.

    The web dashboard (http://localhost:5001 by default) shows the job, the
    workers and the picture as it fills in, and takes new jobs.
    """
    from fraktal.dashboard.server import Dashboard, default_host
    from fraktal.master.picture import Output
    from fraktal.master.scheduler import JobStatus
    from fraktal.master.service import Master, MasterConfig

    spec = spec_from_options(size, center, span, max_iter, tile_size)
    check_palette(palette)
    _check_png(output, "--output")
    _check_folder(output, "--output")
    _check_folder(raw, "--raw")
    host = host or default_host(token)
    _warn_if_open("workers", host, port, token, "join as a worker")
    config = MasterConfig(
        host=host,
        port=port,
        token=token or None,
        jobs_dir=job_dir,
        lease_seconds=lease_timeout,
        max_attempts=max_attempts,
        target_seconds=chunk_seconds,
        exit_when_done=exit_when_done,
    )
    service = Master(config)
    dashboard = None
    if not no_dashboard:
        dashboard_host = dashboard_host or default_host(token)
        _warn_if_open(
            "dashboard", dashboard_host, dashboard_port, token, "submit and cancel jobs"
        )
        dashboard = Dashboard(service, dashboard_host, dashboard_port, token)
    job = asyncio.run(
        _serve_master(service, dashboard, spec, Output(output, palette, equalize, raw))
    )
    if exit_when_done and job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        raise Interrupted(  # by a signal, before the job ended
            f"stopped: {job.done} of {job.grid.count} tiles are saved in "
            f"{service.config.jobs_dir / job.id}; start the master again with "
            f"the same options to resume"
        )
    if exit_when_done and job.status is not JobStatus.DONE:
        why = f": {job.error}" if job.error else ""
        raise FraktalError(f"job {job.id} {job.status.value}{why}")
    if exit_when_done and job.id in service.picture_errors:
        raise FraktalError(
            f"job {job.id}: writing the picture failed: "
            f"{service.picture_errors[job.id]}"
        )


def _warn_if_open(
    what: str, host: str, port: int, token: str | None, power: str
) -> None:
    from fraktal.dashboard.server import is_loopback

    if not token and not is_loopback(host):
        logger.warning(
            "%s on %s:%d without a token: anyone who reaches it can %s; set "
            "FRAKTAL_TOKEN",
            what,
            host,
            port,
            power,
        )


async def _serve_master(
    service: Any, dashboard: Any, spec: RenderSpec, output: Any
) -> Any:
    """Listen, then queue the job: a master that cannot listen leaves no folder.

    Serves workers (and the dashboard) until the jobs end or a signal comes,
    and returns the job.
    """
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, service.finished.set)
    config = service.config
    try:
        await service.start()
    except OSError as exc:
        raise UsageError(
            f"cannot listen for workers on {config.host}:{config.port}: "
            f"{exc.strerror or exc}; choose another --port or --host"
        ) from None
    logger.info(
        "master listening for workers on %s%s",
        _address(config.host, service.port),
        " (token required)" if config.token else "",
    )
    try:
        job = service.submit(spec, output)
        if dashboard is not None:
            dashboard.start()
        await service.finished.wait()
    finally:
        if dashboard is not None:
            await asyncio.to_thread(dashboard.close)
        await service.stop()
    return job


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_png(path: Path, option: str) -> None:
    """fraktal writes PNG only; a .jpg name would hide PNG data behind it."""
    if path.suffix.lower() != ".png":
        raise UsageError(
            f"{option} {str(path)!r}: fraktal writes PNG pictures; use a name "
            f"that ends in .png"
        )


def _check_folder(path: Path | None, option: str) -> None:
    """Refuse an output file whose folder does not exist, before any work."""
    if path is not None and not path.resolve().parent.is_dir():
        raise UsageError(
            f"{option} {str(path)!r}: the folder {str(path.resolve().parent)!r} "
            f"does not exist; create it or choose another path"
        )


@cli.command()
@click.option(
    "--master",
    "address",
    type=AddressType(),
    envvar="FRAKTAL_MASTER",
    default=f"127.0.0.1:{DEFAULT_WORKER_PORT}",
    show_default=True,
    help="The master's HOST:PORT (or env FRAKTAL_MASTER).",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 4096),
    help="Pool processes [default: the CPUs this worker may use, from "
    "its affinity and cgroup CPU quota].",
)
@click.option(
    "--token",
    envvar="FRAKTAL_TOKEN",
    help="The master's shared secret (or env FRAKTAL_TOKEN).",
)
@click.option("--name", help="Name shown on the dashboard [default: host-pid].")
@click.option("--stop-with-parent", is_flag=True, hidden=True)
def worker(address, processes, token, name, stop_with_parent) -> None:
    """Run a worker: connect to the master and compute tiles until stopped."""
    from fraktal.worker.client import Worker, WorkerConfig
    from fraktal.worker.cpus import usable_cpus

    config = WorkerConfig(
        host=address[0],
        port=address[1],
        token=token or None,
        processes=processes or usable_cpus(),
        **({"name": name} if name else {}),
    )
    service = Worker(config)

    async def serve() -> None:
        loop = asyncio.get_running_loop()

        def stop(signum: int, frame: Any) -> None:
            # Unlike a loop's signal handlers, this one outlives the loop: a
            # second signal during the shutdown (Ctrl-C, then SIGTERM from
            # `fraktal render`) must not kill the process half way, leaking
            # its pool's semaphores.
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(service.stop)

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, stop)
        if stop_with_parent:
            _stop_when_orphaned(loop, service.stop)
        logger.info(
            "worker %s: %d processes, master %s:%d",
            config.name,
            config.processes,
            config.host,
            config.port,
        )
        await service.run()

    asyncio.run(serve())


@cli.command()
@click.argument(
    "job_dir", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--palette",
    type=PALETTE,
    default=DEFAULT_PALETTE,
    show_default=True,
    help="Colour palette.",
)
@click.option("--equalize", is_flag=True, help="Histogram-equalised colours.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the PNG.",
)
def recolor(job_dir, palette, equalize, output) -> None:
    """Colour a finished job again from its raw results, without recomputing."""
    from fraktal.master.picture import Output, write_outputs
    from fraktal.master.store import open_raw, read_recovery, read_spec

    _check_png(output, "--output")
    _check_folder(output, "--output")
    try:
        spec = read_spec(job_dir)
    except JobStoreError as exc:  # the user named the wrong folder
        raise UsageError(str(exc)) from None
    total = spec.grid.count
    done = len(read_recovery(job_dir, spec).done)
    if done != total:
        raise UsageError(
            f"job in {str(job_dir)!r} is not finished ({done} of "
            f"{total} tiles done); run its master again to finish it"
        )
    try:
        write_outputs(spec, open_raw(job_dir, spec), Output(output, palette, equalize))
    except OSError as exc:
        raise FraktalError(
            f"writing the picture {str(output)!r} failed: {exc.strerror or exc}"
        ) from None
    click.echo(f"wrote {output}", err=True)


def _stop_when_orphaned(loop: asyncio.AbstractEventLoop, stop: Any) -> None:
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        loop.call_soon_threadsafe(stop)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning every expected error into one line."""
    try:
        code = cli.main(args=argv, prog_name="fraktal", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except click.exceptions.NoArgsIsHelpError as exc:
        print(exc.format_message(), file=sys.stderr)  # the help, not an error
        sys.exit(EXIT_USAGE)
    except click.exceptions.NoSuchOption as exc:
        hint = (
            " (--log-level goes before the command: fraktal --log-level debug "
            "render ...)"
            if exc.option_name == "--log-level"
            else ""
        )
        _fail(exc.format_message() + hint, exc.exit_code)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except UsageError as exc:
        _fail(str(exc), EXIT_USAGE)
    except Interrupted as exc:
        print(f"fraktal: {exc}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except FraktalError as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    print(f"fraktal: error: {message}", file=sys.stderr)
    sys.exit(code)
