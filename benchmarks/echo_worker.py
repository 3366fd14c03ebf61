"""A stand-in worker that answers every chunk at once, for the round trip.

    python echo_worker.py PORT CHUNKS

It joins the master on 127.0.0.1:PORT and answers each `Assign` with a
`Result` carrying a real encoded tile for every tile of the chunk, so the
master decodes, checks and stores as it does for a real worker. It prints,
as JSON, the seconds between sending each result and receiving the next
assignment: the master's whole share of a chunk's round trip, loopback TCP
included.

Like a real worker it keeps a chunk in hand (the master leases two at a
time), but it has only one result in flight: it sends the next result once
the assignment that answers the previous one has arrived. With both results
in flight, a sample would include the wait behind the other result, and an
assignment read together with another one would be timed against a result
sent after it was read.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections import deque

import numpy as np

from fraktal.protocol.codec import encode_tile
from fraktal.protocol.messages import Assign, Result, TileData
from fraktal.protocol.session import WorkerSession
from fraktal.render.compute import compute_rect
from fraktal.render.spec import RenderSpec, make_spec
from fraktal.render.tiles import Rect, TileGrid

# Reported per chunk, so that the master keeps chunks at one tile.
CLAIMED_SECONDS = 5.0


def main() -> None:
    port, chunks = int(sys.argv[1]), int(sys.argv[2])
    session = WorkerSession(None, "echo", "localhost", 1)
    connection = socket.create_connection(("127.0.0.1", port))
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    tiles: dict[tuple[int, int], bytes] = {}
    in_hand: deque[Assign] = deque()
    latencies: list[float] = []
    sent_at: float | None = None
    answered = 0
    while answered < chunks:
        data = connection.recv(1 << 20)
        if not data:
            break
        received_at = time.perf_counter()
        assigned = [m for m in session.receive(data) if isinstance(m, Assign)]
        connection.sendall(session.data_to_send())
        if sent_at is not None and assigned:
            latencies.append(received_at - sent_at)
            sent_at = None
        in_hand.extend(assigned)
        if sent_at is None and in_hand:
            result = _answer(in_hand.popleft(), tiles)
            connection.sendall(session.send(result))
            sent_at = time.perf_counter()
            answered += 1
    connection.close()
    print(json.dumps(latencies))


def _answer(assign: Assign, cache: dict[tuple[int, int], bytes]) -> Result:
    grid = TileGrid(
        assign.spec.view.width, assign.spec.view.height, assign.spec.tile_size
    )
    done = []
    for tile in assign.tiles:
        rect = grid.rect(tile)
        key = (rect.height, rect.width)
        if key not in cache:
            cache[key] = _sample_tile(assign.spec, rect)
        done.append(TileData(tile, cache[key]))
    return Result(assign.chunk, tuple(done), (), CLAIMED_SECONDS, 0)


def _sample_tile(spec: RenderSpec, rect: Rect) -> bytes:
    """Real values of the tile's shape, from a view with some detail."""
    sample = make_spec(
        width=1024, height=1024, center_re=-0.5, span=3.0, max_iter=spec.max_iter
    )
    values, _ = compute_rect(sample, Rect(320, 256, rect.width, rect.height))
    return encode_tile(np.ascontiguousarray(values))


if __name__ == "__main__":
    main()
