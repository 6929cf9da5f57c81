"""Flourish read routes: facilities, packages, lab results, items, customers, reps."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from sandbox.errors import flourish_error
from sandbox.flourish_common import (
    FlourishCaller,
    cached,
    company_scope,
    facility_scope,
    in_window,
    listing,
    multi,
    success,
    time_filter,
)
from sandbox.state import Record, public

router = APIRouter(prefix="/flourish/external/api")


def _one(
    caller: FlourishCaller, records: dict[str, Record], key: str, label: str
) -> Response:
    """Return one record in the success envelope, or 404 naming the missing id."""
    with caller.state.lock:
        record = records.get(key)
        body = None if record is None else public(record)
    if body is None:
        raise flourish_error(404, f"{label} {key} was not found.")
    return success(body)


@router.get("/v1/facilities")
def list_facilities(
    request: Request, caller: FlourishCaller = Depends(company_scope)
) -> Response:
    facility_type = request.query_params.get("facility_type")
    active = request.query_params.get("active")
    with caller.state.lock:
        rows = [
            f
            for f in caller.company.facilities.values()
            if (not facility_type or f["facility_type"] == facility_type)
            and (active is None or str(f["active"]).lower() == active.lower())
        ]
    return listing(request, caller, rows)


@router.get("/v1/facilities/{facility_id}")
def get_facility(
    facility_id: str, caller: FlourishCaller = Depends(company_scope)
) -> Response:
    return _one(caller, caller.company.facilities, facility_id, "Facility")


@router.get("/v1/packages")
def list_packages(
    request: Request, caller: FlourishCaller = Depends(facility_scope)
) -> Response:
    package_ids = set(multi(request, "package_id"))
    statuses = {s.lower() for s in multi(request, "package_status")}
    start = time_filter(request, "last_updated_timestamp_start")
    end = time_filter(request, "last_updated_timestamp_end")
    packages = caller.company.packages.get(caller.facility_id, {})

    def build() -> list[Record]:
        if package_ids:
            candidates = [packages[tag] for tag in package_ids if tag in packages]
            candidates.sort(key=lambda p: p["_seq"])
        else:
            candidates = list(packages.values())
        return [
            p
            for p in candidates
            if (not statuses or p["package_status"].lower() in statuses)
            and in_window(p["_updated"], start, end)
        ]

    rows = cached(caller, request, "packages", caller.facility_id, build)
    return listing(request, caller, rows)


@router.get("/v1/packages/{package_id}")
def get_package(
    package_id: str, caller: FlourishCaller = Depends(facility_scope)
) -> Response:
    with caller.state.lock:
        package = caller.company.packages.get(caller.facility_id, {}).get(package_id)
        if package is None:
            raise flourish_error(404, f"Package {package_id} was not found.")
        # This endpoint returns the package as a one-element array.
        return success([public(package)])


@router.get("/v2/lab-test-results/{result_id}")
def get_lab_result(
    result_id: str, caller: FlourishCaller = Depends(company_scope)
) -> Response:
    return _one(
        caller, caller.company.lab_results, result_id.strip(), "Lab test result"
    )


@router.get("/v1/items")
def list_items(
    request: Request, caller: FlourishCaller = Depends(company_scope)
) -> Response:
    skus = set(multi(request, "sku"))
    item_ids = set(multi(request, "item_id"))
    name = (request.query_params.get("item_name") or "").lower()

    def build() -> list[Record]:
        return [
            item
            for item in caller.company.items.values()
            if (not skus or item["sku"] in skus)
            and (not item_ids or item["id"] in item_ids)
            and (not name or name in item["item_name"].lower())
        ]

    rows = cached(caller, request, "items", "company", build)
    return listing(request, caller, rows)


@router.get("/v1/items/{item_id}")
def get_item(item_id: str, caller: FlourishCaller = Depends(company_scope)) -> Response:
    return _one(caller, caller.company.items, item_id, "Item")


@router.get("/v1/destinations")
def list_destinations(
    request: Request, caller: FlourishCaller = Depends(company_scope)
) -> Response:
    # NOTE: the Flourish docs do not say how these filters compare. The sandbox
    # matches exactly but ignores case, so spaces and dashes must match.
    licenses = {value.lower() for value in multi(request, "license_number")}
    names = {value.lower() for value in multi(request, "facility_name")}
    search = (request.query_params.get("search") or "").lower()

    def matches(d: Record) -> bool:
        text = " ".join(
            str(d.get(k) or "") for k in ("name", "alias", "license_number")
        )
        return (
            (not licenses or (d["license_number"] or "").lower() in licenses)
            and (not names or d["name"].lower() in names)
            and (not search or search in text.lower())
        )

    def build() -> list[Record]:
        return [d for d in caller.company.destinations.values() if matches(d)]

    rows = cached(caller, request, "destinations", "company", build)
    return listing(request, caller, rows)


@router.get("/v1/destinations/{destination_id}")
def get_destination(
    destination_id: str, caller: FlourishCaller = Depends(company_scope)
) -> Response:
    return _one(caller, caller.company.destinations, destination_id, "Destination")


@router.get("/v1/sales-reps")
def list_sales_reps(
    request: Request, caller: FlourishCaller = Depends(facility_scope)
) -> Response:
    with caller.state.lock:
        rows = [
            rep
            for rep in caller.company.sales_reps.values()
            if rep["facility_id"] in (None, caller.facility_id)
        ]
    return listing(request, caller, rows)
