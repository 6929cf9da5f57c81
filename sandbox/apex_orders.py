"""Apex shipping-order routes: list, read and the status-only update."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from sandbox.apex_common import (
    HEAVY_ITEM_CREDITS,
    ApexCaller,
    TimeWindow,
    ability,
    cached_rows,
    find,
    flag,
    int_list,
    json_body,
    list_response,
)
from sandbox.clock import to_decimal
from sandbox.errors import ApiError, apex_required
from sandbox.order_book import set_status, status_by_id
from sandbox.responses import respond
from sandbox.state import Record, public

router = APIRouter(prefix="/apex/api")


def render_order(record: Record, with_items: bool) -> Record:
    body = public(record)
    if with_items:
        body["items"] = [dict(line) for line in record["_items"]]
    return body


def _order_filter(request: Request) -> Any:
    window = TimeWindow.from_request(request, updated_required=True)
    ids = set(int_list(request, "ids"))
    buyer_ids = set(int_list(request, "buyer_ids"))
    status_ids = set(
        int_list(request, "order_status_ids") + int_list(request, "order_status_id")
    )
    cancelled = flag(request, "cancelled")
    invoice = request.query_params.get("invoice_number")

    def matches(order: Record) -> bool:
        return (
            window.matches(order)
            and (not ids or order["id"] in ids)
            and (not buyer_ids or order["buyer_id"] in buyer_ids)
            and (not status_ids or order["order_status_id"] in status_ids)
            and (cancelled is None or order["cancelled"] == cancelled)
            and (not invoice or order["invoice_number"] == invoice)
        )

    return matches


@router.get("/v1/shipping-orders")
def list_orders(
    request: Request, caller: ApexCaller = ability("view:shipping-orders")
) -> Response:
    matches = _order_filter(request)
    with_items = bool(flag(request, "with_items"))

    def build() -> list[Record]:
        return sorted(
            (o for o in caller.company.orders.values() if matches(o)),
            key=lambda o: o["id"],
        )

    rows = cached_rows(caller, request, "orders", build)

    def render(record: Record) -> Record:
        return render_order(record, with_items)

    return list_response(request, caller, "orders", rows, render, HEAVY_ITEM_CREDITS)


@router.get("/v1/shipping-orders/{order_id}")
def get_order(
    order_id: str, caller: ApexCaller = ability("view:shipping-orders")
) -> Response:
    with caller.state.lock:
        record = find(caller.company.orders, order_id, "Order not found")
        body = render_order(record, with_items=True)
    caller.charge(1, HEAVY_ITEM_CREDITS, len(body["items"]))
    return respond({"order": body})


@router.api_route("/v1/shipping-orders/{order_id}", methods=["PUT", "PATCH"])
async def update_order_status(
    order_id: str,
    request: Request,
    caller: ApexCaller = ability("update:shipping-orders"),
) -> Response:
    """Change the status, the only field this endpoint supports."""
    body = await json_body(request)
    if body.get("order_status_id") in (None, ""):
        raise apex_required("order_status_id")

    with caller.state.lock:
        order = find(caller.company.orders, order_id, "Order not found")
        status_id = to_decimal(body["order_status_id"])
        flow_id = order["deal_flow_id"]
        status = status_by_id(caller.company, flow_id, int(status_id or 0))
        if status is None:
            message = "The order status does not belong to this order's deal flow."
            raise ApiError(400, {"error": message})
        set_status(caller.company, order, status)
        rendered = render_order(order, with_items=True)
    caller.charge(1, HEAVY_ITEM_CREDITS)
    return respond({"order": rendered})
