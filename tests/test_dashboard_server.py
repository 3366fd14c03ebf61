"""The dashboard served by waitress over real loopback HTTP, and `fraktal master`."""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from fraktal.dashboard.server import Dashboard, default_host, is_loopback
from fraktal.errors import UsageError
from fraktal.render.compute import render
from fraktal.render.palette import colourize
from fraktal.render.spec import make_spec


def fetch(url, timeout=10.0):
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return answer.status, answer.read()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_waitress_serves_the_app_and_stops(start_master):
    running = start_master()
    dashboard = Dashboard(running.master, "127.0.0.1", 0).start()
    try:
        status, body = fetch(f"{dashboard.url}/healthz")
        page_status, page = fetch(f"{dashboard.url}/")
    finally:
        dashboard.close()

    assert status == 200 and json.loads(body) == {"status": "ok"}
    assert page_status == 200 and b'<canvas id="preview"' in page
    with pytest.raises(urllib.error.URLError):
        fetch(f"{dashboard.url}/healthz", timeout=2.0)


def test_it_keeps_serving_when_the_process_has_descriptors_above_1023(
    start_master,
):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"this process may open only {hard} files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    running = start_master()
    dashboard = Dashboard(running.master, "127.0.0.1", 0).start()
    # Jobs and workers of a long-lived master hold descriptors like these.
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        status, body = fetch(f"{dashboard.url}/healthz")
    finally:
        for descriptor in held:
            os.close(descriptor)
        dashboard.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    assert max(held) > 1023
    assert status == 200 and json.loads(body) == {"status": "ok"}


def test_a_busy_port_is_a_one_line_error(start_master):
    running = start_master()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(UsageError) as error:
            Dashboard(running.master, "127.0.0.1", port)

    assert str(error.value) == (
        f"cannot serve the dashboard on 127.0.0.1:{port}: Address already in use; "
        f"choose another --dashboard-port or --dashboard-host"
    )


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.168.1.10", False),
        ("example.org", False),
    ],
)
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_the_dashboard_listens_on_loopback_unless_there_is_a_token():
    assert default_host(None) == "127.0.0.1"
    assert default_host("") == "127.0.0.1"
    assert default_host("secret") == "0.0.0.0"


@pytest.mark.slow
def test_fraktal_master_serves_the_dashboard_on_its_port(tmp_path):
    port, dashboard_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "FRAKTAL_TOKEN"}
    master = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fraktal",
            "master",
            "--port",
            str(port),
            "--dashboard-port",
            str(dashboard_port),
            "--job-dir",
            str(tmp_path / "jobs"),
            "--size",
            "64x48",
            "--palette",
            "ice",
            "--output",
            str(tmp_path / "out.png"),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{dashboard_port}"
        status = _poll_json(f"{url}/api/status", process=master)
        master.send_signal(signal.SIGTERM)
        _, log = master.communicate(timeout=30)
    finally:
        if master.poll() is None:
            master.kill()
            master.wait()

    assert status["job"]["params"]["width"] == 64
    assert status["job"]["params"]["palette"] == "ice"
    assert f"dashboard on {url}" in log
    assert master.returncode == 0


def _poll_json(url, process=None, until=lambda answer: True, timeout=120.0):
    """The first JSON answer from ``url`` that satisfies ``until``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process is None or process.poll() is None, process.stderr.read()
        try:
            answer = json.loads(fetch(url, timeout=5.0)[1])
        except (urllib.error.URLError, ConnectionError):
            answer = None
        if answer is not None and until(answer):
            return answer
        time.sleep(0.2)
    raise AssertionError(f"{url} gave no fitting answer within {timeout} s")


@pytest.mark.slow
def test_real_workers_fill_the_preview_and_the_picture_comes_in_the_colours_asked(
    start_master, workers
):
    running = start_master(target_seconds=0.3)
    dashboard = Dashboard(running.master, "127.0.0.1", 0).start()
    spec = make_spec(width=200, height=120, span=3.0, max_iter=300, tile_size=32)
    try:
        body = {"size": "200x120", "span": "3", "max_iter": 300, "tile_size": 32}
        submitted = post_json(
            f"{dashboard.url}/api/submit", {**body, "palette": "fire"}
        )
        job = submitted["job"]
        for name in ("one", "two"):
            workers(running.port, name=name)
        info = _poll_json(
            f"{dashboard.url}/api/jobs/{job['id']}",
            until=lambda answer: answer["job"]["picture"],
        )["job"]
        preview = fetch(f"{dashboard.url}/api/jobs/{job['id']}/preview.png?size=256")
        image = fetch(f"{dashboard.url}/api/jobs/{job['id']}/image.png")
        listed = json.loads(fetch(f"{dashboard.url}/api/workers")[1])["workers"]
        metrics = fetch(f"{dashboard.url}/metrics")[1].decode()

        # The same view in other colours only rewrites the picture.
        again = post_json(f"{dashboard.url}/api/submit", {**body, "palette": "gray"})
        gray = colourize(render(spec), "gray")
        _poll(
            lambda: np.array_equal(
                png_pixels(fetch(f"{dashboard.url}/api/jobs/{job['id']}/image.png")[1]),
                gray,
            ),
            what="the picture rewritten in gray",
        )
    finally:
        dashboard.close()

    expected = colourize(render(spec), "fire")
    assert info["status"] == "done" and info["progress"] == 1.0
    assert np.array_equal(png_pixels(preview[1]), expected)
    assert np.array_equal(png_pixels(image[1]), expected)
    assert again["job"]["id"] == job["id"] and again["job"]["status"] == "done"
    assert again["job"]["tiles"]["done"] == 28
    assert sorted(w["name"] for w in listed) == ["one", "two"]
    assert sum(w["tiles_done"] for w in listed) == 28
    assert "fraktal_tiles_done_total 28\n" in metrics
    assert f"fraktal_pixels_done_total {200 * 120}\n" in metrics


def _poll(condition, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def post_json(url, body):
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10.0) as answer:
        return json.loads(answer.read())


def png_pixels(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
