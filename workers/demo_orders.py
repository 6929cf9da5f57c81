"""The order part of ``apexsync demo``: match buyers, build orders, push them all.

It runs after the demo's inventory syncs. Every tenant's buyers are matched,
the sandbox builds its demo orders on the batches that now exist, and every
order of every tenant is pushed through the running worker. The sandbox builds
orders only while it has none, so a later demo on the same sandbox state finds
the same orders, and each one already pushed comes out "unchanged".
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from shared.buyers import REVIEW
from shared.db import session_scope
from shared.errors import SyncError
from shared.models import ACTIVE_RUN_STATES, BuyerLink, OrderPush, Tenant

logger = logging.getLogger(__name__)
console = Console()

#: Apex advises seeding the first ``updated_at_from`` with 1970 (Apex Postman docs).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Push states of an order that reached Flourish, or needed nothing.
PUSHED_STATES = ("created", "updated", "unchanged", "cancelled")
#: Push states of an order that was not pushed and needs a person.
NOT_PUSHED_STATES = ("refused", "failed")
COUNTED_STATES = (*PUSHED_STATES, *NOT_PUSHED_STATES, "unfinished")

POLL_SECONDS = 0.5
SANDBOX_TIMEOUT = 60.0


def push_demo_orders(sandbox_url: str, timeout: float) -> dict[str, Any]:
    """Match buyers, build the sandbox's demo orders and push every order.

    Waits up to ``timeout`` seconds for the pushes to end. Returns a summary
    that converts to JSON: ``buyers`` (match counts per tenant),
    ``generated``, ``pushed``, ``refused`` (refused or failed, with the
    reason), ``unfinished``, ``counts`` (per tenant and push state), ``review``
    (buyers waiting for a person, with candidates) and ``problems``.
    """
    deadline = time.monotonic() + timeout
    problems: list[dict[str, str]] = []
    tenants = _active_tenants(problems)

    buyers = _match_all(tenants, problems)
    generated = generate_orders(sandbox_url, problems)
    orders = _enqueue_all(tenants, problems)

    _wait_for_pushes([order["push_id"] for order in orders], deadline)
    return _summary(tenants, orders, buyers, generated, problems)


def _problem(problems: list[dict[str, str]], tenant: str, message: str) -> None:
    logger.warning("demo orders: tenant=%r %s", tenant, message)
    problems.append({"tenant": tenant, "message": message})


def _active_tenants(problems: list[dict[str, str]]) -> dict[int, str]:
    """Return the names of the tenants whose Apex access is active, by id."""
    active = {}
    with session_scope() as session:
        for tenant in session.scalars(select(Tenant).order_by(Tenant.id)):
            if tenant.apex_state == "active":
                active[tenant.id] = tenant.name
                continue
            reason = tenant.apex_state_reason or "no reason recorded"
            _problem(
                problems,
                tenant.name,
                f"skipped: Apex access is {tenant.apex_state} ({reason}).",
            )
    return active


def _match_all(
    tenants: dict[int, str], problems: list[dict[str, str]]
) -> dict[str, dict[str, int]]:
    """Match every tenant's buyers in this process and return the counts per tenant."""
    from tasks.orders import match_buyers

    counts = {}
    for tenant_id, name in tenants.items():
        try:
            counts[name] = match_buyers.run(tenant_id=tenant_id, full=True)
        except (SyncError, LookupError) as exc:
            _problem(problems, name, f"buyer matching failed: {exc}")
    return counts


def generate_orders(sandbox_url: str, problems: list[dict[str, str]]) -> dict[str, Any]:
    """Have the sandbox build its demo orders unless it already contains Apex orders.

    Order lines point at batches, so this must run after the inventory sync.
    Building them again would give the orders a new order date, and a new
    invoice date would then update every Flourish order.
    """
    try:
        existing = _sandbox_request("GET", f"{sandbox_url}/_sandbox/apex/orders")
        if existing["orders"]:
            return {"built": False, "orders": len(existing["orders"]), "skipped": {}}

        built = _sandbox_request("POST", f"{sandbox_url}/_sandbox/apex/orders/generate")
    except httpx.HTTPError as exc:
        _problem(problems, "-", f"building the sandbox's demo orders failed: {exc}")
        return {"built": False, "orders": 0, "skipped": {}}
    return {
        "built": True,
        "orders": len(built["orders"]),
        "skipped": built.get("skipped", {}),
    }


