"""Inventory rules: which Flourish packages sync, and the Apex batch each becomes.

Package facts travel between the pipeline's tasks as plain dictionaries, so
they cross Redis as JSON; quantities travel as strings to keep every digit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from shared.catalog import Taxonomy
from shared.models import ApexProduct, Facility
from shared.units import to_apex_quantity

#: Flourish lab-result names of the cannabinoid that Apex calls predominant.
THC_NAMES = ("thc", "delta_9_thc", "thca")


@dataclass(frozen=True)
class PackageFacts:
    """The fields of one Flourish package that the pipeline uses."""

    tag: str
    sku: str
    item_id: str | None
    status: str | None
    room: str | None
    available: str
    quantity: str
    uom: str
    locked: bool
    lock_allows_outbound: bool
    lot_number: str | None
    production_date: str | None
    harvest_date: str | None
    lab_result_id: str | None
    unit_weight: str | None
    unit_weight_uom: str | None

    def sellable(self) -> Decimal:
        """Return the quantity that may be offered.

        Flourish counts locked stock as not available; a lock code that allows
        outbound orders makes it sellable all the same.
        """
        # NOTE: ``qty`` also contains any allocated part of the package; Flourish
        # reports no finer split on a package row.
        if self.locked and self.lock_allows_outbound:
            return Decimal(self.quantity)
        return Decimal(self.available)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PackageFacts:
        return cls(**data)


def facts_from_row(row: Any) -> PackageFacts:
    """Take the fields the pipeline uses from a parsed Flourish package row."""
    lock_code = getattr(row, "lock_code", None)
    return PackageFacts(
        tag=row.package_id,
        sku=row.sku,
        item_id=_text(getattr(row, "item_id", None)),
        status=getattr(row, "package_status", None),
        room=getattr(row, "area_name", None),
        available=str(row.available_qty),
        quantity=str(getattr(row, "qty", None) or row.available_qty),
        uom=row.uom,
        locked=bool(getattr(row, "is_locked", False)),
        lock_allows_outbound=bool(
            getattr(lock_code, "can_add_to_outbound_order", False)
        ),
        lot_number=getattr(row, "lot_number", None),
        production_date=_date_text(getattr(row, "production_date", None)),
        harvest_date=_harvest_date(row),
        lab_result_id=_text(getattr(row, "lab_test_result_id", None)),
        unit_weight=_text(getattr(row, "unit_weight", None)),
        unit_weight_uom=getattr(row, "weight_uom", None),
    )


def skip_reason(facts: PackageFacts, facility: Facility) -> str | None:
    """Say why a package does not sync, or return None when it does."""
    if facts.room != facility.wholesale_room:
        room = facility.wholesale_room
        return f"not in the wholesale room {room!r} (room {facts.room!r})"
    if facts.locked and not facts.lock_allows_outbound:
        return "locked with a lock code that does not allow outbound orders"
    if facts.sellable() <= 0:
        return "nothing available"
    return None


def offered_quantity(
    facts: PackageFacts, product: ApexProduct, grams_per_pound: Decimal
) -> Decimal:
    """Convert the package's available quantity to the product's unit, rounded down."""
    return to_apex_quantity(
        facts.sellable(),
        facts.uom,
        product.unit_name or "",
        grams_per_pound=grams_per_pound,
        unit_weight=Decimal(facts.unit_weight) if facts.unit_weight else None,
        unit_weight_uom=facts.unit_weight_uom,
    )


def batch_body(
    facts: PackageFacts,
    product: ApexProduct,
    operation_id: int,
    quantity: Decimal,
    lab: dict[str, dict[str, str]] | None,
    taxonomy: Taxonomy,
) -> dict[str, Any]:
    """Build the ``POST /v2/batches`` body of one package.

    The package tag is the batch name, because Apex batches have no external
    id field and the name is what a retry searches by.
    """
    body: dict[str, Any] = {
        "name": facts.tag,
        "product_id": product.apex_product_id,
        "operation_id": operation_id,
        "quantity": float(quantity),
        "lot_number": facts.lot_number,
        "production_date": facts.production_date,
        "harvest_date": facts.harvest_date,
    }
    if lab:
        body.update(_potency_fields(lab, taxonomy))
    return body


def _potency_fields(
    lab: dict[str, dict[str, str]], taxonomy: Taxonomy
) -> dict[str, Any]:
    cannabinoids = dict(lab.get("cannabinoids", {}))
    fields: dict[str, Any] = {}
    thc_name = next((name for name in THC_NAMES if name in cannabinoids), None)
    if thc_name is not None:
        fields["predominate_canabinoid_min_or_only"] = float(cannabinoids.pop(thc_name))
        fields["predominate_canabinoid_unit"] = "%"
    # Apex replaces both lists wholesale on every write, so each is sent whole.
    fields["cannabinoids"] = _measurements(
        cannabinoids, taxonomy.cannabinoid_id, "cannabinoid_id"
    )
    fields["terpenes"] = _measurements(
        lab.get("terpenes", {}), taxonomy.terpene_id, "terpene_id"
    )
    return fields


def _measurements(
    values: dict[str, str], lookup: Any, id_key: str
) -> list[dict[str, Any]]:
    entries = []
    for name, percent in sorted(values.items()):
        apex_id = lookup(name)
        if apex_id is None:
            continue
        entries.append(
            {
                id_key: apex_id,
                "measurement": float(Decimal(percent)),
                "measurement_type": "%",
            }
        )
    return entries


def lab_facts(result: Any) -> dict[str, dict[str, str]]:
    """Reduce a Flourish lab result to cannabinoid and terpene percentages."""
    return {
        "cannabinoids": {
            name: str(value) for name, value in result.cannabinoids().items()
        },
        "terpenes": {name: str(value) for name, value in result.terpenes().items()},
    }


def _harvest_date(row: Any) -> str | None:
    direct = _date_text(getattr(row, "harvest_date", None))
    if direct:
        return direct
    origins = getattr(row, "origin_harvest", None) or []
    for origin in origins:
        value = _date_text(getattr(origin, "harvest_date", None))
        if value:
            return value
    return None


def _date_text(value: Any) -> str | None:
    if value in (None, ""):
        return None
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return text[:10]


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)
