"""A misbehaving upstream: spent Apex credits, a rejected key, the shared rate limit.

Spent credits (Apex 429 without ``Retry-After``) pause the tenant's Apex
work after one response, and a rejected key (401) stops its facility. In
both cases the dispatcher leaves them alone until an operator acts. Two
worker processes with one Apex token stay within Apex's 15 requests per
second, measured by the sandbox over every one-second window.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from shared.db import session_scope
from shared.models import Facility, SyncRun, Tenant, utcnow
from shared.runs import claim_due_facilities
from shared.secrets import Vault
from shared.settings import get_settings
from tasks.inventory import dispatch_due_syncs
from tests.faults_support import (
    apex_stats,
    dead_letters,
    facility_row,
    run_row,
    tenant_row,
)
from tests.helpers import sandbox_json, start_sync, wait_for_run

GVF = "Green Valley Farms"


def facility_ids_of(tenant_name: str) -> list[int]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(Facility.id)
                .join(Tenant, Tenant.id == Facility.tenant_id)
                .where(Tenant.name == tenant_name)
                .order_by(Facility.id)
            )
        )


def make_all_due() -> None:
    with session_scope() as session:
        for facility in session.scalars(select(Facility)):
            facility.next_sync_at = utcnow() - timedelta(minutes=1)


def runs_of(facility_id: int) -> list[int]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(SyncRun.id).where(SyncRun.facility_id == facility_id)
            )
        )


def spend_credits_after(sandbox: Any, company: str, more: int) -> None:
    """Let ``company`` spend ``more`` Apex credits from now on, then get 429."""
    usage = sandbox_json(
        sandbox, "/_sandbox/apex/credits", "PUT", json={"company": company}
    )
    used = usage[company]["credits_used"]
    sandbox_json(
        sandbox,
        "/_sandbox/apex/credits",
        "PUT",
        json={"company": company, "monthly_limit": used + more},
    )


# --- spent credits ------------------------------------------------------------


@pytest.fixture
def paused_tenant(service: Any) -> dict[str, Any]:
    """GVF with its credits spent in the middle of its second facility's sync."""
    service.register_tenants()
    first, second = facility_ids_of(GVF)
    service.start_worker(queues="inventory")
    assert wait_for_run(start_sync(first), 180) == "succeeded"
    spend_credits_after(service.sandbox, GVF, 8)
    sandbox_json(service.sandbox, "/_sandbox/stats/reset", "POST")

    run_id = start_sync(second)
    state = wait_for_run(run_id, 180)
    return {"run_id": run_id, "state": state, "facilities": (first, second)}


@pytest.mark.processes
def test_spent_credits_pause_tenant(paused_tenant: dict[str, Any]) -> None:
    run = run_row(paused_tenant["run_id"])
    tenant = tenant_row(run.tenant_id)

    assert paused_tenant["state"] == "failed"
    assert "Apex credits exhausted" in (run.error or "")
    assert tenant.apex_state == "paused"
    assert "monthly Apex credits are spent" in (tenant.apex_state_reason or "")


@pytest.mark.processes
def test_spent_credits_never_spin(service: Any, paused_tenant: dict[str, Any]) -> None:
    stats = apex_stats(service.sandbox)

    assert stats["status_429"] == 1
    assert dead_letters() == []


@pytest.mark.processes
def test_dispatcher_skips_paused_tenant(paused_tenant: dict[str, Any]) -> None:
    first, second = paused_tenant["facilities"]
    before = {facility: runs_of(facility) for facility in (first, second)}
    make_all_due()

    with session_scope() as session:
        claimed = {
            facility.id for facility in claim_due_facilities(session, utcnow(), 100)
        }
        session.rollback()
    dispatched = dispatch_due_syncs()

    other = set(facility_ids_of("Coastal Cultivators"))
    assert claimed == other
    assert dispatched == len(other)
    assert runs_of(first) == before[first]
    assert runs_of(second) == before[second]


# --- rejected credentials -----------------------------------------------------


@pytest.fixture
def rejected_facility(service: Any) -> dict[str, Any]:
    """A facility whose stored Flourish key is wrong, after one sync attempt."""
    facility_id = service.register_tenants()[0]
    vault = Vault.from_settings(get_settings())
    with session_scope() as session:
        facility = session.get(Facility, facility_id)
        facility.flourish_api_key_encrypted = vault.encrypt(
            "wrong-key-0123456789abcdef"
        )
    service.start_worker(queues="inventory")

    run_id = start_sync(facility_id)
    state = wait_for_run(run_id, 120)
    return {"facility_id": facility_id, "run_id": run_id, "state": state}


@pytest.mark.processes
def test_wrong_key_stops_facility(rejected_facility: dict[str, Any]) -> None:
    run = run_row(rejected_facility["run_id"])
    facility = facility_row(rejected_facility["facility_id"])
    tenant = tenant_row(facility.tenant_id)

    assert rejected_facility["state"] == "failed"
    assert "credentials rejected" in (run.error or "")
    assert facility.state == "credentials_rejected"
    assert "credentials rejected" in (facility.state_reason or "")
    assert "401" in (facility.state_reason or "")
    assert tenant.apex_state == "active"


@pytest.mark.processes
def test_wrong_key_not_retried(service: Any, rejected_facility: dict[str, Any]) -> None:
    flourish = sandbox_json(service.sandbox, "/_sandbox/stats")["flourish"]

    assert flourish["by_status"] == {"401": 1}
    assert dead_letters() == []


@pytest.mark.processes
def test_dispatcher_skips_rejected_facility(
    rejected_facility: dict[str, Any],
) -> None:
    facility_id = rejected_facility["facility_id"]
    before = runs_of(facility_id)
    make_all_due()

    dispatched = dispatch_due_syncs()

    assert dispatched == 2
    assert runs_of(facility_id) == before


# --- the shared rate limit ----------------------------------------------------


@pytest.mark.processes
@pytest.mark.slow
@pytest.mark.sandbox(packages=900)
def test_two_workers_share_apex_limit(service: Any) -> None:
    service.register_tenants()
    first, second = facility_ids_of(GVF)
    service.start_worker(queues="inventory", concurrency=2, name="one")
    service.start_worker(queues="inventory", concurrency=2, name="two")
    sandbox_json(service.sandbox, "/_sandbox/stats/reset", "POST")

    runs = [start_sync(first), start_sync(second)]
    states = [wait_for_run(run_id, 300) for run_id in runs]

    stats = apex_stats(service.sandbox)
    creates = stats["per_path"].get("POST /v2/batches", 0)
    assert states == ["succeeded", "succeeded"]
    assert creates > 150
    assert stats["max_per_second"][GVF] <= 15
    assert stats["status_429"] == 0
