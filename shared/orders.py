"""Apex shipping orders as Flourish outbound (sales) orders, one per Apex order.

An order is pushed when it is final for its tenant: not cancelled, and its
parent stage is one of ``Tenant.final_order_stages``. Every line is mapped and
checked before anything is sent. The path is Apex ``batch_id`` → the
BatchLink of the package the batch was made from → Flourish item and SKU.
The quantity is converted from the Apex base unit into the Flourish unit.

Creating an order follows the intent pattern. The OrderLink row is committed
before the POST; if a later attempt finds the intent without a Flourish id,
it first looks for an order with the same ``original_order_id`` in Flourish
and adopts it. A changed Apex order updates the same Flourish order while
nothing in it is allocated, and a cancelled one cancels it. Nothing flows
from Flourish back to Apex.

Callers must not push the same Apex order from two processes at once; the
task that calls ``push_order`` holds a Redis lock per order.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.buyers import (
    AUTO,
    LINKED,
    UNMATCHED,
    DestinationIndex,
    apply_matches,
    find_link,
    linked_destination_id,
    normalize_license,
)
from shared.errors import (
    InvalidPayload,
    InvalidRecord,
    NeedsAttention,
    OrderLocked,
    OrderNotFinal,
    UnitMismatch,
)
from shared.models import BatchLink, Facility, OrderLink, OrderPush, Tenant, utcnow
from shared.units import to_flourish_quantity, to_flourish_unit_price

logger = logging.getLogger(__name__)

#: How far before an intent row the adoption search starts, in case the
#: clocks of this host and Flourish disagree.
ADOPTION_MARGIN = timedelta(minutes=10)

#: Flourish order statuses in which nothing is allocated yet.
EDITABLE_STATUSES = ("Created",)
CANCELLED_STATUS = "Cancelled"

# OrderLink.state values.
INTENT = "intent"
PUSHED = "pushed"
CANCELLED = "cancelled"
FAILED = "failed"

# PushOutcome.action and OrderPush.state values.
CREATED = "created"
UPDATED = "updated"
UNCHANGED = "unchanged"
REFUSED = "refused"


class UnknownBatch(InvalidRecord):
    """An order line whose Apex batch was not made by this integration."""


class SalesRepRequired(NeedsAttention):
    """The Flourish facility requires a sales rep and none could be chosen."""


# --- reading Apex orders ------------------------------------------------------


def _field(record: Any, name: str) -> Any:
    if record is None:
        return None
    if isinstance(record, dict):
        return record.get(name)
    return getattr(record, name, None)


def _text(record: Any, name: str) -> str | None:
    value = _field(record, name)
    return None if value in (None, "") else str(value)


def _decimal(value: Any) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def order_label(order: Any) -> str:
    """Name an Apex order for messages: "Apex order 100123 (invoice ACME-1042)"."""
    invoice = _text(order, "invoice_number")
    suffix = f" (invoice {invoice})" if invoice else ""
    return f"Apex order {_field(order, 'id')}{suffix}"


def _order_ids(order: Any) -> dict[str, Any]:
    return {
        "apex_order_id": _field(order, "id"),
        "invoice_number": _text(order, "invoice_number"),
    }


def order_stage(order: Any) -> str | None:
    """Return the parent stage name of the order's status ("Accepted", ...)."""
    parent = _field(_field(order, "order_status"), "parent_status")
    return _text(parent, "name")


def is_cancelled(order: Any) -> bool:
    # Apex sends booleans as true/false, 0/1 or "0"/"1".
    return str(_field(order, "cancelled")).lower() in ("true", "1")


def is_final(order: Any, tenant: Tenant) -> bool:
    """Tell whether the order is final: not cancelled and in a final stage.

    Stage names compare without regard to case, because they are typed by
    operators into ``final_order_stages``.
    """
    if is_cancelled(order):
        return False
    stage = (order_stage(order) or "").casefold()
    return stage in {name.casefold() for name in tenant.final_order_stages or []}


def check_final(order: Any, tenant: Tenant) -> None:
    """Raise OrderNotFinal, naming the stage and the accepted stages, unless final."""
    if is_final(order, tenant):
        return

    accepted = ", ".join(tenant.final_order_stages or []) or "(none configured)"
    if is_cancelled(order):
        problem = "is cancelled"
    else:
        problem = f"is in stage {order_stage(order) or 'unknown'!r}"
    raise OrderNotFinal(
        f"{order_label(order)} {problem}; only orders in the stages {accepted} are "
        f"pushed (tenant setting final_order_stages).",
        tenant_id=tenant.id,
        stage=order_stage(order),
        **_order_ids(order),
    )


