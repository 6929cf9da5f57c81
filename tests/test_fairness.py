"""One tenant's inventory backlog does not hold up another tenant's order push.

Workers run as compose runs them: one consumes ``inventory,default``, the
other ``orders``. Coastal Cultivators is synced first, so that its demo
orders have batches. Then Green Valley Farms starts a sync of thousands of
packages, and a Coastal order is pushed while that sync is still running.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from sqlalchemy import select

from shared.db import session_scope
from shared.models import Facility, OrderPush, SyncRun, Tenant
from shared.runs import PAGE_SIZE
from tests.helpers import sandbox_json, start_sync, wait_for_run, wait_until

LARGE = "Green Valley Farms"
SMALL = "Coastal Cultivators"
SEEDED_PACKAGES = 3000
SYNC_TIMEOUT = 300.0


def tenant_facilities(name: str) -> tuple[int, list[int]]:
    with session_scope() as session:
        tenant_id = session.scalars(select(Tenant.id).where(Tenant.name == name)).one()
        facility_ids = session.scalars(
            select(Facility.id).where(Facility.tenant_id == tenant_id)
        ).all()
    return tenant_id, list(facility_ids)


def packages_of(sandbox: Any, tenant_name: str) -> int:
    """Count the Flourish packages of a seeded tenant's facilities."""
    seed = sandbox_json(sandbox, "/_sandbox/seed")
    tenant = next(t for t in seed["tenants"] if t["name"] == tenant_name)
    facility_ids = {f["flourish_facility_id"] for f in tenant["facilities"]}
    with sandbox.state.lock:
        return sum(
            len(packages)
            for company in sandbox.state.flourish_companies.values()
            for facility_id, packages in company.packages.items()
            if facility_id in facility_ids
        )


def accepted_order(sandbox: Any, company: str) -> int:
    """Return an accepted, uncancelled demo order of ``company`` with a clean buyer."""
    from sandbox.catalog import TENANTS

    spec = next(tenant for tenant in TENANTS if tenant.name == company)
    cases = {customer.name: customer.case for customer in spec.customers}
    sandbox_json(sandbox, "/_sandbox/apex/orders/generate", "POST")
    orders = sandbox_json(sandbox, "/_sandbox/apex/orders")["orders"]
    order = next(
        o
        for o in orders
        if o["company_name"] == company
        and o["order_status"]["parent_status"]["name"] == "Accepted"
        and cases.get(o["buyer"]["name"]) == "clean"
        and not o["cancelled"]
        and not o.get("split_from_order_id")
    )
    return int(order["id"])


def runs_of(run_ids: list[int]) -> list[SyncRun]:
    with session_scope() as session:
        runs = list(session.scalars(select(SyncRun).where(SyncRun.id.in_(run_ids))))
        for run in runs:
            session.expunge(run)
    return runs


def push_state(push_id: int) -> str | None:
    with session_scope() as session:
        state = session.get(OrderPush, push_id).state
    return None if state in ("queued", "running") else state


def push_worker(redis_url: str) -> str:
    """Return the worker that ran the push task, from its stored result."""
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter("celery-task-meta-*"):
        meta = json.loads(client.get(key) or b"{}")
        if meta.get("name") == "orders.push_order":
            return str(meta.get("worker"))
    return ""


@pytest.mark.slow
@pytest.mark.processes
@pytest.mark.redis
@pytest.mark.timeout(900)
@pytest.mark.sandbox(packages=SEEDED_PACKAGES)
def test_order_push_overtakes_large_sync(service: Any) -> None:
    from tasks.orders import enqueue_push

    service.register_tenants()
    service.start_worker(queues="inventory,default", name="inventory")
    service.start_worker(queues="orders", name="orders")
    small_tenant, small_facilities = tenant_facilities(SMALL)
    for run_id in [start_sync(facility_id) for facility_id in small_facilities]:
        assert wait_for_run(run_id, SYNC_TIMEOUT) == "succeeded"
    order_id = accepted_order(service.sandbox, SMALL)

    _, large_facilities = tenant_facilities(LARGE)
    large_runs = [start_sync(facility_id) for facility_id in large_facilities]
    wait_until(
        lambda: any(run.pages >= 1 for run in runs_of(large_runs)),
        SYNC_TIMEOUT,
        "the large sync to finish its first page",
    )
    with session_scope() as session:
        push_id = enqueue_push(session, small_tenant, order_id, "manual").id
    state = wait_until(lambda: push_state(push_id), SYNC_TIMEOUT, "the push to end")
    during_push = runs_of(large_runs)
    large_packages = packages_of(service.sandbox, LARGE)

    assert large_packages >= 1000
    assert state == "created"
    assert any(run.state == "running" for run in during_push)
    assert sum(run.pages for run in during_push) * PAGE_SIZE < large_packages
    assert push_worker(service.variables["APEXSYNC_REDIS_URL"]).startswith("orders")
