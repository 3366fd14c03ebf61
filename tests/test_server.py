"""The master's connection handler and timer keep going after a fault of ours."""

from __future__ import annotations

import pytest

from chaos import LIGHT
from fraktal.master.picture import Output
from fraktal.protocol.messages import Assign, Heartbeat
from rawclient import Closed, RawClient


def test_an_internal_error_ends_only_its_connection_with_an_error_frame(
    start_master, monkeypatch
):
    running = start_master()
    running.master.submit(LIGHT, Output(png=None))
    handle = running.master.handle

    async def broken_once(connection, message):
        monkeypatch.setattr(running.master, "handle", handle)
        raise RuntimeError("a bug")

    monkeypatch.setattr(running.master, "handle", broken_once)
    with RawClient(running.port) as unlucky:
        unlucky.join(None, "unlucky")
        unlucky.send_message(Heartbeat(0))

        assert "internal error" in unlucky.error_then_close()

    with RawClient(running.port) as next_one:
        next_one.join(None, "next")
        assert isinstance(next_one.read_until(Assign), Assign)


def test_leases_still_expire_after_a_periodic_check_failed(start_master, monkeypatch):
    running = start_master(lease_seconds=0.5)
    job = running.master.submit(LIGHT, Output(png=None))
    expire = running.master.scheduler.expire

    def broken_once(now):
        monkeypatch.setattr(running.master.scheduler, "expire", expire)
        raise RuntimeError("a bug")

    monkeypatch.setattr(running.master.scheduler, "expire", broken_once)
    with RawClient(running.port) as silent:
        silent.join(None, "silent")
        silent.read_until(Assign)

        running.wait_for(lambda: job.requeued > 0, 10, "the lease to expire")


def test_a_peer_that_never_joins_is_closed_after_the_handshake_time(
    start_master, caplog
):
    running = start_master(handshake_seconds=0.5)
    with RawClient(running.port) as idle:
        idle.hello()

        with pytest.raises(Closed):
            idle.read(timeout=5.0)

    assert "no join within" in caplog.text
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
