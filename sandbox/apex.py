"""Apex read routes: welcome, usage, company, taxonomies, products, buyers, flows."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from sandbox.apex_batches import render_batch
from sandbox.apex_common import (
    HEAVY_ITEM_CREDITS,
    ApexCaller,
    TimeWindow,
    ability,
    authenticate,
    cached_rows,
    data_response,
    find,
    flag,
    int_list,
    list_response,
)
from sandbox.catalog import CALIFORNIA
from sandbox.clock import utcnow
from sandbox.responses import respond
from sandbox.state import Record, public

router = APIRouter(prefix="/apex/api")

API_VERSION = "1.0.0"


@router.get("/v1/welcome")
def welcome(caller: ApexCaller = Depends(authenticate)) -> Response:
    body = {
        "name": caller.company.name,
        "api-version": API_VERSION,
        "access": list(caller.token.abilities),
    }
    return respond(body)


@router.get("/v1/usage")
def usage(caller: ApexCaller = Depends(authenticate)) -> Response:
    counters = caller.company.usage
    with caller.state.lock:
        data = {
            "month": utcnow().strftime("%Y-%m"),
            "credits_used": counters.credits_used,
            "monthly_credit_limit": counters.monthly_limit,
            "request_count": counters.request_count,
            "top_level_resources_returned": counters.top_level_resources_returned,
            "billable_nested_resource_count": counters.billable_nested_resource_count,
            "throttled_request_count": counters.throttled_request_count,
            "error_4xx_count": counters.error_4xx_count,
            "error_5xx_count": counters.error_5xx_count,
        }
    return respond({"data": data})


@router.get("/v1/company")
def company(caller: ApexCaller = ability("view:company")) -> Response:
    caller.charge(1)
    return respond({"company": public(caller.company.record)})


@router.get("/v1/operations")
def operations(caller: ApexCaller = ability("view:company")) -> Response:
    rows = [public(op) for op in caller.company.operations.values()]
    return data_response(caller, rows)


@router.get("/v1/operations/{operation_id}")
def operation(
    operation_id: str, caller: ApexCaller = ability("view:company")
) -> Response:
    record = find(caller.company.operations, operation_id, "Operation not found")
    caller.charge(1)
    return respond({"data": public(record)})


@router.get("/v1/unit-measurements")
def unit_measurements(caller: ApexCaller = ability("view:products")) -> Response:
    return data_response(caller, [dict(u) for u in caller.company.units.values()])


@router.get("/v1/product-categories")
def product_categories(caller: ApexCaller = ability("view:products")) -> Response:
    return data_response(caller, [dict(c) for c in caller.company.categories.values()])


@router.get("/v1/cannabinoids")
def cannabinoids(caller: ApexCaller = ability("view:products")) -> Response:
    rows = [dict(c) for c in caller.company.cannabinoids.values()]
    caller.charge(len(rows))
    # The list key is singular although it contains an array (Apex OpenAPI document).
    return respond({"cannabinoid": rows})


@router.get("/v1/terpenes")
def terpenes(caller: ApexCaller = ability("view:products")) -> Response:
    return data_response(caller, [dict(t) for t in caller.company.terpenes.values()])


@router.get("/v1/products")
def products(
    request: Request, caller: ApexCaller = ability("view:products")
) -> Response:
    window = TimeWindow.from_request(request, updated_required=True)
    ids = set(int_list(request, "ids"))
    archived = flag(request, "archived")

    def build() -> list[Record]:
        return [
            p
            for p in caller.company.products.values()
            if window.matches(p)
            and (not ids or p["id"] in ids)
            and (archived is None or p["archived"] == archived)
        ]

    rows = cached_rows(caller, request, "products", build)
    return list_response(request, caller, "products", rows, public, HEAVY_ITEM_CREDITS)


@router.get("/v1/products/{product_id}")
def product(product_id: str, caller: ApexCaller = ability("view:products")) -> Response:
    with caller.state.lock:
        record = find(caller.company.products, product_id, "Product not found")
        body = public(record)
        if caller.can("view:batches"):
            body["batches"] = [
                render_batch(b, full=True)
                for b in caller.company.batches.values()
                if b["product_id"] == record["id"]
            ]
    caller.charge(1, HEAVY_ITEM_CREDITS)
    return respond({"product": body})


def render_buyer(record: Record, with_state: bool) -> Record:
    body = public(record)
    if with_state:
        body["state"] = (
            dict(CALIFORNIA) if record["state_id"] == CALIFORNIA["id"] else None
        )
    return body


@router.get("/v1/buyers")
def buyers(request: Request, caller: ApexCaller = ability("view:buyers")) -> Response:
    window = TimeWindow.from_request(request, updated_required=True)
    ids = set(int_list(request, "ids"))
    disabled = flag(request, "disabled")
    with_state = bool(flag(request, "with_state"))

    def build() -> list[Record]:
        return [
            b
            for b in caller.company.buyers.values()
            if window.matches(b)
            and (not ids or b["id"] in ids)
            and (disabled is None or b["disabled"] == disabled)
        ]

    rows = cached_rows(caller, request, "buyers", build)

    def render(record: Record) -> Record:
        return render_buyer(record, with_state)

    return list_response(request, caller, "buyers", rows, render, HEAVY_ITEM_CREDITS)


@router.get("/v1/buyers/{buyer_id}")
def buyer(
    buyer_id: str, request: Request, caller: ApexCaller = ability("view:buyers")
) -> Response:
    with caller.state.lock:
        record = find(caller.company.buyers, buyer_id, "Buyer not found")
        body = render_buyer(record, bool(flag(request, "with_state")))
    caller.charge(1, HEAVY_ITEM_CREDITS)
    return respond({"buyer": body})


def render_deal_flow(record: Record, with_statuses: bool) -> Record:
    body = public(record)
    if with_statuses:
        body["order_statuses"] = [dict(s) for s in record["_statuses"]]
    return body


@router.get("/v1/deal-flows")
def deal_flows(
    request: Request, caller: ApexCaller = ability("view:dealflows")
) -> Response:
    rows = list(caller.company.deal_flows.values())
    with_statuses = bool(flag(request, "with_order_statuses"))

    def render(record: Record) -> Record:
        return render_deal_flow(record, with_statuses)

    return list_response(request, caller, "dealflows", rows, render)


@router.get("/v1/deal-flows/{deal_flow_id}")
def deal_flow(
    deal_flow_id: str, request: Request, caller: ApexCaller = ability("view:dealflows")
) -> Response:
    record = find(caller.company.deal_flows, deal_flow_id, "record not found")
    caller.charge(1)
    return respond(
        {
            "dealflow": render_deal_flow(
                record, bool(flag(request, "with_order_statuses"))
            )
        }
    )
