"""Acceptance of the order flow: real worker processes, real Redis, the sandbox.

Every test first syncs the seeded inventory through a worker, because the
sandbox's demo orders point at the Apex batches that the sync creates. The
expected Flourish lines are computed here from the Apex order items, with the
unit rule written out again, so the test does not trust the code it checks.
"""

from __future__ import annotations

from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
import redis
from sqlalchemy import select

from shared.db import session_scope
from shared.models import (
    ACTIVE_RUN_STATES,
    BatchLink,
    DeadLetter,
    OrderLink,
    OrderPush,
    Tenant,
)
from tasks import orders as order_tasks
from tasks.inventory import publish_run
from tests.helpers import (
    run_state,
    sandbox_json,
    start_sync,
    wait_for_run,
    wait_until,
)
from workers.demo_orders import push_demo_orders

pytestmark = [pytest.mark.processes, pytest.mark.slow]

GVF = "Green Valley Farms"
ALL_QUEUES = "orders,inventory,default"
SYNC_TIMEOUT = 240.0
PUSH_TIMEOUT = 120.0

#: Buyer matching cases of the sandbox seed whose buyers end up linked.
LINKED_CASES = ("clean", "cosmetic")
FOUR_PLACES = Decimal("0.0001")


# --- setup --------------------------------------------------------------------


def sync_everything(service: Any) -> None:
    """Register the seeded tenants and sync every facility to Apex batches."""
    run_ids = [start_sync(facility_id) for facility_id in service.register_tenants()]
    for run_id in run_ids:
        assert wait_for_run(run_id, SYNC_TIMEOUT) == "succeeded"


def build_orders(service: Any) -> dict[str, Any]:
    generated = sandbox_json(service.sandbox, "/_sandbox/apex/orders/generate", "POST")
    assert generated["orders"], generated
    return generated


def match_all_buyers() -> None:
    """Match every tenant's buyers on the worker."""
    for tenant_id in tenant_ids().values():
        result = order_tasks.match_buyers.apply_async(
            kwargs={"tenant_id": tenant_id, "full": True}
        )
        result.get(timeout=PUSH_TIMEOUT)


@pytest.fixture
def synced(service: Any) -> Any:
    """A worker on every queue, the inventory synced, buyers matched, orders built."""
    service.start_worker(queues=ALL_QUEUES)
    sync_everything(service)
    build_orders(service)
    match_all_buyers()
    return service


# --- reading both sides -------------------------------------------------------


def tenant_ids() -> dict[str, int]:
    with session_scope() as session:
        rows = session.execute(select(Tenant.name, Tenant.id))
        return {name: tenant_id for name, tenant_id in rows}


def tenant_named(name: str) -> Tenant:
    with session_scope() as session:
        return session.scalars(select(Tenant).where(Tenant.name == name)).one()


def apex_orders(sandbox: Any, company: str | None = None) -> list[dict[str, Any]]:
    orders = sandbox_json(sandbox, "/_sandbox/apex/orders")["orders"]
    return [o for o in orders if company is None or o["company_name"] == company]


def buyer_cases() -> dict[tuple[str, str], str]:
    """Map (company, buyer name) to the seed's matching case of that buyer."""
    from sandbox.catalog import TENANTS

    return {
        (tenant.name, customer.name): customer.case
        for tenant in TENANTS
        for customer in tenant.customers
    }


def stage_of(order: dict[str, Any]) -> str:
    return str(order["order_status"]["parent_status"]["name"])


def find_order(
    sandbox: Any, company: str, stage: str, case: str = "clean"
) -> dict[str, Any]:
    """Return a demo order of ``company`` in ``stage`` whose buyer has ``case``."""
    cases = buyer_cases()
    for order in apex_orders(sandbox, company):
        if (
            stage_of(order) == stage
            and cases.get((company, order["buyer"]["name"])) == case
            and not order["cancelled"]
            and not order.get("split_from_order_id")
        ):
            return order
    raise AssertionError(f"no demo order of {company} in {stage} for a {case} buyer")


def flourish_orders(sandbox: Any, apex_order_id: int) -> list[dict[str, Any]]:
    orders = sandbox_json(sandbox, "/_sandbox/flourish/outbound-orders")["orders"]
    return [o for o in orders if o["original_order_id"] == str(apex_order_id)]


def flourish_lines(flourish_order: dict[str, Any]) -> list[tuple[str, Decimal]]:
    return sorted(
        (line["sku"], Decimal(str(line["order_qty"])))
        for line in flourish_order["order_lines"]
    )


