"""Parts of a Flourish outbound order: lines, parties (destination, rep), extras.

Rules from the Flourish API documentation:

- One unknown SKU or item fails the whole order.
- A destination, distributor or sales rep sent with ``id`` must carry no other
  field.
- Without ``id``, a destination is matched by name and a sales rep by email.
  Either is created when nothing matches.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from sandbox.catalog import Address
from sandbox.clock import flourish_time, to_decimal, utcnow_seconds
from sandbox.errors import flourish_error
from sandbox.seed_flourish import build_destination, build_sales_rep
from sandbox.state import FlourishCompany, Record, SandboxState, public

PARTIES = ("destination", "distributor", "sales_rep")
API_USER = "api-service@sandbox.example"


def check_party_shapes(body: dict[str, Any]) -> None:
    """Reject a destination, distributor or sales rep that mixes ``id`` with fields."""
    for name in PARTIES:
        party = body.get(name)
        if party is None:
            continue
        if not isinstance(party, dict):
            raise flourish_error(400, f"{name} must be an object.")
        if "id" in party and len(party) > 1:
            others = ", ".join(sorted(k for k in party if k != "id"))
            message = (
                f"When {name}.id is passed, no other {name} fields may be passed "
                f"(got {others})."
            )
            raise flourish_error(400, message)


def _number(
    line: dict[str, Any], field: str, index: int, *, default: Any = None
) -> Decimal:
    value = line.get(field, default)
    number = to_decimal(value)
    if number is None or number < 0:
        raise flourish_error(
            400,
            f"order_lines[{index}].{field} must be a number of 0 or more, "
            f"got {value!r}.",
        )
    return number


def find_item(company: FlourishCompany, line: dict[str, Any], index: int) -> Record:
    """Find a line's item by ``item_id`` or ``sku``; 400 when either is unknown."""
    item_id, sku = line.get("item_id"), line.get("sku")
    if item_id in (None, "") and sku in (None, ""):
        raise flourish_error(400, f"order_lines[{index}] needs an item_id or a sku.")

    item = None
    if item_id not in (None, ""):
        item = company.items.get(str(item_id))
        if item is None:
            raise flourish_error(
                400, f"order_lines[{index}]: item_id {item_id} was not found."
            )
    if sku not in (None, ""):
        by_sku = next((i for i in company.items.values() if i["sku"] == sku), None)
        if by_sku is None:
            raise flourish_error(
                400, f"order_lines[{index}]: no item has the SKU {sku!r}."
            )
        if item is not None and item is not by_sku:
            raise flourish_error(
                400,
                f"order_lines[{index}]: item_id {item_id} does not have "
                f"the SKU {sku!r}.",
            )
        item = by_sku
    assert item is not None
    return item


def build_lines(
    state: SandboxState, company: FlourishCompany, raw_lines: Any
) -> list[Record]:
    """Validate every line first, so one bad line fails the whole order."""
    if not isinstance(raw_lines, list) or not raw_lines:
        raise flourish_error(400, "order_lines must contain at least one line.")

    checked = []
    for index, line in enumerate(raw_lines):
        if not isinstance(line, dict):
            raise flourish_error(400, f"order_lines[{index}] must be an object.")
        item = find_item(company, line, index)
        quantity = _number(line, "order_qty", index)
        if quantity == 0:
            raise flourish_error(
                400, f"order_lines[{index}].order_qty must be greater than 0."
            )
        price = _number(line, "unit_price", index, default=item["price"])
        discount = _number(line, "discount_price", index, default=0)
        checked.append((line, item, quantity, price, discount))
    return [_line_record(state, *parts) for parts in checked]


def _line_record(
    state: SandboxState, line: dict[str, Any], item: Record, quantity: Decimal,
    price: Decimal, discount: Decimal,
) -> Record:  # fmt: skip
    now = flourish_time(utcnow_seconds())
    return {
        "item_id": item["id"],
        "strain_id": item["strain_id"],
        "lot_number": line.get("lot_number"),
        "item_variation_pk": line.get("item_variation_pk"),
        "order_qty": float(quantity),
        "allocated_qty": None,
        "unit_price": float(price),
        "discount_price": float(discount),
        "line_total_price": float(round(quantity * price - discount, 2)),
        "qty_returned": 0,
        "last_updated_by": API_USER,
        "last_updated_timestamp": now,
        "created_by": API_USER,
        "created_timestamp": now,
        "item_name": item["item_name"],
        "item_uom": item["uom"],
        "variation_name": None,
        "unit_qty": None,
        "strain_name": item["strain_name"],
        "order_line_status": "Created",
        "sku": item["sku"],
        "retail_display_name": item["retail_display_name"],
        "order_line_dtls": [],
        "needs_fulfillment": True,
        "taxes": [],
        "_line_id": state.ids.next("flourish_order_line"),
    }


