"""Seeded Apex data of one tenant: company, operations, taxonomies, products, buyers."""

from __future__ import annotations

import random
import re
from datetime import datetime

from sandbox.catalog import (
    APEX_CATEGORIES,
    APEX_UNIT_ALIASES,
    CALIFORNIA,
    CANNABINOIDS,
    KINDS,
    PARENT_STATUSES,
    TERPENES,
    CustomerSpec,
    FacilitySpec,
    TenantSpec,
)
from sandbox.clock import apex_time, money, seed_time
from sandbox.seed_flourish import uuid_text
from sandbox.state import ApexCompany, FlourishCompany, Record, SandboxState


def stamp(record: Record, created: datetime, updated: datetime | None = None) -> Record:
    """Set the rendered and the internal created/updated timestamps of a record."""
    updated = updated or created
    record.update(
        created_at=apex_time(created),
        updated_at=apex_time(updated),
        _created=created,
        _updated=updated,
    )
    return record


def build_company(rng: random.Random, spec: TenantSpec) -> ApexCompany:
    address = spec.facilities[0].address
    record = stamp(
        {
            "id": spec.apex_company_id,
            "uuid": uuid_text(rng),
            "name": spec.name,
            "line_one": address.line_one,
            "line_two": address.line_two,
            "city": address.city,
            "state": CALIFORNIA,
            "zip": address.zip,
            "country": "United States",
            "phone": "5550100100",
            "website": None,
            "storefront_enabled": True,
            "marketplace_live": False,
        },
        seed_time(-400),
    )
    return ApexCompany(spec.apex_company_id, spec.name, spec.prefix, record)


def seed_operations(company: ApexCompany, facilities: tuple[FacilitySpec, ...]) -> None:
    for facility in facilities:
        address = facility.address
        company.operations[facility.operation_id] = stamp(
            {
                "id": facility.operation_id,
                "name": facility.name,
                "industry": "Cannabis",
                "state_license": facility.license,
                "line_one": address.line_one,
                "line_two": address.line_two,
                "city": address.city,
                "zip": address.zip,
                "disabled": False,
                "state": CALIFORNIA,
                "country": "United States",
                "operation_type": {"id": 1, "name": facility.facility_type},
                "turnaround_time": "2-3 days",
            },
            seed_time(-380),
        )


def seed_taxonomies(rng: random.Random, company: ApexCompany, spec: TenantSpec) -> None:
    """Create units, categories, cannabinoids and terpenes with this company's ids."""
    for name, unit_id in spec.unit_ids.items():
        company.units[unit_id] = {
            "id": unit_id,
            "name": name,
            "alias": APEX_UNIT_ALIASES[name],
            "available_on_inventory_items": name != "Case",
        }
    for name, category_id in APEX_CATEGORIES.items():
        company.categories[category_id] = _category(category_id, name)

    cannabinoids = rng.sample(CANNABINOIDS, len(CANNABINOIDS))
    for offset, (name, abbreviation) in enumerate(cannabinoids):
        cannabinoid_id = spec.cannabinoid_start + offset
        company.cannabinoids[cannabinoid_id] = {
            "id": cannabinoid_id,
            "name": name,
            "abbreviation": abbreviation,
            "display_name": f"{name} ({abbreviation})",
        }
    terpenes = rng.sample(TERPENES, len(TERPENES))
    for offset, (name, _) in enumerate(terpenes):
        terpene_id = spec.terpene_start + offset
        company.terpenes[terpene_id] = {
            "id": terpene_id,
            "name": name,
            "display_name": name,
        }


def _category(category_id: int, name: str) -> Record:
    return {
        "id": category_id,
        "name": name,
        "short_display_name": name,
        "long_display_name": name,
    }


def cannabinoid_id(company: ApexCompany, abbreviation: str) -> int:
    return next(
        c["id"]
        for c in company.cannabinoids.values()
        if c["abbreviation"] == abbreviation
    )


def build_product(
    state: SandboxState, company: ApexCompany, name: str, sku: str | None, unit: str,
    *, category: str | None = None, created: datetime | None = None,
) -> Record:  # fmt: skip
    """Create a product in ``unit`` (Pound, Gram, Unit, ...) and store it."""
    product_id = state.ids.next("apex_product")
    category_name = category or {"Pound": "Flower", "Gram": "Concentrate"}.get(
        unit, "Pre-roll"
    )
    unit_record = company.unit_named(unit)
    record: Record = {
        "id": product_id,
        "uuid": f"prod-{company.id}-{product_id}",
        "name": name,
        "product_sku": sku,
        "dutchie_sku": None,
        "product_category_id": APEX_CATEGORIES[category_name],
        "category": company.categories[APEX_CATEGORIES[category_name]],
        "product_type_id": None,
        "product_type": None,
        "brand_id": None,
        "brand": None,
        "product_unit_measurement_id": unit_record["id"],
        "unit_measurement": dict(unit_record),
        "unit_size": None,
        "unit_size_unit_measurement_id": None,
        "unit_size_unit_measurement": None,
        "units_per_case": None,
        "units_per_package": None,
        "sold_as": "Unit",
        "predominate_canabinoid_id": cannabinoid_id(company, "THC"),
        "description": None,
        "list_to_buyers": True,
        "archived": False,
        "archived_at": None,
        "images": [],
        "company_id": company.id,
        **prices(0),
    }
    stamp(record, created or seed_time(-100))
    company.products[product_id] = record
    company.bump("products")
    return record


