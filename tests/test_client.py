"""The worker's reconnect rule: how long it stays away from a master."""

from fraktal.worker.client import Backoff, WorkerConfig


def test_pauses_double_up_to_the_cap():
    backoff = Backoff(first=0.5, cap=5.0, jitter=lambda: 1.0)

    assert [backoff.pause() for _ in range(7)] == [0.5, 1, 2, 4, 5, 5, 5]


def test_a_connection_that_worked_starts_the_pauses_again():
    backoff = Backoff(first=0.5, cap=5.0, jitter=lambda: 1.0)
    for _ in range(5):
        backoff.pause()

    backoff.reset()

    assert backoff.pause() == 0.5


def test_jitter_stays_within_a_fifth_of_the_pause():
    backoff = Backoff(first=1.0, cap=1.0)

    pauses = [backoff.pause() for _ in range(200)]

    assert min(pauses) >= 0.8 and max(pauses) <= 1.2
    assert len(set(pauses)) > 100


def test_a_restarted_master_gets_its_workers_back_within_six_seconds():
    config = WorkerConfig()

    assert config.retry_cap * 1.2 <= 6.0
