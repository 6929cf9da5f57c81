"""Redis locks that expire, so a process killed inside one never blocks for good."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

import redis
from redis.exceptions import LockError


class LockBusy(Exception):
    """Another process holds the lock."""


@contextmanager
def held_lock(client: redis.Redis, name: str, timeout: float) -> Iterator[None]:
    """Hold the lock ``name`` for at most ``timeout`` seconds, or raise LockBusy.

    The lock expires after ``timeout`` even if its holder dies, so callers set
    it above the hard time limit of the task that takes it.
    """
    lock = client.lock(name, timeout=timeout, blocking=False)
    if not lock.acquire():
        raise LockBusy(name)
    try:
        yield
    finally:
        # A lock that expired while held belongs to its new holder now.
        with suppress(LockError):
            lock.release()


def facility_lock_name(facility_id: int) -> str:
    return f"apexsync:lock:facility:{facility_id}"
