"""Request rate limits shared by every worker process, kept in Redis.

::

    worker A ─┐                        ┌─ grant: send the request now
    worker B ─┼─► acquire() ─► Lua ────┤
    worker C ─┘    (EVALSHA)   script  └─ no token: sleep for the wait the
                     ▲                     script returned, then ask again
                     │
      HASH ratelimit:apex:<sha256(token)[:16]>  {tokens, ts}

One token bucket per upstream credential: it contains at most ``capacity``
tokens and refills at ``rate`` tokens per second. The script reads the Redis
server's clock and updates the bucket in one atomic step, so processes on
different hosts share one limit without trusting their own clocks. Over any
interval of T seconds the bucket grants at most ``capacity + rate * T``
requests. Apex allows 15 requests per second per token (Apex OpenAPI document).
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

logger = logging.getLogger(__name__)

#: Maximum single sleep of ``acquire()``, so a waiting worker notices tokens
#: that other processes did not use.
MAX_SLEEP_SECONDS = 0.25

# KEYS[1]: bucket hash. ARGV: rate per second, capacity, tokens requested, and
# the current time in microseconds ("" to use the Redis server's clock).
# Times are whole microseconds, and "%.17g" writes a double that reads back
# as the same value. Returns {granted (0 or 1), microseconds to
# wait before enough tokens exist}.
_TOKEN_BUCKET_SCRIPT = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local requested = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if now == nil then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
end

local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local last = tonumber(state[2]) or now
if now > last then
  tokens = math.min(capacity, tokens + (now - last) * rate / 1000000)
  last = now
end

local granted = 0
local wait = 0
if tokens >= requested then
  tokens = tokens - requested
  granted = 1
else
  wait = math.ceil((requested - tokens) / rate * 1000000)
end

redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'ts', string.format('%.0f', last))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return {granted, wait}
"""


class RateLimiter(Protocol):
    """Anything that blocks until one more request may be sent."""

    def acquire(self) -> None: ...


def credential_label(credential: str) -> str:
    """Return a short, non-reversible label of a secret (a sha256 prefix)."""
    return hashlib.sha256(credential.encode()).hexdigest()[:16]


def bucket_key(upstream: str, credential: str) -> str:
    """Return the Redis key of the bucket of one upstream credential."""
    return f"ratelimit:{upstream}:{credential_label(credential)}"


class RedisTokenBucket:
    """A token bucket in Redis that every process using ``key`` shares.

    ``rate`` is in tokens (requests) per second; ``capacity``, the largest
    burst, defaults to ``rate``. ``clock`` replaces the Redis server's clock
    (seconds as a float), for tests that need to control time.
    """

    def __init__(
        self,
        redis_client: Any,
        key: str,
        rate: float,
        capacity: float | None = None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.key = key
        self.rate = float(rate)
        self.capacity = float(capacity if capacity is not None else rate)
        if self.capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {self.capacity}")
        self._clock = clock
        self._script = redis_client.register_script(_TOKEN_BUCKET_SCRIPT)

    @classmethod
    def for_credential(
        cls, redis_client: Any, upstream: str, credential: str, rate: float, **kw: Any
    ) -> RedisTokenBucket:
        """Build the bucket of one credential; the key holds only its hash label."""
        return cls(redis_client, bucket_key(upstream, credential), rate, **kw)

    def __repr__(self) -> str:
        return (
            f"RedisTokenBucket(key={self.key!r}, rate={self.rate}, "
            f"capacity={self.capacity})"
        )

    def try_acquire(self) -> bool:
        """Take one token if the bucket has one; return whether it did."""
        granted, _ = self._take()
        return granted

    def acquire(self) -> None:
        """Block until a token is taken, sleeping for the wait the script returns."""
        while True:
            granted, wait = self._take()
            if granted:
                return

            # A little jitter keeps waiting processes from asking in lockstep.
            pause = min(wait, MAX_SLEEP_SECONDS) * random.uniform(1.0, 1.1)
            logger.debug("key=%s rate limit reached, sleeping %.3f s", self.key, pause)
            time.sleep(pause)

    def _take(self) -> tuple[bool, float]:
        """Run the script once; return (granted, seconds to wait)."""
        now = "" if self._clock is None else str(round(self._clock() * 1_000_000))
        granted, wait_us = self._script(
            keys=[self.key], args=[self.rate, self.capacity, 1, now]
        )
        return bool(int(granted)), int(wait_us) / 1_000_000
