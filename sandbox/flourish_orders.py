"""Flourish outbound (sales) orders: list, read, create, update, cancel, allocate.

Rules from the Flourish API documentation:

- ``sales_rep`` is required when the facility's
  ``sales_rep_required_for_outbound`` is true, except on a cancel.
- An order can be updated only while nothing is allocated.
- The only status change is ``"order_status": "Cancelled"``. It fails once the
  order is Shipped, Completed or Cancelled.
- Create and update return HTTP 200 with the order.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from sandbox.clock import flourish_time, to_decimal, utcnow_seconds
from sandbox.errors import flourish_error
from sandbox.flourish_common import (
    FlourishCaller,
    cached,
    facility_scope,
    in_window,
    json_object,
    listing,
    multi,
    optional_facility_scope,
    success,
    time_filter,
)
from sandbox.outbound_parts import (
    API_USER,
    build_lines,
    check_party_shapes,
    destination_snapshot,
    extras,
    rep_snapshot,
    resolve_destination,
    resolve_sales_rep,
)
from sandbox.state import FlourishCompany, Record, SandboxState, public

router = APIRouter(prefix="/flourish/external/api")

FINAL_STATUSES = ("Shipped", "Completed", "Cancelled")
UPDATABLE_FIELDS = (
    "original_order_id", "order_timestamp", "invoice_date", "requested_delivery_date",
    "pretax_discounts", "ref_field_1", "ref_field_2", "ref_field_3", "ref_field_4",
    "ref_field_5",
)  # fmt: skip


def render_order(order: Record) -> Record:
    body = public(order)
    body["order_lines"] = [public(line) for line in order["order_lines"]]
    return body


@router.get("/v1/outbound-orders")
def list_orders(
    request: Request, caller: FlourishCaller = Depends(optional_facility_scope)
) -> Response:
    created = (
        time_filter(request, "created_timestamp_start"),
        time_filter(request, "created_timestamp_end"),
    )
    updated = (
        time_filter(request, "last_updated_timestamp_start"),
        time_filter(request, "last_updated_timestamp_end"),
    )
    statuses = {s.lower() for s in multi(request, "order_status")}
    order_ids = set(multi(request, "order_id"))
    facility_id = caller.facility["id"] if caller.facility else None

    def build() -> list[Record]:
        return [
            o
            for o in caller.company.outbound_orders.values()
            if (facility_id is None or o["_facility_id"] == facility_id)
            and in_window(o["_created"], *created)
            and in_window(o["_updated"], *updated)
            and (not statuses or o["order_status"].lower() in statuses)
            and (not order_ids or o["id"] in order_ids)
        ]

    rows = cached(caller, request, "outbound_orders", facility_id or "company", build)
    return listing(request, caller, rows, render_order)


@router.get("/v1/outbound-orders/{order_id}")
def get_order(
    order_id: str, caller: FlourishCaller = Depends(optional_facility_scope)
) -> Response:
    with caller.state.lock:
        return success(render_order(_find_order(caller, order_id)))


def _find_order(caller: FlourishCaller, order_id: str) -> Record:
    order = caller.company.outbound_orders.get(order_id)
    wrong_facility = (
        caller.facility is not None
        and order is not None
        and order["_facility_id"] != caller.facility["id"]
    )
    if order is None or wrong_facility:
        raise flourish_error(404, f"Outbound order {order_id} was not found.")
    return order


@router.post("/v1/outbound-orders")
async def create_order(
    request: Request, caller: FlourishCaller = Depends(facility_scope)
) -> Response:
    body = await json_object(request)
    with caller.state.lock:
        order = insert_order(caller.state, caller.company, caller.facility or {}, body)
        return success(render_order(order))


def insert_order(
    state: SandboxState, company: FlourishCompany, facility: Record,
    body: dict[str, Any],
) -> Record:  # fmt: skip
    """Validate a create body completely, then store the order (under the lock)."""
    check_party_shapes(body)
    _require_sales_rep(facility, body)
    if not isinstance(body.get("destination"), dict):
        raise flourish_error(400, "destination is required.")
    lines = build_lines(state, company, body.get("order_lines"))
    extra = {
        name: extras(state, body, name) for name in ("notes", "charges", "discounts")
    }

    parties = _parties(state, company, body)
    order = _new_order(state, facility, body)
    order.update(parties, order_lines=lines, **extra)
    _set_totals(order)
    company.outbound_orders[order["id"]] = order
    company.bump("outbound_orders")
    return order


def _parties(
    state: SandboxState, company: FlourishCompany, body: dict[str, Any]
) -> Record:
    """Resolve (or create) the destination, distributor and sales rep of a body."""
    destination = resolve_destination(
        state, company, body["destination"], "destination"
    )
    distributor = None
    if isinstance(body.get("distributor"), dict):
        distributor = resolve_destination(
            state, company, body["distributor"], "distributor"
        )
    rep = None
    if body.get("sales_rep"):
        rep = resolve_sales_rep(state, company, body["sales_rep"])
    return {
        "destination": destination_snapshot(destination),
        "distributor": destination_snapshot(distributor),
        "sales_rep": rep_snapshot(rep),
    }


def _require_sales_rep(facility: Record, body: dict[str, Any]) -> None:
    if facility.get("sales_rep_required_for_outbound") and not body.get("sales_rep"):
        message = (
            f"sales_rep is required: facility {facility['facility_name']} requires "
            "a sales rep on outbound orders."
        )
        raise flourish_error(400, message)


def _new_order(state: SandboxState, facility: Record, body: dict[str, Any]) -> Record:
    now = utcnow_seconds()
    original = body.get("original_order_id")
    return {
        "id": f"{state.ids.next('flourish_order'):08d}",
        "original_order_id": None if original is None else str(original),
        "shipment_id": None,
        "order_timestamp": body.get("order_timestamp")
        or now.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "excise_tax_rate": None,
        "total_paid": 0,
        "delivery_fee": 0,
        "shipped_timestamp": None,
        "delivered_timestamp": None,
        "requested_delivery_date": body.get("requested_delivery_date") or "",
        "last_updated_timestamp": flourish_time(now),
        "last_updated_by": API_USER,
        "created_by": API_USER,
        "created_timestamp": flourish_time(now),
        "invoice_date": body.get("invoice_date") or "",
        "total_refund": 0,
        **{f"ref_field_{n}": body.get(f"ref_field_{n}") for n in range(1, 6)},
        "is_approved": False,
        "pretax_discounts": bool(body.get("pretax_discounts", False)),
        "total_returns": 0,
        "order_status": "Created",
        "payment_status": "Awaiting Payment",
        "origin_type": "Flourish",
        "tax_type": None,
        "tax_payment_direction": None,
        "payment_term": None,
        "origin_facility_id": facility["id"],
        "origin_facility": {
            "id": facility["id"],
            "facility_name": facility["facility_name"],
        },
        "_facility_id": facility["id"],
        "_created": now,
        "_updated": now,
    }


def _set_totals(order: Record) -> None:
    def total(entries: list[Record], field: str) -> float:
        return round(sum(float(to_decimal(e.get(field)) or 0) for e in entries), 2)

    sub_total = total(order["order_lines"], "line_total_price")
    charges, discounts = (
        total(order["charges"], "amount"),
        total(order["discounts"], "amount"),
    )
    order.update(
        sub_total_price=sub_total, taxes=0,
        total_charges=charges, total_discounts=discounts,
        total_price=round(sub_total + charges - discounts, 2),
    )  # fmt: skip


def touch(company: FlourishCompany, order: Record) -> None:
    now = utcnow_seconds()
    order.update(last_updated_timestamp=flourish_time(now), _updated=now)
    company.bump("outbound_orders")


def is_allocated(order: Record) -> bool:
    if order["order_status"] in ("Allocated", "Partially Allocated"):
        return True
    return any(
        (to_decimal(line["allocated_qty"]) or 0) > 0 for line in order["order_lines"]
    )


@router.put("/v1/outbound-orders/{order_id}")
async def update_order(
    order_id: str, request: Request, caller: FlourishCaller = Depends(facility_scope)
) -> Response:
    body = await json_object(request)
    with caller.state.lock:
        order = _find_order(caller, order_id)
        if body.get("order_status") == "Cancelled":
            cancel_order(caller.company, order)
        else:
            change_order(
                caller.state, caller.company, caller.facility or {}, order, body
            )
        return success(render_order(order))


def cancel_order(company: FlourishCompany, order: Record) -> None:
    if order["order_status"] in FINAL_STATUSES:
        message = (
            f"Order {order['id']} cannot be cancelled because it is already "
            f"{order['order_status']}."
        )
        raise flourish_error(400, message)
    _forbid_allocated(order)
    order["order_status"] = "Cancelled"
    touch(company, order)


def _forbid_allocated(order: Record) -> None:
    if is_allocated(order):
        order_id = order["id"]
        message = f"Order {order_id} cannot be updated: items are already allocated."
        raise flourish_error(400, message)


def change_order(
    state: SandboxState, company: FlourishCompany, facility: Record, order: Record,
    body: dict[str, Any],
) -> None:  # fmt: skip
    """Apply a non-cancel PUT: same parties, new lines and fields."""
    status = body.get("order_status")
    if status not in (None, order["order_status"]):
        raise flourish_error(
            400, 'The only supported status change is "order_status": "Cancelled".'
        )
    if order["order_status"] in FINAL_STATUSES:
        raise flourish_error(
            400,
            f"Order {order['id']} cannot be updated because it is "
            f"{order['order_status']}.",
        )
    _forbid_allocated(order)
    check_party_shapes(body)
    _require_sales_rep(facility, body)
    _forbid_party_changes(order, body)

    if "order_lines" in body:
        order["order_lines"] = build_lines(state, company, body["order_lines"])
    for name in ("notes", "charges", "discounts"):
        if name in body:
            order[name] = extras(state, body, name)
    for field in UPDATABLE_FIELDS:
        if field in body:
            order[field] = body[field]
    for field in ("invoice_date", "requested_delivery_date"):
        # Flourish returns an empty string, not null, for a missing date.
        order[field] = order[field] or ""
    _set_totals(order)
    touch(company, order)


def _forbid_party_changes(order: Record, body: dict[str, Any]) -> None:
    """Sub-objects cannot change on an existing order; resending the same id is fine."""
    for name in ("destination", "distributor", "sales_rep"):
        party = body.get(name)
        if not party:
            continue
        current = order.get(name) or {}
        if "id" not in party or str(party["id"]) != str(current.get("id")):
            raise flourish_error(
                400, f"{name} cannot be modified on an existing order."
            )
