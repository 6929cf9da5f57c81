"""Order tasks: polling claims, reconciling lost pushes, and whole pushes.

The tests without the sandbox check the database side of the tasks with
publishing replaced by a recorder. The sandbox tests call the task functions
in this process against the simulated Apex and Flourish APIs and a real
Redis, so the whole push runs as a worker would run it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select

from shared.db import session_scope
from shared.models import BatchLink, OrderLink, OrderPush, Tenant, utcnow
from shared.units import to_flourish_quantity
from tasks import orders as order_tasks
from tests.conftest import TEST_SECRET_KEY
from tests.helpers import reset_caches


@pytest.fixture
def database(clean_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("APEXSYNC_ENVIRONMENT", "test")
    monkeypatch.setenv("APEXSYNC_DATABASE_URL", clean_db)
    monkeypatch.setenv("APEXSYNC_SECRET_KEY", TEST_SECRET_KEY)
    reset_caches()
    yield clean_db
    monkeypatch.delenv("APEXSYNC_DATABASE_URL")
    reset_caches()


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sent: list[int] = []
    monkeypatch.setattr(order_tasks, "publish_push", lambda push: sent.append(push.id))
    return sent


def add_tenant(tenant_id: int, auto_push: bool, **fields: Any) -> None:
    with session_scope() as session:
        session.add(
            Tenant(
                id=tenant_id,
                name=f"Tenant {tenant_id}",
                apex_token_encrypted="x",
                auto_push_orders=auto_push,
                **fields,
            )
        )


# --- polling claims -----------------------------------------------------------


def test_claim_due_tenant_once(database: str) -> None:
    add_tenant(1, auto_push=True)
    now = utcnow()

    with session_scope() as session:
        first = order_tasks._claim_due_tenants(session, now)
    with session_scope() as session:
        second = order_tasks._claim_due_tenants(session, now)

    assert first == [1]
    assert second == []


def test_claim_skips_tenant_without_auto_push(database: str) -> None:
    add_tenant(1, auto_push=False)

    with session_scope() as session:
        assert order_tasks._claim_due_tenants(session, utcnow()) == []


def test_claim_skips_paused_tenant(database: str) -> None:
    add_tenant(1, auto_push=True, apex_state="paused")

    with session_scope() as session:
        assert order_tasks._claim_due_tenants(session, utcnow()) == []


def test_claim_moves_next_poll(database: str) -> None:
    add_tenant(1, auto_push=True, order_poll_seconds=120)
    now = utcnow()

    with session_scope() as session:
        order_tasks._claim_due_tenants(session, now)
    with session_scope() as session:
        tenant = session.get(Tenant, 1)
        assert order_tasks._aware(tenant.next_order_poll_at) == now + timedelta(
            seconds=120
        )


# --- which polled orders are pushed ---------------------------------------------


def polled(order_id: int = 100123, **fields: Any) -> SimpleNamespace:
    values = {
        "id": order_id,
        "cancelled": False,
        "order_status": {"parent_status": {"name": "Accepted"}},
        "updated_at": utcnow() - timedelta(minutes=5),
    }
    return SimpleNamespace(**(values | fields))


def add_link(state: str, pushed_at: Any = None) -> None:
    with session_scope() as session:
        session.add(
            OrderLink(
                tenant_id=1, apex_order_id=100123, state=state, pushed_at=pushed_at
            )
        )


@pytest.mark.parametrize(
    ("order", "link", "expected"),
    [
        pytest.param(polled(), None, True, id="final-new"),
        pytest.param(
            polled(order_status={"parent_status": {"name": "Submitted"}}),
            None,
            False,
            id="not-final",
        ),
        pytest.param(polled(cancelled=True), None, False, id="cancelled-never-pushed"),
        pytest.param(
            polled(cancelled=True), ("pushed", None), True, id="cancelled-pushed"
        ),
        pytest.param(
            polled(cancelled=True), ("cancelled", None), False, id="cancelled-twice"
        ),
        pytest.param(polled(), ("pushed", "after"), False, id="pushed-after-change"),
        pytest.param(polled(), ("pushed", "before"), True, id="changed-after-push"),
        pytest.param(polled(), ("failed", "after"), True, id="failed-link"),
    ],
)
def test_wants_push_table(
    database: str, order: SimpleNamespace, link: tuple[str, Any] | None, expected: bool
) -> None:
    add_tenant(1, auto_push=True)
    if link is not None:
        moments = {
            "after": utcnow(),
            "before": utcnow() - timedelta(hours=1),
            None: None,
        }
        add_link(link[0], moments[link[1]])

    with session_scope() as session:
        tenant = session.get(Tenant, 1)
        assert order_tasks._wants_push(session, tenant, order) is expected


# --- enqueueing and reconciling ---------------------------------------------------


def test_enqueue_push_publishes_after_commit(
    database: str, published: list[int]
) -> None:
    add_tenant(1, auto_push=False)

    with session_scope() as session:
        push = order_tasks.enqueue_push(session, 1, 100123, "manual")
        push_id = push.id

    assert published == [push_id]
    with session_scope() as session:
        assert session.get(OrderPush, push_id).state == "queued"


def test_enqueue_push_reuses_active(database: str, published: list[int]) -> None:
    add_tenant(1, auto_push=False)

    with session_scope() as session:
        first = order_tasks.enqueue_push(session, 1, 100123, "manual").id
        second = order_tasks.enqueue_push(session, 1, 100123, "poll").id

    assert first == second
    assert published == [first]


def add_push(state: str, deadline_minutes: int, enqueued_count: int = 0) -> int:
    with session_scope() as session:
        push = OrderPush(
            tenant_id=1,
            apex_order_id=100123,
            state=state,
            deadline_at=utcnow() + timedelta(minutes=deadline_minutes),
            enqueued_count=enqueued_count,
        )
        session.add(push)
        session.flush()
        return push.id


def test_reconcile_republishes_stuck_push(database: str, published: list[int]) -> None:
    add_tenant(1, auto_push=False)
    stuck = add_push("running", deadline_minutes=-1)
    add_push("running", deadline_minutes=10)
    add_push("created", deadline_minutes=-1)

    count = order_tasks.reconcile_pushes()

    assert count == 1
    assert published == [stuck]
    with session_scope() as session:
        push = session.get(OrderPush, stuck)
        assert push.enqueued_count == 1
        assert push.state == "queued"


def test_reconcile_fails_push_stuck_too_often(
    database: str, published: list[int]
) -> None:
    add_tenant(1, auto_push=False)
    stuck = add_push("queued", deadline_minutes=-1, enqueued_count=10)

    order_tasks.reconcile_pushes()

    assert published == []
    with session_scope() as session:
        push = session.get(OrderPush, stuck)
        assert push.state == "failed"
        assert "stuck" in (push.reason or "")


# --- whole pushes against the sandbox -------------------------------------------


@pytest.fixture
def eager(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run published tasks at once in this process, retries included."""
    from workers.app import app

    # Errors stay in the eager result rather than propagating, so that Celery
    # applies a retry at once; the tests read the outcome from the database.
    monkeypatch.setitem(app.conf, "task_always_eager", True)
    yield


