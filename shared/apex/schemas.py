"""Pydantic models of the Apex Trading API payloads this project reads.

::

    /v1/welcome ─────────► Welcome          /v1/usage ──────────► Usage
    /v1/operations ──────► Operation        /v1/unit-measurements ► UnitMeasurement
    /v1/cannabinoids ────► Cannabinoid      /v1/terpenes ───────► Terpene
    /v1/products ────────► Product ─► UnitRef
    /v2/batches ─────────► Batch ─► BatchCannabinoid, BatchTerpene
    /v1/buyers ──────────► Buyer ─► StateRef
    /v1/shipping-orders ─► ShippingOrder ─► ShippingOrderItem, OrderStatus
    /v1/deal-flows ──────► DealFlow ─► OrderStatus ─► ParentStatus

The OpenAPI document types many fields as strings that live responses return
as numbers or 0/1 booleans, and live payloads carry fields it does not list.
So the models are lenient: ids and quantities parse from strings or numbers,
0/1 are booleans (pydantic's lax mode), money strings become ``Decimal`` and
unknown fields are kept (``extra="allow"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.http import (
    OptionalDate,
    OptionalDatetime,
    OptionalDecimal,
    OptionalTextId,
    TextId,
)

ItemT = TypeVar("ItemT")


class ApexModel(BaseModel):
    """Base of every Apex model: unknown fields are kept, not rejected."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


@dataclass
class ApexPage(Generic[ItemT]):
    """One page of a page/per_page list."""

    items: list[ItemT]
    page: int
    per_page: int
    last_page: int | None
    total: int | None
    has_next: bool


class Welcome(ApexModel):
    """The token check: company name, API version and the token's abilities."""

    name: str | None = None
    api_version: str | None = Field(default=None, alias="api-version")
    abilities: list[str] = Field(default_factory=list, alias="access")

    @field_validator("abilities", mode="before")
    @classmethod
    def _split_access(cls, value: Any) -> Any:
        # The OpenAPI document types ``access`` as a string; live responses
        # send a list of ability strings. Accept both.
        if value is None:
            return []
        if isinstance(value, str):
            return [part for part in value.replace(",", " ").split() if part]
        return value


class Usage(ApexModel):
    """Credits used this month; ``monthly_credit_limit`` None means unlimited."""

    month: str | None = None
    credits_used: int | None = None
    monthly_credit_limit: int | None = None
    request_count: int | None = None
    throttled_request_count: int | None = None


class StateRef(ApexModel):
    id: int | None = None
    text: str | None = None
    value: str | None = None


class Operation(ApexModel):
    """A licensed location; batches belong to one. Matched on ``state_license``."""

    id: int
    name: str | None = None
    state_license: OptionalTextId = None
    line_one: str | None = None
    city: str | None = None
    zip: OptionalTextId = None
    disabled: bool | None = None
    state: StateRef | None = None


class UnitRef(ApexModel):
    id: int | None = None
    name: str | None = None
    alias: str | None = None


class UnitMeasurement(ApexModel):
    """A unit; ``available_on_inventory_items`` is false for order-only units (Case)."""

    id: int
    name: str
    alias: str | None = None
    available_on_inventory_items: bool | None = None


class Cannabinoid(ApexModel):
    """A cannabinoid of the company's taxonomy; ids differ between companies."""

    id: int
    name: str
    abbreviation: str | None = None
    display_name: str | None = None


class Terpene(ApexModel):
    """A terpene of the company's taxonomy; ids differ between companies."""

    id: int
    name: str
    display_name: str | None = None


class Product(ApexModel):
    """A product; its ``product_sku`` is matched against Flourish item SKUs."""

    id: int
    name: str | None = None
    product_sku: OptionalTextId = None
    product_unit_measurement_id: int | None = None
    unit_measurement: UnitRef | None = None
    unit_size: OptionalDecimal = None
    unit_size_unit_measurement: UnitRef | None = None
    product_category_id: int | None = None
    predominate_canabinoid_id: int | None = None
    archived: bool | None = None
    created_at: OptionalDatetime = None
    updated_at: OptionalDatetime = None

    @property
    def unit_name(self) -> str | None:
        """Name of the product's base unit (Unit, Gram, Pound, ...), if sent."""
        return self.unit_measurement.name if self.unit_measurement else None