# --- mapping lines ------------------------------------------------------------


@dataclass(frozen=True)
class MappedLine:
    """One Apex order line in the units of the Flourish item."""

    apex_line_id: Any
    apex_batch_id: int
    package_tag: str
    sku: str
    item_id: str
    quantity: Decimal
    uom: str
    unit_price: Decimal

    def as_body(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "item_id": self.item_id,
            "order_qty": _json_number(self.quantity),
            "unit_price": _json_number(self.unit_price),
        }


def _json_number(value: Decimal) -> int | float:
    # Flourish takes JSON numbers; both values are already rounded to 4 places.
    return int(value) if value == value.to_integral_value() else float(value)


def _line_label(order: Any, line: Any) -> str:
    product = _text(line, "product_name") or "product"
    return (
        f"{order_label(order)} line {_field(line, 'id')} "
        f"(batch {_field(line, 'batch_id')}, {product})"
    )


def _line_ids(order: Any, line: Any) -> dict[str, Any]:
    return {
        **_order_ids(order),
        "apex_line_id": _field(line, "id"),
        "apex_batch_id": _field(line, "batch_id"),
    }


def find_batch_link(
    session: Session, tenant_id: int, apex_batch_id: int
) -> BatchLink | None:
    return session.scalars(
        select(BatchLink)
        .where(BatchLink.tenant_id == tenant_id)
        .where(BatchLink.apex_batch_id == apex_batch_id)
        .order_by(BatchLink.id)
    ).first()


def _linked_batch(
    session: Session, tenant: Tenant, facility: Facility, order: Any, line: Any
) -> BatchLink:
    batch_id = _field(line, "batch_id")
    if batch_id in (None, ""):
        raise InvalidRecord(
            f"{_line_label(order, line)} has no batch.", **_line_ids(order, line)
        )

    link = find_batch_link(session, tenant.id, int(batch_id))
    if link is None:
        raise UnknownBatch(
            f"{_line_label(order, line)}: Apex batch {batch_id} was not created from a "
            "Flourish package by this integration, so its Flourish item is unknown.",
            **_line_ids(order, line),
        )
    _check_batch_link(facility, order, line, link)
    return link


def _check_batch_link(
    facility: Facility, order: Any, line: Any, link: BatchLink
) -> None:
    if link.facility_id != facility.id:
        raise InvalidRecord(
            f"{_line_label(order, line)}: package {link.package_tag} is in another "
            f"facility than {facility.name!r}, which ships this order.",
            **_line_ids(order, line),
        )
    if not link.flourish_item_id or not link.flourish_uom:
        raise InvalidRecord(
            f"{_line_label(order, line)}: the Flourish item or unit of package "
            f"{link.package_tag} is not recorded; sync the facility again.",
            **_line_ids(order, line),
        )


def _base_unit(line: Any, link: BatchLink) -> str:
    unit = _field(line, "unit_measurement")
    return _text(unit, "name") or _text(unit, "alias") or link.unit_name or ""


def _price_per_base_unit(order: Any, line: Any) -> Decimal:
    """Return the line's price per base unit in dollars.

    ``order_price_raw`` is cents per order unit (a case, say). When the order
    unit is not the base unit, the line total divided by ``inventory_quantity``
    gives the price per base unit.
    """
    cents = _decimal(_field(line, "order_price_raw"))
    price = cents / 100 if cents is not None else _decimal(_field(line, "order_price"))
    if price is None:
        raise InvalidRecord(
            f"{_line_label(order, line)} has no price.", **_line_ids(order, line)
        )

    ordered = _decimal(_field(line, "order_quantity"))
    base = _decimal(_field(line, "inventory_quantity"))
    if ordered and base and ordered != base:
        return price * ordered / base
    return price


