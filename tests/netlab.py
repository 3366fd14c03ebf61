"""Virtual hosts for tests: Linux network namespaces on one virtual switch.

Each host is a network namespace with one veth link whose other end sits in
a switch namespace, on a bridge. Hosts talk by address over that bridge, not
over loopback, and the machine's own network is never touched: the switch
is a namespace too, and no namespace has a route anywhere else.

Faults are made with what the kernel here offers (it has no `tc netem`):
iptables' `statistic` match drops packets at random, `tc tbf` limits the
rate (which also queues and so delays packets), and pulling the cable is
setting the host's port on the switch down.

Needs root. `network()` skips the test when namespaces cannot be made, or
fails it when the environment variable FRAKTAL_REQUIRE_NETNS is 1 (as in CI),
so a CI machine that cannot build them is noticed instead of skipped.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

SUBNET = "10.231.0"
PREFIX_LENGTH = 24


def skip_or_fail(reason: str, variable: str = "FRAKTAL_REQUIRE_NETNS") -> None:
    """Skip with ``reason``, or fail when ``variable`` says it is required."""
    if os.environ.get(variable) == "1":
        pytest.fail(f"{reason} ({variable}=1 requires it)", pytrace=False)
    pytest.skip(reason)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Host:
    """A network namespace with one address on the switch."""

    namespace: str
    address: str
    link: str
    port: str

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]


@dataclass
class Network:
    """Namespaces made for one test; `close` removes every one of them."""

    tag: str
    switch: str
    hosts: dict[str, Host] = field(default_factory=dict)
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    def add_host(self, name: str, last_octet: int) -> Host:
        host = Host(
            namespace=f"{self.tag}-{name}",
            address=f"{SUBNET}.{last_octet}",
            link=f"{self.tag}{name}",
            port=f"{self.tag}{name}p",
        )
        _ip("netns", "add", host.namespace)
        self.namespaces.append(host.namespace)
        _ip("-n", host.namespace, "link", "set", "lo", "up")
        _ip("link", "add", host.link, "type", "veth", "peer", "name", host.port)
        _ip("link", "set", host.link, "netns", host.namespace)
        _ip("link", "set", host.port, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", host.port, "master", "br0", "up")
        _ip(
            "-n",
            host.namespace,
            "addr",
            "add",
            f"{host.address}/{PREFIX_LENGTH}",
            "dev",
            host.link,
        )
        _ip("-n", host.namespace, "link", "set", host.link, "up")
        self.hosts[name] = host
        return host

    def start(self, host: Host, *argv: str, **options: object) -> subprocess.Popen[str]:
        """A process inside ``host``, killed with the network."""
        process = subprocess.Popen(
            host.command(*argv), start_new_session=True, text=True, **options
        )
        self.processes.append(process)
        return process

    def run(
        self, host: Host, *argv: str, **options: object
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``host`` to the end, with its output captured."""
        return subprocess.run(
            host.command(*argv), capture_output=True, text=True, timeout=60, **options
        )

    def lose_packets(self, host: Host, probability: float) -> None:
        """Drop each packet to and from ``host`` with ``probability``."""
        for chain in ("INPUT", "OUTPUT"):
            self._iptables(
                host,
                "-A",
                chain,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                str(probability),
                "-j",
                "DROP",
            )

    def dropped_packets(self, host: Host) -> int:
        """Packets the random-loss rules of ``host`` dropped so far."""
        total = 0
        for chain in ("INPUT", "OUTPUT"):
            listing = self._iptables(host, "-L", chain, "-v", "-x", "-n")
            for line in listing.splitlines()[2:]:
                fields = line.split()
                if "DROP" in fields:
                    total += int(fields[0])
        return total

    def limit_rate(self, host: Host, rate: str, latency: str = "200ms") -> None:
        """Queue traffic both ways through ``host``'s link at ``rate``."""
        for namespace, device in (
            (host.namespace, host.link),
            (self.switch, host.port),
        ):
            qdisc = ["tbf", "rate", rate, "burst", "16kb", "latency", latency]
            subprocess.run(
                ["tc", "-n", namespace, "qdisc", "add", "dev", device, "root", *qdisc],
                check=True,
                capture_output=True,
                text=True,
            )

    def cut(self, host: Host) -> None:
        """Pull ``host``'s cable at the switch: packets vanish, nobody is told."""
        _ip("-n", self.switch, "link", "set", host.port, "down")

    def _iptables(self, host: Host, *args: str) -> str:
        done = subprocess.run(
            host.command("iptables", "-w", *args),
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout

    def close(self) -> None:
        # A namespace lives on while a process is inside it, so the processes
        # go first; deleting a namespace then removes its veth ends too.
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        for namespace in reversed(self.namespaces):
            subprocess.run(
                ["ip", "netns", "delete", namespace], capture_output=True, check=False
            )


def _missing_tools() -> list[str]:
    return [tool for tool in ("ip", "tc", "iptables") if shutil.which(tool) is None]


@contextmanager
def network() -> Iterator[Network]:
    """A fresh switch namespace with a bridge; hosts are added by the test."""
    if os.geteuid() != 0:
        skip_or_fail("network namespaces need root")
    missing = _missing_tools()
    if missing:
        skip_or_fail(
            f"network namespace tests need {', '.join(missing)} "
            f"(Debian packages iproute2 and iptables)"
        )
    tag = f"fk{uuid.uuid4().hex[:6]}"
    net = Network(tag=tag, switch=f"{tag}-sw")
    try:
        try:
            _ip("netns", "add", net.switch)
            net.namespaces.append(net.switch)
            _ip("-n", net.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", net.switch, "link", "set", "br0", "up")
        except subprocess.CalledProcessError as exc:
            skip_or_fail(f"cannot make a network namespace: {exc.stderr.strip()}")
        yield net
    finally:
        net.close()
