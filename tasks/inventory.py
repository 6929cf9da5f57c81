"""Inventory pipeline tasks: Flourish packages become Apex batches.

For each page of a run: ``fetch_packages`` → ``convert_units`` →
``create_batches``. The last link enqueues the next page's chain, and after
the last page ``finish_run`` closes the run. Every task takes ids, checks that
its page is still the run's next one, and is safe to run twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from celery import chain
from celery.exceptions import Ignore

from shared import catalog, runs
from shared.batches import PlannedBatch, ensure_batch, existing_links
from shared.db import session_scope
from shared.deadletters import record_dead_letter
from shared.errors import (
    CredentialsRejected,
    CreditsExhausted,
    UnitMismatch,
    UpstreamRejected,
)
from shared.inventory import (
    PackageFacts,
    batch_body,
    facts_from_row,
    lab_facts,
    offered_quantity,
    skip_reason,
)
from shared.locks import LockBusy, facility_lock_name, held_lock
from shared.models import Facility, SyncRun, Tenant, utcnow
from shared.redis_client import get_redis
from shared.settings import get_settings
from tasks.base import RequestCounter, SyncTask, apex_client_for, flourish_client_for
from workers.app import app

logger = logging.getLogger(__name__)

LAB_CACHE_SECONDS = 6 * 60 * 60
#: Facilities claimed per transaction, and transactions per beat tick; a
#: backlog larger than their product waits for the next tick.
DISPATCH_BATCH = 1000
MAX_DISPATCH_BATCHES = 20


def _deadline() -> timedelta:
    return timedelta(seconds=get_settings().run_deadline_seconds)


class InventoryTask(SyncTask):
    """Ends the run as failed when one of its tasks gives up."""

    def give_up(self, error: BaseException, kwargs: dict[str, Any]) -> None:
        run_id = kwargs.get("run_id")
        if run_id is None:
            return
        with session_scope() as session:
            run = session.get(SyncRun, run_id)
            if run is not None:
                runs.fail_run(session, run, f"{self.name} gave up: {_summary(error)}")


def _summary(error: BaseException) -> str:
    """Name the error in one line; database errors would add the whole SQL."""
    lines = str(error).strip().splitlines() or [""]
    return f"{type(error).__name__}: {lines[0][:500]}"


def publish_run(run_id: int) -> None:
    """Enqueue a run that is committed in the database."""
    start_run.apply_async(kwargs={"run_id": run_id})


def publish_page(run_id: int, token: runs.PageToken) -> None:
    if token.phase == "done":
        finish_run.apply_async(kwargs={"run_id": run_id})
        return
    chain(
        fetch_packages.s(run_id=run_id, phase=token.phase, offset=token.offset),
        convert_units.s(run_id=run_id),
        create_batches.s(run_id=run_id),
    ).apply_async()


@app.task(base=InventoryTask, bind=True, name="inventory.dispatch_due_syncs")
def dispatch_due_syncs(self: SyncTask) -> int:
    """Create a run for every facility whose next sync is due, then enqueue them."""
    total = 0
    for _batch in range(MAX_DISPATCH_BATCHES):
        with session_scope() as session:
            run_ids = runs.dispatch_due(
                session, utcnow(), _deadline(), limit=DISPATCH_BATCH
            )
        _publish_runs(run_ids)
        total += len(run_ids)
        if len(run_ids) < DISPATCH_BATCH:
            break
    if total:
        logger.info("dispatched %d sync runs", total)
    return total


def _publish_runs(run_ids: list[int]) -> None:
    # One producer for the whole batch saves a broker round trip per run.
    with app.producer_or_acquire() as producer:
        for run_id in run_ids:
            start_run.apply_async(kwargs={"run_id": run_id}, producer=producer)


@app.task(base=InventoryTask, bind=True, name="inventory.start_run")
def start_run(self: SyncTask, run_id: int) -> None:
    """Mark the run running, refresh the tenant's Apex catalog, enqueue page one."""
    counter = RequestCounter()
    with _run_guard(run_id), session_scope() as session:
        run, facility, tenant = _load(session, run_id)
        if not runs.begin_run(session, run, facility, _deadline()):
            return
        session.commit()
        apex = apex_client_for(tenant, counter)
        with apex:
            if not catalog.taxonomy_is_fresh(session, tenant.id, utcnow()):
                catalog.refresh_taxonomy(session, tenant, apex)
            overlap = timedelta(seconds=get_settings().cursor_overlap_seconds)
            catalog.refresh_products(session, tenant, apex, overlap)
        runs.add_requests(session, run_id, counter.counts)
        token = runs.current_token(run)
    logger.info(
        "tenant=%s facility=%s run=%s started", run.tenant_id, run.facility_id, run_id
    )
    publish_page(run_id, token)