def map_line(
    session: Session, tenant: Tenant, facility: Facility, order: Any, line: Any
) -> MappedLine:
    """Map one Apex order line onto its Flourish item, or raise NeedsAttention.

    Raises UnknownBatch, InvalidRecord (no batch, wrong facility, no price,
    no quantity) or UnitMismatch; each message names the order and the line.
    """
    link = _linked_batch(session, tenant, facility, order, line)
    quantity = _decimal(_field(line, "inventory_quantity"))
    if quantity is None or quantity <= 0:
        raise InvalidRecord(
            f"{_line_label(order, line)} has no positive inventory_quantity.",
            **_line_ids(order, line),
        )

    unit = _base_unit(line, link)
    price = _price_per_base_unit(order, line)
    try:
        converted = _convert(quantity, price, unit, link, tenant)
    except UnitMismatch as exc:
        raise UnitMismatch(
            f"{_line_label(order, line)}: {exc}", **_line_ids(order, line)
        ) from exc

    return MappedLine(
        apex_line_id=_field(line, "id"),
        apex_batch_id=int(_field(line, "batch_id")),
        package_tag=link.package_tag,
        sku=link.sku,
        item_id=str(link.flourish_item_id),
        quantity=converted[0],
        uom=str(link.flourish_uom),
        unit_price=converted[1],
    )


def _convert(
    quantity: Decimal, price: Decimal, unit: str, link: BatchLink, tenant: Tenant
) -> tuple[Decimal, Decimal]:
    factor = Decimal(str(tenant.grams_per_pound))
    uom = str(link.flourish_uom)
    converted = to_flourish_quantity(quantity, unit, uom, grams_per_pound=factor)
    unit_price = to_flourish_unit_price(price, unit, uom, grams_per_pound=factor)
    return converted, unit_price


def map_lines(
    session: Session, tenant: Tenant, facility: Facility, order: Any
) -> list[MappedLine]:
    """Map every line of the order; raise one error listing every bad line.

    The error has the class of the first bad line, and its message lists all
    of them, so an operator sees the whole order's problems at once.
    """
    lines = list(_field(order, "items") or [])
    if not lines:
        raise InvalidRecord(f"{order_label(order)} has no lines.", **_order_ids(order))

    mapped: list[MappedLine] = []
    problems: list[NeedsAttention] = []
    for line in lines:
        try:
            mapped.append(map_line(session, tenant, facility, order, line))
        except NeedsAttention as exc:
            problems.append(exc)

    if problems:
        raise _combined(order, problems)
    return mapped


def _combined(order: Any, problems: list[NeedsAttention]) -> NeedsAttention:
    first = problems[0]
    if len(problems) == 1:
        return first
    text = " ".join(
        f"({number}) {problem}" for number, problem in enumerate(problems, 1)
    )
    return type(first)(
        f"{order_label(order)} has {len(problems)} lines that cannot be pushed: {text}",
        **_order_ids(order),
        lines=[problem.context for problem in problems],
    )


# --- building the body --------------------------------------------------------


