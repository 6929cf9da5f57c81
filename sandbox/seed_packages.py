"""Seeded Flourish items, lab results and packages of one tenant."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sandbox.catalog import KINDS, UOMS, TenantSpec
from sandbox.clock import day, flourish_time, seed_time
from sandbox.seed_flourish import (
    BAD_ROW_POSITIONS,
    BAD_ROWS,
    PACKAGES_PER_LAB_RESULT,
    UNMAPPED_SHARE,
    FacilityPlan,
    build_item,
    build_lab_result,
    uuid_text,
)
from sandbox.state import FlourishCompany, Record, SandboxState

ITEM_CLASS_CODES = {"Buds": 5, "Concentrate": 1, "Pre-Roll": 7}
FLOWER_KINDS = {"bulk_g", "bulk_lb", "smalls", "eighth"}
LOCKED_SHARE = 0.05
ZERO_AVAILABLE_SHARE = 0.05
PARTLY_ALLOCATED_SHARE = 0.04
IN_WHOLESALE_ROOM_SHARE = 0.65
WITHOUT_LAB_RESULT_SHARE = 0.08


@dataclass
class FacilityItems:
    mapped: list[Record] = field(default_factory=list)
    unmapped: Record | None = None


@dataclass
class PackageContext:
    """Inputs shared by every package of one facility."""

    plan: FacilityPlan
    items: FacilityItems
    areas: dict[str, str]
    lab_results: list[Record]


def seed_items(
    state: SandboxState, spec: TenantSpec, company: FlourishCompany
) -> dict[str, FacilityItems]:
    """Create the item master; return the items each facility stocks."""
    by_key: dict[tuple[str, str], Record] = {}
    stocked: dict[str, FacilityItems] = {}
    for facility_spec, facility_id in zip(
        spec.facilities, company.facilities, strict=True
    ):
        items = FacilityItems()
        for kind in facility_spec.kinds:
            for strain in spec.strains:
                key = (kind, strain)
                if key not in by_key:
                    by_key[key] = _new_item(
                        state, company, kind, strain, spec.free_text_skus.get(key)
                    )
                items.mapped.append(by_key[key])
        kind, strain, sku = facility_spec.unmapped_item
        items.unmapped = _new_item(state, company, kind, strain, sku)
        items.unmapped["_unmapped"] = True
        stocked[facility_id] = items
    return stocked


def _new_item(
    state: SandboxState,
    company: FlourishCompany,
    kind: str,
    strain: str,
    sku: str | None,
) -> Record:
    item_id = str(state.ids.next("flourish_item"))
    code = ITEM_CLASS_CODES[KINDS[kind].item_class]
    created = seed_time(-120 + int(item_id) % 30)
    item = build_item(item_id, kind, strain, sku or f"1.{code}.31.{item_id}.0", created)
    company.items[item_id] = item
    return item


def seed_lab_results(
    state: SandboxState, rng: random.Random, spec: TenantSpec, company: FlourishCompany,
    packages: int,
) -> list[Record]:  # fmt: skip
    count = max(3, math.ceil(packages / PACKAGES_PER_LAB_RESULT))
    pool = []
    for _ in range(count):
        result_id = state.ids.next("flourish_lab_result")
        moment = seed_time(rng.uniform(-60, 100))
        record = build_lab_result(rng, result_id, f"{spec.prefix}-L{result_id}", moment)
        company.lab_results[str(result_id)] = record
        pool.append(record)
    return pool


def seed_packages(
    state: SandboxState, rng: random.Random, company: FlourishCompany,
    context: PackageContext,
) -> None:  # fmt: skip
    facility_id = context.plan.facility_id
    bucket: dict[str, Record] = {}
    company.packages[facility_id] = bucket
    for seq in range(1, context.plan.packages + 1):
        record = build_package(rng, context, seq)
        bucket[record["package_id"]] = record
        state.package_index[record["package_id"]] = (company.id, facility_id)
    _break_some_rows(
        list(bucket.values()), BAD_ROWS.get(context.plan.spec.name, ()), context
    )


def room_areas(rng: random.Random, plan: FacilityPlan) -> dict[str, str]:
    """Return area ids by area (room) name for one facility."""
    names = (plan.spec.wholesale_room, *plan.spec.other_rooms)
    return {name: uuid_text(rng) for name in names}


def build_package(rng: random.Random, context: PackageContext, seq: int) -> Record:
    item = _pick_item(rng, context.items)
    kind = KINDS[item["_kind"]]
    created = seed_time(rng.uniform(0, 150))
    updated = created + timedelta(
        days=rng.uniform(0, 25), seconds=rng.randint(0, 86399)
    )
    record = _package_identity(context, item, seq, created, updated)
    record.update(_package_quantities(rng, kind.qty_range, kind.qty_decimals))
    record.update(_package_place(rng, context))
    record.update(_package_item_details(item, kind.uom))
    record.update(_package_lab_and_dates(rng, context, item["_kind"], created))
    if record.get("_locked"):
        record.update(available_qty=0, non_available_qty=record["qty"])
    return record


def _pick_item(rng: random.Random, items: FacilityItems) -> Record:
    if items.unmapped is not None and rng.random() < UNMAPPED_SHARE:
        return items.unmapped
    return rng.choice(items.mapped)


def _package_identity(
    context: PackageContext,
    item: Record,
    seq: int,
    created: datetime,
    updated: datetime,
) -> Record:
    tag = f"1A4{context.plan.spec.tag_code}{seq:014d}"
    return {
        "item_class": item["item_class"],
        "item_category": item["item_category"],
        "external": False,
        "item_id": item["id"],
        "item_name": item["item_name"],
        "item_retail_display_name": item["retail_display_name"],
        "item_variation_id": None,
        "variation_name": None,
        "variation_retail_display_name": "",
        "sku": item["sku"],
        "strain_id": item["strain_id"],
        "strain_name": item["strain_name"],
        "package_id": tag,
        "original_package_id": tag,
        "package_status": "Created",
        "lot_number": None,
        "last_updated_by": "user17@example.com",
        "last_updated_timestamp": flourish_time(updated),
        "created_by": "user17@example.com",
        "created_timestamp": flourish_time(created),
        "_updated": updated.replace(microsecond=0),
        "_seq": seq,
    }


def _package_quantities(
    rng: random.Random, qty_range: tuple[float, float], decimals: int
) -> Record:
    qty = _rounded(rng.uniform(*qty_range), decimals)
    allocated: float = 0
    status = "Created"
    if rng.random() < ZERO_AVAILABLE_SHARE:
        allocated, status = qty, "Assigned to order"
    elif rng.random() < PARTLY_ALLOCATED_SHARE:
        allocated, status = _rounded(qty * 0.3, decimals), "Assigned to order"
    return {
        "package_status": status,
        "original_qty": qty,
        "qty": qty,
        "available_qty": _rounded(qty - allocated, decimals),
        "non_available_qty": allocated,
    }


def _rounded(value: float, decimals: int) -> float:
    """Round to the kind's decimals; counts in ``ea`` stay integers."""
    return round(value) if decimals == 0 else round(value, decimals)