def _sandbox_request(method: str, url: str) -> Any:
    response = httpx.request(method, url, timeout=SANDBOX_TIMEOUT)
    response.raise_for_status()
    return response.json()


def _enqueue_all(
    tenants: dict[int, str], problems: list[dict[str, str]]
) -> list[dict[str, Any]]:
    """Enqueue a push of every order of every tenant and return one row per push."""
    rows: list[dict[str, Any]] = []
    for tenant_id, name in tenants.items():
        try:
            rows.extend(_enqueue_tenant(tenant_id, name))
        except SyncError as exc:
            _problem(problems, name, f"listing or enqueuing orders failed: {exc}")
    logger.info("demo orders: %d pushes enqueued", len(rows))
    return rows


def _enqueue_tenant(tenant_id: int, name: str) -> list[dict[str, Any]]:
    from tasks.base import apex_client_for
    from tasks.orders import enqueue_push

    rows = []
    with session_scope() as session:
        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None, f"tenant {tenant_id} vanished"
        with apex_client_for(tenant) as apex:
            orders = sorted(apex.iter_shipping_orders(EPOCH), key=lambda o: o.id)

        for order in orders:
            push = enqueue_push(session, tenant_id, int(order.id), "demo")
            rows.append(
                {
                    "tenant": name,
                    "apex_order_id": int(order.id),
                    "invoice_number": order.invoice_number,
                    "push_id": push.id,
                }
            )
    return rows


def _wait_for_pushes(push_ids: list[int], deadline: float) -> None:
    """Wait until every push has ended or the deadline passes."""
    with console.status(f"Pushing {len(push_ids)} orders ..."):
        while _active_count(push_ids) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)


def _active_count(push_ids: list[int]) -> int:
    if not push_ids:
        return 0
    with session_scope() as session:
        active = session.scalars(
            select(OrderPush.id)
            .where(OrderPush.id.in_(push_ids))
            .where(OrderPush.state.in_(ACTIVE_RUN_STATES))
        )
        return len(list(active))


# --- summary ------------------------------------------------------------------


def _summary(
    tenants: dict[int, str],
    orders: list[dict[str, Any]],
    buyers: dict[str, dict[str, int]],
    generated: dict[str, Any],
    problems: list[dict[str, str]],
) -> dict[str, Any]:
    rows = _push_rows(orders)
    return {
        "buyers": buyers,
        "generated": generated,
        "pushed": [row for row in rows if row["state"] in PUSHED_STATES],
        "refused": [row for row in rows if row["state"] in NOT_PUSHED_STATES],
        "unfinished": [row for row in rows if row["state"] in ACTIVE_RUN_STATES],
        "counts": _counts(rows),
        "review": _buyers_for_review(list(tenants)),
        "problems": problems,
    }


