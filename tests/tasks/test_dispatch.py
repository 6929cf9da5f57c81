"""``inventory.dispatch_due_syncs`` against the real database and Redis."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import redis
from sqlalchemy import func, insert, select

from shared.db import session_scope
from shared.models import Facility, SyncRun, Tenant, utcnow
from tasks import inventory


def add_due_facilities(count: int) -> None:
    due = utcnow() - timedelta(minutes=1)
    with session_scope() as session:
        tenant = Tenant(name="Fleet", apex_token_encrypted="x")
        session.add(tenant)
        session.flush()
        rows = [
            {
                "tenant_id": tenant.id,
                "name": f"f{index}",
                "flourish_facility_id": f"f{index}",
                "flourish_api_key_encrypted": "x",
                "wholesale_room": "Vault",
                "apex_operation_id": 1,
                "next_sync_at": due,
                "sync_interval_seconds": 14400,
                "state": "active",
                "package_statuses": ["Created"],
            }
            for index in range(count)
        ]
        session.execute(insert(Facility), rows)


def test_dispatch_claims_beyond_one_batch(service: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(inventory, "DISPATCH_BATCH", 40)
    add_due_facilities(100)

    dispatched = inventory.dispatch_due_syncs.apply().get()

    with session_scope() as session:
        runs = session.scalar(select(func.count()).select_from(SyncRun))
    queued = redis.Redis.from_url(service.variables["APEXSYNC_REDIS_URL"]).llen(
        "inventory"
    )
    assert dispatched == 100
    assert runs == 100
    assert queued == 100


def test_dispatch_twice_creates_no_second_run(service: Any) -> None:
    add_due_facilities(5)

    first = inventory.dispatch_due_syncs.apply().get()
    second = inventory.dispatch_due_syncs.apply().get()

    assert first == 5
    assert second == 0
