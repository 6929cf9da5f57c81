"""The seeded demo shipping orders, built on the batches that exist when asked.

Order lines must point at batch ids, and batches exist only after an inventory
sync created them, so the demo orders are (re)built on request. Each company
gets an order in every parent stage, a cancelled one, orders for ambiguous,
unmatched and address-mismatched buyers, a line ordered in cases, and one
order split off another. Regenerating replaces the previous demo orders,
keeps their ids and returns their stock first.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

from sandbox.clock import day, to_decimal, utcnow
from sandbox.order_book import (
    build_line,
    new_order,
    replace_lines,
    set_status,
    split_order,
    status_for_stage,
    touch_order,
)
from sandbox.state import ApexCompany, Record, SandboxState


@dataclass(frozen=True)
class DemoSlot:
    stage: str
    buyer_case: str
    cancelled: bool = False
    case_line: bool = False
    second_flow: bool = False


DEMO_SLOTS = (
    DemoSlot("Submitted", "clean"),
    DemoSlot("Accepted", "clean"),
    DemoSlot("Pending Shipment", "cosmetic"),
    DemoSlot("In Transit", "clean", case_line=True),
    DemoSlot("Delivered", "cosmetic", second_flow=True),
    DemoSlot("Complete", "clean"),
    DemoSlot("Accepted", "clean", cancelled=True),
    DemoSlot("Accepted", "ambiguous"),
    DemoSlot("Accepted", "unmatched"),
    DemoSlot("Pending Shipment", "address_differs"),
)
#: The slot whose order gets a split-off child order.
SPLIT_SLOT = 1
SHIPPED_STAGES = {"In Transit", "Delivered", "Complete"}


class BatchPicker:
    """Batches with stock per operation, split into weight and unit products."""

    def __init__(self, company: ApexCompany) -> None:
        self.company = company
        self.pools: dict[tuple[int, str], list[Record]] = {}
        for batch in sorted(company.batches.values(), key=lambda b: b["id"]):
            kind = self._kind(batch)
            if kind is not None:
                self.pools.setdefault((batch["operation_id"], kind), []).append(batch)

    def _kind(self, batch: Record) -> str | None:
        product = self.company.products.get(batch["product_id"])
        quantity = to_decimal(batch["quantity"])
        if product is None or batch["archived"] or quantity is None or quantity <= 0:
            return None
        return "unit" if product["unit_measurement"]["name"] == "Unit" else "weight"

    def operations(self) -> list[int]:
        return sorted({operation_id for operation_id, _ in self.pools})

    def pick(self, operation_id: int, kind: str, turn: int) -> Record | None:
        pool = self.pools.get((operation_id, kind), [])
        return pool[turn % len(pool)] if pool else None

    def pick_cases(self, operation_id: int) -> Record | None:
        """Return a unit batch whose product is sold in cases and has two cases left."""
        for batch in self.pools.get((operation_id, "unit"), []):
            per_case = self.company.products[batch["product_id"]]["units_per_case"]
            quantity = to_decimal(batch["quantity"]) or Decimal(0)
            if per_case and quantity >= 2 * per_case:
                return batch
        return None


def generate_demo_orders(state: SandboxState) -> dict[str, Any]:
    """Rebuild every company's demo orders; return their ids and skipped companies."""
    result: dict[str, Any] = {"orders": [], "by_company": {}, "skipped": {}}
    with state.lock:
        for company in state.apex_companies.values():
            ids = regenerate_company(state, company)
            result["by_company"][company.name] = ids
            result["orders"].extend(ids)
            if not ids:
                result["skipped"][company.name] = (
                    "no batch with stock in any operation; run an inventory sync first"
                )
    return result


def regenerate_company(state: SandboxState, company: ApexCompany) -> list[int]:
    reusable = list(company.demo_order_ids)
    _remove_orders(company, reusable)
    picker = BatchPicker(company)
    if not picker.operations():
        company.demo_order_ids = []
        return []

    orders = []
    for index, slot in enumerate(DEMO_SLOTS):
        order = _build_slot(state, company, picker, index, slot, reusable)
        if order is not None:
            orders.append(order)
    if len(orders) > SPLIT_SLOT:
        child = split_order(state, company, orders[SPLIT_SLOT], None, _reuse(reusable))
        orders.append(child)

    company.demo_order_ids = [order["id"] for order in orders]
    return company.demo_order_ids


