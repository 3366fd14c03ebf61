"""A worker process that computes with one of `chaos_tasks`, for chaos tests.

    python tests/chaos_worker.py PORT TASK [--name N] [--processes P]

It is `fraktal worker` with another tile function: the same `Worker` class,
reconnect loop and process pool. The token comes from FRAKTAL_TOKEN, the
task's settings from FRAKTAL_TEST_* variables (see `chaos_tasks`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

import chaos_tasks
from fraktal.worker.client import Worker, WorkerConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("task", choices=["recording", "paced", "poison"])
    parser.add_argument("--name", default=f"chaos-{os.getpid()}")
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(created).3f %(levelname)s %(message)s"
    )
    os.environ["FRAKTAL_TEST_NAME"] = args.name
    config = WorkerConfig(
        port=args.port,
        token=os.environ.get("FRAKTAL_TOKEN") or None,
        processes=args.processes,
        name=args.name,
    )
    worker = Worker(config, task=getattr(chaos_tasks, args.task))

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, worker.stop)
        await worker.run()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
