"""Health check of a fraktal container: ``python -m fraktal.health``.

One image serves both roles, so the check tells them apart by the sockets
of its network namespace, where a container holds only fraktal's own:

* a socket that listens means a master. It is healthy when one of its
  listening ports answers a new connection with the protocol's `Hello`,
  which proves that the master's event loop runs, not just that the kernel
  accepts connections for it;
* no listening socket means a worker. It is healthy while it holds an
  established TCP connection, which a worker only has to its master.

Exit status 0 is healthy, 1 is not; one line on stdout says why, and Docker
shows it in `docker inspect`.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from fraktal.errors import ProtocolError
from fraktal.protocol.framing import FrameReader
from fraktal.protocol.messages import MASTER_MESSAGES, Hello, decode

LISTEN = 0x0A
ESTABLISHED = 0x01
PROBE_SECONDS = 3.0
HELLO_LIMIT = 4096

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class TcpSocket:
    """One line of /proc/net/tcp or /proc/net/tcp6."""

    local: Address
    local_port: int
    remote: Address
    remote_port: int
    state: int


def parse_proc_net_tcp(text: str) -> list[TcpSocket]:
    """The sockets listed in the text of /proc/net/tcp or /proc/net/tcp6."""
    sockets = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        local, local_port = _endpoint(fields[1])
        remote, remote_port = _endpoint(fields[2])
        sockets.append(
            TcpSocket(local, local_port, remote, remote_port, int(fields[3], 16))
        )
    return sockets


def _endpoint(text: str) -> tuple[Address, int]:
    # The kernel prints each 32-bit word of the address as a host-order
    # integer, so on a little-endian machine the bytes of every word appear
    # reversed.
    address, port = text.split(":")
    raw = bytes.fromhex(address)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(raw), int(port, 16)


def read_sockets(proc_net: Path = Path("/proc/net")) -> list[TcpSocket]:
    """Every TCP socket of this network namespace, IPv4 and IPv6."""
    sockets = []
    for name in ("tcp", "tcp6"):
        try:
            sockets += parse_proc_net_tcp((proc_net / name).read_text())
        except OSError:
            continue
    return sockets


def says_hello(host: str, port: int, timeout: float = PROBE_SECONDS) -> bool:
    """Whether a fraktal master at ``host:port`` greets a new connection."""
    reader = FrameReader(HELLO_LIMIT)
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            while True:
                data = conn.recv(HELLO_LIMIT)
                if not data:
                    return False
                reader.feed(data)
                for body in reader.frames():
                    return isinstance(decode(body, MASTER_MESSAGES), Hello)
    except (OSError, ProtocolError):
        return False


def check(
    sockets: Iterable[TcpSocket],
    probe: Callable[[str, int], bool] = says_hello,
) -> tuple[bool, str]:
    """Healthy or not, and why; see the module docstring for the rule."""
    sockets = list(sockets)
    listening = sorted(
        {(_reachable(s.local), s.local_port) for s in sockets if s.state == LISTEN},
        key=lambda endpoint: -endpoint[1],
    )
    if listening:
        for host, port in listening:
            if probe(host, port):
                return True, f"master answers on port {port}"
        ports = ", ".join(str(port) for _, port in listening)
        return False, f"port(s) {ports} listen but no fraktal master answers"

    connected = [s for s in sockets if s.state == ESTABLISHED]
    if connected:
        peer = connected[0]
        return True, f"worker connected to {peer.remote}:{peer.remote_port}"
    return False, "no master listening and no worker connected to a master"


def _reachable(address: Address) -> str:
    """Where to connect to reach a socket bound to ``address``."""
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return str(address)


def main() -> None:
    healthy, why = check(read_sockets())
    print(("healthy: " if healthy else "unhealthy: ") + why)
    sys.exit(0 if healthy else 1)


if __name__ == "__main__":
    main()
