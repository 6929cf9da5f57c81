"""The hard time limit inside the facility lock, and the locks themselves.

A pool process stopped with SIGSTOP inside ``inventory.create_batches``
stands for one stuck where the soft time limit cannot reach it (a blocking
call in C). The worker's main process kills it at the hard time limit. The
run must then end failed with that reason, the lock must be freed, and the
next run must sync what is left.
"""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from shared.db import session_scope
from shared.locks import (
    LockBusy,
    facility_lock_name,
    held_lock,
    owner_prefix,
    release_locks_of,
)
from shared.models import Facility, SyncRun, utcnow
from tasks.inventory import dispatch_due_syncs
from tests.faults_support import (
    SHORT_LIMITS,
    check_facility,
    dead_letters,
    link_count,
    run_row,
    set_faults,
    use_environment,
)
from tests.helpers import start_sync, wait_for_run, wait_until

SLOW_BATCH_POSTS = {"latency_ms": 150, "path_contains": "batches", "methods": ["POST"]}


# --- locks against a real Redis -----------------------------------------------


def test_held_lock_rejects_second_holder(clean_redis: str) -> None:
    client = redis.Redis.from_url(clean_redis)

    with (
        held_lock(client, "apexsync:lock:test", 30),
        pytest.raises(LockBusy),
        held_lock(client, "apexsync:lock:test", 30),
    ):
        pass

    assert client.exists("apexsync:lock:test") == 0


def test_held_lock_names_its_process(clean_redis: str) -> None:
    client = redis.Redis.from_url(clean_redis)

    with held_lock(client, "apexsync:lock:test", 30):
        value = client.get("apexsync:lock:test")

    assert value is not None
    assert value.decode().startswith(owner_prefix())


def test_held_lock_expires(clean_redis: str) -> None:
    client = redis.Redis.from_url(clean_redis)

    with held_lock(client, "apexsync:lock:test", 30):
        ttl = client.pttl("apexsync:lock:test")

    assert 0 < ttl <= 30_000


def test_expired_lock_not_released_twice(clean_redis: str) -> None:
    client = redis.Redis.from_url(clean_redis)

    with held_lock(client, "apexsync:lock:test", 30):
        # The lock expired and another process took it.
        client.set("apexsync:lock:test", "otherhost:1:abc")

    assert client.get("apexsync:lock:test") == b"otherhost:1:abc"


def test_release_locks_of_dead_process(clean_redis: str) -> None:
    client = redis.Redis.from_url(clean_redis)
    client.set("apexsync:lock:facility:1", "host-a:4242:0f", ex=60)
    client.set("apexsync:lock:facility:2", "host-a:42:0f", ex=60)
    client.set("apexsync:lock:facility:3", "host-b:4242:0f", ex=60)

    released = release_locks_of(client, "host-a", 4242)

    assert released == ["apexsync:lock:facility:1"]
    assert client.exists("apexsync:lock:facility:1") == 0
    assert client.exists("apexsync:lock:facility:2") == 1
    assert client.exists("apexsync:lock:facility:3") == 1


# --- the hard time limit in a worker ------------------------------------------


def stop_inside_lock(worker: Any, facility_id: int, redis_url: str) -> list[int]:
    """Wait until the pool process holds the facility lock, then SIGSTOP it."""
    client = redis.Redis.from_url(redis_url)
    wait_until(
        lambda: (
            client.exists(facility_lock_name(facility_id))
            and link_count(facility_id) >= 3
        ),
        90,
        "create_batches to hold the facility lock",
    )
    children = worker.children()
    for child in children:
        os.kill(child, signal.SIGSTOP)
    return children


def make_facility_due(facility_id: int) -> None:
    with session_scope() as session:
        facility = session.get(Facility, facility_id)
        facility.next_sync_at = utcnow() - timedelta(minutes=1)


@pytest.mark.processes
def test_hard_limit_frees_facility_lock(
    service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_environment(monkeypatch, SHORT_LIMITS)
    facility_id = service.register_tenants()[0]
    set_faults(service.sandbox, apex=SLOW_BATCH_POSTS)
    worker = service.start_worker(queues="inventory", extra=SHORT_LIMITS)
    redis_url = service.variables["APEXSYNC_REDIS_URL"]
    run_id = start_sync(facility_id)

    stopped = stop_inside_lock(worker, facility_id, redis_url)
    state = wait_for_run(run_id, 90)
    wait_until(
        lambda: "exited while holding locks" in worker.log(),
        60,
        "the worker to release the stopped process's lock",
    )

    run = run_row(run_id)
    [letter] = dead_letters()
    client = redis.Redis.from_url(redis_url)
    assert stopped
    assert state == "failed"
    assert "hard time limit of 10 s" in (run.error or "")
    assert "inventory.create_batches" in (run.error or "")
    assert letter.task_name == "inventory.create_batches"
    assert letter.exception_type == "HardTimeLimitExceeded"
    assert letter.facility_id == facility_id
    assert letter.tenant_id == run.tenant_id
    assert client.exists(facility_lock_name(facility_id)) == 0


@pytest.mark.processes
def test_next_run_after_hard_limit_completes(
    service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_environment(monkeypatch, SHORT_LIMITS)
    facility_id = service.register_tenants()[0]
    set_faults(service.sandbox, apex=SLOW_BATCH_POSTS)
    worker = service.start_worker(queues="inventory", extra=SHORT_LIMITS)
    redis_url = service.variables["APEXSYNC_REDIS_URL"]
    first_run = start_sync(facility_id)
    stop_inside_lock(worker, facility_id, redis_url)
    assert wait_for_run(first_run, 90) == "failed"

    make_facility_due(facility_id)
    dispatched = dispatch_due_syncs()
    with session_scope() as session:
        next_run = session.scalar(
            select(func.max(SyncRun.id)).where(SyncRun.facility_id == facility_id)
        )
    state = wait_for_run(next_run, 180)

    check = check_facility(service.sandbox, facility_id)
    assert dispatched >= 1
    assert next_run != first_run
    assert state == "succeeded"
    assert check.duplicates == []
    assert check.missing == []
    assert check.open_intents == []
    assert check.problems == []
