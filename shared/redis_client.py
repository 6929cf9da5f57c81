"""One Redis connection pool per URL and process."""

from __future__ import annotations

from functools import lru_cache

import redis

from shared.settings import get_settings


@lru_cache(maxsize=8)
def get_redis(url: str | None = None) -> redis.Redis:
    """Return a client for ``url`` (default: the settings' Redis URL)."""
    return redis.Redis.from_url(
        url or get_settings().redis_url,
        socket_timeout=10,
        socket_connect_timeout=5,
        retry_on_timeout=True,
        health_check_interval=30,
    )
