"""Task summaries: Flower lists each task with its tenant, facility and ids only.

``workers.signals`` rewrites the ``argsrepr`` and ``kwargsrepr`` headers of
every published task. The unit tests check the summary itself. The process
test runs a real worker and a real Flower and reads ``GET /api/tasks``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import select

import workers.signals as signals
from shared.db import session_scope
from shared.models import Facility, OrderPush, SyncRun, Tenant
from tests.conftest import TEST_SECRET_KEY
from tests.helpers import (
    PROJECT,
    reset_caches,
    sandbox_json,
    start_sync,
    wait_for_run,
    wait_until,
)
from tests.test_secret_scan import FlowerProcess, flower_has_results

COASTAL = "Coastal Cultivators"


# The summary ------------------------------------------------------------------


def test_describe_task_lists_known_ids() -> None:
    kwargs = {"tenant_id": 4, "facility_id": 9, "package_tag": "1A4000001"}

    assert signals.describe_task((), kwargs) == "tenant=4 facility=9 package=1A4000001"


def test_describe_task_adds_page_of_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signals, "run_owner", lambda run_id: (2, 5))
    page = {"phase": "pending", "offset": 50, "packages": [{"tag": "1A4000001"}]}

    summary = signals.describe_task((page,), {"run_id": 17})

    assert summary == "tenant=2 facility=5 run=17 page=pending/50"


def test_describe_task_without_ids_is_empty() -> None:
    assert signals.describe_task((), {}) == ""


def test_kwargs_summary_hides_structures() -> None:
    summary = signals.kwargs_summary({"run_id": 3, "page": {"packages": [1, 2]}})

    assert summary == "{'run_id': 3, 'page': <dict>}"


def test_kwargs_summary_cuts_long_text() -> None:
    summary = signals.kwargs_summary({"note": "x" * 500})

    assert summary == "{'note': '" + "x" * signals.MAX_TEXT_CHARS + "'}"


def test_kwargs_summary_masks_credentials() -> None:
    summary = signals.kwargs_summary({"api_key": "fl_0123456789abcdef0123"})

    assert "fl_0123456789abcdef0123" not in summary


def test_args_summary_counts_hidden_values() -> None:
    assert signals.args_summary(({"page": 1}, 2), "") == "(2 values not shown)"


def test_handler_rewrites_headers() -> None:
    headers: dict[str, Any] = {"argsrepr": "({'packages': [...]},)"}
    body = ((), {"tenant_id": 1, "push_id": 7, "apex_order_id": 100123}, {})

    signals.set_task_summary(sender="orders.push_order", headers=headers, body=body)

    assert headers["argsrepr"] == "tenant=1 push=7 order=100123"
    assert headers["kwargsrepr"] == (
        "{'tenant_id': 1, 'push_id': 7, 'apex_order_id': 100123}"
    )


# Against the database and Redis ---------------------------------------------------


@pytest.fixture
def stored_run(
    clean_db: str, clean_redis: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[int]:
    """A sync run in the test database, with Redis as the broker."""
    monkeypatch.setenv("APEXSYNC_ENVIRONMENT", "test")
    monkeypatch.setenv("APEXSYNC_DATABASE_URL", clean_db)
    monkeypatch.setenv("APEXSYNC_REDIS_URL", clean_redis)
    monkeypatch.setenv("APEXSYNC_SECRET_KEY", TEST_SECRET_KEY)
    reset_caches()
    with session_scope() as session:
        tenant = Tenant(name="Summary Farms", apex_token_encrypted="x")
        session.add(tenant)
        session.flush()
        facility = Facility(
            tenant_id=tenant.id,
            name="Main",
            flourish_facility_id="fac-1",
            flourish_api_key_encrypted="x",
            wholesale_room="Vault",
            apex_operation_id=5,
        )
        session.add(facility)
        session.flush()
        run = SyncRun(tenant_id=tenant.id, facility_id=facility.id)
        session.add(run)
        session.flush()
        run_id = run.id
    yield run_id
    reset_caches()


@pytest.mark.redis
def test_run_owner_reads_database(stored_run: int) -> None:
    with session_scope() as session:
        run = session.get(SyncRun, stored_run)
        expected = (run.tenant_id, run.facility_id)

    assert signals.run_owner(stored_run) == expected


@pytest.mark.redis
def test_run_owner_of_missing_run(stored_run: int) -> None:
    assert signals.run_owner(stored_run + 1000) is None


@pytest.mark.redis
def test_published_message_carries_summary(stored_run: int) -> None:
    from tasks.inventory import publish_run

    with session_scope() as session:
        run = session.get(SyncRun, stored_run)
        tenant_id, facility_id = run.tenant_id, run.facility_id
    publish_run(stored_run)

    queued = redis.Redis.from_url(broker_url()).lrange("inventory", 0, -1)
    headers = json.loads(queued[0])["headers"]
    assert headers["argsrepr"] == (
        f"tenant={tenant_id} facility={facility_id} run={stored_run}"
    )
    assert headers["kwargsrepr"] == f"{{'run_id': {stored_run}}}"


def broker_url() -> str:
    from shared.settings import get_settings

    return get_settings().redis_url


def test_worker_app_imports_signals() -> None:
    # Every process that publishes imports workers.app, so the handler must
    # be connected by importing it alone.
    code = "import sys, workers.app; sys.exit('workers.signals' not in sys.modules)"

    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, check=False)

    assert result.returncode == 0


# A real worker and a real Flower -----------------------------------------------------


def facility_of(tenant_name: str) -> tuple[int, int]:
    with session_scope() as session:
        row = session.execute(
            select(Facility.tenant_id, Facility.id)
            .join(Tenant, Tenant.id == Facility.tenant_id)
            .where(Tenant.name == tenant_name)
        ).one()
    return int(row[0]), int(row[1])


def push_accepted_order(sandbox: Any, tenant_id: int) -> tuple[int, int]:
    """Push an accepted, uncancelled Coastal demo order and return both ids."""
    from tasks.orders import enqueue_push

    sandbox_json(sandbox, "/_sandbox/apex/orders/generate", "POST")
    orders = sandbox_json(sandbox, "/_sandbox/apex/orders")["orders"]
    order = next(
        o
        for o in orders
        if o["company_name"] == COASTAL
        and o["order_status"]["parent_status"]["name"] == "Accepted"
        and not o["cancelled"]
    )
    with session_scope() as session:
        push_id = enqueue_push(session, tenant_id, order["id"], "manual").id
    return push_id, int(order["id"])


def push_ended(push_id: int) -> bool:
    with session_scope() as session:
        return session.get(OrderPush, push_id).state not in ("queued", "running")


def package_tags(sandbox: Any) -> list[str]:
    with sandbox.state.lock:
        return list(sandbox.state.package_index)


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.processes
@pytest.mark.sandbox(packages=60)
def test_flower_lists_tenant_and_facility(service: Any) -> None:
    service.register_tenants()
    flower = FlowerProcess.start(
        service.variables, service.state_dir, "flower-tasks-pass"
    )
    try:
        service.start_worker(name="summary")
        wait_until(lambda: flower.sees_worker("summary0@"), 60, "Flower to see worker")
        tenant_id, facility_id = facility_of(COASTAL)
        run_id = start_sync(facility_id)
        assert wait_for_run(run_id, 120) == "succeeded"
        push_id, order_id = push_accepted_order(service.sandbox, tenant_id)
        wait_until(lambda: push_ended(push_id), 60, f"push {push_id} to end")
        wait_until(lambda: flower_has_results(flower), 60, "Flower to hear every task")
        tasks = list(flower.tasks().values())
    finally:
        flower.stop()

    run_prefix = f"tenant={tenant_id} facility={facility_id} run={run_id}"
    inventory = [t for t in tasks if t["name"].startswith("inventory.")]
    pages = [t for t in inventory if t["name"] != "inventory.start_run"]
    pushes = [t for t in tasks if t["name"] == "orders.push_order"]
    arguments = " ".join(f"{t['args']} {t['kwargs']}" for t in tasks)
    assert len(inventory) >= 5
    assert [t["args"] for t in inventory if not t["args"].startswith(run_prefix)] == []
    assert any("page=delta/0" in t["args"] for t in pages)
    assert [t["args"] for t in pushes] == [
        f"tenant={tenant_id} push={push_id} order={order_id}"
    ]
    assert [tag for tag in package_tags(service.sandbox) if tag in arguments] == []