def grams_in(unit: str, factor: Decimal) -> Decimal:
    """Grams in one Apex base unit or Flourish unit of weight."""
    grams = {
        "Gram": Decimal(1),
        "g": Decimal(1),
        "Kilogram": Decimal(1000),
        "kg": Decimal(1000),
        "Milligram": Decimal("0.001"),
        "mg": Decimal("0.001"),
        "Pound": factor,
        "lb": factor,
        "Ounce": factor / 16,
        "oz": factor / 16,
    }
    return grams[unit]


def expected_lines(order: dict[str, Any], factor: Decimal) -> list[tuple[str, Decimal]]:
    """The (SKU, order_qty) pairs Flourish must hold for an Apex order.

    ``inventory_quantity`` is in the product's base unit. Weights convert
    through grams with the tenant's factor and keep 4 decimal places.
    """
    with session_scope() as session:
        links = {
            link.apex_batch_id: link for link in session.scalars(select(BatchLink))
        }
    expected = []
    for item in order["items"]:
        link = links[item["batch_id"]]
        quantity = Decimal(str(item["inventory_quantity"]))
        unit = item["unit_measurement"]["name"]
        if unit != "Unit":
            quantity = (
                quantity * grams_in(unit, factor) / grams_in(link.flourish_uom, factor)
            )
        expected.append((link.sku, quantity.quantize(FOUR_PLACES, ROUND_HALF_UP)))
    return sorted(expected)


# --- pushing --------------------------------------------------------------------


def wait_for_push(push_id: int, timeout: float = PUSH_TIMEOUT) -> OrderPush:
    def ended() -> OrderPush | None:
        with session_scope() as session:
            push = session.get(OrderPush, push_id)
            return None if push is None or push.state in ACTIVE_RUN_STATES else push

    result: OrderPush = wait_until(ended, timeout, f"push {push_id} to end")
    return result


def push_and_wait(tenant_id: int, apex_order_id: int) -> OrderPush:
    with session_scope() as session:
        push_id = order_tasks.enqueue_push(
            session, tenant_id, apex_order_id, "manual"
        ).id
    return wait_for_push(push_id)


def patch_apex_order(sandbox: Any, order_id: int, body: dict[str, Any]) -> None:
    sandbox_json(sandbox, f"/_sandbox/apex/orders/{order_id}", "PATCH", json=body)


def halve_weight_line(order: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """Return the order's items with one weight line halved, and its batch id."""
    items = []
    changed = None
    for item in order["items"]:
        quantity = Decimal(str(item["order_quantity"]))
        if changed is None and item["unit_measurement"]["name"] != "Unit":
            quantity = (quantity / 2).quantize(Decimal("0.01"))
            changed = item["batch_id"]
        items.append({"batch_id": item["batch_id"], "order_quantity": str(quantity)})
    assert changed is not None, f"order {order['id']} has no weight line"
    return items, changed


def sku_of_batch(apex_batch_id: int) -> str:
    with session_scope() as session:
        link = session.scalars(
            select(BatchLink).where(BatchLink.apex_batch_id == apex_batch_id)
        ).one()
        return link.sku


def push_retries(service: Any) -> int:
    """Count the retries of push tasks that the workers logged."""
    return sum(
        1
        for worker in service.processes
        for line in worker.log().splitlines()
        if "task=orders.push_order" in line and " retry=" in line
    )


def order_link(tenant_id: int, apex_order_id: int) -> OrderLink:
    with session_scope() as session:
        return session.scalars(
            select(OrderLink)
            .where(OrderLink.tenant_id == tenant_id)
            .where(OrderLink.apex_order_id == apex_order_id)
        ).one()


def pushes_of(apex_order_id: int) -> list[OrderPush]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(OrderPush)
                .where(OrderPush.apex_order_id == apex_order_id)
                .order_by(OrderPush.id)
            )
        )


# --- the demo: every order of every tenant ------------------------------------


def is_final(order: dict[str, Any], stages: list[str]) -> bool:
    return not order["cancelled"] and stage_of(order) in stages


