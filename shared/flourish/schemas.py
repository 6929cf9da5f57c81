"""Pydantic models of the Flourish External API payloads this project reads.

::

    {"message": "Success", "status": 200, "meta": {...}, "data": [...] | {...}}
                                                          │
    /v1/packages ──────────► PackageRow ─ or ─ InvalidRow │ (one bad row never
    /v2/lab-test-results/id ► LabTestResult               │  breaks the page)
    /v1/facilities[/id] ───► FlourishFacility             │
    /v1/destinations ──────► Destination                  │
    /v1/items ─────────────► Item                         │
    /v1/sales-reps ────────► SalesRep                     │
    /v1/outbound-orders ───► OutboundOrder ─► OrderLine ─► LineAllocation

The models follow the vendor's example payloads as they are: ids stay text
(order ids are zero-padded, "00000044"), "" for a missing date becomes None,
numbers sent as strings become ``Decimal``, and fields not modelled here are
kept (``extra="allow"``) so a raw payload can still be stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, NamedTuple, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.errors import UnitMismatch
from shared.http import (
    OptionalDate,
    OptionalDatetime,
    OptionalDecimal,
    OptionalTextId,
    RequiredDecimal,
    TextId,
    summarise_validation_error,
    to_decimal,
)
from shared.units import normalise_flourish_uom

#: Cannabinoid names of a v2 lab test result; each is sent as ``<name>_percentage``.
CANNABINOIDS = (
    "thc",
    "delta_8_thc",
    "delta_9_thc",
    "thca",
    "thcv",
    "cbd",
    "base_cbd",
    "cbda",
    "cbdn",
    "cbdv",
    "cbg",
    "cbn",
    "tac",
)

#: Terpene names of a v2 lab test result; each is sent as ``<name>_percentage``.
TERPENES = (
    "alpha_bisabolol",
    "alpha_humulene",
    "alpha_phellandrene",
    "alpha_pinene",
    "alpha_terpinene",
    "bergamotene",
    "beta_caryophyllene",
    "beta_pinene",
    "borneol",
    "camphene",
    "camphor",
    "cedrene",
    "delta_3_carene",
    "eucalyptol",
    "farnesene",
    "fenchol",
    "geraniol",
    "geranyl_acetate",
    "guaiol",
    "isopulegol",
    "limonene",
    "linalool",
    "menthol",
    "myrcene",
    "nerolidol",
    "ocimene",
    "octanol",
    "p_cymene",
    "phytol",
    "pulegone",
    "sabinene",
    "terpineol",
    "terpinolene",
    "valencene",
)

_PERCENTAGE_SUFFIX = "_percentage"

RowT = TypeVar("RowT")


class FlourishModel(BaseModel):
    """Base of every Flourish model: unknown fields are kept, not rejected."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class LockCode(FlourishModel):
    name: str | None = None
    can_add_to_outbound_order: bool | None = None
    exclude_from_global_inventory: bool | None = None


