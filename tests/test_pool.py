"""The worker's process pool: batches of tiles, failures, dying processes."""

import asyncio
import os

import pytest

from fraktal.protocol.codec import decode_tile
from fraktal.render.compute import compute_rect
from fraktal.render.spec import make_spec
from fraktal.render.tiles import Rect
from fraktal.worker.pool import Computed, Failed, TilePool
from fraktal.worker.task import compute_tile

SPEC = make_spec(width=64, height=48, max_iter=200, tile_size=16)
RECTS = [(x, y, 16, 16) for y in (0, 16) for x in (0, 16, 32)]
POISON = (16, 0, 16, 16)


def refusing_task(spec, rect):
    """Computes every tile but the poisoned one, which raises."""
    if tuple(rect) == POISON:
        raise ValueError("this tile is refused")
    return compute_tile(spec, rect)


def killing_task(spec, rect):
    """Computes every tile but the poisoned one, which kills its process."""
    if tuple(rect) == POISON:
        os._exit(3)
    return compute_tile(spec, rect)


def run_batch(task, rects):
    async def go():
        pool = TilePool(1, task)
        try:
            return await pool.run_batch(SPEC.to_dict(), rects)
        finally:
            pool.close()

    return asyncio.run(go())


def assert_values_of(outcome, rect):
    x, y, width, height = rect
    expected, _ = compute_rect(SPEC, Rect(x, y, width, height))
    assert isinstance(outcome, Computed)
    values = decode_tile(outcome.data, height, width, SPEC.max_iter)
    assert values.tobytes() == expected.tobytes()


@pytest.mark.slow
def test_a_batch_returns_every_tile_in_order():
    outcomes = run_batch(compute_tile, RECTS)

    assert len(outcomes) == len(RECTS)
    for outcome, rect in zip(outcomes, RECTS, strict=True):
        assert_values_of(outcome, rect)


@pytest.mark.slow
def test_a_tile_that_raises_fails_alone_in_its_batch():
    outcomes = run_batch(refusing_task, RECTS)

    for outcome, rect in zip(outcomes, RECTS, strict=True):
        if rect == POISON:
            assert outcome == Failed("ValueError: this tile is refused")
        else:
            assert_values_of(outcome, rect)


@pytest.mark.slow
def test_a_tile_that_kills_its_process_fails_and_spares_its_batch():
    outcomes = run_batch(killing_task, RECTS)

    for outcome, rect in zip(outcomes, RECTS, strict=True):
        if rect == POISON:
            assert isinstance(outcome, Failed)
            assert "process died" in outcome.reason
        else:
            assert_values_of(outcome, rect)
