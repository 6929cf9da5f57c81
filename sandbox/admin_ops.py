"""State changes behind the admin hooks: orders, allocation, packages, products.

These play the part of people using the Apex and Flourish web apps: a buyer
placing or changing an order, a warehouse allocating packages, a manager
editing a package. All functions expect the state lock.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sandbox.apex_batches import render_batch
from sandbox.clock import flourish_time, to_decimal, utcnow, utcnow_seconds
from sandbox.flourish_orders import FINAL_STATUSES, touch
from sandbox.order_book import (
    ORDER_FIELDS_SETTABLE,
    OrderError,
    build_line,
    replace_lines,
    set_status,
    status_by_id,
    status_for_stage,
    touch_order,
)
from sandbox.seed_apex import build_product, prices
from sandbox.state import ApexCompany, FlourishCompany, Record, SandboxState, public

API_USER = "warehouse@sandbox.example"


def find_apex_order(state: SandboxState, order_id: int) -> tuple[ApexCompany, Record]:
    for company in state.apex_companies.values():
        if order_id in company.orders:
            return company, company.orders[order_id]
    raise KeyError(f"Apex order {order_id} was not found.")


def patch_apex_order(
    state: SandboxState, company: ApexCompany, order: Record, body: dict[str, Any]
) -> None:
    """Change an order as the Apex web app would: stage, lines, buyer, fields."""
    flow_id = order["deal_flow_id"]
    if body.get("stage"):
        set_status(company, order, status_for_stage(company, flow_id, body["stage"]))
    if body.get("order_status_id") is not None:
        status = status_by_id(company, flow_id, body["order_status_id"])
        if status is None:
            raise OrderError(
                f"Status {body['order_status_id']} is not in deal flow {flow_id}."
            )
        set_status(company, order, status)
    if "cancelled" in body:
        order["cancelled"] = bool(body["cancelled"])
    if body.get("buyer_id") is not None:
        _change_buyer(company, order, int(body["buyer_id"]))
    if body.get("items") is not None:
        replace_lines(company, order, _lines(state, company, body["items"]))
    for field in ORDER_FIELDS_SETTABLE:
        if field in body:
            order[field] = body[field]
    touch_order(company, order)


def _change_buyer(company: ApexCompany, order: Record, buyer_id: int) -> None:
    buyer = company.buyers.get(buyer_id)
    if buyer is None:
        raise OrderError(f"Buyer {buyer_id} does not belong to {company.name}.")
    order.update(
        buyer_id=buyer["id"],
        buyer={"id": buyer["id"], "name": buyer["name"], "buyer_group": None},
        buyer_state_license=buyer["state_license"],
        ship_name=buyer["name"], ship_line_one=buyer["line_one"],
        ship_line_two=buyer["line_two"], ship_city=buyer["city"], ship_zip=buyer["zip"],
    )  # fmt: skip


def _lines(state: SandboxState, company: ApexCompany, specs: list[Any]) -> list[Record]:
    lines = []
    for index, spec in enumerate(specs):
        batch = company.batches.get(int(spec.get("batch_id", 0)))
        quantity = to_decimal(spec.get("order_quantity"))
        if batch is None:
            raise OrderError(
                f"items[{index}].batch_id {spec.get('batch_id')} is not a batch "
                f"of {company.name}."
            )
        if quantity is None or quantity <= 0:
            raise OrderError(
                f"items[{index}].order_quantity must be a positive number."
            )
        price = to_decimal(spec.get("order_price"))
        price_cents = None if price is None else int(price * 100)
        lines.append(
            build_line(
                state, company, batch, quantity, spec.get("order_unit"), price_cents
            )
        )
    return lines


def create_product(
    state: SandboxState, company: ApexCompany, body: dict[str, Any]
) -> Record:
    unit = body.get("unit", "Pound")
    if unit not in ("Pound", "Gram", "Unit", "Ounce", "Kilogram", "Milligram"):
        raise OrderError(
            "unit must be Pound, Gram, Unit, Ounce, Kilogram or Milligram, "
            f"got {unit!r}."
        )
    if not body.get("name"):
        raise OrderError("name is required.")
    # A product made through the admin hook is new, so it carries the real
    # time and shows up in incremental reads after the seed.
    product = build_product(
        state, company, body["name"], body.get("product_sku"), unit, created=utcnow()
    )
    if body.get("listing_price_raw") is not None:
        product.update(prices(int(body["listing_price_raw"])))
    return product


def dump_batches(state: SandboxState) -> list[Record]:
    batches = []
    for company in state.apex_companies.values():
        for batch in company.batches.values():
            batches.append(
                render_batch(batch, full=True) | {"company_name": company.name}
            )
    return batches


def find_outbound_order(
    state: SandboxState, order_id: str
) -> tuple[FlourishCompany, Record]:
    for company in state.flourish_companies.values():
        if order_id in company.outbound_orders:
            return company, company.outbound_orders[order_id]
    raise KeyError(f"Outbound order {order_id} was not found.")


def allocate(company: FlourishCompany, order: Record, fraction: Decimal) -> None:
    """Allocate each line from the facility's packages of the same item."""
    if order["order_status"] in FINAL_STATUSES:
        raise OrderError(
            f"Order {order['id']} is {order['order_status']} and cannot be allocated."
        )
    packages = company.packages.get(order["_facility_id"], {})
    for line in order["order_lines"]:
        needed = Decimal(str(line["order_qty"])) * fraction
        details = _take_packages(company, packages, line["item_id"], needed)
        allocated = sum((Decimal(str(d["qty"])) for d in details), Decimal(0))
        if allocated < needed:
            # NOTE: the sandbox books a shortfall against no package, so the hook
            # always allocates what it is asked; Flourish would allocate less.
            details.append(_detail(None, None, needed - allocated))
        line.update(allocated_qty=float(needed), order_line_dtls=details)
        line["order_line_status"] = "Allocated"
    order["order_status"] = "Allocated" if fraction >= 1 else "Partially Allocated"
    touch(company, order)


