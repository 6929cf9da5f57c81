"""The deterministic seed: tenants, facilities, packages and their edge cases."""

from __future__ import annotations

from collections import Counter

import pytest

from sandbox.catalog import TERPENES
from sandbox.state import SandboxState


@pytest.fixture(scope="module")
def state() -> SandboxState:
    return SandboxState.seeded()


def test_seed_has_two_tenants(state: SandboxState) -> None:
    names = [tenant["name"] for tenant in state.seed_summary()["tenants"]]

    assert names == ["Green Valley Farms", "Coastal Cultivators"]


def test_seed_has_three_facilities(state: SandboxState) -> None:
    facilities = [f for t in state.seed_summary()["tenants"] for f in t["facilities"]]

    assert [f["name"] for f in facilities] == [
        "GVF Cultivation",
        "GVF Processing",
        "Coastal Main",
    ]


def test_seed_has_1500_packages_by_default(state: SandboxState) -> None:
    assert len(list(state.all_packages())) == 1500


def test_seed_spreads_packages_over_facilities(state: SandboxState) -> None:
    counts = [
        len(packages)
        for company in state.flourish_companies.values()
        for packages in company.packages.values()
    ]

    assert len(counts) == 3
    assert min(counts) > 200


def test_seed_package_count_is_configurable() -> None:
    small = SandboxState.seeded(packages=90)

    assert len(list(small.all_packages())) == 90


def test_seed_credentials_ignore_package_count(state: SandboxState) -> None:
    small = SandboxState.seeded(packages=30)

    assert small.seed_summary()["tenants"] == state.seed_summary()["tenants"]


def test_seed_is_deterministic(state: SandboxState) -> None:
    again = SandboxState.seeded()

    assert again.seed_summary() == state.seed_summary()
    assert list(again.all_packages()) == list(state.all_packages())


def test_seed_differs_with_other_seed(state: SandboxState) -> None:
    other = SandboxState.seeded(seed=8)

    assert other.seed_summary() != state.seed_summary()


def test_seed_summary_has_contract_keys(state: SandboxState) -> None:
    tenant = state.seed_summary()["tenants"][0]
    facility = tenant["facilities"][0]

    assert {"name", "apex_token", "grams_per_pound", "facilities"} <= set(tenant)
    assert {
        "name",
        "flourish_api_key",
        "flourish_facility_id",
        "wholesale_room",
        "apex_operation_id",
    } <= set(facility)


def test_seed_uses_all_three_uoms(state: SandboxState) -> None:
    uoms = Counter(p["uom"] for p in state.all_packages())

    assert uoms["g"] > 100
    assert uoms["lb"] > 50
    assert uoms["ea"] > 100


def test_seed_places_packages_outside_wholesale_room(state: SandboxState) -> None:
    rooms = {
        f["flourish_facility_id"]: f["wholesale_room"]
        for t in state.seed_summary()["tenants"]
        for f in t["facilities"]
    }
    inside = outside = 0
    for company in state.flourish_companies.values():
        for facility_id, packages in company.packages.items():
            for package in packages.values():
                if package["area_name"] == rooms[facility_id]:
                    inside += 1
                else:
                    outside += 1

    assert inside > 500
    assert outside > 300


def test_seed_locks_some_packages(state: SandboxState) -> None:
    locked = [p for p in state.all_packages() if p["is_locked"]]
    allowed = [p for p in locked if p["lock_code"]["can_add_to_outbound_order"]]

    assert len(locked) > 20
    assert 0 < len(allowed) < len(locked)


def test_seed_has_zero_available_packages(state: SandboxState) -> None:
    unlocked_empty = [
        p
        for p in state.all_packages()
        if p["available_qty"] == 0 and not p["is_locked"]
    ]

    assert len(unlocked_empty) > 20


