"""``apexsync orders``: list pushed orders, show one, push one by hand."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db import session_scope
from shared.models import ACTIVE_RUN_STATES, OrderLink, OrderPush, Tenant
from shared.tenants import NotFound, find_tenant

orders_app = typer.Typer(
    help="Apex orders pushed to Flourish as outbound orders.", no_args_is_help=True
)
console = Console()
errors = Console(stderr=True)

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON instead of a table.")
]
TenantOption = Annotated[
    str | None,
    typer.Option("--tenant", help="Tenant id or name (needed when there are several)."),
]

#: Push states that end a push successfully.
SUCCESS_STATES = ("created", "updated", "unchanged", "cancelled")


def fail(message: str) -> typer.Exit:
    """Print ``message`` on stderr and return the exit to raise."""
    errors.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def resolve_tenant(session: Session, reference: str | None) -> Tenant:
    """Return the tenant named by id or name, or the only tenant when none is given."""
    if reference is not None:
        try:
            return find_tenant(session, reference)
        except NotFound as exc:
            raise fail(str(exc)) from None

    tenants = list(session.scalars(select(Tenant).order_by(Tenant.id).limit(2)))
    if len(tenants) == 1:
        return tenants[0]
    if not tenants:
        raise fail("No tenant exists yet. Add one with `apexsync tenants add`.")
    raise fail("There are several tenants: pass --tenant with an id or a name.")


def link_row(link: OrderLink) -> dict[str, Any]:
    return {
        "tenant_id": link.tenant_id,
        "apex_order_id": link.apex_order_id,
        "invoice_number": link.invoice_number,
        "flourish_order_id": link.flourish_order_id,
        "state": link.state,
        "reason": link.reason,
        "pushed_at": link.pushed_at.isoformat() if link.pushed_at else None,
        "updated_at": link.updated_at.isoformat() if link.updated_at else None,
    }


def push_row(push: OrderPush) -> dict[str, Any]:
    return {
        "id": push.id,
        "tenant_id": push.tenant_id,
        "apex_order_id": push.apex_order_id,
        "trigger": push.trigger,
        "state": push.state,
        "reason": push.reason,
        "flourish_order_id": push.flourish_order_id,
        "created_at": push.created_at.isoformat() if push.created_at else None,
        "finished_at": push.finished_at.isoformat() if push.finished_at else None,
    }


@orders_app.command("list")
def orders_list(
    tenant: TenantOption = None,
    state: str | None = typer.Option(
        None, help="Only links in this state: intent, pushed, cancelled or failed."
    ),
    limit: int = typer.Option(
        50, help="How many of the most recently changed to show."
    ),
    as_json: JsonOption = False,
) -> None:
    """List Apex orders and the Flourish orders made from them."""
    with session_scope() as session:
        statement = select(OrderLink).order_by(OrderLink.updated_at.desc()).limit(limit)
        if tenant is not None:
            statement = statement.where(
                OrderLink.tenant_id == resolve_tenant(session, tenant).id
            )
        if state is not None:
            statement = statement.where(OrderLink.state == state)
        rows = [link_row(link) for link in session.scalars(statement)]

    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="Orders pushed to Flourish")
    for column in (
        "tenant",
        "Apex order",
        "invoice",
        "Flourish order",
        "state",
        "pushed",
        "reason",
    ):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["tenant_id"]),
            str(row["apex_order_id"]),
            row["invoice_number"] or "-",
            row["flourish_order_id"] or "-",
            row["state"],
            (row["pushed_at"] or "-")[:19],
            (row["reason"] or "")[:100],
        )
    console.print(table)


def find_order_id(session: Session, tenant: Tenant, reference: str) -> int:
    """Return the Apex order id for an id or an invoice number already pushed."""
    if reference.isdigit():
        return int(reference)
    link = session.scalars(
        select(OrderLink)
        .where(OrderLink.tenant_id == tenant.id)
        .where(OrderLink.invoice_number == reference)
    ).first()
    if link is None:
        raise fail(
            f"No pushed order has invoice {reference!r}; "
            "pass the Apex order id instead."
        )
    return link.apex_order_id


def order_details(
    session: Session, tenant: Tenant, apex_order_id: int
) -> dict[str, Any]:
    link = session.scalars(
        select(OrderLink)
        .where(OrderLink.tenant_id == tenant.id)
        .where(OrderLink.apex_order_id == apex_order_id)
    ).first()
    pushes = session.scalars(
        select(OrderPush)
        .where(OrderPush.tenant_id == tenant.id)
        .where(OrderPush.apex_order_id == apex_order_id)
        .order_by(OrderPush.id.desc())
        .limit(20)
    )
    return {
        "tenant": tenant.name,
        "apex_order_id": apex_order_id,
        "link": link_row(link) if link else None,
        "lines": (link.pushed_payload or {}).get("order_lines", []) if link else [],
        "pushes": [push_row(push) for push in pushes],
    }


@orders_app.command("show")
def orders_show(
    order: str = typer.Argument(..., help="Apex order id, or the invoice number."),
    tenant: TenantOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one order: its Flourish order, the lines sent and every push attempt."""
    with session_scope() as session:
        owner = resolve_tenant(session, tenant)
        details = order_details(session, owner, find_order_id(session, owner, order))
    if details["link"] is None and not details["pushes"]:
        raise fail(
            f"Apex order {order} has never been pushed for tenant "
            f"{details['tenant']!r}."
        )

    if as_json:
        print(json.dumps(details, indent=2))
        return
    print_order_details(details)