@pytest.fixture
def synced(service: Any, eager: None) -> dict[str, Any]:
    """Tenants registered, inventory synced to Apex batches, demo orders built."""
    from tests.helpers import run_state, sandbox_json, start_sync

    facility_ids = service.register_tenants()
    for facility_id in facility_ids:
        run_id = start_sync(facility_id)
        assert run_state(run_id) == "succeeded"
    generated = sandbox_json(service.sandbox, "/_sandbox/apex/orders/generate", "POST")
    assert generated["orders"]
    return {"service": service, "orders": generated}


def tenant_id_named(name: str) -> int:
    with session_scope() as session:
        return session.scalars(select(Tenant.id).where(Tenant.name == name)).one()


def demo_orders(sandbox: Any, company: str) -> list[dict[str, Any]]:
    from tests.helpers import sandbox_json

    orders = sandbox_json(sandbox, "/_sandbox/apex/orders")["orders"]
    return [order for order in orders if order["company_name"] == company]


def demo_order(
    sandbox: Any, company: str, stage: str, case: str, cancelled: bool = False
) -> dict[str, Any]:
    """Find the demo order in ``stage`` whose buyer is of the matching ``case``."""
    from sandbox.catalog import TENANTS

    spec = next(tenant for tenant in TENANTS if tenant.name == company)
    cases = {customer.name: customer.case for customer in spec.customers}
    for order in demo_orders(sandbox, company):
        if (
            order["order_status"]["parent_status"]["name"] == stage
            and cases.get(order["buyer"]["name"]) == case
            and bool(order["cancelled"]) is cancelled
            and not order.get("split_from_order_id")
        ):
            return order
    raise AssertionError(f"no demo order of {company} in {stage} for a {case} buyer")


