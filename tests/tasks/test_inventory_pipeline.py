"""The inventory pipeline end to end: real worker processes, real Redis, the sandbox.

The expected batches are computed here from the sandbox's own records, with
the domain rules written out again, so the test does not trust the code it
checks.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from shared.db import session_scope
from shared.models import BatchLink, PackageOutcome, SyncRun
from shared.units import to_apex_quantity
from tests.helpers import sandbox_json, start_sync, wait_for_run, wait_until

pytestmark = [pytest.mark.processes]

KNOWN_UOMS = {"ea", "g", "mg", "kg", "oz", "lb"}


def seeded_facilities(sandbox: Any) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    seed = sandbox_json(sandbox, "/_sandbox/seed")
    return [
        (tenant, facility)
        for tenant in seed["tenants"]
        for facility in tenant["facilities"]
    ]


def expected_batches(sandbox: Any) -> dict[str, dict[str, Any]]:
    """Map each package tag that must become a batch to what the batch carries."""
    state = sandbox.state
    expected: dict[str, dict[str, Any]] = {}
    for tenant, facility in seeded_facilities(sandbox):
        company = state.apex_company_named(tenant["name"])
        products = {
            p["product_sku"]: p for p in company.products.values() if p["product_sku"]
        }
        flourish = next(
            c
            for c in state.flourish_companies.values()
            if facility["flourish_facility_id"] in c.packages
        )
        for package in flourish.packages[facility["flourish_facility_id"]].values():
            batch = _expected_batch(
                package, facility, products, Decimal(tenant["grams_per_pound"])
            )
            if batch is not None:
                batch["tenant"] = tenant["name"]
                batch["lab"] = flourish.lab_results.get(
                    str(package.get("lab_test_result_id"))
                )
                expected[package["package_id"]] = batch
    return expected


def _expected_batch(
    package: dict[str, Any],
    facility: dict[str, Any],
    products: dict[str, Any],
    factor: Decimal,
) -> dict[str, Any] | None:
    lock = package.get("lock_code") or {}
    if (
        package.get("package_status") != "Created"
        or package.get("area_name") != facility["wholesale_room"]
    ):
        return None
    if package.get("is_locked") and not lock.get("can_add_to_outbound_order"):
        return None
    product = products.get(package.get("sku") or "")
    if product is None or package.get("uom") not in KNOWN_UOMS:
        return None
    field = "qty" if package.get("is_locked") else "available_qty"
    try:
        available = Decimal(str(package[field]))
    except InvalidOperation:
        return None
    unit = product["unit_measurement"]["name"]
    if available <= 0 or (package["uom"] == "ea") != (unit == "Unit"):
        return None
    quantity = to_apex_quantity(available, package["uom"], unit, grams_per_pound=factor)
    if quantity <= 0:
        return None
    return {
        "quantity": quantity,
        "product_id": product["id"],
        "operation_id": facility["apex_operation_id"],
        "package": package,
    }


def apex_batches(sandbox: Any) -> list[dict[str, Any]]:
    return sandbox_json(sandbox, "/_sandbox/apex/batches")["batches"]


def sync_all(service: Any, timeout: float = 240) -> list[int]:
    facility_ids = service.register_tenants()
    run_ids = [start_sync(facility_id) for facility_id in facility_ids]
    for run_id in run_ids:
        assert wait_for_run(run_id, timeout) == "succeeded"
    return run_ids


def test_sync_creates_one_batch_per_eligible_package(service: Any) -> None:
    service.start_worker(concurrency=2)
    expected = expected_batches(service.sandbox)

    sync_all(service)

    batches = apex_batches(service.sandbox)
    names = Counter(batch["name"] for batch in batches)
    assert [name for name, count in names.items() if count > 1] == []
    assert set(names) == set(expected)
    for batch in batches:
        want = expected[batch["name"]]
        assert Decimal(str(batch["quantity"])) == want["quantity"], batch["name"]
        assert batch["product_id"] == want["product_id"]
        assert batch["operation_id"] == want["operation_id"]


def test_sync_carries_potency_terpenes_and_dates(service: Any) -> None:
    service.start_worker(concurrency=2)
    expected = expected_batches(service.sandbox)

    sync_all(service)

    with_lab = 0
    for batch in apex_batches(service.sandbox):
        want = expected[batch["name"]]
        package, lab = want["package"], want["lab"]
        assert batch["lot_number"] == package["lot_number"]
        assert batch["production_date"] == (package["production_date"] or None)
        if lab is None:
            continue
        with_lab += 1
        assert Decimal(str(batch["predominate_canabinoid_min_or_only"])) == Decimal(
            str(lab["thc_percentage"])
        )
        assert batch["predominate_canabinoid_unit"] == "%"
        cbd = [c for c in batch["cannabinoids"] if c["abbreviation"] == "CBD"]
        if lab.get("cbd_percentage") is not None:
            assert Decimal(str(cbd[0]["measurement"])) == Decimal(
                str(lab["cbd_percentage"])
            )
        terpene_names = {t["name"].lower().replace("-", "_") for t in batch["terpenes"]}
        lab_terpenes = {
            key.removesuffix("_percentage")
            for key, value in lab.items()
            if key.endswith("_percentage")
            and value is not None
            and key.removesuffix("_percentage") in terpene_names
        }
        assert lab_terpenes == terpene_names
    assert with_lab > 0


def test_second_sync_of_unchanged_facility_is_cheap(service: Any) -> None:
    service.start_worker(concurrency=2)
    facility_ids = service.register_tenants()
    first = start_sync(facility_ids[0])
    assert wait_for_run(first) == "succeeded"
    sandbox_json(service.sandbox, "/_sandbox/stats/reset", "POST")

    second = start_sync(facility_ids[0])
    assert wait_for_run(second) == "succeeded"

    stats = sandbox_json(service.sandbox, "/_sandbox/stats")
    assert stats["apex"]["total"] <= 3
    assert stats["flourish"]["total"] <= 3
    with session_scope() as session:
        run = session.get(SyncRun, second)
        assert run.created == 0


def test_unmapped_package_synced_once_product_exists(service: Any) -> None:
    service.start_worker(concurrency=2)
    facility_ids = service.register_tenants()
    first = start_sync(facility_ids[0])
    assert wait_for_run(first) == "succeeded"
    with session_scope() as session:
        unmapped = session.scalars(
            select(PackageOutcome)
            .where(PackageOutcome.run_id == first)
            .where(PackageOutcome.outcome == "unmapped")
        ).all()
        tags = {row.package_tag for row in unmapped if row.sku == unmapped[0].sku}
        sku = unmapped[0].sku
    assert tags

    tenant_name = seeded_facilities(service.sandbox)[0][0]["name"]
    sandbox_json(
        service.sandbox,
        "/_sandbox/apex/products",
        "POST",
        json={
            "company": tenant_name,
            "name": "Late product",
            "product_sku": sku,
            "unit": "Gram",
        },
    )
    second = start_sync(facility_ids[0])
    assert wait_for_run(second) == "succeeded"

    names = {batch["name"] for batch in apex_batches(service.sandbox)}
    assert tags <= names
    with session_scope() as session:
        created = session.scalars(
            select(PackageOutcome.package_tag)
            .where(PackageOutcome.run_id == second)
            .where(PackageOutcome.outcome == "created")
        ).all()
    assert tags <= set(created)


def test_bad_rows_recorded_and_page_goes_on(service: Any) -> None:
    service.start_worker(concurrency=2)
    run_ids = sync_all(service)

    with session_scope() as session:
        failed = session.scalars(
            select(PackageOutcome)
            .where(PackageOutcome.run_id.in_(run_ids))
            .where(PackageOutcome.outcome == "failed")
        ).all()
        created = session.scalar(
            select(func.count())
            .select_from(PackageOutcome)
            .where(PackageOutcome.run_id.in_(run_ids))
            .where(PackageOutcome.outcome == "created")
        )
    reasons = " | ".join(row.reason or "" for row in failed)
    assert "'abc'" in reasons
    assert "bushel" in reasons
    assert all(row.package_tag for row in failed)
    assert created > 0


def test_second_sync_request_overlaps_are_rejected(service: Any) -> None:
    from datetime import timedelta

    from shared.models import Facility
    from shared.runs import SyncAlreadyRunning, create_run

    facility_ids = service.register_tenants()
    with session_scope() as session:
        facility = session.get(Facility, facility_ids[0])
        first = create_run(session, facility, "manual", timedelta(minutes=5))
        with pytest.raises(SyncAlreadyRunning) as error:
            create_run(session, facility, "manual", timedelta(minutes=5))
    assert error.value.run_id == first.id


@pytest.mark.slow
def test_worker_killed_mid_sync_leaves_no_duplicates(
    service: Any, monkeypatch: Any
) -> None:
    short = {
        "APEXSYNC_TASK_SOFT_TIME_LIMIT": "20",
        "APEXSYNC_TASK_TIME_LIMIT": "25",
        "APEXSYNC_MAX_RETRY_COUNTDOWN": "5",
        "APEXSYNC_VISIBILITY_TIMEOUT": "30",
        "APEXSYNC_RUN_DEADLINE_SECONDS": "40",
    }
    first_worker = service.start_worker(concurrency=1, extra=short)
    expected = expected_batches(service.sandbox)
    httpx.put(
        f"{service.sandbox.url}/_sandbox/faults",
        json={"apex": {"latency_ms": 40}},
        timeout=10,
    ).raise_for_status()
    facility_ids = service.register_tenants()
    run_ids = [start_sync(facility_id) for facility_id in facility_ids]

    wait_until(
        lambda: len(apex_batches(service.sandbox)) >= 20, 120, "some batches exist"
    )
    first_worker.kill()
    httpx.delete(f"{service.sandbox.url}/_sandbox/faults", timeout=10)
    service.start_worker(concurrency=2, extra=short)
    _reconcile_until_done(run_ids, short, monkeypatch)

    names = Counter(batch["name"] for batch in apex_batches(service.sandbox))
    assert [name for name, count in names.items() if count > 1] == []
    assert set(names) == set(expected)
    with session_scope() as session:
        open_intents = session.scalar(
            select(func.count())
            .select_from(BatchLink)
            .where(BatchLink.state == "intent")
        )
    assert open_intents == 0


def _reconcile_until_done(
    run_ids: list[int], short: dict[str, str], monkeypatch: Any
) -> None:
    """Run the reconciler as beat would, until every run has ended."""
    from tasks.maintenance import reconcile_runs
    from tests.helpers import reset_caches, run_state

    for key, value in short.items():
        monkeypatch.setenv(key, value)
    reset_caches()

    def all_done() -> bool:
        reconcile_runs()
        return all(run_state(run_id) not in ("queued", "running") for run_id in run_ids)

    wait_until(all_done, 300, "runs to end after the worker was killed", interval=2)
    with session_scope() as session:
        errors = {run.id: run.error for run in session.scalars(select(SyncRun))}
    for run_id in run_ids:
        assert run_state(run_id) == "succeeded", errors[run_id]


def test_lab_results_fetched_once_per_result(service: Any) -> None:
    service.start_worker(concurrency=2)
    expected = expected_batches(service.sandbox)
    result_ids = {
        (b["tenant"], str(b["package"]["lab_test_result_id"]))
        for b in expected.values()
        if b["package"].get("lab_test_result_id")
    }

    # One facility at a time: two facilities of one tenant syncing at once
    # may both miss the shared cache for the same result.
    for facility_id in service.register_tenants():
        assert wait_for_run(start_sync(facility_id)) == "succeeded"

    per_path = sandbox_json(service.sandbox, "/_sandbox/stats")["flourish"]["per_path"]
    lab_requests = sum(
        count for path, count in per_path.items() if "lab-test-results" in path
    )
    assert lab_requests == len(result_ids)
    assert lab_requests < len(expected)
