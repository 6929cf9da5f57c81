"""Worker processes killed with SIGKILL: no package is lost or created twice.

The sandbox slows batch creation down, so the kill lands while
``inventory.create_batches`` is sending its POSTs. A killed pool process
makes the worker requeue the message (``task_reject_on_worker_lost``). A
whole killed worker leaves the message unacknowledged in Redis until the
visibility timeout returns it to another worker.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from tasks.maintenance import crash_worker
from tests.faults_support import (
    SHORT_LIMITS,
    check_facility,
    dead_letters,
    link_count,
    set_faults,
    use_environment,
)
from tests.helpers import start_sync, wait_for_run, wait_until

SLOW_BATCH_POSTS = {"latency_ms": 150, "path_contains": "batches", "methods": ["POST"]}


def wait_for_batch_creation(facility_id: int, count: int = 5) -> None:
    wait_until(
        lambda: link_count(facility_id) >= count,
        90,
        f"facility {facility_id} to have {count} batch links",
    )


@pytest.mark.processes
def test_pool_child_killed_mid_batches(service: Any) -> None:
    facility_id = service.register_tenants()[0]
    set_faults(service.sandbox, apex=SLOW_BATCH_POSTS)
    worker = service.start_worker(queues="inventory")
    run_id = start_sync(facility_id)
    wait_for_batch_creation(facility_id)

    children = worker.children()
    for child in children:
        os.kill(child, signal.SIGKILL)
    state = wait_for_run(run_id, 180)

    check = check_facility(service.sandbox, facility_id)
    assert children
    assert "WorkerLostError" in worker.log()
    assert state == "succeeded"
    assert check.duplicates == []
    assert check.missing == []
    assert check.unexpected == []
    assert check.open_intents == []
    assert check.problems == []
    assert dead_letters() == []


@pytest.mark.processes
@pytest.mark.slow
def test_whole_worker_killed_other_finishes(
    service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_environment(monkeypatch, SHORT_LIMITS)
    facility_id = service.register_tenants()[0]
    set_faults(service.sandbox, apex=SLOW_BATCH_POSTS)
    first = service.start_worker(queues="inventory", extra=SHORT_LIMITS, name="first")
    run_id = start_sync(facility_id)
    wait_for_batch_creation(facility_id)

    second = service.start_worker(queues="inventory", extra=SHORT_LIMITS, name="second")
    first.kill()
    # Kombu returns an unacknowledged message after the visibility timeout,
    # at its next sweep of the unacked set.
    state = wait_for_run(run_id, 240)

    check = check_facility(service.sandbox, facility_id)
    assert first.process.poll() is not None
    assert "inventory.create_batches" in second.log()
    assert state == "succeeded"
    assert check.duplicates == []
    assert check.missing == []
    assert check.open_intents == []
    assert check.problems == []


@pytest.mark.processes
def test_crashing_message_dead_lettered(service: Any) -> None:
    worker = service.start_worker(queues="default")

    task_id = crash_worker.apply_async().id
    letter = wait_until(
        lambda: next((row for row in dead_letters() if row.task_id == task_id), None),
        120,
        f"a dead letter for task {task_id}",
    )

    assert letter.task_name == "maintenance.crash_worker"
    assert letter.exception_type == "PoisonMessage"
    assert letter.attempts == 3
    assert "died in each of its last 3 deliveries" in letter.message
    assert letter.state == "open"
    assert len(dead_letters()) == 1
    assert worker.process.poll() is None
    assert worker.log().count("WorkerLostError") >= 3