def resolve_destination(
    state: SandboxState, company: FlourishCompany, party: dict[str, Any], name: str
) -> Record:
    """Find a destination (or distributor) by ``id`` or name; create it when new."""
    if "id" in party:
        found = company.destinations.get(str(party["id"]))
        if found is None:
            raise flourish_error(400, f"{name}.id {party['id']} was not found.")
        return found

    requested = str(party.get("name") or "").strip()
    if not requested:
        raise flourish_error(400, f"{name} needs an id or a name.")
    for destination in company.destinations.values():
        if destination["name"].lower() == requested.lower():
            return destination
    return _create_destination(state, company, party, name)


def _create_destination(
    state: SandboxState, company: FlourishCompany, party: dict[str, Any], name: str
) -> Record:
    rng = random.Random(f"{state.seed}:{len(company.destinations)}:{party.get('name')}")
    address = Address(
        str(party.get("address_line_1") or ""),
        party.get("address_line_2"),
        str(party.get("city") or ""),
        str(party.get("zip_code") or ""),
    )
    kind = party.get("type") or (
        "Distributor" if name == "distributor" else "Dispensary"
    )
    record = build_destination(
        rng, str(party["name"]), party.get("license_number"), address, kind
    )
    record.update(
        alias=party.get("alias") or record["name"], state=party.get("state") or "CA"
    )
    company.destinations[record["id"]] = record
    company.bump("destinations")
    return record


def resolve_sales_rep(
    state: SandboxState, company: FlourishCompany, party: dict[str, Any]
) -> Record:
    if "id" in party:
        requested = to_decimal(party["id"])
        found = (
            company.sales_reps.get(int(requested)) if requested is not None else None
        )
        if found is None:
            raise flourish_error(400, f"sales_rep.id {party['id']} was not found.")
        return found

    email = str(party.get("email") or "").strip().lower()
    if not email:
        raise flourish_error(400, "sales_rep needs an id or an email.")
    for rep in company.sales_reps.values():
        if (rep["email"] or "").lower() == email:
            return rep
    rep_id = state.ids.next("flourish_sales_rep")
    first, last = str(party.get("first_name") or ""), str(party.get("last_name") or "")
    rep = build_sales_rep(rep_id, first, last, email, None)
    company.sales_reps[rep_id] = rep
    return rep


def destination_snapshot(destination: Record | None) -> Record | None:
    """Return a destination as an order embeds it: without contacts, with a contact."""
    if destination is None:
        return None
    snapshot = {k: v for k, v in public(destination).items() if k != "contacts"}
    snapshot["contact"] = dict.fromkeys(
        ("first_name", "middle_name", "last_name", "email", "phone_number"), ""
    )
    return snapshot


def rep_snapshot(rep: Record | None) -> Record | None:
    if rep is None:
        return None
    keys = ("first_name", "middle_name", "last_name", "phone_number", "email", "active")
    return {"id": rep["sales_rep_id"], **{k: rep[k] for k in keys}}


def extras(state: SandboxState, body: dict[str, Any], name: str) -> list[Record]:
    """Render the notes, charges or discounts of a body with ids and timestamps."""
    now = flourish_time(utcnow_seconds())
    rendered = []
    for entry in body.get(name) or []:
        if not isinstance(entry, dict):
            raise flourish_error(400, f"every entry of {name} must be an object.")
        record = dict(entry, id=state.ids.next("flourish_order_line"))
        record.update(created_timestamp=now, created_by=API_USER)
        record.update(last_updated_timestamp=now, last_updated_by=API_USER)
        if name != "notes" and to_decimal(entry.get("amount")) is None:
            raise flourish_error(400, f"every entry of {name} needs a numeric amount.")
        rendered.append(record)
    return rendered
