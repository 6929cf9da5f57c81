"""Redis restarts and lost messages: the reconciler and publish-after-commit.

The Redis of these tests keeps nothing on disk, so a restart loses every
queued and unacknowledged message. Runs and pushes record a deadline; the
reconciler publishes the next step of any that sit past it. A task is
published only after the transaction that created its run or push commits,
so a worker never looks for a row that is not there yet.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.signals import before_task_publish
from sqlalchemy import select, update

from shared.db import make_engine, session_scope
from shared.models import (
    ACTIVE_RUN_STATES,
    Facility,
    OrderPush,
    SyncRun,
    Tenant,
    utcnow,
)
from tasks import orders as order_tasks
from tasks.inventory import dispatch_due_syncs
from tasks.maintenance import reconcile_runs
from tests.faults_support import (
    SHORT_LIMITS,
    check_facility,
    final_order_problems,
    forget_broker_connections,
    keys_without_ttl,
    link_count,
    run_row,
    set_faults,
    use_environment,
)
from tests.helpers import (
    run_state,
    sandbox_json,
    start_sync,
    wait_for_run,
    wait_until,
)
from workers.embedded import EmbeddedValkey

GVF = "Green Valley Farms"


def push_state(push_id: int) -> str:
    with session_scope() as session:
        return session.get(OrderPush, push_id).state


def expire_deadlines() -> None:
    """Move every active run's and push's deadline into the past."""
    past = utcnow() - timedelta(minutes=1)
    with session_scope() as session:
        session.execute(
            update(SyncRun)
            .where(SyncRun.state.in_(ACTIVE_RUN_STATES))
            .values(deadline_at=past)
        )
        session.execute(
            update(OrderPush)
            .where(OrderPush.state.in_(ACTIVE_RUN_STATES))
            .values(deadline_at=past)
        )


def tenant_id_named(name: str) -> int:
    with session_scope() as session:
        return session.scalars(select(Tenant.id).where(Tenant.name == name)).one()


# --- Redis restarted in the middle of a sync ----------------------------------


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    """A Valkey of this test only, so restarting it disturbs no other test."""
    server = EmbeddedValkey(tmp_path / "own-valkey")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        # Request this fixture before ``service``: this then runs after the
        # service has restored the shared Redis URL.
        forget_broker_connections()


def reconcile_until_ended(run_id: int) -> str | None:
    reconcile_runs()
    state = run_state(run_id)
    return None if state in ACTIVE_RUN_STATES else state


@pytest.mark.processes
@pytest.mark.slow
def test_redis_restart_mid_sync_completes(
    own_valkey: EmbeddedValkey, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    variables = {**SHORT_LIMITS, "APEXSYNC_REDIS_URL": own_valkey.url}
    use_environment(monkeypatch, variables)
    facility_id = service.register_tenants()[0]
    set_faults(
        service.sandbox,
        apex={"latency_ms": 150, "path_contains": "batches", "methods": ["POST"]},
    )
    worker = service.start_worker(queues="inventory", extra=variables)
    run_id = start_sync(facility_id)
    wait_until(lambda: link_count(facility_id) >= 5, 90, "batch creation to start")
    state_at_restart = run_state(run_id)

    own_valkey.restart()
    state = wait_until(
        lambda: reconcile_until_ended(run_id), 240, f"run {run_id} to end", interval=1
    )

    check = check_facility(service.sandbox, facility_id)
    assert state_at_restart == "running"
    assert state == "succeeded"
    assert worker.process.poll() is None
    assert check.duplicates == []
    assert check.missing == []
    assert check.unexpected == []
    assert check.open_intents == []
    assert check.problems == []


# --- the reconciler recovers lost messages ------------------------------------


@pytest.mark.processes
def test_reconciler_recovers_lost_run(service: Any) -> None:
    facility_id = service.register_tenants()[0]
    redis_url = service.variables["APEXSYNC_REDIS_URL"]
    run_id = start_sync(facility_id)
    redis.Redis.from_url(redis_url).flushdb()
    expire_deadlines()

    republished = reconcile_runs()
    service.start_worker(queues="inventory")
    state = wait_for_run(run_id, 180)

    run = run_row(run_id)
    check = check_facility(service.sandbox, facility_id)
    assert republished == 1
    assert state == "succeeded"
    assert run.enqueued_count == 1
    assert check.missing == []
    assert check.duplicates == []


@pytest.mark.processes
def test_reconciler_resumes_lost_page(service: Any) -> None:
    facility_id = service.register_tenants()[0]
    redis_url = service.variables["APEXSYNC_REDIS_URL"]
    worker = service.start_worker(queues="inventory")
    run_id = start_sync(facility_id)
    wait_until(lambda: run_row(run_id).pages >= 1, 90, "the first page to finish")
    worker.kill()
    redis.Redis.from_url(redis_url).flushdb()
    page_before = run_row(run_id)

    expire_deadlines()
    republished = reconcile_runs()
    service.start_worker(queues="inventory")
    state = wait_for_run(run_id, 180)

    check = check_facility(service.sandbox, facility_id)
    assert page_before.state == "running"
    assert republished == 1
    assert state == "succeeded"
    assert check.missing == []
    assert check.duplicates == []
    assert check.open_intents == []


@pytest.fixture
def orders_ready(service: Any) -> dict[str, Any]:
    """GVF synced, demo orders generated and buyers matched; no orders worker."""
    service.register_tenants()
    worker = service.start_worker(queues="inventory")
    with session_scope() as session:
        facility_ids = list(
            session.scalars(
                select(Facility.id)
                .where(Facility.tenant_id == tenant_id_named(GVF))
                .order_by(Facility.id)
            )
        )
    for facility_id in facility_ids:
        assert wait_for_run(start_sync(facility_id), 180) == "succeeded"
    worker.stop()
    sandbox_json(service.sandbox, "/_sandbox/apex/orders/generate", "POST")
    order_tasks.match_buyers.run(tenant_id=tenant_id_named(GVF), full=True)
    return {"tenant_id": tenant_id_named(GVF)}


def accepted_clean_order(sandbox: Any) -> int:
    from sandbox.catalog import TENANTS

    spec = next(tenant for tenant in TENANTS if tenant.name == GVF)
    cases = {customer.name: customer.case for customer in spec.customers}
    orders = sandbox_json(sandbox, "/_sandbox/apex/orders")["orders"]
    return next(
        int(order["id"])
        for order in orders
        if order["company_name"] == GVF
        and order["order_status"]["parent_status"]["name"] == "Accepted"
        and cases.get(order["buyer"]["name"]) == "clean"
        and not order["cancelled"]
        and not order.get("split_from_order_id")
    )


@pytest.mark.processes
@pytest.mark.slow
def test_reconciler_recovers_lost_push(
    service: Any, orders_ready: dict[str, Any]
) -> None:
    redis_url = service.variables["APEXSYNC_REDIS_URL"]
    apex_order_id = accepted_clean_order(service.sandbox)
    with session_scope() as session:
        push_id = order_tasks.enqueue_push(
            session, orders_ready["tenant_id"], apex_order_id, "manual"
        ).id
    redis.Redis.from_url(redis_url).flushdb()
    expire_deadlines()

    republished = order_tasks.reconcile_pushes()
    service.start_worker(queues="orders", name="orders")
    state = wait_until(
        lambda: (value := push_state(push_id)) not in ACTIVE_RUN_STATES and value,
        120,
        f"push {push_id} to end",
    )

    assert republished == 1
    assert state == "created"
    assert final_order_problems(service.sandbox, [apex_order_id]) == []


# --- every stored key expires -------------------------------------------------


@pytest.mark.processes
def test_result_keys_expire(service: Any) -> None:
    facility_id = service.register_tenants()[0]
    redis_url = service.variables["APEXSYNC_REDIS_URL"]
    service.start_worker(queues="inventory")

    state = wait_for_run(start_sync(facility_id), 180)

    client = redis.Redis.from_url(redis_url)
    results = list(client.scan_iter(match="celery-task-meta-*"))
    assert state == "succeeded"
    assert len(results) >= 4
    assert keys_without_ttl(redis_url, "celery-task-meta-*") == []
    assert keys_without_ttl(redis_url, "apexsync:*") == []
    assert keys_without_ttl(redis_url, "ratelimit:*") == []


# --- publishing after the commit ----------------------------------------------


@pytest.fixture
def publish_checks(database_url: str) -> Iterator[list[str]]:
    """Check at each publish, from another connection, that the row is committed."""
    engine = make_engine(database_url)
    problems: list[str] = []
    seen: list[str] = []

    def check(sender: str | None = None, body: Any = None, **_: Any) -> None:
        kwargs = body[1] if isinstance(body, (list, tuple)) else {}
        seen.append(str(sender))
        for key, model in (("run_id", SyncRun), ("push_id", OrderPush)):
            if key not in kwargs:
                continue
            with engine.connect() as connection:
                row = connection.execute(
                    select(model.state).where(model.id == kwargs[key])
                ).first()
            if row is None or row[0] not in ACTIVE_RUN_STATES:
                problems.append(f"{sender} published for {key}={kwargs[key]}: {row}")

    before_task_publish.connect(check, weak=False)
    try:
        yield problems
    finally:
        before_task_publish.disconnect(check)
        engine.dispose()
        assert seen, "no task was published"


def test_dispatch_publishes_after_commit(
    service: Any, publish_checks: list[str]
) -> None:
    service.register_tenants()
    with session_scope() as session:
        session.execute(
            update(Facility).values(next_sync_at=utcnow() - timedelta(minutes=1))
        )

    dispatched = dispatch_due_syncs()

    assert dispatched == 3
    assert publish_checks == []


def test_cli_sync_publishes_after_commit(
    service: Any, publish_checks: list[str]
) -> None:
    from typer.testing import CliRunner

    from workers.cli import app

    facility_id = service.register_tenants()[0]

    result = CliRunner().invoke(app, ["sync", "inventory", str(facility_id)])

    assert result.exit_code == 0, result.output
    assert publish_checks == []


def test_reconcile_publishes_after_commit(
    service: Any, publish_checks: list[str]
) -> None:
    facility_id = service.register_tenants()[0]
    start_sync(facility_id)
    expire_deadlines()

    republished = reconcile_runs()

    assert republished == 1
    assert publish_checks == []


def test_enqueue_push_publishes_after_commit(
    service: Any, publish_checks: list[str]
) -> None:
    service.register_tenants()

    with session_scope() as session:
        order_tasks.enqueue_push(session, tenant_id_named(GVF), 990001, "manual")

    assert publish_checks == []