def push_now(tenant_id: int, apex_order_id: int) -> OrderPush:
    with session_scope() as session:
        push_id = order_tasks.enqueue_push(
            session, tenant_id, apex_order_id, "manual"
        ).id
    with session_scope() as session:
        push = session.get(OrderPush, push_id)
        session.expunge(push)
        return push


def flourish_orders_of(sandbox: Any, apex_order_id: int) -> list[dict[str, Any]]:
    from tests.helpers import sandbox_json

    orders = sandbox_json(sandbox, "/_sandbox/flourish/outbound-orders")["orders"]
    return [o for o in orders if o["original_order_id"] == str(apex_order_id)]


GVF = "Green Valley Farms"


@pytest.mark.slow
@pytest.mark.sandbox(packages=90)
def test_push_final_order_creates_once(synced: dict[str, Any]) -> None:
    sandbox = synced["service"].sandbox
    order = demo_order(sandbox, GVF, "Accepted", "clean")

    first = push_now(tenant_id_named(GVF), order["id"])
    second = push_now(tenant_id_named(GVF), order["id"])

    created = flourish_orders_of(sandbox, order["id"])
    assert first.state == "created"
    assert second.state == "unchanged"
    assert len(created) == 1
    assert created[0]["id"] == first.flourish_order_id
    assert len(created[0]["order_lines"]) == len(order["items"])


@pytest.mark.slow
@pytest.mark.sandbox(packages=90)
def test_push_converts_pounds_to_grams(synced: dict[str, Any]) -> None:
    sandbox = synced["service"].sandbox
    with session_scope() as session:
        pound_batches = {
            link.apex_batch_id: link
            for link in session.scalars(select(BatchLink))
            if link.unit_name == "Pound" and link.flourish_uom == "g"
        }
    order, apex_line = next(
        (order, item)
        for stage, case in (("Accepted", "clean"), ("Pending Shipment", "cosmetic"))
        for order in [demo_order(sandbox, GVF, stage, case)]
        for item in order["items"]
        if item["batch_id"] in pound_batches
    )
    batch_link = pound_batches[apex_line["batch_id"]]

    push = push_now(tenant_id_named(GVF), order["id"])

    [created] = flourish_orders_of(sandbox, order["id"])
    line = next(
        line for line in created["order_lines"] if line["sku"] == batch_link.sku
    )
    expected = to_flourish_quantity(
        Decimal(str(apex_line["inventory_quantity"])),
        "Pound",
        str(batch_link.flourish_uom),
        grams_per_pound=Decimal("453.59237"),
    )
    assert push.state == "created"
    assert Decimal(str(line["order_qty"])) == expected


@pytest.mark.slow
@pytest.mark.sandbox(packages=90)
def test_push_not_final_refused(synced: dict[str, Any]) -> None:
    sandbox = synced["service"].sandbox
    order = demo_order(sandbox, GVF, "Submitted", "clean")

    push = push_now(tenant_id_named(GVF), order["id"])

    assert push.state == "refused"
    assert "'Submitted'" in (push.reason or "")
    assert "Accepted, Pending Shipment" in (push.reason or "")
    assert flourish_orders_of(sandbox, order["id"]) == []


