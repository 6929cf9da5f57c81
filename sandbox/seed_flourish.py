"""Seeded Flourish data: facilities, items, lab results, packages, customers, reps."""

from __future__ import annotations

import random
import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sandbox.catalog import (
    KINDS,
    TERPENES,
    UOMS,
    Address,
    FacilitySpec,
    TenantSpec,
)
from sandbox.clock import day, flourish_time, seed_time
from sandbox.state import FlourishCompany, Record, SandboxState

#: Packages per facility whose input is broken, and what is broken.
BAD_ROWS = {
    "GVF Cultivation": ("sku_null", "qty_text"),
    "GVF Processing": ("uom_unknown", "sku_blank"),
    "Coastal Main": ("qty_text", "uom_unknown"),
}
BAD_ROW_POSITIONS = (5, 17)
UNMAPPED_SHARE = 0.05
PACKAGES_PER_LAB_RESULT = 25

LAB_RESULT_FIELDS = (
    "tac", "cbd", "base_cbd", "cbda", "cbdn", "cbdv", "thc", "delta_8_thc",
    "delta_9_thc", "thca", "thcv", "cbg", "cbn",
    *(stem for _, stem in TERPENES),
    "alpha_phellandrene", "alpha_terpinene", "bergamotene", "borneol", "camphor",
    "cedrene", "delta_3_carene", "farnesene", "fenchol", "geranyl_acetate", "guaiol",
    "isopulegol", "menthol", "octanol", "p_cymene", "phytol", "pulegone", "sabinene",
    "terpineol", "moisture",
)  # fmt: skip


@dataclass
class FacilityPlan:
    spec: FacilitySpec
    facility_id: str
    packages: int


def hex_id(rng: random.Random, length: int) -> str:
    return f"{rng.getrandbits(length * 4):0{length}x}"