def _moment(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _order_moment(order: Any) -> datetime:
    for name in ("order_date", "created_at", "updated_at"):
        moment = _moment(_field(order, name))
        if moment is not None:
            return moment.astimezone(UTC)
    return utcnow()


def _notes(order: Any) -> list[dict[str, Any]]:
    text = f"Pushed from {order_label(order)}."
    split_from = _field(order, "split_from_order_id")
    if split_from:
        text += f" Split from Apex order {split_from}."
    return [{"subject": "Apex Trading", "note": text, "internal_only": True}]


def build_outbound_order(
    order: Any,
    lines: Iterable[MappedLine],
    *,
    destination_id: str,
    sales_rep_id: int | str | None = None,
) -> dict[str, Any]:
    """Build the Flourish ``POST /v1/outbound-orders`` body of an Apex order.

    ``destination`` and ``sales_rep`` carry only an ``id``, because Flourish
    rejects any other field beside an id and would otherwise match by name
    and create a destination. A split Apex order is an order of its own.
    """
    moment = _order_moment(order)
    body: dict[str, Any] = {
        "original_order_id": str(_field(order, "id")),
        "order_timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "invoice_date": moment.date().isoformat(),
        "destination": {"id": destination_id},
        "order_lines": [line.as_body() for line in lines],
        "notes": _notes(order),
    }
    if sales_rep_id is not None:
        body["sales_rep"] = {"id": sales_rep_id}
    return body


def fingerprint(body: dict[str, Any]) -> str:
    """Return the sha256 of the parts of a body that a change must be pushed for.

    The Apex order id, invoice date, destination, sales rep and the lines
    (SKU, item, quantity, price) count; the timestamp and the notes do not.
    Line order does not count either.
    """
    lines = sorted(
        (
            str(line.get("sku")),
            str(line.get("item_id")),
            _canonical_number(line.get("order_qty")),
            _canonical_number(line.get("unit_price")),
        )
        for line in body.get("order_lines", [])
    )
    essence = {
        "original_order_id": str(body.get("original_order_id")),
        "invoice_date": body.get("invoice_date"),
        "destination": (body.get("destination") or {}).get("id"),
        "sales_rep": (body.get("sales_rep") or {}).get("id"),
        "order_lines": lines,
    }
    canonical = json.dumps(essence, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _canonical_number(value: Any) -> str:
    number = _decimal(value)
    if number is None:
        return ""
    return format(number.normalize(), "f")


# --- comparing and allocation -------------------------------------------------


def describe_changes(old_lines: Iterable[Any], new_lines: Iterable[Any]) -> list[str]:
    """List line changes between two bodies or orders, keyed by SKU and item.

    Accepts body lines (dicts) and Flourish order lines alike, e.g.
    ``["SKU FL-1 (item 160): order_qty 453.5924 → 907.1847"]``.
    """
    old, new = _totals(old_lines), _totals(new_lines)
    changes = []
    for key in sorted(old.keys() | new.keys()):
        label = f"SKU {key[0]} (item {key[1]})"
        if key not in old:
            changes.append(f"{label}: added, order_qty {_show(new[key][0])}")
        elif key not in new:
            changes.append(f"{label}: removed, order_qty was {_show(old[key][0])}")
        else:
            changes.extend(_line_changes(label, old[key], new[key]))
    return changes


def _line_changes(
    label: str, old: tuple[Decimal, Decimal], new: tuple[Decimal, Decimal]
) -> list[str]:
    changes = []
    if old[0] != new[0]:
        changes.append(f"{label}: order_qty {_show(old[0])} → {_show(new[0])}")
    if old[1] != new[1]:
        changes.append(f"{label}: unit_price {_show(old[1])} → {_show(new[1])}")
    return changes


def _show(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _totals(lines: Iterable[Any]) -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
    """Sum quantities per (SKU, item id); keep the last unit price seen."""
    totals: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
    for line in lines:
        key = (str(_text(line, "sku")), str(_text(line, "item_id")))
        quantity = _decimal(_field(line, "order_qty")) or Decimal(0)
        price = _decimal(_field(line, "unit_price")) or Decimal(0)
        previous = totals.get(key, (Decimal(0), price))[0]
        totals[key] = (previous + quantity, price)
    return totals


def is_allocated(flourish_order: Any) -> bool:
    """Tell whether Flourish has allocated anything to the order.

    Flourish accepts a PUT only while nothing is allocated: the status is
    Created, no line has ``allocated_qty`` above zero and no line lists
    allocated packages in ``order_line_dtls``.
    """
    status = _text(flourish_order, "order_status")
    if status is not None and status not in EDITABLE_STATUSES:
        return True
    for line in _field(flourish_order, "order_lines") or []:
        allocated = _decimal(_field(line, "allocated_qty"))
        if allocated is not None and allocated > 0:
            return True
        if _field(line, "order_line_dtls"):
            return True
    return False


# --- resolving the facility, the buyer and the sales rep ----------------------


def facility_for_order(session: Session, tenant: Tenant, order: Any) -> Facility:
    """Return the tenant's facility linked to the order's Apex operation."""
    operation_id = _field(order, "operation_id")
    facility = None
    if operation_id not in (None, ""):
        facility = session.scalars(
            select(Facility)
            .where(Facility.tenant_id == tenant.id)
            .where(Facility.apex_operation_id == int(operation_id))
        ).first()
    if facility is None:
        raise InvalidRecord(
            f"{order_label(order)} ships from Apex operation {operation_id}, which no "
            f"facility of tenant {tenant.name!r} is linked to. Add the facility with "
            "that Apex operation first.",
            tenant_id=tenant.id,
            apex_operation_id=operation_id,
            **_order_ids(order),
        )
    return facility


def resolve_destination(
    session: Session, tenant: Tenant, flourish: Any, order: Any
) -> str:
    """Return the Flourish destination id of the order's buyer.

    A buyer that no matching run has seen yet, or that matching left
    unmatched, is matched on the spot against the destinations with the
    order's buyer license, using the license and ship-to address on the order.
    Raises UnlinkedBuyer when no link results.
    """
    buyer_id = int(_field(order, "buyer_id") or 0)
    link = find_link(session, tenant.id, buyer_id)
    if link is None or (link.source == AUTO and link.state == UNMATCHED):
        _match_from_order(session, tenant, flourish, order, buyer_id)
    return linked_destination_id(session, tenant.id, buyer_id)


def _match_from_order(
    session: Session, tenant: Tenant, flourish: Any, order: Any, buyer_id: int
) -> None:
    license_number = _text(order, "buyer_state_license")
    destinations = _destinations_with_license(flourish, license_number)
    snapshot = {
        "id": buyer_id,
        "name": _text(_field(order, "buyer"), "name") or _text(order, "ship_name"),
        "state_license": license_number,
        "line_one": _text(order, "ship_line_one"),
        "line_two": _text(order, "ship_line_two"),
        "city": _text(order, "ship_city"),
        "state": _text(order, "ship_state"),
        "zip": _text(order, "ship_zip"),
    }
    counts = apply_matches(
        session, tenant.id, [snapshot], DestinationIndex.build(destinations)
    )
    session.commit()
    logger.info(
        "tenant=%s buyer=%s matched from order: linked=%s",
        tenant.id,
        buyer_id,
        counts[LINKED],
    )


def _destinations_with_license(flourish: Any, license_number: str | None) -> list[Any]:
    """Return the destinations whose normalised license equals the buyer's.

    Flourish filters ``license_number`` on the exact text, so a license
    written with other dashes or case is found only in the full list.
    """
    if not license_number:
        return []

    buyer_license = normalize_license(license_number)
    for query in ({"license_number": license_number}, {}):
        found = [
            destination
            for destination in flourish.list_destinations(**query)
            if normalize_license(_text(destination, "license_number")) == buyer_license
        ]
        if found:
            return found
    return []


def resolve_sales_rep(
    flourish: Any, facility: Facility, order: Any
) -> int | str | None:
    """Return the sales rep id for the order, or None when the facility needs none.

    When Flourish requires a sales rep on outbound orders, an active rep is
    chosen in this order: the one whose email matches a sales rep on the Apex
    order, else the only rep assigned to this facility, else the only rep.
    Raises SalesRepRequired when none of them exists.
    """
    details = flourish.get_facility(facility.flourish_facility_id)
    if not _field(details, "sales_rep_required_for_outbound"):
        return None

    reps = [
        rep for rep in flourish.list_sales_reps() if _field(rep, "active") is not False
    ]
    chosen = _rep_by_email(reps, order) or _only_rep(reps, facility)
    if chosen is not None:
        return _rep_id(chosen)

    raise SalesRepRequired(
        f"Flourish facility {facility.name!r} requires a sales rep on outbound "
        f"orders, and none of its {len(reps)} active sales reps has the email of "
        f"a sales rep on {order_label(order)} or is the only rep of the facility. "
        "Add the rep's email in Flourish or Apex.",
        facility_id=facility.id,
        **_order_ids(order),
    )


def _rep_by_email(reps: list[Any], order: Any) -> Any | None:
    emails = {
        (_text(rep, "email") or "").casefold()
        for rep in _field(order, "sales_reps") or []
    } - {""}
    for rep in reps:
        if (_text(rep, "email") or "").casefold() in emails:
            return rep
    return None


def _only_rep(reps: list[Any], facility: Facility) -> Any | None:
    own = [
        rep
        for rep in reps
        if _text(rep, "facility_id") == facility.flourish_facility_id
    ]
    for group in (own, reps):
        if len(group) == 1:
            return group[0]
    return None


def _rep_id(rep: Any) -> int | str:
    value = _field(rep, "sales_rep_id")
    if value in (None, ""):
        value = _field(rep, "id")
    return int(value) if str(value).isdigit() else str(value)


# --- pushing ------------------------------------------------------------------


@dataclass
class PushOutcome:
    """Result of one push: its action (created, updated, unchanged, cancelled or
    refused), the reason, the Flourish order id and the line changes applied."""

    action: str
    reason: str
    flourish_order_id: str | None = None
    changes: list[str] = field(default_factory=list)


FlourishFactory = Callable[[Facility], Any]


def push_order(
    session: Session,
    tenant: Tenant,
    apex: Any,
    flourish_for: FlourishFactory,
    apex_order_id: int,
) -> PushOutcome:
    """Fetch one Apex order and create, update or cancel its Flourish order.

    ``flourish_for`` builds the Flourish client of the facility that ships
    the order, which is known only once the order is read. Commits the
    session at each step that must survive a crash. Raises NeedsAttention
    subclasses (OrderNotFinal for an order that is not final, OrderLocked
    when an allocated Flourish order would have to change) and the clients'
    errors.
    """
    order = apex.get_shipping_order(apex_order_id)
    link = _find_order_link(session, tenant.id, apex_order_id)
    if is_cancelled(order):
        return _cancel(session, tenant, flourish_for, order, link)

    check_final(order, tenant)
    facility = facility_for_order(session, tenant, order)
    return apply_order(session, tenant, facility, flourish_for(facility), order)


def apply_order(
    session: Session, tenant: Tenant, facility: Facility, flourish: Any, order: Any
) -> PushOutcome:
    """Push a fetched final order to Flourish: create, update or leave unchanged."""
    lines = map_lines(session, tenant, facility, order)
    destination_id = resolve_destination(session, tenant, flourish, order)
    sales_rep_id = resolve_sales_rep(flourish, facility, order)
    body = build_outbound_order(
        order, lines, destination_id=destination_id, sales_rep_id=sales_rep_id
    )

    link = _find_order_link(session, tenant.id, int(_field(order, "id")))
    digest = fingerprint(body)
    if link is not None and link.flourish_order_id and link.state != CANCELLED:
        return _update(session, flourish, order, link, body, digest)
    return _create(session, facility, flourish, order, link, body, digest)


def _find_order_link(
    session: Session, tenant_id: int, apex_order_id: int
) -> OrderLink | None:
    return session.scalars(
        select(OrderLink)
        .where(OrderLink.tenant_id == tenant_id)
        .where(OrderLink.apex_order_id == apex_order_id)
    ).first()


def _create(
    session: Session,
    facility: Facility,
    flourish: Any,
    order: Any,
    link: OrderLink | None,
    body: dict[str, Any],
    digest: str,
) -> PushOutcome:
    adopted = None
    if link is not None and not link.flourish_order_id and link.intent_at is not None:
        adopted = _find_in_flourish(flourish, order, link.intent_at)
    link = _write_intent(session, facility, order, link)

    if adopted is not None:
        return _adopt(session, flourish, order, link, adopted, body, digest)

    created = flourish.create_outbound_order(body)
    flourish_order_id = _text(created, "id")
    if flourish_order_id is None:
        # A reply without an id: the order exists, so find it as a retry would.
        assert link.intent_at is not None
        found = _find_in_flourish(flourish, order, link.intent_at)
        flourish_order_id = _text(found, "id")
    if flourish_order_id is None:
        raise InvalidPayload(
            f"Flourish accepted {order_label(order)} but returned no order id, and "
            "no order with its original_order_id was found.",
            **_order_ids(order),
        )
    _store_pushed(session, link, flourish_order_id, body, digest)
    logger.info(
        "tenant=%s order=%s created Flourish order=%s with %d lines",
        link.tenant_id,
        link.apex_order_id,
        link.flourish_order_id,
        len(body["order_lines"]),
    )
    return PushOutcome(CREATED, "Flourish order created.", link.flourish_order_id)


def _adopt(
    session: Session,
    flourish: Any,
    order: Any,
    link: OrderLink,
    adopted: Any,
    body: dict[str, Any],
    digest: str,
) -> PushOutcome:
    """Take over the order an earlier attempt created, then bring it up to date.

    What that attempt sent is unknown, so the link gets no fingerprint and
    ``_update`` compares the body with the adopted order's own lines.
    """
    link.flourish_order_id = _text(adopted, "id")
    link.fingerprint = None
    link.pushed_payload = None
    link.state = PUSHED
    session.commit()
    logger.warning(
        "tenant=%s order=%s adopted Flourish order=%s from an earlier attempt",
        link.tenant_id,
        link.apex_order_id,
        link.flourish_order_id,
    )
    return _update(session, flourish, order, link, body, digest, current=adopted)


def _write_intent(
    session: Session, facility: Facility, order: Any, link: OrderLink | None
) -> OrderLink:
    """Commit the intent row before the POST, so a retry searches Flourish first."""
    if link is None:
        link = OrderLink(
            tenant_id=facility.tenant_id, apex_order_id=int(_field(order, "id"))
        )
        session.add(link)
    # An intent without a Flourish id may stand for a POST whose response was
    # lost, so its time stays the start of the next adoption search.
    if link.flourish_order_id or link.intent_at is None:
        link.intent_at = utcnow()
    link.facility_id = facility.id
    link.invoice_number = _text(order, "invoice_number")
    link.state = INTENT
    link.flourish_order_id = None
    link.reason = None
    session.commit()
    return link


def _find_in_flourish(flourish: Any, order: Any, intent_at: datetime) -> Any | None:
    """Return the order an earlier attempt created, matched on original_order_id."""
    since = _moment(intent_at) or utcnow()
    candidates = [
        candidate
        for candidate in flourish.list_outbound_orders(
            created_since=since - ADOPTION_MARGIN
        )
        if _text(candidate, "original_order_id") == str(_field(order, "id"))
        and _text(candidate, "order_status") != CANCELLED_STATUS
    ]
    if len(candidates) > 1:
        logger.warning(
            "order=%s has %d Flourish orders with its original_order_id; adopting %s",
            _field(order, "id"),
            len(candidates),
            _text(candidates[0], "id"),
        )
    return candidates[0] if candidates else None


def _store_pushed(
    session: Session,
    link: OrderLink,
    flourish_order_id: str | None,
    body: dict[str, Any],
    digest: str,
) -> None:
    link.flourish_order_id = flourish_order_id
    link.fingerprint = digest
    link.pushed_payload = body
    link.state = PUSHED
    link.reason = None
    link.pushed_at = utcnow()
    session.commit()


def _update(
    session: Session,
    flourish: Any,
    order: Any,
    link: OrderLink,
    body: dict[str, Any],
    digest: str,
    current: Any | None = None,
) -> PushOutcome:
    if link.fingerprint == digest:
        _store_pushed(session, link, link.flourish_order_id, body, digest)
        return PushOutcome(
            UNCHANGED, "Nothing changed since the last push.", link.flourish_order_id
        )

    if current is None:
        current = flourish.get_outbound_order(str(link.flourish_order_id))
    previous = (link.pushed_payload or {}).get("order_lines")
    if previous is None:
        previous = _field(current, "order_lines") or []
    changes = describe_changes(previous, body["order_lines"])
    if link.fingerprint is None and not changes:
        _store_pushed(session, link, link.flourish_order_id, body, digest)
        return PushOutcome(
            CREATED,
            "Adopted the Flourish order of an earlier attempt.",
            link.flourish_order_id,
        )

    _check_editable(order, link, current, body, changes)
    flourish.update_outbound_order(str(link.flourish_order_id), body)
    _store_pushed(session, link, link.flourish_order_id, body, digest)
    logger.info(
        "tenant=%s order=%s updated Flourish order=%s: %s",
        link.tenant_id,
        link.apex_order_id,
        link.flourish_order_id,
        "; ".join(changes) or "header fields",
    )
    return PushOutcome(
        UPDATED, "Flourish order updated.", link.flourish_order_id, changes
    )


def _check_editable(
    order: Any, link: OrderLink, current: Any, body: dict[str, Any], changes: list[str]
) -> None:
    """Raise OrderLocked when Flourish cannot take the change any more."""
    old_destination = ((link.pushed_payload or {}).get("destination") or {}).get("id")
    old_destination = old_destination or _text(_field(current, "destination"), "id")
    new_destination = body["destination"]["id"]
    if old_destination and old_destination != new_destination:
        reason = (
            f"its destination would change from {old_destination} to "
            f"{new_destination}, which Flourish does not allow"
        )
    elif _text(current, "order_status") == CANCELLED_STATUS:
        reason = "it was cancelled in Flourish"
    elif is_allocated(current):
        reason = f"stock is allocated (status {_text(current, 'order_status')})"
    else:
        return

    not_applied = "; ".join(changes) or "invoice date or sales rep"
    raise OrderLocked(
        f"Flourish order {link.flourish_order_id} cannot be updated from "
        f"{order_label(order)} because {reason}. Changes not applied: {not_applied}. "
        "Change the Flourish order by hand, or cancel it there and push again.",
        flourish_order_id=link.flourish_order_id,
        changes=changes,
        **_order_ids(order),
    )


def _cancel(
    session: Session,
    tenant: Tenant,
    flourish_for: FlourishFactory,
    order: Any,
    link: OrderLink | None,
) -> PushOutcome:
    if link is None:
        return PushOutcome(
            REFUSED, f"{order_label(order)} is cancelled and was never pushed."
        )
    if link.state == CANCELLED:
        return PushOutcome(
            UNCHANGED,
            f"{order_label(order)} is cancelled, and so is its Flourish order.",
            link.flourish_order_id,
        )

    facility = session.get(Facility, link.facility_id) if link.facility_id else None
    facility = facility or facility_for_order(session, tenant, order)
    flourish = flourish_for(facility)
    flourish_order = _flourish_order_of(flourish, order, link)
    if flourish_order is None:
        _mark(
            session,
            link,
            CANCELLED,
            "Cancelled in Apex before the Flourish order existed.",
        )
        return PushOutcome(CANCELLED, "Cancelled in Apex; no Flourish order was found.")

    return _cancel_flourish_order(session, flourish, order, link, flourish_order)


def _flourish_order_of(flourish: Any, order: Any, link: OrderLink) -> Any | None:
    if link.flourish_order_id:
        return flourish.get_outbound_order(link.flourish_order_id)
    if link.intent_at is not None:
        return _find_in_flourish(flourish, order, link.intent_at)
    return None


def _cancel_flourish_order(
    session: Session, flourish: Any, order: Any, link: OrderLink, flourish_order: Any
) -> PushOutcome:
    link.flourish_order_id = _text(flourish_order, "id")
    if _text(flourish_order, "order_status") == CANCELLED_STATUS:
        _mark(session, link, CANCELLED, "Already cancelled in Flourish.")
        return PushOutcome(
            CANCELLED,
            "The Flourish order was already cancelled.",
            link.flourish_order_id,
        )

    if is_allocated(flourish_order):
        raise OrderLocked(
            f"{order_label(order)} was cancelled in Apex, but Flourish order "
            f"{link.flourish_order_id} cannot be cancelled because stock is allocated "
            f"(status {_text(flourish_order, 'order_status')}). Cancel it in Flourish.",
            flourish_order_id=link.flourish_order_id,
            **_order_ids(order),
        )

    flourish.cancel_outbound_order(str(link.flourish_order_id))
    _mark(session, link, CANCELLED, "Cancelled in Apex.")
    logger.info(
        "tenant=%s order=%s cancelled Flourish order=%s",
        link.tenant_id,
        link.apex_order_id,
        link.flourish_order_id,
    )
    return PushOutcome(CANCELLED, "Flourish order cancelled.", link.flourish_order_id)


def _mark(session: Session, link: OrderLink, state: str, reason: str) -> None:
    link.state = state
    link.reason = reason
    session.commit()


# --- recording ----------------------------------------------------------------


def record_outcome(session: Session, push: OrderPush, outcome: PushOutcome) -> None:
    """Store a finished push on its OrderPush row."""
    push.state = outcome.action
    push.reason = "; ".join([outcome.reason, *outcome.changes])
    push.flourish_order_id = outcome.flourish_order_id
    push.finished_at = utcnow()
    session.flush()


def record_attention(session: Session, push: OrderPush, error: NeedsAttention) -> None:
    """Store a push that needs a person: "refused" when not final, else "failed".

    A failure also marks the order's OrderLink "failed" with the reason, so
    the Flourish order that no longer matches Apex stays visible. The link
    keeps its fingerprint, so a later push of the unchanged order tries again.
    """
    push.state = REFUSED if isinstance(error, OrderNotFinal) else FAILED
    push.reason = str(error)
    push.flourish_order_id = error.context.get("flourish_order_id")
    push.finished_at = utcnow()

    link = _find_order_link(session, push.tenant_id, push.apex_order_id)
    if push.state == FAILED and link is not None:
        link.state = FAILED
        link.reason = str(error)
        push.flourish_order_id = push.flourish_order_id or link.flourish_order_id
    session.flush()
