"""Hundreds of simulated workers in one process, to load a master.

    python tests/swarm.py PORT SPEC_JSON --workers 200 [--tile-seconds S]

Each simulated worker is an asyncio task with its own TCP connection and
`WorkerSession`. It answers every chunk at once with the exact tile values
(the reference image is computed and every tile encoded before the first
connection), reporting ``--tile-seconds`` of compute per tile so that the
master sizes chunks as it would for real workers. So the master's own cost
per chunk is what limits the pace.

The swarm watches the leases it is given. Its workers answer at once and
never vanish, so no lease may expire or be taken back: a tile handed out a
second time is a violation. It prints one JSON object with its figures and
exits once every tile was answered and every worker welcomed, or after
``--deadline`` seconds with what it has.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field

from fraktal.protocol.codec import encode_tile
from fraktal.protocol.messages import Assign, Result, TileData, Welcome
from fraktal.protocol.session import WorkerSession
from fraktal.render.compute import render
from fraktal.render.spec import RenderSpec
from fraktal.render.tiles import TileGrid

READ_BYTES = 1 << 16


@dataclass
class Swarm:
    """What the simulated workers share: the answers and the figures."""

    port: int
    token: str | None
    tiles: dict[int, bytes]
    tile_seconds: float
    workers: int
    answered: set[int] = field(default_factory=set)
    joined: list[float] = field(default_factory=list)
    refills: list[float] = field(default_factory=list)
    round_trips: int = 0
    violations: int = 0
    first_assign: float | None = None
    last_result: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    all_joined: asyncio.Event = field(default_factory=asyncio.Event)

    def figures(self) -> dict[str, object]:
        elapsed = (self.last_result or 0.0) - (self.first_assign or 0.0)
        refills = sorted(self.refills) or [0.0]
        return {
            "workers": self.workers,
            "welcomed": len(self.joined),
            "tiles_answered": len(self.answered),
            "round_trips": self.round_trips,
            "seconds": round(elapsed, 3),
            "round_trips_per_second": round(self.round_trips / elapsed, 1)
            if elapsed > 0
            else 0.0,
            "lease_violations": self.violations,
            "join_seconds_max": round(max(self.joined, default=0.0), 3),
            "refill_seconds_median": round(statistics.median(refills), 4),
            "refill_seconds_p99": round(refills[int(0.99 * (len(refills) - 1))], 4),
            "refill_seconds_max": round(refills[-1], 4),
        }


async def simulated_worker(swarm: Swarm, index: int) -> None:
    """Join, answer every chunk at once, until the swarm is done."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", swarm.port)
    session = WorkerSession(swarm.token, f"sim-{index}", "swarm", 1)
    answered_at: float | None = None
    welcomed = False
    try:
        while not (swarm.done.is_set() and welcomed):
            data = await reader.read(READ_BYTES)
            if not data:
                return
            for message in session.receive(data):
                if isinstance(message, Welcome):
                    swarm.joined.append(time.monotonic() - started)
                    welcomed = True
                    if len(swarm.joined) == swarm.workers:
                        swarm.all_joined.set()
                elif isinstance(message, Assign):
                    if answered_at is not None:
                        swarm.refills.append(time.monotonic() - answered_at)
                    writer.write(session.send(answer(swarm, message)))
                    answered_at = time.monotonic()
            writer.write(session.data_to_send())
            await writer.drain()
    finally:
        writer.close()


def answer(swarm: Swarm, assign: Assign) -> Result:
    now = time.monotonic()
    swarm.first_assign = swarm.first_assign or now
    swarm.violations += len(swarm.answered.intersection(assign.tiles))
    swarm.answered.update(assign.tiles)
    done = tuple(TileData(tile, swarm.tiles[tile]) for tile in assign.tiles)
    swarm.round_trips += 1
    swarm.last_result = now
    if len(swarm.answered) == len(swarm.tiles):
        swarm.done.set()
    seconds = swarm.tile_seconds * len(done)
    return Result(assign.chunk, done, (), seconds, len(done))


def encoded_tiles(spec: RenderSpec) -> dict[int, bytes]:
    image = render(spec)
    grid = TileGrid(spec.view.width, spec.view.height, spec.tile_size)
    tiles = {}
    for tile in range(grid.count):
        r = grid.rect(tile)
        tiles[tile] = encode_tile(image[r.y : r.y + r.height, r.x : r.x + r.width])
    return tiles


async def run(
    port: int,
    token: str | None,
    spec: RenderSpec,
    workers: int,
    tile_seconds: float,
    deadline: float,
) -> dict[str, object]:
    swarm = Swarm(port, token, encoded_tiles(spec), tile_seconds, workers)
    tasks = [asyncio.create_task(simulated_worker(swarm, i)) for i in range(workers)]
    try:
        await asyncio.wait_for(finished(swarm), deadline)
    except asyncio.TimeoutError:
        pass
    finally:
        swarm.done.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return swarm.figures()


async def finished(swarm: Swarm) -> None:
    """Every tile answered and every worker welcomed.

    A fast master hands out the last tile before the last of hundreds of
    workers has joined; those still join, to be counted.
    """
    await swarm.done.wait()
    await swarm.all_joined.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("spec", help="the job's render parameters as JSON")
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--token")
    parser.add_argument("--tile-seconds", type=float, default=0.01)
    parser.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args()
    spec = RenderSpec.from_dict(json.loads(args.spec))
    figures = asyncio.run(
        run(args.port, args.token, spec, args.workers, args.tile_seconds, args.deadline)
    )
    json.dump(figures, sys.stdout)
    print()


if __name__ == "__main__":
    main()
