"""Helpers of the fault tests and the chaos run: faults, invariants, inspection.

Everything here talks to real services: the sandbox over HTTP, the test
database and a real Redis. The invariant checks compute what a fault-free
sync would have produced from the sandbox's data and the pipeline's own
rules, then compare it with the Apex batches and Flourish orders that exist.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
from kombu import pools as kombu_pools
from sqlalchemy import func, select

from shared.catalog import products_by_sku
from shared.db import session_scope
from shared.errors import UnitMismatch
from shared.flourish.client import FlourishClient
from shared.inventory import facts_from_row, offered_quantity, skip_reason
from shared.models import (
    BatchLink,
    DeadLetter,
    Facility,
    OrderLink,
    SyncRun,
    Tenant,
)
from shared.secrets import Vault
from shared.settings import get_settings
from tests.helpers import reset_caches, sandbox_json

#: Worker settings short enough for a test to see deadlines, time limits and
#: redeliveries happen. The visibility timeout exceeds both the hard time
#: limit and the longest retry countdown, as the settings require.
SHORT_LIMITS = {
    "APEXSYNC_TASK_SOFT_TIME_LIMIT": "8",
    "APEXSYNC_TASK_TIME_LIMIT": "10",
    "APEXSYNC_MAX_RETRY_COUNTDOWN": "5",
    "APEXSYNC_VISIBILITY_TIMEOUT": "15",
    "APEXSYNC_RUN_DEADLINE_SECONDS": "20",
}


def use_environment(monkeypatch: Any, variables: dict[str, str]) -> None:
    """Set ``variables`` in this process too, and rebuild cached settings."""
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    reset_caches()
    forget_broker_connections()


def forget_broker_connections() -> None:
    """Make the Celery app connect again, to the broker URL now configured.

    ``reset_caches`` updates the app's configuration, but the app keeps the
    connection pool and result backend it built for the earlier URL.
    """
    from workers.app import app

    if app._pool is not None:
        app._pool.force_close_all()
    app._pool = None
    # kombu keeps one pool per connection in a global registry, so the pool
    # just closed would come back from it once the URL is used again.
    kombu_pools.reset()
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None
    app._backend_cache = None
    app._local.backend = None


# --- sandbox faults -----------------------------------------------------------


def set_faults(
    sandbox: Any,
    apex: dict[str, Any] | None = None,
    flourish: dict[str, Any] | None = None,
) -> None:
    body = {
        name: spec
        for name, spec in (("apex", apex), ("flourish", flourish))
        if spec is not None
    }
    sandbox_json(sandbox, "/_sandbox/faults", "PUT", json=body)


def clear_faults(sandbox: Any) -> None:
    sandbox_json(sandbox, "/_sandbox/faults", "DELETE")


def apex_stats(sandbox: Any) -> dict[str, Any]:
    stats: dict[str, Any] = sandbox_json(sandbox, "/_sandbox/stats")["apex"]
    return stats


# --- database views -----------------------------------------------------------


def run_row(run_id: int) -> SyncRun:
    with session_scope() as session:
        run = session.get(SyncRun, run_id)
        session.expunge(run)
        return run


def dead_letters() -> list[DeadLetter]:
    with session_scope() as session:
        rows = list(session.scalars(select(DeadLetter).order_by(DeadLetter.id)))
        session.expunge_all()
        return rows


def link_count(facility_id: int, state: str | None = None) -> int:
    with session_scope() as session:
        statement = select(func.count()).where(BatchLink.facility_id == facility_id)
        if state is not None:
            statement = statement.where(BatchLink.state == state)
        return int(session.scalar(statement.select_from(BatchLink)) or 0)


def facility_row(facility_id: int) -> Facility:
    with session_scope() as session:
        facility = session.get(Facility, facility_id)
        session.expunge(facility)
        return facility


def tenant_row(tenant_id: int) -> Tenant:
    with session_scope() as session:
        tenant = session.get(Tenant, tenant_id)
        session.expunge(tenant)
        return tenant


# --- Redis views --------------------------------------------------------------


def task_results(redis_url: str) -> list[dict[str, Any]]:
    """Return every stored Celery result (``result_extended`` adds name and args)."""
    client = redis.Redis.from_url(redis_url)
    results = []
    for key in client.scan_iter(match="celery-task-meta-*", count=500):
        raw = client.get(key)
        if raw is not None:
            results.append(json.loads(raw))
    return results


def keys_without_ttl(redis_url: str, pattern: str) -> list[str]:
    client = redis.Redis.from_url(redis_url)
    return [
        key.decode()
        for key in client.scan_iter(match=pattern, count=500)
        if client.ttl(key) == -1
    ]


# --- invariants ---------------------------------------------------------------


@dataclass
class FacilityCheck:
    """What one facility has in Apex compared with what it should have."""

    facility_id: int
    eligible: set[str]
    batches: Counter[str]
    links: dict[str, tuple[str, int | None]]
    problems: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> list[str]:
        return sorted(name for name, count in self.batches.items() if count > 1)

    @property
    def missing(self) -> list[str]:
        return sorted(self.eligible - set(self.batches))

    @property
    def unexpected(self) -> list[str]:
        return sorted(set(self.batches) - self.eligible)

    @property
    def open_intents(self) -> list[str]:
        return sorted(
            tag for tag, (state, _) in self.links.items() if state == "intent"
        )


def eligible_tags(facility_id: int) -> set[str]:
    """Return the tags of the packages a fault-free sync makes batches of.

    Reads the facility's packages from the sandbox with the real Flourish
    client and applies the pipeline's rules: wholesale room, lock, quantity,
    a product with the package's SKU, a unit conversion that works and
    leaves at least one Apex unit.
    """
    with session_scope() as session:
        facility = session.get(Facility, facility_id)
        tenant = session.get(Tenant, facility.tenant_id)
        facts = [facts_from_row(row) for row in _all_packages(facility)]
        products = products_by_sku(session, tenant.id, {item.sku for item in facts})
        eligible = set()
        for item in facts:
            product = products.get(item.sku)
            if product is None or skip_reason(item, facility) is not None:
                continue
            try:
                quantity = offered_quantity(item, product, tenant.grams_per_pound)
            except UnitMismatch:
                continue
            if quantity > 0:
                eligible.add(item.tag)
        return eligible


def _all_packages(facility: Facility) -> list[Any]:
    settings = get_settings()
    key = Vault.from_settings(settings).decrypt(facility.flourish_api_key_encrypted)
    rows: list[Any] = []
    with FlourishClient(
        settings.flourish_base_url, key, facility.flourish_facility_id
    ) as client:
        offset = 0
        while True:
            page = client.list_packages(
                offset=offset, statuses=facility.package_statuses or ()
            )
            rows.extend(page.items)
            if not page.has_next:
                return rows
            offset += page.limit


def check_facility(sandbox: Any, facility_id: int) -> FacilityCheck:
    """Compare the facility's Apex batches and links with its eligible packages."""
    facility = facility_row(facility_id)
    batches = [
        batch
        for batch in sandbox_json(sandbox, "/_sandbox/apex/batches")["batches"]
        if batch["operation_id"] == facility.apex_operation_id
    ]
    with session_scope() as session:
        links = {
            link.package_tag: (link.state, link.apex_batch_id)
            for link in session.scalars(
                select(BatchLink).where(BatchLink.facility_id == facility_id)
            )
        }
    check = FacilityCheck(
        facility_id=facility_id,
        eligible=eligible_tags(facility_id),
        batches=Counter(batch["name"] for batch in batches),
        links=links,
    )
    ids = {batch["name"]: batch["id"] for batch in batches}
    for tag, (state, batch_id) in links.items():
        if state == "created" and ids.get(tag) != batch_id:
            check.problems.append(
                f"link {tag} names batch {batch_id}, Apex has {ids.get(tag)}"
            )
    return check


