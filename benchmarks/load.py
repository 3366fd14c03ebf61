"""How many chunk round trips per second one master serves to 200 workers.

    python benchmarks/load.py [--workers 200] [--size 4096]

Starts `fraktal master` on a free loopback port and the simulated workers of
`tests/swarm.py` (each answers every chunk at once with exact values), then
prints the swarm's figures: round trips per second, how long joining took,
and how long a worker waited for its next chunk after answering one.
Timings on a shared machine are noisy: compare runs made together.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the master did not listen on port {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--size", type=int, default=4096, help="image side, pixels")
    parser.add_argument("--chunk-seconds", type=float, default=0.1)
    args = parser.parse_args()
    spec = {
        "width": args.size,
        "height": args.size,
        "center_re": -0.75,
        "center_im": 0.0,
        "span": 3.0,
        "max_iter": 200,
        "tile_size": 16,
    }
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        master = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fraktal",
                "--log-level",
                "warning",
                "master",
                f"--size={args.size}x{args.size}",
                "--center=-0.75,0.0",
                "--span=3.0",
                "--max-iter=200",
                "--tile-size=16",
                f"--port={port}",
                f"--job-dir={folder}/jobs",
                f"--output={folder}/out.png",
                f"--chunk-seconds={args.chunk_seconds}",
                "--exit-when-done",
            ]
        )
        try:
            wait_for_port(port, 30)
            swarm = subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "tests" / "swarm.py"),
                    str(port),
                    json.dumps(spec),
                    f"--workers={args.workers}",
                    "--deadline=600",
                ],
                capture_output=True,
                check=True,
                text=True,
            )
            master.wait(60)
        finally:
            master.kill()
    figures = json.loads(swarm.stdout)
    for key, value in figures.items():
        print(f"{key:26} {value}")


if __name__ == "__main__":
    main()