def _take_packages(
    company: FlourishCompany, packages: dict[str, Record], item_id: str, needed: Decimal
) -> list[Record]:
    details = []
    for package in packages.values():
        if needed <= 0:
            break
        available = to_decimal(package["available_qty"])
        if (
            package["item_id"] != item_id
            or package["is_locked"]
            or not available
            or available <= 0
        ):
            continue
        taken = min(available, needed)
        needed -= taken
        non_available = to_decimal(package["non_available_qty"]) or Decimal(0)
        change_package(company, package, {
            "available_qty": float(available - taken),
            "non_available_qty": float(non_available + taken),
            "package_status": "Assigned to order",
        })  # fmt: skip
        details.append(_detail(package["package_id"], package["lot_number"], taken))
    return details


def _detail(package_id: str | None, lot_number: str | None, qty: Decimal) -> Record:
    now = flourish_time(utcnow_seconds())
    return {
        "package_id": package_id,
        "lot_number": lot_number,
        "qty": float(qty),
        "returned": False,
        "last_updated_by": API_USER,
        "last_updated_timestamp": now,
        "created_by": API_USER,
        "created_timestamp": now,
    }


def set_outbound_status(company: FlourishCompany, order: Record, status: str) -> None:
    order["order_status"] = status
    if status == "Shipped":
        order["shipped_timestamp"] = flourish_time(utcnow_seconds())
    touch(company, order)


def change_package(
    company: FlourishCompany, package: Record, changes: dict[str, Any]
) -> Record:
    """Apply field changes to a package and bump its last_updated_timestamp."""
    for field, value in changes.items():
        if field.startswith("_") or field == "package_id":
            raise OrderError(f"{field} cannot be changed.")
        package[field] = value
    now = utcnow_seconds()
    package.update(
        last_updated_timestamp=flourish_time(now),
        _updated=now,
        last_updated_by=API_USER,
    )
    company.bump("packages")
    return public(package)