@app.task(base=InventoryTask, bind=True, name="inventory.fetch_packages")
def fetch_packages(
    self: SyncTask, run_id: int, phase: str, offset: int
) -> dict[str, Any] | None:
    """Read one page of Flourish packages and the lab results they need."""
    token = runs.PageToken(phase, offset)
    counter = RequestCounter()
    with _run_guard(run_id), session_scope() as session:
        run, facility, tenant = _load(session, run_id)
        if not _is_current(run, token):
            return None
        with flourish_client_for(facility, counter) as flourish:
            facts, invalid, has_next = _read_page(
                session, run, facility, flourish, token
            )
            labs = _lab_results(session, tenant, facility, flourish, facts)
        runs.add_requests(session, run_id, counter.counts)
    return {
        "phase": phase,
        "offset": offset,
        "has_next": has_next,
        "packages": [item.to_dict() for item in facts],
        "invalid": invalid,
        "labs": labs,
    }


@app.task(base=InventoryTask, bind=True, name="inventory.convert_units")
def convert_units(
    self: SyncTask, page: dict[str, Any] | None, run_id: int
) -> dict[str, Any] | None:
    """Decide each package's fate and convert quantities to the product's unit."""
    if page is None:
        return None
    with _run_guard(run_id), session_scope() as session:
        run, facility, tenant = _load(session, run_id)
        if not _is_current(run, runs.PageToken(page["phase"], page["offset"])):
            return None
        planned = _plan_page(session, run, facility, tenant, page)
    return {key: page[key] for key in ("phase", "offset", "has_next")} | {
        "planned": planned
    }


@app.task(base=InventoryTask, bind=True, name="inventory.create_batches")
def create_batches(self: SyncTask, page: dict[str, Any] | None, run_id: int) -> None:
    """Create the page's batches under the facility lock, then enqueue the next page."""
    if page is None:
        return
    token = runs.PageToken(page["phase"], page["offset"])
    settings = get_settings()
    counter = RequestCounter()
    following = None
    with _run_guard(run_id), session_scope() as session:
        run, facility, tenant = _load(session, run_id)
        try:
            with held_lock(
                get_redis(),
                facility_lock_name(facility.id),
                settings.task_time_limit + 60,
            ):
                if not _is_current(run, token):
                    return
                _create_planned(
                    self, session, run, facility, tenant, page["planned"], counter
                )
                following = runs.advance_run(
                    session, run_id, token, page["has_next"], _deadline()
                )
                runs.add_requests(session, run_id, counter.counts)
                session.commit()
        except LockBusy:
            raise self.retry(countdown=5, max_retries=None) from None
    if following is not None:
        publish_page(run_id, following)


@app.task(base=InventoryTask, bind=True, name="inventory.finish_run")
def finish_run(self: SyncTask, run_id: int) -> None:
    """Count the run's outcomes, close it and move the facility's cursor."""
    overlap = timedelta(seconds=get_settings().cursor_overlap_seconds)
    with session_scope() as session:
        run, facility, _tenant = _load(session, run_id)
        if run.state != "running" or run.phase != "done":
            return
        runs.complete_run(session, run, facility, overlap)
    logger.info(
        "tenant=%s facility=%s run=%s finished: fetched=%d created=%d skipped=%d "
        "unmapped=%d failed=%d apex_requests=%d flourish_requests=%d",
        run.tenant_id,
        run.facility_id,
        run.id,
        run.fetched,
        run.created,
        run.skipped,
        run.unmapped,
        run.failed,
        run.apex_requests,
        run.flourish_requests,
    )


@app.task(base=InventoryTask, bind=True, name="inventory.sync_package")
def sync_package(
    self: SyncTask, tenant_id: int, facility_id: int, package_tag: str
) -> int | None:
    """Read one package again in the next sync (the replay of a failed package).

    Marks the package pending as if its product had just changed, then requests
    a sync of its facility; an active run picks it up in its last phase.
    """
    with session_scope() as session:
        facility = session.get(Facility, facility_id)
        if facility is None or facility.tenant_id != tenant_id:
            raise LookupError(
                f"Facility {facility_id} of tenant {tenant_id} not found."
            )
        runs.rewind_pending(session, facility_id, package_tag)
        try:
            run = runs.create_run(session, facility, "replay", _deadline())
        except runs.SyncAlreadyRunning as busy:
            return busy.run_id
        run_id = run.id
    publish_run(run_id)
    return run_id