class BatchCannabinoid(ApexModel):
    id: int | None = None
    cannabinoid_id: int | None = None
    name: str | None = None
    abbreviation: str | None = None
    measurement: OptionalDecimal = None
    measurement_type: str | None = None


class BatchTerpene(ApexModel):
    id: int | None = None
    terpene_id: int | None = None
    name: str | None = None
    measurement: OptionalDecimal = None
    measurement_type: str | None = None


class Batch(ApexModel):
    """A sellable lot of a product at one operation; ``quantity`` is in base units."""

    id: int
    name: TextId
    product_id: int | None = None
    operation_id: int | None = None
    quantity: OptionalDecimal = None
    unlimited_quantity: bool | None = None
    lot_number: OptionalTextId = None
    harvest_date: OptionalDate = None
    production_date: OptionalDate = None
    test_date: OptionalDate = None
    predominate_canabinoid_min_or_only: OptionalDecimal = None
    predominate_canabinoid_max: OptionalDecimal = None
    predominate_canabinoid_unit: str | None = None
    cannabinoids: list[BatchCannabinoid] | None = None
    terpenes: list[BatchTerpene] | None = None
    hold: bool | None = None
    archived: bool | None = None
    created_at: OptionalDatetime = None
    updated_at: OptionalDatetime = None


class Buyer(ApexModel):
    """A buyer in the seller's CRM; matched to Flourish on the license number."""

    id: int
    name: str | None = None
    state_license: OptionalTextId = None
    buyer_company_id: int | None = None
    line_one: str | None = None
    line_two: str | None = None
    city: str | None = None
    zip: OptionalTextId = None
    state_id: int | None = None
    state: StateRef | None = None
    disabled: bool | None = None
    updated_at: OptionalDatetime = None


class ParentStatus(ApexModel):
    """One of the six fixed stages: Submitted through Complete."""

    id: int | None = None
    name: str | None = None


class OrderStatus(ApexModel):
    """A company's own order status, under one parent stage."""

    id: int
    name: str | None = None
    position: int | None = None
    archived: bool | None = None
    parent_status: ParentStatus | None = None


class DealFlow(ApexModel):
    """An order workflow and its statuses."""

    id: int
    name: str | None = None
    default: bool | None = None
    order_statuses: list[OrderStatus] = Field(default_factory=list)


class ShippingOrderItem(ApexModel):
    """An order line: ``inventory_quantity`` is in the product's base unit."""

    id: int | None = None
    product_id: int | None = None
    batch_id: int | None = None
    product_name: str | None = None
    product_sku: OptionalTextId = None
    batch_name: OptionalTextId = None
    order_quantity: OptionalDecimal = None
    order_unit_measurement: UnitRef | None = None
    inventory_quantity: OptionalDecimal = None
    unit_measurement: UnitRef | None = None
    order_price: OptionalDecimal = None
    order_price_raw: int | None = None
    order_sample: bool | None = None
    metrc_package_label: OptionalTextId = None


class ShippingOrder(ApexModel):
    """An order where the company is the seller."""

    id: int
    invoice_number: OptionalTextId = None
    order_status_id: int | None = None
    order_status: OrderStatus | None = None
    deal_flow_id: int | None = None
    cancelled: bool = False
    buyer_id: int | None = None
    buyer_company_id: int | None = None
    buyer_state_license: OptionalTextId = None
    operation_id: int | None = None
    order_date: OptionalDate = None
    delivery_date: OptionalDate = None
    ship_name: str | None = None
    ship_line_one: str | None = None
    ship_line_two: str | None = None
    ship_city: str | None = None
    ship_state: str | None = None
    ship_zip: OptionalTextId = None
    split_from_order_id: int | None = None
    items: list[ShippingOrderItem] = Field(default_factory=list)
    created_at: OptionalDatetime = None
    updated_at: OptionalDatetime = None

    @property
    def stage(self) -> str | None:
        """Name of the parent stage of the order's status, if the payload has it."""
        status = self.order_status
        return status.parent_status.name if status and status.parent_status else None