@pytest.mark.slow
@pytest.mark.sandbox(packages=90)
def test_push_ambiguous_buyer_fails(synced: dict[str, Any]) -> None:
    sandbox = synced["service"].sandbox
    order = demo_order(sandbox, GVF, "Accepted", "ambiguous")

    push = push_now(tenant_id_named(GVF), order["id"])

    assert push.state == "failed"
    assert "state review" in (push.reason or "")
    assert flourish_orders_of(sandbox, order["id"]) == []


@pytest.mark.slow
@pytest.mark.sandbox(packages=90)
def test_push_changed_order_updates(synced: dict[str, Any]) -> None:
    from tests.helpers import sandbox_json

    sandbox = synced["service"].sandbox
    order = demo_order(sandbox, GVF, "Accepted", "clean")
    first = push_now(tenant_id_named(GVF), order["id"])
    item = order["items"][0]
    changed = [
        {"batch_id": item["batch_id"], "order_quantity": item["order_quantity"] / 2}
    ]
    sandbox_json(
        sandbox,
        f"/_sandbox/apex/orders/{order['id']}",
        "PATCH",
        json={"items": changed},
    )

    second = push_now(tenant_id_named(GVF), order["id"])

    [created] = flourish_orders_of(sandbox, order["id"])
    assert second.state == "updated"
    assert created["id"] == first.flourish_order_id
    assert len(created["order_lines"]) == 1


@pytest.mark.slow
@pytest.mark.sandbox(packages=90)
def test_push_allocated_change_fails(synced: dict[str, Any]) -> None:
    from tests.helpers import sandbox_json

    sandbox = synced["service"].sandbox
    order = demo_order(sandbox, GVF, "Accepted", "clean")
    first = push_now(tenant_id_named(GVF), order["id"])
    sandbox_json(
        sandbox,
        f"/_sandbox/flourish/outbound-orders/{first.flourish_order_id}/allocate",
        "POST",
    )
    item = order["items"][0]
    changed = [
        {"batch_id": item["batch_id"], "order_quantity": item["order_quantity"] / 2}
    ]
    sandbox_json(
        sandbox,
        f"/_sandbox/apex/orders/{order['id']}",
        "PATCH",
        json={"items": changed},
    )

    second = push_now(tenant_id_named(GVF), order["id"])

    assert second.state == "failed"
    assert f"Flourish order {first.flourish_order_id}" in (second.reason or "")
    assert "allocated" in (second.reason or "")
    with session_scope() as session:
        link = session.scalars(
            select(OrderLink).where(OrderLink.apex_order_id == order["id"])
        ).one()
        assert link.state == "failed"


@pytest.mark.slow
@pytest.mark.sandbox(packages=90)
def test_push_cancelled_order_cancels(synced: dict[str, Any]) -> None:
    from tests.helpers import sandbox_json

    sandbox = synced["service"].sandbox
    order = demo_order(sandbox, GVF, "Accepted", "clean")
    push_now(tenant_id_named(GVF), order["id"])
    sandbox_json(
        sandbox,
        f"/_sandbox/apex/orders/{order['id']}",
        "PATCH",
        json={"cancelled": True},
    )

    push = push_now(tenant_id_named(GVF), order["id"])

    [created] = flourish_orders_of(sandbox, order["id"])
    assert push.state == "cancelled"
    assert created["order_status"] == "Cancelled"


@pytest.mark.slow
@pytest.mark.sandbox(packages=90)
def test_push_lost_response_no_duplicate(synced: dict[str, Any]) -> None:
    from tests.helpers import sandbox_json

    sandbox = synced["service"].sandbox
    order = demo_order(sandbox, GVF, "Pending Shipment", "cosmetic")
    lose = {"method": "POST", "path_contains": "outbound-orders", "count": 1}
    sandbox_json(
        sandbox, "/_sandbox/faults", "PUT", json={"flourish": {"lose_response": [lose]}}
    )

    push = push_now(tenant_id_named(GVF), order["id"])

    assert push.state == "created"
    assert len(flourish_orders_of(sandbox, order["id"])) == 1


