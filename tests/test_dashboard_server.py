"""The dashboard served by waitress over real loopback HTTP, and `fraktal master`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from fraktal.dashboard.server import Dashboard, default_host, is_loopback
from fraktal.errors import UsageError


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
        status = _poll_json(f"{url}/api/status", master)
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


def _poll_json(url, process, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        try:
            return json.loads(fetch(url, timeout=5.0)[1])
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")
