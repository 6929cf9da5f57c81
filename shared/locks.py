"""Redis locks that expire, so a process killed inside one never blocks for good.

A lock's value names its holder as ``<host>:<pid>:<random hex>``. When a
Celery pool process dies (killed, or killed at the hard time limit), the
worker's main process calls ``release_locks_of`` for it (``tasks.base``), so
the next task need not wait for the expiry. The expiry covers the rest: a
whole worker killed, or a process on another host.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

logger = logging.getLogger(__name__)

LOCK_PREFIX = "apexsync:lock:"

# Delete KEYS[1] only while it still holds ARGV[1], so a holder whose lock
# expired never deletes the lock of the process that took it next.
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LockBusy(Exception):
    """Another process holds the lock."""


def owner_prefix(host: str | None = None, pid: int | None = None) -> str:
    """Return the start of the lock values written by process ``pid`` on ``host``."""
    return f"{host or socket.gethostname()}:{pid or os.getpid()}:"


@contextmanager
def held_lock(client: redis.Redis, name: str, timeout: float) -> Iterator[None]:
    """Hold the lock ``name`` for at most ``timeout`` seconds, or raise LockBusy.

    The lock expires after ``timeout`` even if its holder dies, so callers set
    it above the hard time limit of the task that takes it. A failed release
    (Redis unreachable) is logged and left to the expiry.
    """
    token = owner_prefix() + uuid.uuid4().hex
    if not client.set(name, token, nx=True, px=int(timeout * 1000)):
        raise LockBusy(f"Lock {name} is held by another process.")
    try:
        yield
    finally:
        try:
            _release(client, name, token)
        except redis.RedisError as exc:
            logger.warning("lock=%s not released, it expires instead: %s", name, exc)


def release_locks_of(client: redis.Redis, host: str, pid: int) -> list[str]:
    """Delete every lock that process ``pid`` on ``host`` holds; return their names.

    Only call this once that process is dead: a live holder would go on
    working without its lock.
    """
    prefix = owner_prefix(host, pid).encode()
    released = []
    for key in client.scan_iter(match=LOCK_PREFIX + "*", count=500):
        value = client.get(key)
        raw = value.encode() if isinstance(value, str) else value
        if raw is None or not raw.startswith(prefix):
            continue
        if _release(client, key, raw):
            released.append(key.decode() if isinstance(key, bytes) else str(key))
    return released


def _release(client: redis.Redis, name: str | bytes, token: str | bytes) -> bool:
    script = client.register_script(_RELEASE_SCRIPT)
    return bool(script(keys=[name], args=[token]))


def facility_lock_name(facility_id: int) -> str:
    return f"{LOCK_PREFIX}facility:{facility_id}"
