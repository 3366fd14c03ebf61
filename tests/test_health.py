"""The container health check: a master that answers, a worker that is connected."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import time

import pytest

from fraktal.health import (
    ESTABLISHED,
    LISTEN,
    TcpSocket,
    check,
    parse_proc_net_tcp,
    says_hello,
)
from fraktal.render.spec import make_spec
from netlab import network

# As the kernel of a little-endian machine prints them: a master listening
# on 0.0.0.0:65433 and a worker 10.231.0.12:40000 connected to it, then the
# same two over IPv6 (:: and ::1).
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid
   0: 00000000:FF99 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000
   1: 0C00E70A:9C40 0100E70A:FF99 01 00000000:00000000 00:00000000 00000000  1000
"""
PROC_NET_TCP6 = """\
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:FF99 00000000000000000000000000000000:0000 0A
   1: 00000000000000000000000001000000:9C40 00000000000000000000000001000000:FF99 01
"""


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def listening(port: int, address: str = "0.0.0.0") -> TcpSocket:
    return TcpSocket(ip(address), port, ip("0.0.0.0"), 0, LISTEN)


def connected(remote: str, port: int) -> TcpSocket:
    return TcpSocket(ip("10.231.0.12"), 40000, ip(remote), port, ESTABLISHED)


@pytest.mark.skipif(sys.byteorder != "little", reason="sample is little-endian")
def test_proc_net_tcp_lines_give_addresses_ports_and_states():
    assert parse_proc_net_tcp(PROC_NET_TCP) == [
        listening(65433),
        connected("10.231.0.1", 65433),
    ]
    assert parse_proc_net_tcp(PROC_NET_TCP6) == [
        TcpSocket(ip("::"), 65433, ip("::"), 0, LISTEN),
        TcpSocket(ip("::1"), 40000, ip("::1"), 65433, ESTABLISHED),
    ]


def test_a_master_is_healthy_when_its_port_answers():
    probed = []

    def probe(host, port):
        probed.append((host, port))
        return port == 65433

    healthy, why = check([listening(5001), listening(65433)], probe)
    assert healthy
    assert why == "master answers on port 65433"
    assert probed == [("127.0.0.1", 65433)]


def test_a_master_that_does_not_answer_is_unhealthy_even_with_workers():
    sockets = [listening(65433, "10.231.0.1"), connected("10.231.0.11", 51000)]
    probed = []

    def probe(host, port):
        probed.append((host, port))
        return False

    healthy, why = check(sockets, probe)
    assert not healthy
    assert "65433" in why
    assert probed == [("10.231.0.1", 65433)]


def test_a_worker_is_healthy_while_connected_and_unhealthy_without_a_master():
    healthy, why = check([connected("10.231.0.1", 65433)], lambda h, p: False)
    assert healthy
    assert why == "worker connected to 10.231.0.1:65433"
    assert check([], lambda h, p: True) == (
        False,
        "no master listening and no worker connected to a master",
    )


def test_a_real_master_says_hello_and_a_wedged_one_does_not(start_master):
    running = start_master(token="secret")
    assert says_hello("127.0.0.1", running.port)

    # A server that never accepts: the kernel still completes the handshake,
    # as it does for a master whose event loop is stuck.
    with socket.create_server(("127.0.0.1", 0)) as wedged:
        assert not says_hello("127.0.0.1", wedged.getsockname()[1], timeout=1)


@pytest.mark.slow
@pytest.mark.netns
def test_health_in_the_namespaces_of_a_master_a_worker_and_an_idle_host(tmp_path):
    job = make_spec(width=4000, height=4000, span=0.01, max_iter=100_000)
    env = {**os.environ, "FRAKTAL_TOKEN": "health-secret"}
    health = (sys.executable, "-m", "fraktal.health")
    with network() as net:
        master, worker, idle = (
            net.add_host(name, octet) for name, octet in (("m", 1), ("w", 2), ("i", 3))
        )
        net.start(
            master,
            *(sys.executable, "-m", "fraktal", "master", "--host", master.address),
            *(f"--size={job.view.width}x{job.view.height}", f"--span={job.view.span}"),
            *(f"--max-iter={job.max_iter}", "--job-dir", str(tmp_path)),
            *("--output", str(tmp_path / "health.png")),
            env=env,
        )
        net.start(
            worker,
            *(sys.executable, "-m", "fraktal", "worker", "--processes", "1"),
            *("--master", f"{master.address}:65433"),
            env=env,
        )

        assert wait_for_exit_code(net, master, health, 0) == (
            "healthy: master answers on port 65433\n"
        )
        assert wait_for_exit_code(net, worker, health, 0) == (
            f"healthy: worker connected to {master.address}:65433\n"
        )
        assert wait_for_exit_code(net, idle, health, 1) == (
            "unhealthy: no master listening and no worker connected to a master\n"
        )


def wait_for_exit_code(net, host, command, code: int, timeout: float = 60) -> str:
    """Run ``command`` in ``host`` until it exits with ``code``; its output."""
    deadline = time.monotonic() + timeout
    while True:
        done = net.run(host, *command)
        if done.returncode == code or time.monotonic() > deadline:
            assert done.returncode == code, done.stdout + done.stderr
            return done.stdout
        time.sleep(0.5)
