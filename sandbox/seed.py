"""Build the deterministic seed: two tenants, three facilities, both APIs' data.

The same ``seed`` and ``packages`` always give the same ids, credentials and
rows, so tests can rely on counts and on the shape of ``/_sandbox/seed``.
"""

from __future__ import annotations

import logging
import random

from sandbox.catalog import APEX_ABILITIES, TENANTS, TenantSpec
from sandbox.clock import flourish_time, seed_time, utcnow
from sandbox.flourish_orders import insert_order
from sandbox.seed_apex import (
    build_company,
    seed_buyers,
    seed_deal_flows,
    seed_operations,
    seed_products,
    seed_taxonomies,
)
from sandbox.seed_flourish import FacilityPlan, build_facility, hex_id, seed_customers
from sandbox.seed_packages import (
    FacilityItems,
    PackageContext,
    room_areas,
    seed_items,
    seed_lab_results,
    seed_packages,
)
from sandbox.state import (
    ApexCompany,
    ApexToken,
    FlourishCompany,
    FlourishKey,
    SandboxState,
    TenantSummary,
)

logger = logging.getLogger(__name__)

READ_ONLY_ABILITIES = tuple(a for a in APEX_ABILITIES if a.startswith("view:"))


def populate(state: SandboxState, packages: int) -> None:
    """Fill an empty state with the seed data; ``packages`` rows in total."""
    if packages < 0:
        raise ValueError(f"packages must be 0 or more, got {packages}")
    rng = random.Random(state.seed)
    # Credentials and facility ids come from their own generator, so they stay
    # the same whatever the package count.
    id_rng = random.Random(f"credentials:{state.seed}")
    state.package_target = packages
    plans = plan_facilities(id_rng, packages)

    for spec, tenant_plans in zip(TENANTS, plans, strict=True):
        flourish = seed_flourish_company(state, rng, spec, tenant_plans)
        apex = seed_apex_company(state, rng, spec, flourish)
        issue_credentials(state, id_rng, spec, apex, tenant_plans)

    state.created_at = utcnow()
    logger.info("sandbox seeded seed=%s packages=%s", state.seed, packages)


def plan_facilities(rng: random.Random, packages: int) -> list[list[FacilityPlan]]:
    """Split the package count over all facilities by their share."""
    specs = [(t, f) for t in TENANTS for f in t.facilities]
    total_share = sum(f.share for _, f in specs)
    counts = [int(packages * f.share / total_share) for _, f in specs]
    counts[-1] = packages - sum(counts[:-1])

    plans: list[list[FacilityPlan]] = [[] for _ in TENANTS]
    for (tenant, facility), count in zip(specs, counts, strict=True):
        plan = FacilityPlan(facility, hex_id(rng, 24), count)
        plans[TENANTS.index(tenant)].append(plan)
    return plans


def seed_flourish_company(
    state: SandboxState, rng: random.Random, spec: TenantSpec, plans: list[FacilityPlan]
) -> FlourishCompany:
    company = FlourishCompany(id=f"company-{spec.prefix.lower()}", name=spec.name)
    for plan in plans:
        company.facilities[plan.facility_id] = build_facility(
            plan.spec, plan.facility_id, seed_time(-365)
        )

    stocked = seed_items(state, spec, company)
    total = sum(plan.packages for plan in plans)
    pool = seed_lab_results(state, rng, spec, company, total)
    for plan in plans:
        areas = room_areas(rng, plan)
        context = PackageContext(plan, stocked[plan.facility_id], areas, pool)
        seed_packages(state, rng, company, context)

    seed_customers(state, rng, spec, company)
    for index, plan in enumerate(plans):
        seed_outbound_order(state, company, plan, stocked[plan.facility_id], index)
    state.flourish_companies[company.id] = company
    return company


def seed_outbound_order(
    state: SandboxState, company: FlourishCompany, plan: FacilityPlan,
    items: FacilityItems, index: int,
) -> None:  # fmt: skip
    """Create one older web-shop order per facility, so order lists are not empty."""
    destination = next(iter(company.destinations.values()))
    rep = next(r for r in company.sales_reps.values() if r["active"])
    body = {
        "original_order_id": f"WEB-{1001 + index}",
        "destination": {"id": destination["id"]},
        "sales_rep": {"id": rep["sales_rep_id"]},
        "order_lines": [
            {"item_id": items.mapped[0]["id"], "order_qty": 2, "unit_price": 25}
        ],
    }
    order = insert_order(state, company, company.facilities[plan.facility_id], body)
    moment = seed_time(160 + index)
    stamp = flourish_time(moment)
    order.update(_created=moment, _updated=moment, order_timestamp=stamp)
    order.update(created_timestamp=stamp, last_updated_timestamp=stamp)
    order["origin_type"] = "Online"


def seed_apex_company(
    state: SandboxState, rng: random.Random, spec: TenantSpec, flourish: FlourishCompany
) -> ApexCompany:
    company = build_company(rng, spec)
    seed_operations(company, spec.facilities)
    seed_taxonomies(rng, company, spec)
    seed_products(state, rng, company, flourish)
    seed_deal_flows(state, company, spec)
    seed_buyers(state, rng, company, spec)
    state.apex_companies[company.id] = company
    return company


def issue_credentials(
    state: SandboxState, rng: random.Random, spec: TenantSpec, apex: ApexCompany,
    plans: list[FacilityPlan],
) -> None:  # fmt: skip
    """Create the Apex tokens and Flourish keys, and the tenant's seed summary."""
    token = f"apx_{hex_id(rng, 40)}"
    readonly = f"apx_ro_{hex_id(rng, 32)}"
    state.apex_tokens[token] = ApexToken(token, spec.name, apex.id, APEX_ABILITIES)
    state.apex_tokens[readonly] = ApexToken(
        readonly, f"{spec.name} (read-only)", apex.id, READ_ONLY_ABILITIES
    )

    summary = TenantSummary(spec.name, apex.id, token, readonly, spec.grams_per_pound)
    company_id = f"company-{spec.prefix.lower()}"
    for plan in plans:
        key = f"fl_{hex_id(rng, 40)}"
        state.flourish_keys[key] = FlourishKey(key, plan.spec.name, company_id)
        summary.facilities.append(_facility_summary(plan, key))
    state.tenants.append(summary)


def _facility_summary(plan: FacilityPlan, key: str) -> dict[str, object]:
    return {
        "name": plan.spec.name,
        "flourish_api_key": key,
        "flourish_facility_id": plan.facility_id,
        "wholesale_room": plan.spec.wholesale_room,
        "apex_operation_id": plan.spec.operation_id,
        "license_number": plan.spec.license,
        "sales_rep_required_for_outbound": plan.spec.sales_rep_required,
    }