def _package_place(rng: random.Random, context: PackageContext) -> Record:
    spec = context.plan.spec
    in_room = rng.random() < IN_WHOLESALE_ROOM_SHARE
    area = spec.wholesale_room if in_room else rng.choice(spec.other_rooms)
    place: Record = {
        "area_id": context.areas[area],
        "area_name": area,
        "location_id": None,
        "location_name": None,
        "is_locked": False,
        "lock_code": {
            "name": None,
            "can_add_to_outbound_order": None,
            "exclude_from_global_inventory": None,
        },
    }
    if rng.random() < LOCKED_SHARE:
        place.update(_lock(rng.random() < 0.5))
    return place


def _lock(can_add_to_outbound_order: bool) -> Record:
    # Flourish counts locked stock as non-available, so available_qty is 0. The
    # lock code's flag decides whether the package may still go on outbound orders.
    name = "Sales Hold" if can_add_to_outbound_order else "QA Hold"
    return {
        "is_locked": True,
        "lock_code": {
            "name": name,
            "can_add_to_outbound_order": can_add_to_outbound_order,
            "exclude_from_global_inventory": False,
        },
        "_locked": True,
    }


def _package_item_details(item: Record, uom: str) -> Record:
    uom_id, uom_description = UOMS[uom]
    return {
        "uom_id": uom_id,
        "uom": uom,
        "uom_description": uom_description,
        "item_description": item["item_description"],
        "brand": item["brand"],
        "thc_ratio": None,
        "cbd_ratio": None,
        "price": item["price"],
        "cost": item["cost"],
        "sell_by_lot": False,
        "taxable": True,
        "is_tax_exempt": False,
        "unit_weight": item["unit_weight"],
        "weight_uom": item["weight_uom"],
        "weight_uom_description": item["weight_uom_description"],
        "unit_volume": None,
        "volume_uom": None,
        "volume_uom_description": None,
        "ref_field_1": None,
        "ref_field_2": None,
        "ref_field_3": None,
        "is_sample": False,
        "extraction_method": "Hydrocarbon" if item["_kind"] == "resin" else None,
    }


def _package_lab_and_dates(
    rng: random.Random, context: PackageContext, kind: str, created: datetime
) -> Record:
    lab = None
    if rng.random() >= WITHOUT_LAB_RESULT_SHARE:
        lab = str(rng.choice(context.lab_results)["lab_test_result_id"])
    harvest = day(created - timedelta(days=rng.randint(14, 40)))
    production = day(created - timedelta(days=rng.randint(0, 5)))
    is_flower = kind in FLOWER_KINDS
    lot_prefix = context.plan.spec.tag_code[-3:]
    return {
        "lot_number": f"{lot_prefix}-{created:%y%m%d}-{rng.randint(1, 99):02d}",
        "production_date": ""
        if kind in {"bulk_g", "bulk_lb", "smalls"}
        else production,
        "harvest_date": harvest if is_flower or rng.random() < 0.5 else "",
        "lab_test_result_id": lab,
        "origin_harvest": [],
        "external_lab_test_results": None,
    }


def _break_some_rows(
    rows: list[Record], defects: tuple[str, ...], context: PackageContext
) -> None:
    """Give a handful of rows input that a client must reject row by row."""
    if not rows:
        return
    room = context.plan.spec.wholesale_room
    for position, defect in zip(BAD_ROW_POSITIONS, defects, strict=False):
        row = rows[position % len(rows)]
        row.pop("_locked", None)
        row.update(is_locked=False, package_status="Created")
        row.update(area_name=room, area_id=context.areas[room])
        row["lock_code"] = dict.fromkeys(row["lock_code"])
        row.update(_defect(defect, row["qty"]))
        row["_defect"] = defect


def _defect(defect: str, qty: object) -> Record:
    if defect == "sku_null":
        return {"sku": None, "available_qty": qty, "non_available_qty": 0}
    if defect == "sku_blank":
        return {"sku": "", "available_qty": qty, "non_available_qty": 0}
    if defect == "qty_text":
        return {"qty": "abc", "available_qty": "abc", "non_available_qty": 0}
    return {
        "uom": "bushel",
        "uom_id": None,
        "uom_description": "Bushel",
        "available_qty": qty,
        "non_available_qty": 0,
    }
