"""Two tenants with identical data never touch each other's rows or upstream data.

The sandbox copies Green Valley Farms into a twin company: same SKUs,
licenses, Flourish facility ids, package tags and Apex product ids, and
cannabinoid and terpene ids moved by 1000 so a taxonomy read from the wrong
tenant's cache would send invalid ids. A real worker syncs Green Valley
Farms first, then the twin. Later a second copy, made once Green Valley's
batches and demo orders exist, has the same batch ids and order numbers,
and the same order is pushed for both tenants.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from shared.db import session_scope
from shared.models import (
    ApexProduct,
    ApexTaxonomy,
    BatchLink,
    DeadLetter,
    Facility,
    OrderLink,
    OrderPush,
    PackageOutcome,
    PendingPackage,
    SyncRun,
    Tenant,
)
from tests.helpers import ServiceEnv, sandbox_json, start_sync, wait_for_run, wait_until
from tests.test_secret_scan import module_service
from workers.demo import register_sandbox_tenants

SOURCE = "Green Valley Farms"
TWIN = "Green Valley Twin"
ORDER_TWIN = "Green Valley Order Twin"
#: Added to the twin's cannabinoid and terpene ids, which the seed's stay below.
TAXONOMY_OFFSET = 1000
TENANT_ROWS = (
    SyncRun,
    BatchLink,
    PackageOutcome,
    PendingPackage,
    ApexProduct,
    ApexTaxonomy,
    OrderLink,
    OrderPush,
)
PROCESS_TIMEOUT = 180.0


@dataclass
class Snapshot:
    """What one tenant owns at one moment, in the database and upstream."""

    rows: dict[str, int]
    links: dict[str, int | None]
    products: set[int]
    cannabinoids: set[int]


@dataclass
class Story:
    """Snapshots of the scenario, taken after each step."""

    tenants: dict[str, int] = field(default_factory=dict)
    companies: dict[str, int] = field(default_factory=dict)
    after_first: dict[str, Snapshot] = field(default_factory=dict)
    after_second: dict[str, Snapshot] = field(default_factory=dict)
    lab_tenants_first: set[int] = field(default_factory=set)
    lab_tenants_second: set[int] = field(default_factory=set)
    twin_requests_first: int = 0
    twin_batches_first: set[int] = field(default_factory=set)
    batches_by_company: dict[int, set[int]] = field(default_factory=dict)
    batch_cannabinoids: dict[int, set[int]] = field(default_factory=dict)
    dead_letters: int = 0
    order: dict[str, Any] = field(default_factory=dict)
    order_copy: dict[str, Any] = field(default_factory=dict)
    order_twin_rows_after_push: dict[str, int] = field(default_factory=dict)
    outbound_before: dict[str, int] = field(default_factory=dict)
    outbound_after_push: dict[str, int] = field(default_factory=dict)
    outbound_after_twin_push: dict[str, int] = field(default_factory=dict)
    push_state: str = ""
    twin_push_state: str = ""
    twin_push_reason: str = ""
    source_link_after_push: tuple[str, str | None] = ("", None)
    source_link_after_twin_push: tuple[str, str | None] = ("", None)


# Reading state -------------------------------------------------------------------


def tenant_ids() -> dict[str, int]:
    with session_scope() as session:
        return {t.name: t.id for t in session.scalars(select(Tenant))}


def snapshot(tenant_id: int) -> Snapshot:
    with session_scope() as session:
        rows = {
            model.__tablename__: session.scalar(
                select(func.count()).where(model.tenant_id == tenant_id)
            )
            or 0
            for model in TENANT_ROWS
        }
        links = dict(
            session.execute(
                select(BatchLink.package_tag, BatchLink.apex_batch_id).where(
                    BatchLink.tenant_id == tenant_id
                )
            ).all()
        )
        products = set(
            session.scalars(
                select(ApexProduct.apex_product_id).where(
                    ApexProduct.tenant_id == tenant_id
                )
            )
        )
        cannabinoids = set(
            session.scalars(
                select(ApexTaxonomy.apex_id)
                .where(ApexTaxonomy.tenant_id == tenant_id)
                .where(ApexTaxonomy.kind == "cannabinoid")
            )
        )
    return Snapshot(rows, links, products, cannabinoids)


def lab_cache_tenants(redis_url: str) -> set[int]:
    """Return the tenant ids in the lab-result cache keys ``apexsync:lab:T:ID``."""
    client = redis.Redis.from_url(redis_url)
    keys = [key.decode() for key in client.scan_iter("apexsync:lab:*")]
    return {int(key.split(":")[2]) for key in keys}


def requests_of(sandbox: Any, label: str) -> int:
    """Count the Apex and Flourish requests made with one tenant's credentials."""
    stats = sandbox_json(sandbox, "/_sandbox/stats")
    apex = stats["apex"]["by_token"].get(label, 0)
    flourish = sum(
        count
        for key_label, count in stats["flourish"]["by_key"].items()
        if key_label.endswith(f"({label})")
    )
    return int(apex) + int(flourish)