def _reuse(reusable: list[int]) -> int | None:
    return reusable.pop(0) if reusable else None


def _remove_orders(company: ApexCompany, order_ids: list[int]) -> None:
    for order_id in order_ids:
        order = company.orders.pop(order_id, None)
        if order is not None:
            replace_lines(company, order, [])
    company.bump("orders")


def _build_slot(
    state: SandboxState, company: ApexCompany, picker: BatchPicker, index: int,
    slot: DemoSlot, reusable: list[int],
) -> Record | None:  # fmt: skip
    operations = picker.operations()
    operation_id = operations[index % len(operations)]
    lines = _slot_lines(state, company, picker, operation_id, index, slot.case_line)
    if not lines:
        return None

    buyer = _buyer_for(company, slot.buyer_case, index)
    flow_id = _flow_for(company, buyer, slot.second_flow)
    order = new_order(state, company, buyer, operation_id, flow_id, _reuse(reusable))
    replace_lines(company, order, lines)
    set_status(company, order, status_for_stage(company, flow_id, slot.stage))
    if slot.stage in SHIPPED_STAGES:
        order["delivery_date"] = day(utcnow())
    order["cancelled"] = slot.cancelled
    touch_order(company, order)
    return order


def _slot_lines(
    state: SandboxState, company: ApexCompany, picker: BatchPicker, operation_id: int,
    turn: int, case_line: bool,
) -> list[Record]:  # fmt: skip
    lines = []
    weight = picker.pick(operation_id, "weight", turn)
    unit = (case_line and picker.pick_cases(operation_id)) or picker.pick(
        operation_id, "unit", turn
    )
    if unit is None:
        unit_or_second = picker.pick(operation_id, "weight", turn + 7)
        unit = unit_or_second if unit_or_second is not weight else None
    for batch in (weight, unit):
        if batch is None:
            continue
        line = _line_for(state, company, batch, case_line)
        if line is not None:
            lines.append(line)
    return lines


def _line_for(
    state: SandboxState, company: ApexCompany, batch: Record, case_line: bool
) -> Record | None:
    product = company.products[batch["product_id"]]
    available = to_decimal(batch["quantity"]) or Decimal(0)
    unit = product["unit_measurement"]["name"]
    per_case = product.get("units_per_case")
    if unit == "Unit" and case_line and per_case and available >= 2 * per_case:
        return build_line(state, company, batch, Decimal(2), "Case")

    quantity = _order_quantity(unit, available)
    if quantity <= 0:
        return None
    return build_line(state, company, batch, quantity)


def _order_quantity(unit: str, available: Decimal) -> Decimal:
    """Take a fifth of the stock, capped: 5 lb, 500 g or 24 units."""
    if unit == "Unit":
        fifth = min(available // 5, Decimal(24))
        return fifth if fifth >= 1 else available.to_integral_value(ROUND_DOWN)
    cap, quantum = (
        (Decimal(500), Decimal(1)) if unit == "Gram" else (Decimal(5), Decimal("0.01"))
    )
    return min(available / 5, cap).quantize(quantum, rounding=ROUND_DOWN)


def _buyer_for(company: ApexCompany, case: str, turn: int) -> Record:
    active = [b for b in company.buyers.values() if not b["disabled"]]
    matching = [b for b in active if b["_case"] == case]
    candidates = matching or [b for b in active if b["_case"] == "clean"]
    return candidates[turn % len(candidates)]


def _flow_for(company: ApexCompany, buyer: Record, second_flow: bool) -> int:
    flows = list(company.deal_flows)
    if second_flow and len(flows) > 1:
        return flows[1]
    flow_id: int = buyer["standard_deal_flow_id"]
    return flow_id