@pytest.mark.sandbox(packages=120)
def test_demo_push_every_order(service: Any) -> None:
    service.start_worker(queues=ALL_QUEUES)
    sync_everything(service)

    summary = push_demo_orders(service.sandbox.url, PUSH_TIMEOUT)

    cases = buyer_cases()
    pushed = {row["apex_order_id"]: row for row in summary["pushed"]}
    refused = {row["apex_order_id"]: row for row in summary["refused"]}
    assert summary["generated"]["built"] is True
    assert summary["unfinished"] == []
    assert summary["problems"] == []
    pound_lines = 0
    for order in apex_orders(service.sandbox):
        tenant = tenant_named(order["company_name"])
        case = cases[(order["company_name"], order["buyer"]["name"])]
        created = flourish_orders(service.sandbox, order["id"])
        if is_final(order, tenant.final_order_stages) and case in LINKED_CASES:
            assert pushed[order["id"]]["state"] == "created", pushed[order["id"]]
            assert len(created) == 1, order["id"]
            expected = expected_lines(order, Decimal(str(tenant.grams_per_pound)))
            assert flourish_lines(created[0]) == expected, order["id"]
            units = {item["unit_measurement"]["name"] for item in order["items"]}
            if "Pound" in units:
                pound_lines += 1
        else:
            assert created == [], order["id"]
            assert order["id"] in refused, order["id"]
    assert pound_lines > 0


@pytest.mark.sandbox(packages=120)
def test_demo_refusals_name_reason(service: Any) -> None:
    service.start_worker(queues=ALL_QUEUES)
    sync_everything(service)

    summary = push_demo_orders(service.sandbox.url, PUSH_TIMEOUT)

    cases = buyer_cases()
    orders = {order["id"]: order for order in apex_orders(service.sandbox)}
    stages = {name: tenant_named(name).final_order_stages for name in tenant_ids()}
    assert summary["refused"]
    for row in summary["refused"]:
        order = orders[row["apex_order_id"]]
        case = cases[(order["company_name"], order["buyer"]["name"])]
        reason = row["reason"] or ""
        if order["cancelled"]:
            assert row["state"] == "refused", row
            assert "is cancelled and was never pushed" in reason, row
        elif stage_of(order) not in stages[order["company_name"]]:
            assert row["state"] == "refused", row
            assert f"'{stage_of(order)}'" in reason, row
            assert "Accepted, Pending Shipment" in reason, row
        else:
            assert row["state"] == "failed", row
            assert case not in LINKED_CASES, row
            assert f"Apex buyer {order['buyer_id']}" in reason, row
            assert "has no Flourish destination" in reason, row


@pytest.mark.sandbox(packages=120)
def test_demo_lists_ambiguous_buyers(service: Any) -> None:
    from sandbox.catalog import TENANTS

    service.start_worker(queues=ALL_QUEUES)
    sync_everything(service)

    summary = push_demo_orders(service.sandbox.url, PUSH_TIMEOUT)

    review = {(row["tenant"], row["buyer_name"]): row for row in summary["review"]}
    ambiguous = [
        (tenant.name, customer)
        for tenant in TENANTS
        for customer in tenant.customers
        if customer.case == "ambiguous"
    ]
    assert ambiguous
    for tenant_name, customer in ambiguous:
        row = review[(tenant_name, customer.name)]
        candidates = {candidate["name"] for candidate in row["candidates"]}
        assert candidates == {name for name, _, _ in customer.destinations}
        assert "share license" in row["reason"]


@pytest.mark.sandbox(packages=120)
def test_second_demo_pushes_nothing_twice(service: Any) -> None:
    service.start_worker(queues=ALL_QUEUES)
    sync_everything(service)
    first = push_demo_orders(service.sandbox.url, PUSH_TIMEOUT)
    outbound_before = sandbox_json(
        service.sandbox, "/_sandbox/flourish/outbound-orders"
    )

    second = push_demo_orders(service.sandbox.url, PUSH_TIMEOUT)

    outbound_after = sandbox_json(service.sandbox, "/_sandbox/flourish/outbound-orders")
    states = {row["apex_order_id"]: row["state"] for row in second["pushed"]}
    assert second["generated"]["built"] is False
    assert first["pushed"]
    for row in first["pushed"]:
        assert states.get(row["apex_order_id"]) == "unchanged", row
    assert len(outbound_after["orders"]) == len(outbound_before["orders"])


# --- one order: repeated, changed, cancelled, locked ----------------------------


@pytest.mark.sandbox(packages=90)
def test_push_three_times_one_order(synced: Any) -> None:
    order = find_order(synced.sandbox, GVF, "Accepted")
    tenant_id = tenant_ids()[GVF]

    pushes = [push_and_wait(tenant_id, order["id"]) for _ in range(3)]

    created = flourish_orders(synced.sandbox, order["id"])
    assert [push.state for push in pushes] == ["created", "unchanged", "unchanged"]
    assert len(created) == 1
    assert {push.flourish_order_id for push in pushes} == {created[0]["id"]}