def uuid_text(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def build_facility(spec: FacilitySpec, facility_id: str, created: datetime) -> Record:
    address = spec.address
    return {
        "id": facility_id,
        "alias": spec.name.upper(),
        "company_email": None,
        "company_phone_number": "5550100008",
        "address_line_1": address.line_one,
        "address_line_2": address.line_two,
        "city": address.city,
        "state": "CA",
        "zip_code": address.zip,
        "timezone": "America/Los_Angeles",
        "country": "United States",
        "billing": _empty_billing(),
        "local_license_number": None,
        "license_number": spec.license,
        "license_type": "Adult-Use",
        "external_id": None,
        "website": None,
        "notes": None,
        "active": True,
        "last_updated_timestamp": flourish_time(created),
        "created_timestamp": flourish_time(created),
        "facility_type": spec.facility_type,
        "facility_name": spec.name,
        "contacts": None,
        "total_open_balance": None,
        "number_open_invoices": None,
        "sales_rep_required_for_outbound": spec.sales_rep_required,
    }


def _empty_billing() -> Record:
    keys = ("address_line_1", "address_line_2", "city", "state", "zip_code")
    return {**dict.fromkeys(keys), "country": "United States"}


def build_item(
    item_id: str, kind_key: str, strain: str, sku: str, created: datetime
) -> Record:
    kind = KINDS[kind_key]
    uom_id, uom_description = UOMS[kind.uom]
    weight_uom = "g" if kind.unit_weight else None
    return {
        "id": item_id,
        "item_name": f"{strain} {kind.label}",
        "active": True,
        "external": False,
        "sku": sku,
        "retail_display_name": f"{strain} {kind.label}",
        "price": 0,
        "cost": 0,
        "item_description": f"{strain} {kind.label.lower()}",
        "inventory_type": "Cannabis",
        "item_class": kind.item_class,
        "item_category": kind.item_category,
        "brand": None,
        "strain_required": True,
        "strain_id": f"{zlib.crc32(strain.encode()):08x}",
        "strain_name": strain,
        "strain_type_name": "Hybrid",
        "sellable": True,
        "is_medical": False,
        "is_tax_exempt": False,
        "lot_tracked": True,
        "single_unit_package": False,
        "standard_qty_uom_id": uom_id,
        "uom": kind.uom,
        "uom_description": uom_description,
        "unit_weight": kind.unit_weight,
        "weight_uom_id": UOMS["g"][0] if weight_uom else None,
        "weight_uom": weight_uom,
        "weight_uom_description": "Gram" if weight_uom else None,
        "unit_thc_percent": None,
        "unit_cbd_percent": None,
        "thc_ratio": None,
        "cbd_ratio": None,
        "ecommerce_active": False,
        "item_strain_type_name": "Hybrid",
        "last_updated_by": "user2@example.com",
        "last_updated_timestamp": flourish_time(created),
        "created_by": "user2@example.com",
        "created_timestamp": flourish_time(created),
        "_kind": kind_key,
        "_updated": created,
    }


def build_lab_result(
    rng: random.Random, result_id: int, lot_number: str, moment: datetime
) -> Record:
    record: Record = {
        "lab_test_result_id": result_id,
        "source_package_id": None,
        "lot_number": lot_number,
        "sample_package_id": None,
        "sample_analyzed_timestamp": flourish_time(moment),
        **{f"lab_results_s3_key_{n}": None for n in range(1, 6)},
        "laboratory_id": hex_id(rng, 8),
        "lab_test_id": str(rng.randint(1000, 99999)),
        "origin_facility_id": "",
        **{f"{stem}_percentage": None for stem in LAB_RESULT_FIELDS},
    }
    _fill_potency(rng, record)
    _fill_terpenes(rng, record)
    record.update(_lab_result_trailer(moment))
    return record


def _fill_potency(rng: random.Random, record: Record) -> None:
    thc = round(rng.uniform(17, 32), 2)
    record["thc_percentage"] = thc
    record["thca_percentage"] = round(thc * rng.uniform(1.02, 1.12), 2)
    record["delta_9_thc_percentage"] = round(rng.uniform(0.2, 1.4), 2)
    record["cbd_percentage"] = (
        round(rng.uniform(0.03, 1.2), 2) if rng.random() < 0.7 else None
    )
    record["cbg_percentage"] = round(rng.uniform(0.2, 1.6), 2)
    record["cbn_percentage"] = (
        round(rng.uniform(0.01, 0.3), 2) if rng.random() < 0.5 else None
    )
    record["tac_percentage"] = round(thc + rng.uniform(1, 4), 2)
    record["moisture_percentage"] = round(rng.uniform(8, 12), 1)


def _fill_terpenes(rng: random.Random, record: Record) -> None:
    for _, stem in rng.sample(TERPENES, rng.randint(3, 6)):
        record[f"{stem}_percentage"] = round(rng.uniform(0.05, 1.3), 3)


def _lab_result_trailer(moment: datetime) -> Record:
    return {
        "has_pesticides": 0,
        "has_solvents": 0,
        "has_heavymetals": 0,
        "is_final": 1,
        "lab_test_result_status_id": 20,
        "origin_type_id": 1,
        "pdf_url_1": None,
        "last_updated_by": "lab@example.com",
        "last_updated_timestamp": flourish_time(moment),
        "created_by": "lab@example.com",
        "created_timestamp": flourish_time(moment),
        "lab_test_result_status": "Pass",
        "origin_type_description": "",
        "confirm_replace": False,
        "expiration_date": day(moment + timedelta(days=365)),
        "external_id": None,
        "external_package_id": None,
        "product_name": None,
        "product_category_name": None,
        "overall_passed": True,
        "revoked_date": None,
        "result_released": True,
        "result_released_date_time": flourish_time(moment),
    }


def build_destination(
    rng: random.Random, name: str, license_number: str | None, address: Address,
    kind: str,
) -> Record:  # fmt: skip
    return {
        "id": hex_id(rng, 20),
        "alias": f"{name}, LLC" if kind == "Dispensary" else name,
        "company_email": None,
        "company_phone_number": f"55501{rng.randint(10000, 99999)}",
        "address_line_1": address.line_one,
        "address_line_2": address.line_two,
        "city": address.city,
        "state": "CA",
        "zip_code": address.zip,
        "timezone": "America/Los_Angeles",
        "country": "United States",
        "billing": _empty_billing(),
        "local_license_number": None,
        "license_number": license_number,
        "license_type": "Adult-Use",
        "external_id": None,
        "website": None,
        "notes": None,
        "active": True,
        "contacts": None,
        "total_open_balance": f"{rng.uniform(0, 90000):.2f}",
        "number_open_invoices": str(rng.randint(0, 20)),
        "type": kind,
        "name": name,
    }


def build_sales_rep(
    rep_id: int, first: str, last: str, email: str, facility_id: str | None
) -> Record:
    moment = seed_time(-90)
    return {
        "sales_rep_id": rep_id,
        "first_name": first,
        "middle_name": "",
        "last_name": last,
        "phone_number": "",
        "email": email,
        "facility_id": facility_id,
        "active": True,
        "last_updated_by": "user6@example.com",
        "last_updated_timestamp": flourish_time(moment),
        "created_by": "user6@example.com",
        "created_timestamp": flourish_time(moment),
    }


def seed_customers(
    state: SandboxState, rng: random.Random, spec: TenantSpec, company: FlourishCompany
) -> None:
    for customer in spec.customers:
        for name, license_number, address in customer.destinations:
            record = build_destination(rng, name, license_number, address, "Dispensary")
            company.destinations[record["id"]] = record
    for name, license_number, address in spec.distributors:
        record = build_destination(rng, name, license_number, address, "Distributor")
        company.destinations[record["id"]] = record
    _seed_sales_reps(state, spec, company)


def _seed_sales_reps(
    state: SandboxState, spec: TenantSpec, company: FlourishCompany
) -> None:
    facility_ids = list(company.facilities)
    for first, last, email, facility_index in spec.sales_reps:
        facility_id = None if facility_index is None else facility_ids[facility_index]
        rep_id = state.ids.next("flourish_sales_rep")
        company.sales_reps[rep_id] = build_sales_rep(
            rep_id, first, last, email, facility_id
        )

    former_id = state.ids.next("flourish_sales_rep")
    former = build_sales_rep(
        former_id, "Pat", "Former", f"pat@{spec.prefix.lower()}.example", None
    )
    former["active"] = False
    company.sales_reps[former_id] = former