def test_seed_has_handful_of_bad_rows(state: SandboxState) -> None:
    packages = list(state.all_packages())

    assert sum(1 for p in packages if not p["sku"]) == 2
    assert sum(1 for p in packages if p["qty"] == "abc") == 2
    assert sum(1 for p in packages if p["uom"] == "bushel") == 2


def test_seed_has_about_five_percent_unmapped(state: SandboxState) -> None:
    skus_by_company = {}
    for tenant in state.seed_summary()["tenants"]:
        company = state.apex_companies[tenant["apex_company_id"]]
        skus_by_company[tenant["name"]] = {
            p["product_sku"] for p in company.products.values()
        }
    unmapped = 0
    for company in state.flourish_companies.values():
        for packages in company.packages.values():
            skus = skus_by_company[company.name]
            unmapped += sum(
                1 for p in packages.values() if p["sku"] and p["sku"] not in skus
            )

    assert 30 <= unmapped <= 120


def test_seed_shares_lab_results(state: SandboxState) -> None:
    uses = Counter(p["lab_test_result_id"] for p in state.all_packages())
    uses.pop(None, None)

    assert max(uses.values()) >= 10


def test_seed_lab_results_have_potency(state: SandboxState) -> None:
    company = next(iter(state.flourish_companies.values()))
    result = next(iter(company.lab_results.values()))
    terpenes = [result[f"{stem}_percentage"] for _, stem in TERPENES]

    assert isinstance(result["lab_test_result_id"], int)
    assert result["thc_percentage"] > 0
    assert result["cbg_percentage"] > 0
    assert sum(value is not None for value in terpenes) >= 3


def test_seed_taxonomy_ids_differ_per_company(state: SandboxState) -> None:
    first, second = state.apex_companies.values()

    assert not set(first.cannabinoids) & set(second.cannabinoids)
    assert not set(first.terpenes) & set(second.terpenes)
    assert not set(first.units) & set(second.units)


def test_seed_products_match_flourish_skus(state: SandboxState) -> None:
    company = state.apex_companies[4101]
    flourish = state.flourish_companies["company-gvf"]
    product_skus = {p["product_sku"] for p in company.products.values()}
    mapped = {i["sku"] for i in flourish.items.values() if not i.get("_unmapped")}

    assert mapped <= product_skus


def test_seed_products_use_three_units(state: SandboxState) -> None:
    units = {
        p["unit_measurement"]["name"]
        for c in state.apex_companies.values()
        for p in c.products.values()
    }

    assert {"Pound", "Gram", "Unit"} <= units


def test_seed_shares_one_sku_across_tenants(state: SandboxState) -> None:
    first, second = state.apex_companies.values()
    shared = {p["product_sku"] for p in first.products.values()} & {
        p["product_sku"] for p in second.products.values()
    }

    assert "GELATO-3.5G" in shared


def test_seed_buyers_cover_matching_cases(state: SandboxState) -> None:
    cases = Counter(
        b["_case"] for c in state.apex_companies.values() for b in c.buyers.values()
    )

    for case in ("clean", "cosmetic", "address_differs", "ambiguous", "unmatched"):
        assert cases[case] >= 1, case


def test_seed_ambiguous_license_has_two_destinations(state: SandboxState) -> None:
    destinations = state.flourish_companies["company-gvf"].destinations.values()
    holders = [d for d in destinations if d["license_number"] == "C10-0003344-LIC"]

    assert len(holders) == 2


def test_seed_one_facility_requires_sales_rep(state: SandboxState) -> None:
    flags = [
        f["sales_rep_required_for_outbound"]
        for c in state.flourish_companies.values()
        for f in c.facilities.values()
    ]

    assert flags.count(True) == 1


def test_seed_deal_flows_have_six_stages(state: SandboxState) -> None:
    for company in state.apex_companies.values():
        for flow in company.deal_flows.values():
            parents = {s["parent_status"]["name"] for s in flow["_statuses"]}
            assert len(parents) == 6, flow["name"]
