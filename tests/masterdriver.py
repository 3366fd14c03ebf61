"""A master run by hand, without sockets: one worker that answers every
chunk with the true tiles, and the wire it reads its work from."""

from __future__ import annotations

import asyncio

import numpy as np

from fraktal.master.picture import Output
from fraktal.master.service import Master, MasterConfig
from fraktal.protocol.codec import encode_tile
from fraktal.protocol.framing import FrameReader
from fraktal.protocol.messages import MASTER_MESSAGES, Assign, Result, TileData, decode
from fraktal.protocol.session import MasterSession
from fraktal.render.spec import RenderSpec


class Wire:
    """Stands in for a connection's stream writer and keeps what was written."""

    def __init__(self) -> None:
        self.reader = FrameReader()

    def write(self, data: bytes) -> None:
        self.reader.feed(data)

    def assigns(self) -> list[Assign]:
        messages = [decode(b, MASTER_MESSAGES) for b in self.reader.frames()]
        return [m for m in messages if isinstance(m, Assign)]


class Driver:
    """A master with one job, ``spec``, whose values are ``expected``."""

    def __init__(
        self,
        config: MasterConfig,
        spec: RenderSpec,
        expected: np.ndarray,
        output: Output,
    ) -> None:
        self.spec = spec
        self.expected = expected
        self.master = Master(config)
        self.job = self.master.submit(spec, output)
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.master.start())
        self.wire = Wire()
        self.worker = self.master.join(
            MasterSession(None), self.wire, "w", "host", processes=1
        )

    def answer_chunks_until(self, tiles_done: int) -> None:
        """Answer whole chunks, in the order leased, up to ``tiles_done`` tiles."""
        while self.job.done < tiles_done:
            self.master.dispatch(self.worker)
            for assign in self.wire.assigns():
                done = tuple(TileData(t, self._encoded(t)) for t in assign.tiles)
                result = Result(assign.chunk, done, (), 0.01, 1000)
                self.loop.run_until_complete(self.master.handle(self.worker, result))

    def tick(self) -> None:
        """One periodic check of the master, and the commits it started."""
        self.loop.run_until_complete(self._tick())

    async def _tick(self) -> None:
        self.master._tick_once()
        await asyncio.gather(*self.master._commits.values())

    def commit(self) -> None:
        """Commit every open job folder now, as the timer does, and wait."""
        self.loop.run_until_complete(self._commit())

    async def _commit(self) -> None:
        await asyncio.gather(*self.master._commits.values(), return_exceptions=True)
        self.master._commit_all()
        await asyncio.gather(*self.master._commits.values())

    def finish(self) -> None:
        self.answer_chunks_until(self.spec.grid.count)
        self.loop.run_until_complete(self._dispatch_and_wait())

    async def _dispatch_and_wait(self) -> None:
        self.master.dispatch()
        await asyncio.gather(*self.master._pending_pictures)

    def _encoded(self, tile: int) -> bytes:
        rect = self.spec.grid.rect(tile)
        rows = slice(rect.y, rect.y + rect.height)
        values = self.expected[rows, rect.x : rect.x + rect.width]
        return encode_tile(np.ascontiguousarray(values))

    def stop(self) -> None:
        self.loop.run_until_complete(self.master.stop())

    def close(self) -> None:
        if not self.master.stopping:
            self.stop()
        self.loop.close()
