"""Apex shipping orders: building them from batches, stock, status and splits.

Placing an order takes its ``inventory_quantity`` off each batch, and
changing the lines returns the old quantities first. All functions expect the
state lock.

NOTE: Apex documents the deduction only for API carts. When storefront orders
deduct stock, and whether cancelling restores it, is not documented, so the
sandbox deducts at placement and restores nothing on cancellation.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from typing import Any

from sandbox.apex_batches import stamp_batch
from sandbox.clock import apex_time, day, money, to_decimal, utcnow
from sandbox.state import ApexCompany, Record, SandboxState

ORDER_FIELDS_SETTABLE = (
    "delivery_date", "buyer_note", "invoice_note", "shipping_method", "manifest_number",
    "ship_name", "ship_line_one", "ship_line_two", "ship_city", "ship_state",
    "ship_zip",
    "buyer_contact_name", "buyer_contact_phone", "buyer_contact_email",
)  # fmt: skip


class OrderError(ValueError):
    """A request to change an order that cannot be applied."""


def statuses_of(company: ApexCompany, flow_id: int) -> list[Record]:
    return list(company.deal_flows[flow_id]["_statuses"])


def status_for_stage(company: ApexCompany, flow_id: int, stage: str) -> Record:
    """Return the first status (by position) under a parent stage of a deal flow."""
    matches = [
        s for s in statuses_of(company, flow_id) if s["parent_status"]["name"] == stage
    ]
    if not matches:
        raise OrderError(
            f"Deal flow {flow_id} has no status under the stage {stage!r}."
        )
    return min(matches, key=lambda s: s["position"])


def status_by_id(company: ApexCompany, flow_id: int, status_id: Any) -> Record | None:
    return next(
        (s for s in statuses_of(company, flow_id) if s["id"] == status_id), None
    )


def new_order(
    state: SandboxState, company: ApexCompany, buyer: Record, operation_id: int,
    flow_id: int, order_id: int | None = None,
) -> Record:  # fmt: skip
    """Create an order header (no lines yet) in the flow's first Submitted status."""
    order_id = order_id or state.ids.next("apex_order")
    now = utcnow()
    status = status_for_stage(company, flow_id, "Submitted")
    order: Record = {
        "id": order_id,
        "uuid": f"order-{company.id}-{order_id}",
        "invoice_number": f"{company.prefix}-{order_id % 100000}",
        "order_status_id": status["id"],
        "order_status": dict(status),
        "deal_flow_id": flow_id,
        "cancelled": False,
        "backorder": False,
        "backorder_status": None,
        "split_from_order_id": None,
        "split_chain": None,
        "order_date": day(now),
        "delivery_date": None,
        "due_date": None,
        "created_by": "storefront",
        "seller_company_id": company.id,
        "operation_id": operation_id,
        "shipping_method": "Delivery",
        "ship_tracking_number": None,
        "manifest_number": None,
        "invoice_note": None,
        "buyer_note": None,
        "sales_reps": [],
        "notes": [],
        "payment_status": "Unpaid",
        "_items": [],
        "_created": now,
        "created_at": apex_time(now),
    }
    order.update(_buyer_fields(buyer), **_ship_from(company.operations[operation_id]))
    _set_totals(order)
    touch_order(company, order)
    company.orders[order_id] = order
    return order


def _buyer_fields(buyer: Record) -> Record:
    return {
        "buyer_id": buyer["id"],
        "buyer_company_id": buyer["buyer_company_id"],
        "buyer": {"id": buyer["id"], "name": buyer["name"], "buyer_group": None},
        "buyer_state_license": buyer["state_license"],
        # Field reports show these contact fields null on most live orders.
        "buyer_contact_name": None,
        "buyer_contact_phone": None,
        "buyer_contact_email": None,
        "buyer_location_id": buyer["id"] * 10 + 1,
        "ship_name": buyer["name"],
        "ship_line_one": buyer["line_one"],
        "ship_line_two": buyer["line_two"],
        "ship_city": buyer["city"],
        "ship_state": "CA",
        "ship_zip": buyer["zip"],
        "ship_country": "United States",
    }


def _ship_from(operation: Record) -> Record:
    return {
        "ship_from_name": operation["name"],
        "ship_from_line_one": operation["line_one"],
        "ship_from_line_two": operation["line_two"],
        "ship_from_city": operation["city"],
        "ship_from_state": "CA",
        "ship_from_zip": operation["zip"],
        "ship_from_country": "United States",
    }


def touch_order(company: ApexCompany, order: Record) -> None:
    now = utcnow()
    order.update(updated_at=apex_time(now), _updated=now)
    company.bump("orders")


def set_status(company: ApexCompany, order: Record, status: Record) -> None:
    order.update(order_status_id=status["id"], order_status=dict(status))
    touch_order(company, order)


