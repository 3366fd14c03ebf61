"""Serving the dashboard with waitress from a thread of the master's process.

waitress runs its own small event loop over the listening sockets and hands
each request to a pool of threads; none of it shares the master's asyncio
loop. To stop, a callback is posted into waitress' loop through a trigger
pipe that closes every socket there, which ends the loop; the worker threads
are then told to finish.
"""

from __future__ import annotations

import ipaddress
import logging
import threading

from waitress import wasyncore
from waitress.server import create_server
from waitress.trigger import trigger

from fraktal.dashboard.app import create_app
from fraktal.errors import UsageError
from fraktal.master.service import Master

logger = logging.getLogger(__name__)

DEFAULT_PORT = 5001
THREADS = 6
STOP_SECONDS = 5.0


def is_loopback(host: str) -> bool:
    """True if ``host`` is a loopback address or the name localhost."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def default_host(token: str | None) -> str:
    """Loopback only without a token; every interface with one."""
    return "0.0.0.0" if token else "127.0.0.1"


class Dashboard:
    """The dashboard's web server; listens at once, serves after `start`."""

    def __init__(
        self, master: Master, host: str, port: int, token: str | None = None
    ) -> None:
        self.host = host
        app = create_app(master, token=token, local_only=is_loopback(host))
        self._map: dict[int, wasyncore.dispatcher] = {}
        try:
            # poll(), not select(): select() fails for any descriptor above
            # 1023, and the master holds one per worker and two per job.
            self._server = create_server(
                app,
                map=self._map,
                host=host,
                port=port,
                threads=THREADS,
                asyncore_use_poll=True,
            )
        except OSError as exc:
            wasyncore.close_all(self._map)  # the half-built server's pipe and socket
            raise UsageError(
                f"cannot serve the dashboard on {host}:{port}: "
                f"{exc.strerror or exc}; choose another --dashboard-port or "
                f"--dashboard-host"
            ) from None
        self._trigger = trigger(self._map)
        self._thread = threading.Thread(
            target=self._server.run, name="dashboard", daemon=True
        )

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        listening = getattr(self._server, "effective_listen", None)
        if listening:
            return int(listening[0][1])
        return int(self._server.effective_port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> Dashboard:
        self._thread.start()
        logger.info("dashboard on %s", self.url)
        return self

    def close(self) -> None:
        """Stop listening, drop open connections, end waitress' threads."""
        if self._thread.is_alive():
            self._trigger.pull_trigger(lambda: wasyncore.close_all(self._map))
            self._thread.join(STOP_SECONDS)
        else:
            wasyncore.close_all(self._map)
        self._server.task_dispatcher.shutdown(timeout=STOP_SECONDS)
