"""Many-facility scenarios: the dispatcher, and many tenants syncing at once."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from statistics import median, quantiles
from typing import Any

import redis
from sqlalchemy import func, insert, select

from tests.bench_env import SYNCED_FACILITY, UNLIMITED, Harness, seed_packages_for
from tests.bench_scenarios import APEX_LIMIT, TENANT

logger = logging.getLogger(__name__)

#: Facilities per tenant in the dispatcher scenario.
FACILITIES_PER_TENANT = 100
#: Final stages and buyer kinds of the demo orders that the push latency uses.
PUSHED_STAGES = ("Accepted", "Pending Shipment")
PUSHED_BUYER_CASES = ("clean", "cosmetic")


def dispatcher(harness: Harness, facilities: int, repeats: int) -> dict[str, Any]:
    """Scenario 4: claim ``facilities`` due facilities and publish a start_run
    each, ``repeats`` times on fresh storage; medians of each figure."""
    runs = [_dispatch_once(harness, facilities) for _ in range(repeats)]
    medians = {
        key: median(run[key] for run in runs if run[key] is not None)
        for key in runs[0]
        if key.endswith("_seconds") and runs[0][key] is not None
    }
    return {"facilities": facilities, "repeats": repeats, "runs": runs} | medians


def _dispatch_once(harness: Harness, facilities: int) -> dict[str, Any]:
    from celery._state import _set_task_join_will_block, task_join_will_block

    harness.prepare(packages=0, rate_limit=None)
    _insert_due_facilities(facilities)

    # Inside a worker, where beat's dispatch task runs, Celery does not
    # subscribe to the result of each task it publishes; mimic that here.
    joining = task_join_will_block()
    _set_task_join_will_block(True)
    try:
        figures = _claim_and_publish()
        queued = redis.Redis.from_url(harness.backend.redis_url).llen("inventory")
        lean = _publish_lean(harness, figures.pop("run_ids"))
    finally:
        _set_task_join_will_block(joining)
    set_based = _claim_set_based(harness, facilities)
    return figures | {
        "facilities": facilities,
        "queued_messages": queued,
        "publish_lean_seconds": lean,
        "claim_set_based_seconds": set_based,
    }


def _claim_and_publish() -> dict[str, Any]:
    """Claim due facilities 1,000 at a time until none is left, publishing
    each batch's runs after its commit, as the dispatch task does."""
    from shared.db import session_scope
    from shared.models import utcnow
    from shared.runs import dispatch_due
    from tasks.inventory import publish_run

    claim_seconds = publish_seconds = 0.0
    run_ids: list[int] = []
    rounds = 0
    while True:
        started = time.perf_counter()
        with session_scope() as session:
            claimed = dispatch_due(session, utcnow(), timedelta(minutes=30))
        claim_seconds += time.perf_counter() - started
        if not claimed:
            break

        started = time.perf_counter()
        for run_id in claimed:
            publish_run(run_id)
        publish_seconds += time.perf_counter() - started
        run_ids += claimed
        rounds += 1
    return {
        "runs": len(run_ids),
        "rounds": rounds,
        "claim_seconds": claim_seconds,
        "publish_seconds": publish_seconds,
        "total_seconds": claim_seconds + publish_seconds,
        "run_ids": run_ids,
    }