def build_line(
    state: SandboxState, company: ApexCompany, batch: Record, order_quantity: Decimal,
    order_unit: str | None = None, price_cents: int | None = None,
) -> Record:  # fmt: skip
    """Build an order line on a batch; ``order_unit`` "Case" orders whole cases."""
    product = company.products[batch["product_id"]]
    base_unit = product["unit_measurement"]
    per_case = product.get("units_per_case") or 1
    is_case = order_unit == "Case"
    unit = company.unit_named("Case") if is_case else base_unit
    inventory_quantity = order_quantity * per_case if is_case else order_quantity
    unit_price = price_cents
    if unit_price is None:
        unit_price = (product["listing_price_raw"] or 0) * (per_case if is_case else 1)
    now = utcnow()
    return {
        "id": state.ids.next("apex_order_item"),
        "order_id": None,
        "sort_order": 0,
        "product_id": product["id"],
        "batch_id": batch["id"],
        "operation_id": batch["operation_id"],
        "operation_license": company.operations[batch["operation_id"]]["state_license"],
        "order_quantity": _number(order_quantity),
        "order_unit_measurement_id": unit["id"],
        "order_unit_measurement": _unit_summary(unit),
        "inventory_quantity": _number(inventory_quantity),
        "unit_measurement": _unit_summary(base_unit),
        "unit_size_unit_measurement": product["unit_size_unit_measurement"],
        "order_price": money(unit_price),
        "order_price_raw": unit_price,
        "order_sales_unit_listing_price": product["listing_price"],
        "order_sales_unit_listing_price_raw": product["listing_price_raw"],
        "unit_price": {
            "packagePrice": money(unit_price),
            "singlesPrice": money(unit_price),
        },
        "order_sample": 0,
        "sample_size": None,
        "metrc_package_label": None,
        "product_name": product["name"],
        "batch_name": batch["name"],
        "product_sku": product["product_sku"],
        "brand_id": product["brand_id"],
        "product_category_id": product["product_category_id"],
        "lot_number": batch.get("lot_number"),
        "harvest_date": batch.get("harvest_date"),
        "created_at": apex_time(now),
        "updated_at": apex_time(now),
    }


def _unit_summary(unit: Record) -> Record:
    return {"id": unit["id"], "name": unit["name"], "alias": unit["alias"]}


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def replace_lines(company: ApexCompany, order: Record, lines: list[Record]) -> None:
    """Swap an order's lines, returning the old stock and taking the new."""
    _move_stock(company, order["_items"], +1)
    _move_stock(company, lines, -1)
    for position, line in enumerate(lines, start=1):
        line.update(order_id=order["id"], sort_order=position)
    order["_items"] = lines
    _set_totals(order)
    touch_order(company, order)


def _move_stock(company: ApexCompany, lines: list[Record], sign: int) -> None:
    for line in lines:
        batch = company.batches.get(line["batch_id"])
        if batch is None or batch["quantity"] is None or batch["unlimited_quantity"]:
            continue
        quantity = to_decimal(batch["quantity"]) or Decimal(0)
        moved = quantity + sign * Decimal(str(line["inventory_quantity"]))
        batch["quantity"] = _number(max(moved, Decimal(0)))
        stamp_batch(company, batch)


def _set_totals(order: Record) -> None:
    subtotal = sum(
        Decimal(str(line["order_quantity"])) * line["order_price_raw"]
        for line in order["_items"]
    )
    raw = int(Decimal(subtotal).quantize(Decimal(1), rounding=ROUND_DOWN))
    order.update(
        subtotal=money(raw), subtotal_raw=raw, total=money(raw), total_raw=raw,
        additional_discount="0.00", additional_discount_raw=0,
        delivery_cost="0.00", delivery_cost_raw=0, taxes="0.00",
        total_payments="0.00", total_payments_raw=0,
    )  # fmt: skip


def split_order(
    state: SandboxState, company: ApexCompany, order: Record,
    item_ids: list[int] | None, child_id: int | None = None,
) -> Record:  # fmt: skip
    """Move lines (by default the last one, or half of a single line) to a new order."""
    moving = _lines_to_move(state, order, item_ids)
    buyer = company.buyers[order["buyer_id"]]
    flow_id = order["deal_flow_id"]
    child = new_order(state, company, buyer, order["operation_id"], flow_id, child_id)
    set_status(company, child, order["order_status"])
    child["cancelled"] = order["cancelled"]

    moving_ids = {line["id"] for line in moving}
    order["_items"] = [line for line in order["_items"] if line["id"] not in moving_ids]
    _set_totals(order)
    for position, line in enumerate(moving, start=1):
        line.update(order_id=child["id"], sort_order=position)
    child["_items"] = moving
    _set_totals(child)

    chain = (order["split_chain"] or [order["id"]]) + [child["id"]]
    order["split_chain"] = chain
    child.update(split_from_order_id=order["id"], split_chain=chain)
    touch_order(company, order)
    touch_order(company, child)
    return child


def _lines_to_move(
    state: SandboxState, order: Record, item_ids: list[int] | None
) -> list[Record]:
    lines = order["_items"]
    if item_ids:
        chosen = [line for line in lines if line["id"] in set(item_ids)]
        if not chosen or len(chosen) == len(lines):
            raise OrderError(
                "item_ids must name some, but not all, lines of the order."
            )
        return chosen
    if len(lines) >= 2:
        return [lines[-1]]
    if not lines:
        raise OrderError(f"Order {order['id']} has no lines to split.")
    return [_halve_line(state, lines[0])]


def _halve_line(state: SandboxState, line: Record) -> Record:
    """Split one line's quantity in two; return the new half (stock is unchanged)."""
    half_order = Decimal(str(line["order_quantity"])) / 2
    half_inventory = Decimal(str(line["inventory_quantity"])) / 2
    line.update(
        order_quantity=_number(half_order), inventory_quantity=_number(half_inventory)
    )
    twin = dict(line, id=state.ids.next("apex_order_item"))
    return twin