@pytest.mark.slow
@pytest.mark.sandbox(packages=90)
def test_poll_pushes_final_orders_only(synced: dict[str, Any]) -> None:
    sandbox = synced["service"].sandbox
    tenant_id = tenant_id_named(GVF)
    with session_scope() as session:
        session.get(Tenant, tenant_id).auto_push_orders = True

    order_tasks.poll_orders()

    with session_scope() as session:
        pushed = set(session.scalars(select(OrderPush.apex_order_id)))
        tenant = session.get(Tenant, tenant_id)
        assert tenant.orders_cursor is not None
        assert tenant.next_order_poll_at is not None
    for order in demo_orders(sandbox, GVF):
        stage = order["order_status"]["parent_status"]["name"]
        final = stage in ("Accepted", "Pending Shipment") and not order["cancelled"]
        assert (order["id"] in pushed) is final, order["id"]


@pytest.mark.slow
@pytest.mark.sandbox(packages=30)
def test_match_buyers_task_counts(service: Any) -> None:
    service.register_tenants()
    tenant_id = tenant_id_named(GVF)

    counts = order_tasks.match_buyers.run(tenant_id=tenant_id, full=True)

    # Each seeded buyer's matching case decides its expected outcome.
    from sandbox.catalog import TENANTS

    outcome = {
        "clean": "linked",
        "cosmetic": "linked",
        "address_differs": "review",
        "ambiguous": "review",
        "unmatched": "unmatched",
        "no_license": "unmatched",
    }
    spec = next(tenant for tenant in TENANTS if tenant.name == GVF)
    expected = Counter(outcome[customer.case] for customer in spec.customers)
    assert counts == dict(expected)


@pytest.mark.slow
@pytest.mark.sandbox(packages=90)
def test_push_split_order_separately(synced: dict[str, Any]) -> None:
    sandbox = synced["service"].sandbox
    child = next(o for o in demo_orders(sandbox, GVF) if o.get("split_from_order_id"))
    parent_id = child["split_from_order_id"]

    parent_push = push_now(tenant_id_named(GVF), parent_id)
    child_push = push_now(tenant_id_named(GVF), child["id"])

    [child_order] = flourish_orders_of(sandbox, child["id"])
    assert parent_push.state == "created"
    assert child_push.state == "created"
    assert child_push.flourish_order_id != parent_push.flourish_order_id
    assert f"Split from Apex order {parent_id}" in child_order["notes"][0]["note"]


@pytest.mark.slow
@pytest.mark.sandbox(packages=90)
def test_push_adds_facility_sales_rep(synced: dict[str, Any]) -> None:
    sandbox = synced["service"].sandbox
    order = demo_order(sandbox, "Coastal Cultivators", "Accepted", "clean")

    push = push_now(tenant_id_named("Coastal Cultivators"), order["id"])

    [created] = flourish_orders_of(sandbox, order["id"])
    assert push.state == "created", push.reason
    assert created["sales_rep"]["email"] == "jordan.park@coastal.example"


@pytest.mark.slow
@pytest.mark.processes
@pytest.mark.sandbox(packages=90)
def test_worker_process_pushes_order(synced: dict[str, Any], monkeypatch: Any) -> None:
    from tests.helpers import wait_until
    from workers.app import app

    service, sandbox = synced["service"], synced["service"].sandbox
    monkeypatch.setitem(app.conf, "task_always_eager", False)
    service.start_worker(queues="orders", name="orders")
    order = demo_order(sandbox, GVF, "Accepted", "clean")

    with session_scope() as session:
        push_id = order_tasks.enqueue_push(
            session, tenant_id_named(GVF), order["id"], "manual"
        ).id

    def ended() -> str | None:
        with session_scope() as session:
            state = session.get(OrderPush, push_id).state
        return None if state in ("queued", "running") else state

    assert wait_until(ended, 60, f"push {push_id} to end") == "created"
    assert len(flourish_orders_of(sandbox, order["id"])) == 1