def print_order_details(details: dict[str, Any]) -> None:
    link = details["link"]
    if link is not None:
        console.print(
            f"[bold]Apex order {link['apex_order_id']}[/bold] "
            f"(invoice {link['invoice_number'] or '-'}) → Flourish order "
            f"{link['flourish_order_id'] or '-'}: {link['state']}"
        )
        if link["reason"]:
            console.print(f"reason: {link['reason']}")

    if details["lines"]:
        lines = Table(title="Lines last sent to Flourish")
        for column in ("SKU", "item", "order_qty", "unit_price"):
            lines.add_column(column)
        for line in details["lines"]:
            lines.add_row(
                line["sku"],
                str(line["item_id"]),
                str(line["order_qty"]),
                str(line["unit_price"]),
            )
        console.print(lines)

    pushes = Table(title="Push attempts, newest first")
    for column in ("id", "trigger", "state", "created", "finished", "reason"):
        pushes.add_column(column)
    for push in details["pushes"]:
        pushes.add_row(
            str(push["id"]),
            push["trigger"],
            push["state"],
            (push["created_at"] or "-")[:19],
            (push["finished_at"] or "-")[:19],
            push["reason"] or "",
        )
    console.print(pushes)


@orders_app.command("push")
def orders_push(
    order: str = typer.Argument(..., help="Apex order id, or the invoice number."),
    tenant: TenantOption = None,
    wait: bool = typer.Option(False, "--wait", help="Wait until the push ends."),
    timeout: float = typer.Option(300, help="Seconds to wait with --wait."),
    as_json: JsonOption = False,
) -> None:
    """Push one Apex order to Flourish now (create, update or cancel its order).

    Exits with status 1 when the push is refused or fails (with --wait).
    """
    from tasks.orders import enqueue_push

    with session_scope() as session:
        owner = resolve_tenant(session, tenant)
        apex_order_id = find_order_id(session, owner, order)
        push = enqueue_push(session, owner.id, apex_order_id, "manual")
        push_id = push.id

    if not wait:
        if as_json:
            print(json.dumps({"push_id": push_id}))
        else:
            console.print(f"Push {push_id} of Apex order {apex_order_id} queued.")
        return

    result = wait_for_push(push_id, timeout)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        target = result["flourish_order_id"]
        suffix = f" → Flourish order {target}" if target else ""
        console.print(
            f"Push {push_id} of Apex order {apex_order_id}: {result['state']}{suffix}"
        )
        if result["reason"]:
            console.print(result["reason"])
    if result["state"] not in SUCCESS_STATES:
        raise typer.Exit(1)


def wait_for_push(push_id: int, timeout: float) -> dict[str, Any]:
    """Show a spinner until the push ends; return its row, or fail on timeout."""
    deadline = time.monotonic() + timeout
    with errors.status(f"Pushing (push {push_id})"):
        while time.monotonic() < deadline:
            with session_scope() as session:
                push = session.get(OrderPush, push_id)
                row = push_row(push) if push else None
            if row is None:
                raise fail(f"Push {push_id} disappeared from the database.")
            if row["state"] not in ACTIVE_RUN_STATES:
                return row
            time.sleep(0.5)
    raise fail(
        f"Push {push_id} did not end within {timeout:.0f} s. Is a worker consuming the "
        "orders queue? See `apexsync orders show`."
    )