@pytest.mark.sandbox(packages=90)
def test_simultaneous_pushes_one_order(synced: Any) -> None:
    """Three pushes of one order published at once reach three worker processes."""
    synced.start_worker(queues="orders", concurrency=3, name="orders")
    order = find_order(synced.sandbox, GVF, "Accepted")
    tenant_id = tenant_ids()[GVF]
    with session_scope() as session:
        rows = [
            OrderPush(tenant_id=tenant_id, apex_order_id=order["id"], state="queued")
            for _ in range(3)
        ]
        session.add_all(rows)
    for row in rows:
        order_tasks.publish_push(row)

    states = Counter(wait_for_push(row.id).state for row in rows)

    assert states == Counter({"created": 1, "unchanged": 2})
    assert len(flourish_orders(synced.sandbox, order["id"])) == 1


@pytest.mark.sandbox(packages=90)
def test_changed_apex_order_updates(synced: Any) -> None:
    sandbox = synced.sandbox
    order = find_order(sandbox, GVF, "Accepted")
    tenant = tenant_named(GVF)
    first = push_and_wait(tenant.id, order["id"])
    items, _ = halve_weight_line(order)
    patch_apex_order(sandbox, order["id"], {"items": items})
    [changed] = [o for o in apex_orders(sandbox) if o["id"] == order["id"]]

    second = push_and_wait(tenant.id, order["id"])

    [created] = flourish_orders(sandbox, order["id"])
    assert first.state == "created"
    assert second.state == "updated", second.reason
    assert created["id"] == first.flourish_order_id
    factor = Decimal(str(tenant.grams_per_pound))
    assert flourish_lines(created) == expected_lines(changed, factor)
    assert flourish_lines(created) != expected_lines(order, factor)


@pytest.mark.sandbox(packages=90)
def test_cancelled_apex_order_cancels(synced: Any) -> None:
    order = find_order(synced.sandbox, GVF, "Accepted")
    tenant_id = tenant_ids()[GVF]
    first = push_and_wait(tenant_id, order["id"])
    patch_apex_order(synced.sandbox, order["id"], {"cancelled": True})

    second = push_and_wait(tenant_id, order["id"])

    [created] = flourish_orders(synced.sandbox, order["id"])
    assert second.state == "cancelled", second.reason
    assert second.flourish_order_id == first.flourish_order_id
    assert created["order_status"] == "Cancelled"
    assert order_link(tenant_id, order["id"]).state == "cancelled"


@pytest.mark.sandbox(packages=90)
def test_change_after_allocation_fails(synced: Any) -> None:
    sandbox = synced.sandbox
    order = find_order(sandbox, GVF, "Accepted")
    tenant_id = tenant_ids()[GVF]
    first = push_and_wait(tenant_id, order["id"])
    flourish_id = first.flourish_order_id
    sandbox_json(
        sandbox, f"/_sandbox/flourish/outbound-orders/{flourish_id}/allocate", "POST"
    )
    items, batch_id = halve_weight_line(order)
    patch_apex_order(sandbox, order["id"], {"items": items})

    second = push_and_wait(tenant_id, order["id"])

    reason = second.reason or ""
    [allocated] = flourish_orders(sandbox, order["id"])
    assert second.state == "failed"
    assert f"Flourish order {flourish_id}" in reason
    assert f"Apex order {order['id']}" in reason
    assert f"SKU {sku_of_batch(batch_id)}" in reason
    assert "order_qty" in reason
    assert "allocated" in reason
    assert second.flourish_order_id == flourish_id
    assert order_link(tenant_id, order["id"]).state == "failed"
    assert flourish_lines(allocated) == expected_lines(
        order, Decimal(str(tenant_named(GVF).grams_per_pound))
    )
    # Not retried: no task retry, no dead letter and no new push.
    assert push_retries(synced) == 0
    assert len(pushes_of(order["id"])) == 2
    with session_scope() as session:
        assert session.scalars(select(DeadLetter)).all() == []


# --- a lost response and a busy inventory queue ---------------------------------


@pytest.mark.sandbox(packages=90)
@pytest.mark.parametrize("mode", ["502", "drop"])
def test_lost_create_response_no_duplicate(synced: Any, mode: str) -> None:
    sandbox = synced.sandbox
    order = find_order(sandbox, GVF, "Accepted")
    sandbox_json(sandbox, "/_sandbox/stats/reset", "POST")
    lose = {
        "method": "POST",
        "path_contains": "outbound-orders",
        "count": 1,
        "mode": mode,
    }
    sandbox_json(
        sandbox, "/_sandbox/faults", "PUT", json={"flourish": {"lose_response": [lose]}}
    )

    push = push_and_wait(tenant_ids()[GVF], order["id"])

    created = flourish_orders(sandbox, order["id"])
    posts = sandbox_json(sandbox, "/_sandbox/stats")["flourish"]["per_path"]
    assert push.state == "created", push.reason
    assert len(created) == 1
    assert push.flourish_order_id == created[0]["id"]
    assert posts.get("POST /v1/outbound-orders") == 1
    assert push_retries(synced) == 1