def _load(session: Any, run_id: int) -> tuple[SyncRun, Facility, Tenant]:
    run = session.get(SyncRun, run_id)
    if run is None:
        raise LookupError(f"Sync run {run_id} not found.")
    facility = session.get(Facility, run.facility_id)
    tenant = session.get(Tenant, run.tenant_id)
    return run, facility, tenant


def _is_current(run: SyncRun, token: runs.PageToken) -> bool:
    """Tell whether ``token`` is the run's next page; a duplicate copy is not."""
    if run.state != "running" or runs.current_token(run) != token:
        logger.info(
            "run=%s page %s/%s is stale; skipping", run.id, token.phase, token.offset
        )
        return False
    return True


@contextmanager
def _run_guard(run_id: int) -> Iterator[None]:
    """Stop the run, and its facility or tenant, when credentials fail.

    Neither rejected credentials nor spent credits get better by retrying, so
    the run ends and the chain stops here until an operator acts.
    """
    try:
        yield
    except CredentialsRejected as exc:
        _stop_for(run_id, exc, "credentials_rejected", f"credentials rejected: {exc}")
        raise Ignore() from None
    except CreditsExhausted as exc:
        _stop_for(run_id, exc, "paused", f"Apex credits exhausted: {exc}")
        raise Ignore() from None


def _stop_for(run_id: int, error: Exception, state: str, reason: str) -> None:
    logger.error("run=%s stopped: %s", run_id, reason)
    with session_scope() as session:
        run, facility, tenant = _load(session, run_id)
        runs.fail_run(session, run, reason)
        api = error.context.get("upstream") if hasattr(error, "context") else None
        if api == "flourish":
            facility.state = state
            facility.state_reason = reason
        else:
            tenant.apex_state = state
            tenant.apex_state_reason = reason


def _read_page(
    session: Any, run: SyncRun, facility: Facility, flourish: Any, token: runs.PageToken
) -> tuple[list[PackageFacts], list[dict[str, str]], bool]:
    if token.phase == "delta":
        page = flourish.list_packages(
            offset=token.offset,
            limit=runs.PAGE_SIZE,
            statuses=facility.package_statuses or (),
            updated_since=runs.aware(run.cursor_from),
        )
        return _facts_of(page, token), _invalid_of(page, token), page.has_next
    tags = runs.pending_tags(session, run)
    if not tags:
        return [], [], False
    page = flourish.list_packages(package_ids=tags, limit=runs.PAGE_SIZE)
    facts = _facts_of(page, token)
    returned = {item.tag for item in facts} | {
        row["tag"] for row in _invalid_of(page, token)
    }
    for tag in sorted(set(tags) - returned):
        runs.record_outcome(
            session, run, tag, "skipped", reason="no longer listed in Flourish"
        )
    runs.drop_pending(session, facility.id, sorted(set(tags) - returned))
    return facts, _invalid_of(page, token), len(tags) == runs.PAGE_SIZE


def _facts_of(page: Any, token: runs.PageToken) -> list[PackageFacts]:
    return [facts_from_row(row) for row in page.items]


def _invalid_of(page: Any, token: runs.PageToken) -> list[dict[str, str]]:
    rows = []
    for index, (tag, reason, _raw) in enumerate(page.invalid):
        label = (
            tag or f"(untagged row {index + 1} of page {token.phase}/{token.offset})"
        )
        rows.append({"tag": label, "reason": reason})
    return rows


def _lab_results(
    session: Any,
    tenant: Tenant,
    facility: Facility,
    flourish: Any,
    facts: list[PackageFacts],
) -> dict[str, dict[str, dict[str, str]]]:
    """Fetch each lab result the page needs once, through a per-tenant cache."""
    wanted = _needs_batch(session, tenant, facility, facts)
    result_ids = sorted({item.lab_result_id for item in wanted if item.lab_result_id})
    cache = get_redis()
    labs: dict[str, dict[str, dict[str, str]]] = {}
    for result_id in result_ids:
        key = f"apexsync:lab:{tenant.id}:{result_id}"
        cached = cache.get(key)
        if cached is None:
            labs[result_id] = lab_facts(flourish.get_lab_test_result(result_id))
            cache.set(key, json.dumps(labs[result_id]), ex=LAB_CACHE_SECONDS)
        else:
            labs[result_id] = json.loads(cached)
    return labs


def _needs_batch(
    session: Any, tenant: Tenant, facility: Facility, facts: list[PackageFacts]
) -> list[PackageFacts]:
    linked = existing_links(session, facility.id, [item.tag for item in facts])
    products = catalog.products_by_sku(session, tenant.id, {item.sku for item in facts})
    return [
        item
        for item in facts
        if item.tag not in linked
        and item.sku in products
        and skip_reason(item, facility) is None
    ]