class PackageRow(FlourishModel):
    """One package from ``/v1/packages``, validated for the inventory sync.

    A row fails validation when it has no SKU, a quantity that is not a
    number, or a unit this integration does not convert. ``parse_package_row``
    turns that failure into an ``InvalidRow``.
    """

    package_id: str
    sku: str
    item_id: OptionalTextId = None
    item_name: str | None = None
    item_variation_id: OptionalTextId = None
    package_status: str | None = None
    lot_number: OptionalTextId = None
    qty: RequiredDecimal
    available_qty: RequiredDecimal
    uom: str
    area_id: OptionalTextId = None
    area_name: OptionalTextId = None
    location_id: OptionalTextId = None
    location_name: OptionalTextId = None
    is_locked: bool | None = False
    lock_code: LockCode | None = None
    brand: str | None = None
    strain_name: str | None = None
    unit_weight: OptionalDecimal = None
    weight_uom: str | None = None
    lab_test_result_id: OptionalTextId = None
    production_date: OptionalDate = None
    harvest_date: OptionalDate = None
    last_updated_timestamp: OptionalDatetime = None

    @field_validator("package_id", "sku", mode="before")
    @classmethod
    def _require_text(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError("is missing or blank")
        return value.strip() if isinstance(value, str) else value

    @field_validator("uom", mode="before")
    @classmethod
    def _known_uom(cls, value: Any) -> str:
        try:
            return normalise_flourish_uom(str(value))
        except UnitMismatch as exc:
            raise ValueError(exc.message) from None

    @property
    def can_add_to_outbound_order(self) -> bool:
        """Whether the package may go on an order: unlocked, or its lock allows it."""
        if not self.is_locked:
            return True
        return bool(self.lock_code and self.lock_code.can_add_to_outbound_order)


class InvalidRow(NamedTuple):
    """A row that failed validation, kept with its tag, the reason and the raw data."""

    package_tag: str | None
    reason: str
    raw: Any


@dataclass
class Page(Generic[RowT]):
    """One page of an offset/limit list.

    ``has_next`` follows the Flourish rule: a page with fewer rows than
    ``limit`` (bad rows included) or an empty ``meta.next`` is the last one.
    ``total`` is Flourish's ``meta.total``, which its own examples show can
    disagree with the rows returned, so it is for display only.
    """

    items: list[RowT]
    offset: int
    limit: int
    total: int | None
    has_next: bool
    invalid: list[InvalidRow] = field(default_factory=list)


def parse_package_row(raw: Any) -> PackageRow | InvalidRow:
    """Validate one raw package; a failure becomes an ``InvalidRow``, not an error."""
    try:
        return PackageRow.model_validate(raw)
    except ValidationError as exc:
        tag = raw.get("package_id") if isinstance(raw, Mapping) else None
        return InvalidRow(tag or None, summarise_validation_error(exc), raw)


class LabTestResult(FlourishModel):
    """A v2 lab test result (``/v2/lab-test-results/{id}``).

    Every ``<name>_percentage`` field with a numeric value is collected into
    ``percentages``. A value that is not a number (a lab's "ND", say) is left
    out, so it does not fail the whole result.
    """

    lab_test_result_id: TextId
    lot_number: str | None = None
    source_package_id: str | None = None
    lab_test_id: OptionalTextId = None
    lab_test_result_status: str | None = None
    sample_analyzed_timestamp: OptionalDatetime = None
    expiration_date: OptionalDate = None
    is_final: bool | None = None
    percentages: dict[str, Decimal] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _gather_percentages(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "percentages" not in data:
            return {**data, "percentages": _collect_percentages(data)}
        return data

    def cannabinoids(self) -> dict[str, Decimal]:
        """Return cannabinoid name (``thc``, ``cbd``, ...) to percent, non-null only."""
        return {n: self.percentages[n] for n in CANNABINOIDS if n in self.percentages}

    def terpenes(self) -> dict[str, Decimal]:
        """Return terpene name (``limonene``, ...) to percent, non-null only."""
        return {n: self.percentages[n] for n in TERPENES if n in self.percentages}


def _collect_percentages(data: Mapping[str, Any]) -> dict[str, Decimal]:
    found = {}
    for key, value in data.items():
        if not key.endswith(_PERCENTAGE_SUFFIX):
            continue
        try:
            number = to_decimal(value)
        except ValueError:
            continue
        if number is not None:
            found[key.removesuffix(_PERCENTAGE_SUFFIX)] = number
    return found


class Address(FlourishModel):
    address_line_1: str | None = None
    address_line_2: str | None = None
    city: str | None = None
    state: str | None = None
    zip_code: str | None = None
    country: str | None = None


class FlourishFacility(Address):
    """A facility; its ``id`` is the value of the ``FacilityID`` header."""

    id: TextId
    facility_name: str | None = None
    alias: str | None = None
    facility_type: str | None = None
    license_number: str | None = None
    local_license_number: str | None = None
    license_type: str | None = None
    timezone: str | None = None
    active: bool | None = None
    sales_rep_required_for_outbound: bool = False


class Contact(FlourishModel):
    facility_contact_id: OptionalTextId = None
    first_name: str | None = None
    middle_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone_number: str | None = None
    is_primary: bool | None = None


class Destination(Address):
    """A B2B customer (licensee) that outbound orders ship to."""

    id: TextId
    name: str | None = None
    alias: str | None = None
    type: str | None = None
    license_number: str | None = None
    local_license_number: str | None = None
    license_type: str | None = None
    external_id: OptionalTextId = None
    active: bool | None = None
    contacts: list[Contact] | None = None
    total_open_balance: OptionalDecimal = None


class Item(FlourishModel):
    """An item of the item master; its ``sku`` is matched against Apex products."""

    id: TextId
    item_name: str | None = None
    sku: str | None = None
    uom: str | None = None
    unit_weight: OptionalDecimal = None
    weight_uom: str | None = None
    price: OptionalDecimal = None
    cost: OptionalDecimal = None
    inventory_type: str | None = None
    item_class: str | None = None
    item_category: str | None = None
    brand: str | None = None
    active: bool | None = None
    sellable: bool | None = None


class SalesRep(FlourishModel):
    sales_rep_id: int
    first_name: str | None = None
    middle_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone_number: str | None = None
    facility_id: OptionalTextId = None
    active: bool | None = None


class OrderParty(Address):
    """The destination or distributor as an outbound order embeds it."""

    id: OptionalTextId = None
    name: str | None = None
    alias: str | None = None
    type: str | None = None
    license_number: str | None = None
    external_id: OptionalTextId = None
    contact: Contact | None = None


class OrderSalesRep(FlourishModel):
    id: OptionalTextId = None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None


class LineAllocation(FlourishModel):
    """A package allocated to an order line (``order_line_dtls``)."""

    package_id: str | None = None
    lot_number: str | None = None
    qty: OptionalDecimal = None
    returned: bool | None = None


class OrderLine(FlourishModel):
    item_id: OptionalTextId = None
    sku: str | None = None
    item_variation_pk: OptionalTextId = None
    strain_id: OptionalTextId = None
    lot_number: str | None = None
    item_name: str | None = None
    item_uom: str | None = None
    order_qty: OptionalDecimal = None
    allocated_qty: OptionalDecimal = None
    unit_price: OptionalDecimal = None
    discount_price: OptionalDecimal = None
    line_total_price: OptionalDecimal = None
    order_line_status: str | None = None
    order_line_dtls: list[LineAllocation] | None = None


class OrderNote(FlourishModel):
    subject: str | None = None
    note: str | None = None
    internal_only: bool | None = None


class OutboundOrder(FlourishModel):
    """A B2B sales order.

    ``id`` is None only in a reply that omits it, as the vendor's example of
    the POST reply does. The caller then finds the order by its
    ``original_order_id``.
    """

    id: OptionalTextId = None
    original_order_id: OptionalTextId = None
    order_status: str | None = None
    payment_status: str | None = None
    order_timestamp: OptionalDatetime = None
    invoice_date: OptionalDate = None
    requested_delivery_date: OptionalDate = None
    shipment_id: OptionalTextId = None
    is_approved: bool | None = None
    sub_total_price: OptionalDecimal = None
    total_price: OptionalDecimal = None
    destination: OrderParty | None = None
    distributor: OrderParty | None = None
    sales_rep: OrderSalesRep | None = None
    order_lines: list[OrderLine] = Field(default_factory=list)
    notes: list[OrderNote] | None = None
    created_timestamp: OptionalDatetime = None
    last_updated_timestamp: OptionalDatetime = None

    @property
    def has_allocations(self) -> bool:
        """Whether any stock is allocated, after which Flourish rejects updates."""
        if self.order_status in ("Partially Allocated", "Allocated", "Shipped"):
            return True
        return any(
            (line.allocated_qty or 0) > 0 or line.order_line_dtls
            for line in self.order_lines
        )
