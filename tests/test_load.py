"""200 simulated workers against one master: leases stay right under load.

The simulated workers (`swarm.py`) run in their own process and answer every
chunk at once with exact values, so the master's own cost per chunk sets the
pace. The master runs in this process, where the test checks the
scheduler's lease bookkeeping while the swarm hammers it. Speed is measured
by `benchmarks/load.py`, not asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from chaos import each_tile_journaled_once, reference
from conftest import TESTS
from fraktal.master.picture import Output
from fraktal.master.scheduler import JobStatus, TileState
from fraktal.render.spec import make_spec

pytestmark = pytest.mark.slow

WORKERS = 200
SPEC = make_spec(width=2048, height=2048, span=3.0, max_iter=200, tile_size=16)


def lease_faults(scheduler) -> list[str]:
    """Ways the scheduler's lease bookkeeping contradicts itself right now."""
    job, faults, held = scheduler.active, [], {}
    if job is None:
        return faults
    for worker in scheduler.workers.values():
        if len(worker.chunks) > scheduler.pipeline_depth:
            faults.append(f"worker {worker.id} holds {len(worker.chunks)} chunks")
        for chunk in worker.chunks.values():
            for tile in chunk.tiles:
                if tile in held:
                    faults.append(f"tile {tile} is in chunks {held[tile]}, {chunk.id}")
                held[tile] = chunk.id
    for tile, chunk_id in job.lease_of.items():
        if held.get(tile) != chunk_id:
            faults.append(f"tile {tile} is leased to chunk {chunk_id}, held by none")
    if job.count(TileState.LEASED) != len(job.lease_of):
        faults.append("LEASED tiles and the lease map disagree")
    return faults


def test_two_hundred_workers_get_each_tile_exactly_once(start_master, tmp_path):
    running = start_master(target_seconds=0.1, max_connections=WORKERS + 16)
    job = running.master.submit(SPEC, Output(png=None, raw_copy=tmp_path / "raw.npy"))
    swarm = subprocess.Popen(
        [
            sys.executable,
            str(TESTS / "swarm.py"),
            str(running.port),
            json.dumps(SPEC.to_dict()),
            "--workers",
            str(WORKERS),
            "--deadline",
            "240",
        ],
        stdout=subprocess.PIPE,
    )

    faults, samples = [], 0
    while swarm.poll() is None and samples < 10_000:
        faults += running.call(lambda: lease_faults(running.master.scheduler))
        samples += 1
        time.sleep(0.05)
    figures = json.loads(swarm.communicate(timeout=300)[0])

    print(f"swarm: {figures}; lease checks: {samples}")
    assert figures["welcomed"] == WORKERS
    assert figures["tiles_answered"] == job.grid.count
    assert figures["lease_violations"] == 0 and not faults
    running.wait_for(lambda: job.id in running.master.written, 60, "the raw copy")
    assert job.status is JobStatus.DONE
    assert job.requeued == 0 and job.duplicates == 0
    assert each_tile_journaled_once(running.master.config.jobs_dir / job.id, SPEC)
    assert np.array_equal(np.load(tmp_path / "raw.npy"), reference(SPEC))
