"""Run lifecycle on the real database: dispatch, overlap, page tokens, counts."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from shared import runs
from shared.db import get_sessionmaker
from shared.models import Facility, PackageOutcome, SyncRun, Tenant

DEADLINE = timedelta(minutes=30)
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def add_facility(session, tenant: Tenant, name: str, due: datetime) -> Facility:
    facility = Facility(
        tenant_id=tenant.id,
        name=name,
        flourish_facility_id=name,
        flourish_api_key_encrypted="x",
        wholesale_room="Vault",
        apex_operation_id=1,
        next_sync_at=due,
    )
    session.add(facility)
    session.flush()
    return facility


@pytest.fixture
def session(clean_db: str):
    with get_sessionmaker(clean_db)() as session:
        yield session


@pytest.fixture
def tenant(session) -> Tenant:
    tenant = Tenant(name="Acme", apex_token_encrypted="x")
    session.add(tenant)
    session.flush()
    return tenant


def test_dispatch_claims_only_due_facilities(session, tenant) -> None:
    due = add_facility(session, tenant, "due", NOW - timedelta(minutes=1))
    later = add_facility(session, tenant, "later", NOW + timedelta(minutes=1))

    run_ids = runs.dispatch_due(session, NOW, DEADLINE)

    created = session.scalars(select(SyncRun)).all()
    assert len(run_ids) == 1
    assert created[0].facility_id == due.id
    assert created[0].trigger == "schedule"
    assert later.next_sync_at == NOW + timedelta(minutes=1)


def test_dispatch_moves_next_sync_with_jitter(session, tenant) -> None:
    facility = add_facility(session, tenant, "due", NOW - timedelta(minutes=1))

    runs.dispatch_due(session, NOW, DEADLINE)

    interval = timedelta(seconds=facility.sync_interval_seconds)
    assert facility.next_sync_at >= NOW + interval
    assert facility.next_sync_at <= NOW + interval + timedelta(
        seconds=runs.MAX_JITTER_SECONDS
    )


def test_dispatch_skips_facility_with_active_run(session, tenant) -> None:
    facility = add_facility(session, tenant, "busy", NOW - timedelta(minutes=1))
    runs.create_run(session, facility, "manual", DEADLINE)

    run_ids = runs.dispatch_due(session, NOW, DEADLINE)

    assert run_ids == []
    assert facility.next_sync_at > NOW


def test_dispatch_skips_paused_tenant(session, tenant) -> None:
    tenant.apex_state = "paused"
    add_facility(session, tenant, "due", NOW - timedelta(minutes=1))

    assert runs.dispatch_due(session, NOW, DEADLINE) == []


def test_create_run_rejects_second_active_run(session, tenant) -> None:
    facility = add_facility(session, tenant, "f", NOW)
    first = runs.create_run(session, facility, "manual", DEADLINE)

    with pytest.raises(runs.SyncAlreadyRunning) as error:
        runs.create_run(session, facility, "manual", DEADLINE)

    assert error.value.run_id == first.id
    assert str(first.id) in str(error.value)


def test_finished_run_allows_next_run(session, tenant) -> None:
    facility = add_facility(session, tenant, "f", NOW)
    first = runs.create_run(session, facility, "manual", DEADLINE)
    first.state = "succeeded"
    session.flush()

    second = runs.create_run(session, facility, "manual", DEADLINE)

    assert second.id != first.id


@pytest.mark.parametrize(
    ("token", "has_next", "expected"),
    [
        pytest.param(
            runs.PageToken("delta", 0),
            True,
            runs.PageToken("delta", 50),
            id="delta-more",
        ),
        pytest.param(
            runs.PageToken("delta", 50),
            False,
            runs.PageToken("pending", 0),
            id="delta-last",
        ),
        pytest.param(
            runs.PageToken("pending", 0),
            True,
            runs.PageToken("pending", 1),
            id="pending-more",
        ),
        pytest.param(
            runs.PageToken("pending", 3),
            False,
            runs.PageToken("done", 0),
            id="pending-last",
        ),
    ],
)
def test_next_token_table(token, has_next, expected) -> None:
    assert runs.next_token(token, has_next) == expected


def test_advance_run_moves_once(session, tenant) -> None:
    facility = add_facility(session, tenant, "f", NOW)
    run = runs.create_run(session, facility, "manual", DEADLINE)
    runs.begin_run(session, run, facility, DEADLINE)
    session.flush()
    token = runs.current_token(run)

    first = runs.advance_run(session, run.id, token, True, DEADLINE)
    second = runs.advance_run(session, run.id, token, True, DEADLINE)

    assert first == runs.PageToken("delta", 50)
    assert second is None


def test_complete_run_counts_and_moves_cursor(session, tenant) -> None:
    facility = add_facility(session, tenant, "f", NOW)
    run = runs.create_run(session, facility, "manual", DEADLINE)
    runs.begin_run(session, run, facility, DEADLINE)
    for tag, outcome in [
        ("a", "created"),
        ("b", "exists"),
        ("c", "unmapped"),
        ("d", "failed"),
        ("e", "skipped"),
        ("a", "created"),
    ]:
        runs.record_outcome(session, run, tag, outcome)
    session.flush()

    runs.complete_run(session, run, facility, timedelta(minutes=5))

    assert (run.fetched, run.created, run.skipped, run.unmapped, run.failed) == (
        5,
        1,
        2,
        1,
        1,
    )
    assert run.state == "succeeded"
    assert facility.cursor == runs.aware(run.started_at) - timedelta(minutes=5)
    assert session.scalars(select(PackageOutcome)).all().__len__() == 5


def test_failed_run_keeps_cursor(session, tenant) -> None:
    facility = add_facility(session, tenant, "f", NOW)
    facility.cursor = NOW
    run = runs.create_run(session, facility, "manual", DEADLINE)
    runs.begin_run(session, run, facility, DEADLINE)

    runs.fail_run(session, run, "Flourish timed out")

    assert run.state == "failed"
    assert run.error == "Flourish timed out"
    assert facility.cursor == NOW


@pytest.mark.skipif(
    not os.environ.get("DATABASE_URL"), reason="needs PostgreSQL (DATABASE_URL)"
)
def test_two_dispatchers_never_claim_one_facility(clean_db: str) -> None:
    factory = get_sessionmaker(clean_db)
    with factory() as setup:
        tenant = Tenant(name="Acme", apex_token_encrypted="x")
        setup.add(tenant)
        setup.flush()
        for index in range(4):
            add_facility(setup, tenant, f"f{index}", NOW - timedelta(minutes=1))
        setup.commit()

    with factory() as first, factory() as second:
        claimed_first = runs.claim_due_facilities(first, NOW, limit=2)
        claimed_second = runs.claim_due_facilities(second, NOW, limit=10)
        first_ids = {facility.id for facility in claimed_first}
        second_ids = {facility.id for facility in claimed_second}
        first.rollback()
        second.rollback()

    assert len(first_ids) == 2
    assert len(second_ids) == 2
    assert first_ids.isdisjoint(second_ids)