def _plan_page(
    session: Any, run: SyncRun, facility: Facility, tenant: Tenant, page: dict[str, Any]
) -> list[dict[str, Any]]:
    for row in page["invalid"]:
        runs.record_outcome(session, run, row["tag"], "failed", reason=row["reason"])
    facts = [PackageFacts.from_dict(data) for data in page["packages"]]
    linked = existing_links(session, facility.id, [item.tag for item in facts])
    products = catalog.products_by_sku(session, tenant.id, {item.sku for item in facts})
    taxonomy = catalog.load_taxonomy(session, tenant.id)
    planned = []
    for item in facts:
        plan = _plan_package(
            session,
            run,
            facility,
            tenant,
            item,
            linked,
            products,
            taxonomy,
            page["labs"],
        )
        if plan is not None:
            planned.append(plan)
    return planned


def _plan_package(
    session: Any,
    run: SyncRun,
    facility: Facility,
    tenant: Tenant,
    item: PackageFacts,
    linked: dict[str, Any],
    products: dict[str, Any],
    taxonomy: catalog.Taxonomy,
    labs: dict[str, Any],
) -> dict[str, Any] | None:
    link = linked.get(item.tag)
    if link is not None and link.state == "created":
        runs.record_outcome(
            session,
            run,
            item.tag,
            "exists",
            sku=item.sku,
            reason=f"already has Apex batch {link.apex_batch_id}",
            apex_batch_id=link.apex_batch_id,
        )
        runs.drop_pending(session, facility.id, [item.tag])
        return None
    reason = skip_reason(item, facility)
    if reason is not None:
        runs.record_outcome(
            session, run, item.tag, "skipped", sku=item.sku, reason=reason
        )
        runs.drop_pending(session, facility.id, [item.tag])
        return None
    product = products.get(item.sku)
    if product is None:
        reason = f"SKU {item.sku!r} has no Apex product with that product_sku"
        runs.record_outcome(
            session, run, item.tag, "unmapped", sku=item.sku, reason=reason
        )
        runs.keep_pending(session, run, item.tag, item.sku, reason)
        return None
    return _plan_quantity(session, run, facility, tenant, item, product, taxonomy, labs)


def _plan_quantity(
    session: Any,
    run: SyncRun,
    facility: Facility,
    tenant: Tenant,
    item: PackageFacts,
    product: Any,
    taxonomy: catalog.Taxonomy,
    labs: dict[str, Any],
) -> dict[str, Any] | None:
    try:
        quantity = offered_quantity(item, product, tenant.grams_per_pound)
    except UnitMismatch as exc:
        runs.record_outcome(
            session, run, item.tag, "failed", sku=item.sku, reason=str(exc)
        )
        runs.keep_pending(session, run, item.tag, item.sku, str(exc))
        return None
    if quantity <= 0:
        reason = (
            f"less than one {product.unit_name} available after conversion "
            f"({item.sellable()} {item.uom})"
        )
        runs.record_outcome(
            session, run, item.tag, "skipped", sku=item.sku, reason=reason
        )
        return None
    lab = labs.get(item.lab_result_id) if item.lab_result_id else None
    body = batch_body(
        item, product, facility.apex_operation_id, quantity, lab, taxonomy
    )
    plan = PlannedBatch(
        tag=item.tag,
        sku=item.sku,
        product_id=product.apex_product_id,
        item_id=item.item_id,
        uom=item.uom,
        unit_name=product.unit_name or "",
        quantity=str(quantity),
        body=body,
    )
    return plan.__dict__


def _create_planned(
    task: SyncTask,
    session: Any,
    run: SyncRun,
    facility: Facility,
    tenant: Tenant,
    planned: list[dict[str, Any]],
    counter: RequestCounter,
) -> None:
    if not planned:
        return
    with apex_client_for(tenant, counter) as apex:
        for data in planned:
            plan = PlannedBatch.from_dict(data)
            try:
                ensure_batch(session, run, facility, apex, plan)
            except UpstreamRejected as exc:
                _dead_letter_package(task, session, facility, plan, exc)


def _dead_letter_package(
    task: SyncTask,
    session: Any,
    facility: Facility,
    plan: PlannedBatch,
    error: UpstreamRejected,
) -> None:
    """Record one rejected package; the rest of the page goes on."""
    logger.error(
        "facility=%s package=%s batch rejected: %s", facility.id, plan.tag, error
    )
    record_dead_letter(
        session,
        task_name="inventory.sync_package",
        task_id=f"{task.request.id}:{plan.tag}",
        arguments={
            "tenant_id": facility.tenant_id,
            "facility_id": facility.id,
            "package_tag": plan.tag,
        },
        error=error,
        traceback_text=None,
        attempts=1,
    )
    session.commit()
