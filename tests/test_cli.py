"""The `fraktal` command as a user meets it: errors, and real renders."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from chaos import free_port
from fraktal.cli import main
from fraktal.render.kernel import BAILOUT_SQUARED, LOG_BAILOUT_SQUARED


def run_main(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["render", "--size", "0x100"], "width must be from 1 to 200000, got 0"),
        (["render", "--size", "640x0"], "height must be from 1 to 200000, got 0"),
        (["render", "--size", "-5x100"], "is not WIDTHxHEIGHT"),
        (["render", "--size", "big"], "is not WIDTHxHEIGHT"),
        (["render", "--size", "300000x10"], "width must be from 1 to 200000"),
        (["render", "--size", "1" * 5000 + "x1"], "each side must be from 1 to"),
        (
            ["render", "--size", "190000x190000", "--tile-size", "256"],
            "GiB of disk for its raw results",
        ),
        (["render", "--size", "190000x190000"], "use a tile size of at least 132"),
        (["render", "--max-iter", "0"], "max-iter must be from 1 to 1000000000"),
        (["render", "--max-iter", "-3"], "max-iter must be from 1"),
        (["render", "--max-iter", "lots"], "'lots' is not a valid integer"),
        (["render", "--center", "nan,0"], "centre real part must be a finite number"),
        (["render", "--center", "0,inf"], "centre imaginary part must be a finite"),
        (["render", "--center", "1"], "is not RE,IM"),
        (["render", "--center", "a,b"], "is not RE,IM"),
        (["render", "--span", "0"], "span must be a finite number above 0"),
        (["render", "--span", "-1"], "span must be a finite number above 0"),
        (["render", "--span", "nan"], "span must be a finite number above 0"),
        (["render", "--span", "1e-20"], "below what float64 resolves"),
        (["render", "--palette", "rainbow"], "'rainbow' is not one of"),
        (["render", "--tile-size", "3"], "tile size must be from 8 to 1024"),
        (["render", "--workers", "0"], "0 is not in the range 1<=x<=256"),
        (["master", "--port", "0"], "0 is not in the range 1<=x<=65535"),
        (["master", "--port", "70000"], "70000 is not in the range 1<=x<=65535"),
        (["master", "--lease-timeout", "0"], "is not in the range 0.5<=x<=86400"),
        (["master", "--dashboard-port", "0"], "0 is not in the range 1<=x<=65535"),
        (["worker", "--master", "nohost"], "is not HOST:PORT"),
        (["worker", "--master", "host:99999"], "is not HOST:PORT"),
        (["worker", "--processes", "0"], "0 is not in the range"),
        (["recolor", "/nonexistent/job", "--output", "x.png"], "does not exist"),
        (["render", "--frobnicate"], "No such option"),
        (["render", "--output", "/nonexistent/x.png"], "the folder '/nonexistent'"),
        (["render", "--output", "picture.jpg"], "use a name that ends in .png"),
        (["render", "--log-level", "debug"], "goes before the command"),
        (["master", "--raw", "/nonexistent/r.npy"], "the folder '/nonexistent'"),
    ],
)
def test_bad_values_give_one_line_and_exit_code_2(capsys, tmp_path, argv, expected):
    code, err = run_main(
        capsys,
        *argv,
        *(["--job-dir", str(tmp_path)] if argv[0] in ("render", "master") else []),
    )

    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith("fraktal: error: ")
    assert expected in err
    assert "Traceback" not in err


def test_recolor_refuses_a_folder_that_is_not_a_job(capsys, tmp_path):
    code, err = run_main(capsys, "recolor", str(tmp_path), "--output", "x.png")
    assert code == 2
    assert "is not a job folder" in err and err.count("\n") == 1


def test_master_on_a_port_in_use_says_so_in_one_line(capsys, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = run_main(
            capsys,
            "master",
            "--port",
            str(port),
            "--no-dashboard",
            "--job-dir",
            str(tmp_path),
            "--size",
            "64x64",
        )

    assert code == 2 and err.count("\n") == 1
    assert f"cannot listen for workers on 127.0.0.1:{port}" in err
    assert "choose another --port or --host" in err


@pytest.mark.parametrize("command", ["render", "master"])
def test_a_job_dir_that_cannot_be_made_says_so_in_one_line(capsys, tmp_path, command):
    (tmp_path / "file").write_text("in the way")
    job_dir = tmp_path / "file" / "jobs"
    listen = ["--port", str(free_port()), "--no-dashboard"]
    code, err = run_main(
        capsys,
        command,
        "--size",
        "64x64",
        "--job-dir",
        str(job_dir),
        *(listen if command == "master" else []),
    )

    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith(f"fraktal: error: cannot use the job folder '{job_dir}/")
    assert err.endswith(": Not a directory; choose another --job-dir\n")


def test_help_explains_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["render", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--size",
        "--center",
        "--span",
        "--max-iter",
        "--palette",
        "--workers",
        "--output",
        "--raw",
        "--job-dir",
    ):
        assert option in out


def fraktal(*argv, cwd):
    return subprocess.run(
        [sys.executable, "-m", "fraktal", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def reference_smooth_counts(width, height, center, span, max_iter):
    """An independent NumPy escape-time render following the README convention."""
    i = np.arange(width, dtype=np.float64)
    j = np.arange(height, dtype=np.float64)
    cr = center[0] + ((i + 0.5) / width - 0.5) * span
    ci = center[1] + (0.5 - (j + 0.5) / height) * (span * height / width)
    cr, ci = np.meshgrid(cr, ci)
    x, y = np.zeros_like(cr), np.zeros_like(ci)
    result = np.full(cr.shape, -1.0)
    alive = np.ones(cr.shape, dtype=bool)
    for n in range(max_iter):
        x2, y2 = x * x, y * y
        escaping = alive & (x2 + y2 > BAILOUT_SQUARED)
        ratio = np.log(x2[escaping] + y2[escaping]) / LOG_BAILOUT_SQUARED
        result[escaping] = np.maximum(n + 1 - np.log2(ratio), 0.0)
        alive &= ~escaping
        y = np.where(alive, 2.0 * x * y + ci, 0.0)
        x = np.where(alive, x2 - y2 + cr, 0.0)
    return result.astype(np.float32)


@pytest.mark.slow
def test_render_follows_the_pixel_convention_exactly(tmp_path):
    done = fraktal(
        "render",
        "--size",
        "321x203",
        "--center",
        "-0.75,0.35",
        "--span",
        "2.5",
        "--max-iter",
        "300",
        "--raw",
        "a.npy",
        "--quiet",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr

    raw = np.load(tmp_path / "a.npy")
    expected = reference_smooth_counts(321, 203, (-0.75, 0.35), 2.5, 300)
    assert raw.shape == (203, 321) and raw.dtype == np.float32
    assert np.array_equal(raw < 0, expected < 0)
    np.testing.assert_allclose(raw, expected, rtol=0, atol=1e-4)
    assert (tmp_path / "mandelbrot_advanced.png").stat().st_size > 1000


@pytest.mark.slow
def test_one_worker_and_four_workers_give_the_same_raw_values(tmp_path):
    view = [
        "--size",
        "400x300",
        "--center",
        "-0.7436,0.1318",
        "--span",
        "0.05",
        "--max-iter",
        "2000",
        "--tile-size",
        "32",
        "--quiet",
    ]
    for workers in ("1", "4"):
        done = fraktal(
            "render",
            *view,
            "--workers",
            workers,
            "--raw",
            f"w{workers}.npy",
            "--output",
            f"w{workers}.png",
            "--job-dir",
            f"jobs{workers}",
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr

    one, four = np.load(tmp_path / "w1.npy"), np.load(tmp_path / "w4.npy")
    assert np.array_equal(one, four)
    assert (one >= 0).any() and (one < 0).any()
    assert (tmp_path / "w1.png").read_bytes() == (tmp_path / "w4.png").read_bytes()


@pytest.mark.slow
def test_ctrl_c_keeps_the_work_and_says_how_to_resume(tmp_path):
    view = ["render", *SLOW_VIEW, "--quiet", "--workers", "2"]
    render = subprocess.Popen(
        [sys.executable, "-m", "fraktal", *view],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    journal = next_journal(tmp_path)
    os.killpg(render.pid, signal.SIGINT)  # Ctrl-C reaches the whole group
    _, err = render.communicate(timeout=60)

    assert render.returncode == 130
    assert err.startswith("fraktal: interrupted: ") and err.count("\n") == 1
    assert "run the same command again to resume" in err
    assert journal.stat().st_size > 0
    assert "Traceback" not in err


SLOW_VIEW = [
    "--size",
    "960x540",
    "--center",
    "0.2500005,0",
    "--span",
    "0.000001",
    "--max-iter",
    "1000000",
]


def test_sigterm_to_the_render_alone_stops_its_workers_too(tmp_path):
    render = subprocess.Popen(
        [sys.executable, "-m", "fraktal", "render", *SLOW_VIEW, "--quiet"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    next_journal(tmp_path)
    workers = children(render.pid)
    assert workers
    render.send_signal(signal.SIGTERM)  # as `kill` or `docker stop` do
    _, err = render.communicate(timeout=60)

    assert render.returncode == 130, err
    assert err.startswith("fraktal: interrupted: ") and err.count("\n") == 1
    assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}")]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_master_stopped_before_its_job_ends_says_how_to_resume(tmp_path, signum):
    master = subprocess.Popen(
        [
            *(sys.executable, "-m", "fraktal", "master", *SLOW_VIEW),
            *("--port", str(free_port()), "--no-dashboard", "--exit-when-done"),
        ],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("fraktal-jobs/*/history.jsonl")):
        assert time.monotonic() < deadline, "the master never opened its job"
        time.sleep(0.05)
    master.send_signal(signum)
    _, err = master.communicate(timeout=60)

    assert master.returncode == 130, err
    last = err.splitlines()[-1]
    assert last.startswith("fraktal: stopped: 0 of 135 tiles are saved in "), err
    assert last.endswith("; start the master again with the same options to resume")


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.isdigit() and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def next_journal(folder, timeout=60.0):
    """The job's journal, once it records a finished tile or two."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for journal in folder.glob("fraktal-jobs/*/done.journal"):
            if journal.stat().st_size > 200:
                return journal
        time.sleep(0.1)
    raise AssertionError("the render recorded no finished tile")


def test_a_signal_after_the_job_finished_still_reports_success(tmp_path, monkeypatch):
    import fraktal.local as local
    from fraktal.master.picture import Output
    from fraktal.render.spec import make_spec

    follow = local._follow

    async def follow_then_signal(master, job, bar, processes):
        await follow(master, job, bar, processes)
        # The job is done; Ctrl-C lands before the render returns.
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(0.2)

    monkeypatch.setattr(local, "_follow", follow_then_signal)
    spec = make_spec(width=64, height=48, max_iter=50)
    output = Output(png=tmp_path / "out.png")

    result = local.render_locally(
        spec, output, workers=1, jobs_dir=tmp_path / "jobs", progress=False
    )

    assert not result.reused and (tmp_path / "out.png").exists()