def prices(listing_cents: int) -> Record:
    return {
        "listing_price": money(listing_cents),
        "listing_price_raw": listing_cents,
        "listing_price_base_unit": money(listing_cents),
        "listing_price_base_unit_raw": listing_cents,
    }


def seed_products(
    state: SandboxState,
    rng: random.Random,
    company: ApexCompany,
    flourish: FlourishCompany,
) -> None:
    """Create a product per mapped Flourish item (same SKU) and a few Apex-only ones."""
    for item in flourish.items.values():
        if item.get("_unmapped"):
            continue
        kind = KINDS[item["_kind"]]
        created = seed_time(-110 + rng.uniform(0, 40))
        product = build_product(
            state, company, item["item_name"], item["sku"], kind.apex_unit,
            category=kind.apex_category, created=created,
        )  # fmt: skip
        product.update(prices(rng.randint(*kind.price_cents)))
        _set_pack_size(company, product, kind.unit_weight, kind.units_per_case)
    _seed_apex_only_products(state, company)


def _set_pack_size(
    company: ApexCompany,
    product: Record,
    unit_weight: float | None,
    per_case: int | None,
) -> None:
    if unit_weight is not None:
        gram = company.unit_named("Gram")
        product.update(
            unit_size=unit_weight,
            unit_size_unit_measurement_id=gram["id"],
            unit_size_unit_measurement=dict(gram),
        )
    if per_case is not None:
        product.update(units_per_case=per_case, sold_as="Case")


def _seed_apex_only_products(state: SandboxState, company: ApexCompany) -> None:
    build_product(
        state, company, "Logo T-Shirt", f"MERCH-TEE-{company.prefix}", "Unit",
        category="Merchandise",
    )  # fmt: skip
    build_product(state, company, "Seasonal Blend (no SKU)", None, "Pound")
    archived = build_product(
        state, company, "Retired Strain Bulk", "RETIRED-01", "Pound"
    )
    archived.update(archived=True, archived_at=archived["updated_at"])


def seed_deal_flows(
    state: SandboxState, company: ApexCompany, spec: TenantSpec
) -> None:
    parents = {name: parent_id for parent_id, name in PARENT_STATUSES}
    for index, (flow_name, statuses) in enumerate(spec.deal_flows):
        flow_id = state.ids.next("apex_deal_flow")
        order_statuses = []
        for position, (status_name, parent) in enumerate(statuses, start=1):
            order_statuses.append(
                {
                    "id": state.ids.next("apex_status"),
                    "name": status_name,
                    "payment_percentage": 100 if parent == "Complete" else 0,
                    "archived": False,
                    "position": position,
                    "parent_status": {"id": parents[parent], "name": parent},
                }
            )
        company.deal_flows[flow_id] = stamp(
            {
                "id": flow_id,
                "name": flow_name,
                "default": index == 0,
                "type": "sales",
                "summary": None,
                "uses_deal_flow_payments": False,
                "_statuses": order_statuses,
            },
            seed_time(-300),
        )


def seed_buyers(
    state: SandboxState, rng: random.Random, company: ApexCompany, spec: TenantSpec
) -> None:
    default_flow = next(iter(company.deal_flows))
    for customer in spec.customers:
        buyer_id = state.ids.next("apex_buyer")
        created = seed_time(-200 + rng.uniform(0, 150))
        record = _buyer_record(buyer_id, company.id, customer, default_flow)
        record["_case"] = customer.case
        company.buyers[buyer_id] = stamp(record, created, seed_time(rng.uniform(0, 60)))


def _buyer_record(
    buyer_id: int, company_id: int, customer: CustomerSpec, deal_flow_id: int
) -> Record:
    address = customer.apex_address
    return {
        "id": buyer_id,
        "uuid": f"buyer-{company_id}-{buyer_id}",
        "name": customer.name,
        "slug": re.sub(r"[^a-z0-9]+", "-", customer.name.lower()).strip("-"),
        "owning_company_id": company_id,
        "buyer_company_id": None,
        "state_license": customer.apex_license,
        "line_one": address.line_one,
        "line_two": address.line_two,
        "city": address.city,
        "zip": address.zip,
        "state_id": CALIFORNIA["id"],
        "country_id": 1,
        "phone": None,
        "website_url": None,
        "memo": None,
        "type": "Retailer",
        "buyer_type": "Dispensary",
        "industry": "Cannabis",
        "disabled": customer.disabled,
        "vendor_disabled": False,
        "buyer_group_id": None,
        "standard_deal_flow_id": deal_flow_id,
        "pricing_tier_id": None,
        "net_terms_id": None,
        "buyer_stage_id": None,
        "disable_bulk_discounts": False,
        "credit_total": "0.00",
        "total_orders": 0,
    }