def final_order_problems(sandbox: Any, pushable: Iterable[int]) -> list[str]:
    """Return what is wrong with the Flourish orders made from Apex orders.

    No Apex order may have more than one Flourish outbound order. Each one
    in ``pushable`` must have exactly one, and a pushed OrderLink naming it.
    Flourish orders that no Apex order made (the seeded ones) are ignored.
    """
    apex_ids = {
        str(order["id"])
        for order in sandbox_json(sandbox, "/_sandbox/apex/orders")["orders"]
    }
    outbound = sandbox_json(sandbox, "/_sandbox/flourish/outbound-orders")["orders"]
    per_order = Counter(
        order["original_order_id"]
        for order in outbound
        if order["original_order_id"] in apex_ids
    )
    problems = [
        f"Apex order {apex_id} has {count} Flourish orders"
        for apex_id, count in sorted(per_order.items())
        if count > 1
    ]
    with session_scope() as session:
        links = {
            link.apex_order_id: (link.state, link.flourish_order_id)
            for link in session.scalars(select(OrderLink))
        }
    made = {order["original_order_id"]: order["id"] for order in outbound}
    for apex_id in pushable:
        count = per_order.get(str(apex_id), 0)
        if count != 1:
            problems.append(f"Apex order {apex_id} has {count} Flourish orders")
        state, flourish_id = links.get(apex_id, ("no link", None))
        if state != "pushed" or flourish_id != made.get(str(apex_id)):
            problems.append(
                f"Apex order {apex_id} link is {state} for Flourish order {flourish_id}"
            )
    return problems


def open_order_intents() -> list[int]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(OrderLink.apex_order_id).where(OrderLink.state == "intent")
            )
        )


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