def batches_by_company(sandbox: Any) -> tuple[dict[int, set[int]], dict[int, set[int]]]:
    """Return batch ids per Apex company, and the cannabinoid ids of each batch."""
    owned: dict[int, set[int]] = {}
    cannabinoids: dict[int, set[int]] = {}
    for batch in sandbox_json(sandbox, "/_sandbox/apex/batches")["batches"]:
        owned.setdefault(int(batch["company_id"]), set()).add(int(batch["id"]))
        cannabinoids[int(batch["id"])] = {
            int(entry["id"]) for entry in batch.get("cannabinoids") or []
        }
    return owned, cannabinoids


def outbound_counts(sandbox: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for order in sandbox_json(sandbox, "/_sandbox/flourish/outbound-orders")["orders"]:
        counts[order["company_name"]] = counts.get(order["company_name"], 0) + 1
    return counts


def source_link(tenant_id: int, order_id: int) -> tuple[str, str | None]:
    with session_scope() as session:
        link = session.scalars(
            select(OrderLink)
            .where(OrderLink.tenant_id == tenant_id)
            .where(OrderLink.apex_order_id == order_id)
        ).one()
        return link.state, link.flourish_order_id


def facilities_of(tenant_id: int) -> list[int]:
    with session_scope() as session:
        return list(
            session.scalars(select(Facility.id).where(Facility.tenant_id == tenant_id))
        )


# The scenario ----------------------------------------------------------------------


def sync_tenant(tenant_id: int) -> None:
    run_ids = [start_sync(facility_id) for facility_id in facilities_of(tenant_id)]
    for run_id in run_ids:
        assert wait_for_run(run_id, PROCESS_TIMEOUT) == "succeeded"


def push_and_wait(tenant_id: int, order_id: int) -> OrderPush:
    from tasks.orders import enqueue_push

    with session_scope() as session:
        push_id = enqueue_push(session, tenant_id, order_id, "manual").id

    def ended() -> OrderPush | None:
        with session_scope() as session:
            push = session.get(OrderPush, push_id)
            return push if push.state not in ("queued", "running") else None

    push: OrderPush = wait_until(ended, PROCESS_TIMEOUT, f"push {push_id} to end")
    return push


def clean_accepted_order(sandbox: Any, company: str) -> dict[str, Any]:
    """Return the company's accepted demo order for a buyer that matches cleanly."""
    from sandbox.catalog import TENANTS

    spec = next(tenant for tenant in TENANTS if tenant.name == SOURCE)
    cases = {customer.name: customer.case for customer in spec.customers}
    orders = sandbox_json(sandbox, "/_sandbox/apex/orders")["orders"]
    return next(
        order
        for order in orders
        if order["company_name"] == company
        and order["order_status"]["parent_status"]["name"] == "Accepted"
        and cases.get(order["buyer"]["name"]) == "clean"
        and not order["cancelled"]
        and not order.get("split_from_order_id")
    )


def run_inventory_story(env: ServiceEnv, story: Story) -> None:
    sandbox = env.sandbox
    clone = {"source": SOURCE, "name": TWIN, "taxonomy_offset": TAXONOMY_OFFSET}
    twin = sandbox_json(sandbox, "/_sandbox/tenants/clone", "POST", json=clone)
    story.companies = {TWIN: twin["apex_company_id"]}
    env.register_tenants()
    story.tenants = tenant_ids()
    env.start_worker()

    sync_tenant(story.tenants[SOURCE])
    story.after_first = {name: snapshot(story.tenants[name]) for name in (SOURCE, TWIN)}
    story.lab_tenants_first = lab_cache_tenants(env.variables["APEXSYNC_REDIS_URL"])
    story.twin_requests_first = requests_of(sandbox, TWIN)
    owned, _ = batches_by_company(sandbox)
    story.twin_batches_first = owned.get(story.companies[TWIN], set())

    sync_tenant(story.tenants[TWIN])
    story.after_second = {
        name: snapshot(story.tenants[name]) for name in (SOURCE, TWIN)
    }
    story.lab_tenants_second = lab_cache_tenants(env.variables["APEXSYNC_REDIS_URL"])
    story.batches_by_company, story.batch_cannabinoids = batches_by_company(sandbox)
    with session_scope() as session:
        story.dead_letters = session.scalar(select(func.count(DeadLetter.id))) or 0


def run_order_story(env: ServiceEnv, story: Story) -> None:
    """Copy Green Valley once its orders exist, then push one order for both."""
    sandbox = env.sandbox
    sandbox_json(sandbox, "/_sandbox/apex/orders/generate", "POST")
    story.order = clean_accepted_order(sandbox, SOURCE)
    clone = {"source": SOURCE, "name": ORDER_TWIN}
    copy = sandbox_json(sandbox, "/_sandbox/tenants/clone", "POST", json=clone)
    register_sandbox_tenants({"tenants": [copy]})
    story.tenants = tenant_ids()
    orders = sandbox_json(sandbox, "/_sandbox/apex/orders")["orders"]
    story.order_copy = next(
        o
        for o in orders
        if o["company_name"] == ORDER_TWIN and o["id"] == story.order["id"]
    )
    source_id, twin_id = story.tenants[SOURCE], story.tenants[ORDER_TWIN]
    order_id = int(story.order["id"])
    story.outbound_before = outbound_counts(sandbox)

    story.push_state = push_and_wait(source_id, order_id).state
    story.order_twin_rows_after_push = snapshot(twin_id).rows
    story.outbound_after_push = outbound_counts(sandbox)
    story.source_link_after_push = source_link(source_id, order_id)

    twin_push = push_and_wait(twin_id, order_id)
    story.twin_push_state, story.twin_push_reason = (
        twin_push.state,
        twin_push.reason or "",
    )
    story.outbound_after_twin_push = outbound_counts(sandbox)
    story.source_link_after_twin_push = source_link(source_id, order_id)


@pytest.fixture(scope="module")
def story(
    redis_url: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Story]:
    state_dir = tmp_path_factory.mktemp("isolation")
    with module_service(redis_url, database_url, state_dir, 150) as (env, _stack):
        result = Story()
        run_inventory_story(env, result)
        run_order_story(env, result)
        yield result


pytestmark = [
    pytest.mark.slow,
    pytest.mark.processes,
    pytest.mark.redis,
    pytest.mark.timeout(600),
]


# Inventory ---------------------------------------------------------------------------


def test_first_sync_leaves_twin_rows_empty(story: Story) -> None:
    rows = story.after_first[TWIN].rows
    for table, count in rows.items():
        assert count == 0, table


def test_first_sync_fills_own_rows(story: Story) -> None:
    rows = story.after_first[SOURCE].rows
    for model in (SyncRun, BatchLink, PackageOutcome, ApexProduct, ApexTaxonomy):
        assert rows[model.__tablename__] > 0, model.__tablename__


def test_first_sync_sends_no_twin_request(story: Story) -> None:
    assert story.twin_requests_first == 0


def test_first_sync_creates_no_twin_batch(story: Story) -> None:
    assert story.twin_batches_first == set()


def test_twin_company_contains_only_twin_batches(story: Story) -> None:
    twin_links = set(story.after_second[TWIN].links.values())

    assert story.batches_by_company[story.companies[TWIN]] == twin_links


def test_lab_cache_keys_carry_tenant(story: Story) -> None:
    source, twin = story.tenants[SOURCE], story.tenants[TWIN]

    assert story.lab_tenants_first == {source}
    assert story.lab_tenants_second == {source, twin}


def test_twins_share_package_tags(story: Story) -> None:
    source_tags = set(story.after_second[SOURCE].links)

    assert source_tags
    assert set(story.after_second[TWIN].links) == source_tags


def test_second_sync_keeps_first_links(story: Story) -> None:
    assert story.after_second[SOURCE].links == story.after_first[SOURCE].links


def test_links_point_into_own_company(story: Story) -> None:
    source_batches = set(story.after_second[SOURCE].links.values())
    twin_batches = set(story.after_second[TWIN].links.values())
    companies = story.batches_by_company
    source_company = next(c for c, ids in companies.items() if source_batches <= ids)

    assert source_company != story.companies[TWIN]
    assert twin_batches <= companies[story.companies[TWIN]]
    assert source_batches.isdisjoint(twin_batches)


def test_product_cache_rows_per_tenant(story: Story) -> None:
    source, twin = story.after_second[SOURCE], story.after_second[TWIN]

    assert source.products
    assert twin.products == source.products
    assert twin.rows["apex_products"] == source.rows["apex_products"]


def test_taxonomy_cache_keeps_own_ids(story: Story) -> None:
    source, twin = story.after_second[SOURCE], story.after_second[TWIN]

    assert source.cannabinoids
    assert max(source.cannabinoids) < TAXONOMY_OFFSET
    assert {i - TAXONOMY_OFFSET for i in twin.cannabinoids} == source.cannabinoids


def test_twin_batches_use_twin_taxonomy(story: Story) -> None:
    twin_batches = story.batches_by_company[story.companies[TWIN]]
    used = set().union(*(story.batch_cannabinoids[b] for b in twin_batches))

    assert used
    assert used <= story.after_second[TWIN].cannabinoids
    assert story.dead_letters == 0


# Orders ------------------------------------------------------------------------------


def test_twins_share_order_number(story: Story) -> None:
    assert story.order_copy["id"] == story.order["id"]
    assert story.order_copy["invoice_number"] == story.order["invoice_number"]


def test_push_creates_order_once(story: Story) -> None:
    before, after = story.outbound_before, story.outbound_after_push

    assert story.push_state == "created"
    assert after[SOURCE] == before[SOURCE] + 1
    assert after[ORDER_TWIN] == before[ORDER_TWIN]


def test_push_leaves_twin_without_order_rows(story: Story) -> None:
    rows = story.order_twin_rows_after_push

    assert rows["order_links"] == 0
    assert rows["order_pushes"] == 0


def test_twin_push_ignores_source_links(story: Story) -> None:
    # The twin never synced, so Green Valley's links to the same batch ids
    # must not map its order lines.
    assert story.twin_push_state == "failed"
    assert "was not created from a Flourish package" in story.twin_push_reason
    assert story.outbound_after_twin_push == story.outbound_after_push
    assert story.source_link_after_twin_push == story.source_link_after_push