def _insert_due_facilities(count: int) -> None:
    from shared.db import session_scope
    from shared.models import Facility, Tenant, utcnow
    from shared.secrets import Vault
    from shared.settings import get_settings

    vault = Vault.from_settings(get_settings())
    token = vault.encrypt("apx_dispatch_benchmark")
    key = vault.encrypt("fl_dispatch_benchmark")
    due = utcnow() - timedelta(minutes=1)
    tenants = -(-count // FACILITIES_PER_TENANT)
    with session_scope() as session:
        session.execute(
            insert(Tenant),
            [
                {"name": f"dispatch-{index}", "apex_token_encrypted": token}
                for index in range(tenants)
            ],
        )
        tenant_ids = list(
            session.scalars(select(Tenant.id).where(Tenant.name.like("dispatch-%")))
        )
        rows = [
            {
                "tenant_id": tenant_ids[index % tenants],
                "name": f"facility-{index}",
                "flourish_facility_id": f"dispatch-facility-{index}",
                "flourish_api_key_encrypted": key,
                "wholesale_room": "Wholesale Vault",
                "apex_operation_id": 1,
                "next_sync_at": due,
            }
            for index in range(count)
        ]
        session.execute(insert(Facility), rows)


#: One statement that does what ``shared.runs.dispatch_due`` does for one
#: batch on PostgreSQL: lock due facilities (skipping locked rows and those
#: with an active run), move their next sync with the same jitter rule, and
#: insert their queued runs. A prototype of the proposed claim.
SET_BASED_CLAIM = """
WITH due AS (
    SELECT f.id, f.tenant_id, f.sync_interval_seconds
    FROM facilities f JOIN tenants t ON t.id = f.tenant_id
    WHERE f.next_sync_at <= :now AND f.state = 'active' AND t.apex_state = 'active'
    ORDER BY f.next_sync_at
    LIMIT :limit
    FOR UPDATE OF f SKIP LOCKED
), moved AS (
    UPDATE facilities SET next_sync_at = :now + make_interval(
        secs => due.sync_interval_seconds
        + random() * least(300, due.sync_interval_seconds * 0.05))
    FROM due WHERE facilities.id = due.id
    RETURNING facilities.id
)
INSERT INTO sync_runs (tenant_id, facility_id, trigger, state, created_at,
    deadline_at, phase, next_offset, pages, fetched, created, updated, skipped,
    unmapped, failed, apex_requests, flourish_requests, enqueued_count)
SELECT due.tenant_id, due.id, 'schedule', 'queued', :now, :deadline, 'delta',
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
FROM due
WHERE NOT EXISTS (
    SELECT 1 FROM sync_runs r
    WHERE r.facility_id = due.id AND r.state IN ('queued', 'running'))
RETURNING id
"""


def _claim_set_based(harness: Harness, facilities: int) -> float | None:
    """Time the set-based claim prototype on fresh due facilities (PostgreSQL)."""
    from sqlalchemy import text

    from shared.db import session_scope
    from shared.models import utcnow

    if harness.backend.database_url.startswith("sqlite"):
        return None
    harness.prepare(packages=0, rate_limit=None)
    _insert_due_facilities(facilities)
    claimed = 0
    started = time.perf_counter()
    while True:
        now = utcnow()
        with session_scope() as session:
            ids = session.scalars(
                text(SET_BASED_CLAIM),
                {"now": now, "deadline": now + timedelta(minutes=30), "limit": 1000},
            ).all()
        if not ids:
            break
        claimed += len(ids)
    seconds = time.perf_counter() - started
    assert claimed == facilities, f"claimed {claimed} of {facilities}"
    return seconds


def _publish_lean(harness: Harness, run_ids: list[int]) -> float:
    """Publish the same runs again the lean way, then drop the messages.

    Lean: one producer for the whole batch and no ``task-sent`` event. This
    measures the proposed change to the dispatcher's publishing.
    """
    from tasks.inventory import start_run
    from workers.app import app

    sent_event = app.conf.task_send_sent_event
    app.conf.task_send_sent_event = False
    started = time.perf_counter()
    try:
        with app.producer_or_acquire() as producer:
            for run_id in run_ids:
                start_run.apply_async(kwargs={"run_id": run_id}, producer=producer)
    finally:
        app.conf.task_send_sent_event = sent_event
    seconds = time.perf_counter() - started
    redis.Redis.from_url(harness.backend.redis_url).flushdb()
    return seconds


def many_tenants(
    harness: Harness,
    tenants: int,
    facility_packages: int,
    concurrencies: list[tuple[str, int]],
    limit: float,
    latency_ms: float,
) -> dict[str, Any]:
    """Scenario 5: ``tenants`` tenants start an initial sync at once; Apex
    requests per second until the backlog is done (or ``limit`` seconds) and
    order-push latency, for each (pool, concurrency)."""
    results = []
    for pool, concurrency in concurrencies:
        figures = _tenants_once(
            harness, tenants, facility_packages, (pool, concurrency), limit, latency_ms
        )
        results.append(figures)
        logger.info("many tenants, %s x%d: %s", pool, concurrency, figures)
    return {
        "tenants": tenants,
        "facility_packages": facility_packages,
        "limit_seconds": limit,
        "latency_ms": latency_ms,
        "by_concurrency": results,
    }


def _tenants_once(
    harness: Harness,
    tenants: int,
    facility_packages: int,
    worker: tuple[str, int],
    limit: float,
    latency_ms: float,
) -> dict[str, Any]:
    from tests.helpers import start_sync

    orders = _prepare_orders(harness, facility_packages)
    facility_ids = _add_backlog_tenants(harness, tenants)
    harness.drop_variables(UNLIMITED)
    harness.sandbox.configure(APEX_LIMIT, latency_ms)
    pool, concurrency = worker
    harness.start_worker(concurrency=concurrency, pool=pool)
    harness.sandbox.clear_counts()
    cpu_before = harness.sandbox.cpu_seconds()

    started = time.time()
    run_ids = [start_sync(facility_id) for facility_id in facility_ids]
    pushes = _push_during(run_ids, orders, started + limit)
    ended = time.time()
    cpu_share = (harness.sandbox.cpu_seconds() - cpu_before) / (ended - started)
    latencies = _push_latencies(pushes, deadline=time.time() + 120)
    log = harness.sandbox.requests()
    harness.stop_workers()
    figures = _tenant_figures(log, latencies, started, ended, cpu_share)
    outcomes = _outcomes({push_id for push_id, _ in pushes})
    return {"pool": pool, "concurrency": concurrency} | figures | outcomes


def _outcomes(push_ids: set[int]) -> dict[str, Any]:
    """Count runs and pushes by state, and the dead letters."""
    from shared.db import session_scope
    from shared.models import DeadLetter, OrderPush, SyncRun

    with session_scope() as session:
        states = dict(
            session.execute(
                select(SyncRun.state, func.count()).group_by(SyncRun.state)
            ).all()
        )
        pushes = dict(
            session.execute(
                select(OrderPush.state, func.count())
                .where(OrderPush.id.in_(push_ids))
                .group_by(OrderPush.state)
            ).all()
        )
        dead = session.scalar(select(func.count()).select_from(DeadLetter))
    return {"run_states": states, "push_states": pushes, "dead_letters": dead}


def _prepare_orders(harness: Harness, facility_packages: int) -> list[int]:
    """Sync the seeded tenant in this process and build its demo orders."""
    from tests.helpers import run_state, start_sync
    from workers.app import app

    harness.prepare(
        packages=seed_packages_for(facility_packages),
        rate_limit=None,
        extra=UNLIMITED,
    )
    app.conf.task_always_eager = True
    try:
        for name in (SYNCED_FACILITY, "GVF Processing"):
            run_id = start_sync(harness.facilities[name])
            assert run_state(run_id) == "succeeded", f"sync of {name} failed"
    finally:
        app.conf.task_always_eager = False
    harness.sandbox.call("POST", "/_sandbox/apex/orders/generate")
    return _final_orders(harness)


def _final_orders(harness: Harness) -> list[int]:
    from sandbox.catalog import TENANTS

    spec = next(tenant for tenant in TENANTS if tenant.name == TENANT)
    cases = {customer.name: customer.case for customer in spec.customers}
    orders = [
        order
        for order in harness.sandbox.call("GET", "/_sandbox/apex/orders")["orders"]
        if order["company_name"] == TENANT and not order["cancelled"]
    ]
    chosen = [
        order["id"]
        for order in orders
        if order["order_status"]["parent_status"]["name"] in PUSHED_STAGES
        and cases.get(order["buyer"]["name"]) in PUSHED_BUYER_CASES
    ]
    return chosen or [order["id"] for order in orders]


def _add_backlog_tenants(harness: Harness, count: int) -> list[int]:
    """Add ``count`` tenants with their own credentials; each has one facility
    that reads the seeded facility's packages."""
    from shared.db import session_scope
    from shared.models import Facility, Tenant, utcnow
    from shared.secrets import Vault
    from shared.settings import get_settings

    issued = harness.sandbox.call(
        "POST", "/_bench/credentials", json={"tenant": TENANT, "count": count}
    )
    seeded = next(
        facility
        for tenant in harness.seed["tenants"]
        for facility in tenant["facilities"]
        if facility["name"] == SYNCED_FACILITY
    )
    vault = Vault.from_settings(get_settings())
    later = utcnow() + timedelta(days=1)
    facility_ids = []
    with session_scope() as session:
        for credentials in issued:
            tenant = Tenant(
                name=credentials["label"],
                apex_token_encrypted=vault.encrypt(credentials["apex_token"]),
            )
            session.add(tenant)
            session.flush()
            facility = Facility(
                tenant_id=tenant.id,
                name=f"{credentials['label']} facility",
                flourish_facility_id=seeded["flourish_facility_id"],
                flourish_api_key_encrypted=vault.encrypt(credentials["api_key"]),
                wholesale_room=seeded["wholesale_room"],
                apex_operation_id=int(seeded["apex_operation_id"]),
                next_sync_at=later,
            )
            session.add(facility)
            session.flush()
            facility_ids.append(facility.id)
    return facility_ids


def _push_during(
    run_ids: list[int], orders: list[int], until: float, interval: float = 1.0
) -> list[tuple[int, float]]:
    """Enqueue one order push per ``interval`` until the runs have ended or
    ``until`` has passed; return (push id, enqueue time) pairs."""
    from shared.db import session_scope
    from shared.models import ACTIVE_RUN_STATES, SyncRun, Tenant
    from tasks.orders import enqueue_push

    with session_scope() as session:
        tenant_id = session.scalars(
            select(Tenant.id).where(Tenant.name == TENANT)
        ).one()
    pushes = []
    index = 0
    while time.time() < until:
        enqueued = time.time()
        with session_scope() as session:
            push = enqueue_push(
                session, tenant_id, orders[index % len(orders)], "bench"
            )
            pushes.append((push.id, enqueued))
            active = session.scalar(
                select(func.count())
                .select_from(SyncRun)
                .where(SyncRun.id.in_(run_ids))
                .where(SyncRun.state.in_(ACTIVE_RUN_STATES))
            )
        if not active:
            break
        index += 1
        time.sleep(max(0.0, enqueued + interval - time.time()))
    return pushes


def _push_latencies(
    pushes: list[tuple[int, float]], deadline: float
) -> list[float | None]:
    """Seconds from enqueue to the push's end; None for a push still open at
    ``deadline`` or one that joined an earlier push of the same order."""
    from shared.db import session_scope
    from shared.models import OrderPush
    from tests.bench_env import _epoch

    ids = {push_id for push_id, _ in pushes}
    finished: dict[int, float] = {}
    while time.time() < deadline:
        with session_scope() as session:
            for push in session.scalars(select(OrderPush).where(OrderPush.id.in_(ids))):
                if push.finished_at is not None:
                    finished[push.id] = _epoch(push.finished_at)
        if len(finished) == len(ids):
            break
        time.sleep(0.5)
    seen: set[int] = set()
    latencies: list[float | None] = []
    for push_id, enqueued in pushes:
        if push_id in seen:
            latencies.append(None)
            continue
        seen.add(push_id)
        end = finished.get(push_id)
        latencies.append(None if end is None else end - enqueued)
    return latencies


def _tenant_figures(
    log: list[dict[str, Any]],
    latencies: list[float | None],
    started: float,
    ended: float,
    sandbox_cpu_share: float,
) -> dict[str, Any]:
    window = ended - started
    in_window = [
        item
        for item in log
        if item["api"] == "apex" and started <= item["started"] < ended
    ]
    measured = sorted(value for value in latencies if value is not None)
    p95 = quantiles(measured, n=20)[-1] if len(measured) >= 2 else None
    return {
        "apex_per_second": len(in_window) / window,
        "apex_429": sum(item["status"] == 429 for item in in_window),
        "flourish_per_second": sum(
            item["api"] == "flourish" and started <= item["started"] < ended
            for item in log
        )
        / window,
        "seconds": window,
        "apex_requests": len(in_window),
        "pushes": len(latencies),
        "pushes_measured": len(measured),
        "push_p50": measured[len(measured) // 2] if measured else None,
        "push_p95": p95,
        "push_max": measured[-1] if measured else None,
        "sandbox_cpu_share": sandbox_cpu_share,
    }