def _push_rows(orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add each push's state, reason and Flourish order id to its order row."""
    with session_scope() as session:
        pushes = {
            push.id: push
            for push in session.scalars(
                select(OrderPush).where(
                    OrderPush.id.in_([order["push_id"] for order in orders])
                )
            )
        }
    rows = []
    for order in orders:
        push = pushes[order["push_id"]]
        rows.append(
            order
            | {
                "state": push.state,
                "reason": push.reason,
                "flourish_order_id": push.flourish_order_id,
            }
        )
    return rows


def _counts(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Count pushes per tenant and state, with queued and running as "unfinished"."""
    counts: dict[str, Counter[str]] = {}
    for row in rows:
        state = "unfinished" if row["state"] in ACTIVE_RUN_STATES else row["state"]
        counts.setdefault(row["tenant"], Counter())[state] += 1
    return {tenant: dict(counter) for tenant, counter in counts.items()}


def _buyers_for_review(tenant_ids: list[int]) -> list[dict[str, Any]]:
    with session_scope() as session:
        rows = session.execute(select(Tenant.id, Tenant.name))
        names = {tenant_id: name for tenant_id, name in rows}
        links = session.scalars(
            select(BuyerLink)
            .where(BuyerLink.tenant_id.in_(tenant_ids))
            .where(BuyerLink.state == REVIEW)
            .order_by(BuyerLink.tenant_id, BuyerLink.buyer_name)
        )
        return [
            {
                "tenant": names[link.tenant_id],
                "apex_buyer_id": link.apex_buyer_id,
                "buyer_name": link.buyer_name,
                "license_number": link.license_number,
                "address": link.address,
                "reason": link.reason,
                "candidates": list(link.candidates or []),
            }
            for link in links
        ]


# --- printing -----------------------------------------------------------------


def print_order_summary(summary: dict[str, Any]) -> None:
    """Print the summary of ``push_demo_orders`` as rich tables."""
    _print_overview(summary)
    _print_pushed(summary["pushed"])
    _print_not_pushed(summary["refused"], summary["unfinished"])
    _print_review(summary["review"])
    for problem in summary["problems"]:
        console.print(f"[yellow]{problem['tenant']}:[/yellow] {problem['message']}")


def _print_overview(summary: dict[str, Any]) -> None:
    generated = summary["generated"]
    origin = "built now" if generated["built"] else "already in the sandbox"
    table = Table(title=f"Order pushes ({generated['orders']} demo orders {origin})")
    table.add_column("tenant")
    table.add_column("buyers matched")
    for state in COUNTED_STATES:
        table.add_column(state, justify="right")

    for tenant in sorted(set(summary["buyers"]) | set(summary["counts"])):
        matched = summary["buyers"].get(tenant, {})
        counts = summary["counts"].get(tenant, {})
        table.add_row(
            tenant,
            ", ".join(f"{state} {n}" for state, n in sorted(matched.items())) or "-",
            *(str(counts.get(state, 0)) for state in COUNTED_STATES),
        )
    console.print(table)
    for company, reason in generated["skipped"].items():
        console.print(f"[yellow]{company}:[/yellow] no demo orders built: {reason}")


def _print_pushed(rows: list[dict[str, Any]]) -> None:
    table = Table(title="Orders pushed to Flourish")
    for column in ("tenant", "Apex order", "invoice", "state", "Flourish order"):
        table.add_column(column)
    table.add_column("detail", overflow="fold")
    for row in rows:
        table.add_row(
            row["tenant"],
            str(row["apex_order_id"]),
            row["invoice_number"] or "-",
            row["state"],
            row["flourish_order_id"] or "-",
            row["reason"] or "",
        )
    console.print(table)


def _print_not_pushed(
    refused: list[dict[str, Any]], unfinished: list[dict[str, Any]]
) -> None:
    table = Table(title="Orders not pushed, with the reason")
    for column in ("tenant", "Apex order", "invoice", "state"):
        table.add_column(column)
    table.add_column("reason", overflow="fold")
    for row in refused:
        table.add_row(
            row["tenant"],
            str(row["apex_order_id"]),
            row["invoice_number"] or "-",
            row["state"],
            row["reason"] or "",
        )
    for row in unfinished:
        table.add_row(
            row["tenant"],
            str(row["apex_order_id"]),
            row["invoice_number"] or "-",
            row["state"],
            "The push did not end in time; see `apexsync orders show`.",
        )
    console.print(table)


def _print_review(rows: list[dict[str, Any]]) -> None:
    table = Table(title="Buyers waiting for review (`apexsync buyers link`)")
    for column in ("tenant", "buyer", "name", "license"):
        table.add_column(column)
    table.add_column("reason", overflow="fold")
    table.add_column("candidates", overflow="fold")
    for row in rows:
        table.add_row(
            row["tenant"],
            str(row["apex_buyer_id"]),
            row["buyer_name"],
            row["license_number"] or "-",
            row["reason"] or "",
            "\n".join(_candidate_text(c) for c in row["candidates"]) or "-",
        )
    console.print(table)


def _candidate_text(candidate: dict[str, Any]) -> str:
    differences = "; ".join(candidate.get("differences") or [])
    suffix = f" (differs: {differences})" if differences else ""
    return (
        f"{candidate['destination_id']} {candidate['name']}, "
        f"{candidate['address']}{suffix}"
    )