@pytest.mark.sandbox(packages=90)
def test_orders_queue_skips_inventory_backlog(service: Any, redis_url: str) -> None:
    sync_worker = service.start_worker(queues=ALL_QUEUES)
    sync_everything(service)
    build_orders(service)
    sync_worker.stop()
    backlog = [start_sync(facility_id) for facility_id in service.register_tenants()]
    for _ in range(300):
        publish_run(backlog[0])
    service.start_worker(queues="orders", name="orders")
    order = find_order(service.sandbox, GVF, "Accepted")

    push = push_and_wait(tenant_ids()[GVF], order["id"])

    assert push.state == "created", push.reason
    assert len(flourish_orders(service.sandbox, order["id"])) == 1
    assert redis.Redis.from_url(redis_url).llen("inventory") >= 300
    assert [run_state(run_id) for run_id in backlog] == ["queued"] * len(backlog)


# --- polling ------------------------------------------------------------------------


def wait_for_poll(tenant_id: int, after: Any) -> Any:
    """Wait until the tenant's orders cursor moves past ``after`` and return it."""

    def moved() -> Any:
        with session_scope() as session:
            cursor = session.get(Tenant, tenant_id).orders_cursor
        return (
            cursor if cursor is not None and (after is None or cursor > after) else None
        )

    return wait_until(moved, PUSH_TIMEOUT, f"tenant {tenant_id} order poll")


def wait_for_all_pushes() -> list[OrderPush]:
    def ended() -> list[OrderPush] | None:
        with session_scope() as session:
            pushes = list(session.scalars(select(OrderPush).order_by(OrderPush.id)))
        return None if any(p.state in ACTIVE_RUN_STATES for p in pushes) else pushes

    result: list[OrderPush] = wait_until(ended, PUSH_TIMEOUT, "every push to end")
    return result


def poll_through_worker(tenant_id: int) -> None:
    """Make the tenant's poll due and run ``orders.poll_orders`` on the worker."""
    with session_scope() as session:
        session.get(Tenant, tenant_id).next_order_poll_at = None
    assert order_tasks.poll_orders.apply_async().get(timeout=PUSH_TIMEOUT) == 1


@pytest.mark.sandbox(packages=90)
def test_poll_pushes_final_orders(synced: Any) -> None:
    tenant = tenant_named(GVF)
    with session_scope() as session:
        session.get(Tenant, tenant.id).auto_push_orders = True

    poll_through_worker(tenant.id)

    cursor = wait_for_poll(tenant.id, None)
    pushes = wait_for_all_pushes()
    cases = buyer_cases()
    polled = {push.apex_order_id: push for push in pushes}
    assert {push.trigger for push in pushes} == {"poll"}
    for order in apex_orders(synced.sandbox, GVF):
        final = is_final(order, tenant.final_order_stages)
        assert (order["id"] in polled) is final, order["id"]
        linked = cases[(GVF, order["buyer"]["name"])] in LINKED_CASES
        if final and linked:
            assert polled[order["id"]].state == "created", polled[order["id"]].reason
            assert len(flourish_orders(synced.sandbox, order["id"])) == 1
    assert cursor is not None


@pytest.mark.sandbox(packages=90)
def test_poll_cursor_moves_to_changes(synced: Any) -> None:
    sandbox = synced.sandbox
    tenant = tenant_named(GVF)
    with session_scope() as session:
        session.get(Tenant, tenant.id).auto_push_orders = True
    poll_through_worker(tenant.id)
    first_cursor = wait_for_poll(tenant.id, None)
    first = wait_for_all_pushes()
    order = find_order(sandbox, GVF, "Accepted")
    items, _ = halve_weight_line(order)
    patch_apex_order(sandbox, order["id"], {"items": items})

    poll_through_worker(tenant.id)

    second_cursor = wait_for_poll(tenant.id, first_cursor)
    later = [push for push in wait_for_all_pushes() if push.id > first[-1].id]
    created_before = {push.apex_order_id for push in first if push.state == "created"}
    assert second_cursor > first_cursor
    assert [push.state for push in later if push.apex_order_id == order["id"]] == [
        "updated"
    ]
    assert [
        push for push in later if push.apex_order_id in created_before - {order["id"]}
    ] == []
