"""Creating one Apex batch per package, also when a crash interrupts the steps.

The order of steps is the guarantee: an intent row is committed before the
POST, and the batch id is committed after it. A retry that finds an intent
without an id searches Apex (same product, name = package tag, changed since
the intent) before it creates anything, so a request that reached Apex but
whose response was lost does not become a second batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.apex.client import ApexClient
from shared.errors import UpstreamRejected
from shared.models import BatchLink, Facility, SyncRun, utcnow
from shared.runs import aware, keep_pending, record_outcome

logger = logging.getLogger(__name__)

#: Margin before the intent's time when searching Apex, for clock differences.
SEARCH_MARGIN = timedelta(minutes=5)


@dataclass(frozen=True)
class PlannedBatch:
    """A batch the convert step decided to create."""

    tag: str
    sku: str
    product_id: int
    item_id: str | None
    uom: str
    unit_name: str
    quantity: str
    body: dict[str, Any]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlannedBatch:
        return cls(**data)


def existing_links(
    session: Session, facility_id: int, tags: list[str]
) -> dict[str, BatchLink]:
    if not tags:
        return {}
    rows = session.scalars(
        select(BatchLink)
        .where(BatchLink.facility_id == facility_id)
        .where(BatchLink.package_tag.in_(tags))
    )
    return {row.package_tag: row for row in rows}


def ensure_batch(
    session: Session,
    run: SyncRun,
    facility: Facility,
    apex: ApexClient,
    plan: PlannedBatch,
) -> None:
    """Make sure the package of ``plan`` has exactly one Apex batch.

    Commits after each step. A 4xx from Apex is recorded on the run as a
    failed package, and the package is kept for a later run. The error is
    then re-raised so the caller can dead-letter it.
    """
    link = existing_links(session, facility.id, [plan.tag]).get(plan.tag)
    if link is not None and link.state == "created":
        record_outcome(
            session,
            run,
            plan.tag,
            "exists",
            sku=plan.sku,
            reason=f"already has Apex batch {link.apex_batch_id}",
            apex_batch_id=link.apex_batch_id,
        )
        session.commit()
        return

    if link is None:
        link = _write_intent(session, run, facility, plan)
    elif _adopt_existing(session, apex, link, plan):
        _record_created(session, run, link, plan, recovered=True)
        return

    try:
        batch = apex.create_batch(plan.body)
    except UpstreamRejected as exc:
        _record_rejected(session, run, link, plan, exc)
        raise
    link.apex_batch_id = batch.id
    _record_created(session, run, link, plan, recovered=False)


def _write_intent(
    session: Session, run: SyncRun, facility: Facility, plan: PlannedBatch
) -> BatchLink:
    link = BatchLink(
        tenant_id=facility.tenant_id,
        facility_id=facility.id,
        package_tag=plan.tag,
        sku=plan.sku,
        apex_product_id=plan.product_id,
        state="intent",
        quantity=Decimal(plan.quantity),
        unit_name=plan.unit_name,
        flourish_item_id=plan.item_id,
        flourish_uom=plan.uom,
        run_id=run.id,
        intent_at=utcnow(),
    )
    session.add(link)
    session.commit()
    return link


def _adopt_existing(
    session: Session, apex: ApexClient, link: BatchLink, plan: PlannedBatch
) -> bool:
    """Find the batch an earlier attempt created; store its id if found."""
    since = (aware(link.intent_at) or utcnow()) - SEARCH_MARGIN
    found = apex.find_batch(
        product_id=link.apex_product_id, name=plan.tag, created_since=since
    )
    if found is None:
        link.apex_product_id = plan.product_id
        return False
    logger.warning(
        "facility=%s package=%s found batch %s from an earlier attempt; "
        "not creating another",
        link.facility_id,
        plan.tag,
        found.id,
    )
    link.apex_batch_id = found.id
    return True


def _record_created(
    session: Session,
    run: SyncRun,
    link: BatchLink,
    plan: PlannedBatch,
    *,
    recovered: bool,
) -> None:
    link.state = "created"
    link.created_at = utcnow()
    link.quantity = Decimal(plan.quantity)
    reason = "found in Apex after an interrupted attempt" if recovered else None
    record_outcome(
        session,
        run,
        plan.tag,
        "created",
        sku=plan.sku,
        reason=reason,
        apex_batch_id=link.apex_batch_id,
    )
    session.commit()


def _record_rejected(
    session: Session,
    run: SyncRun,
    link: BatchLink,
    plan: PlannedBatch,
    error: UpstreamRejected,
) -> None:
    # Apex rejected the request, so no batch exists and the intent can go.
    session.delete(link)
    reason = f"Apex rejected the batch: {error}"
    record_outcome(session, run, plan.tag, "failed", sku=plan.sku, reason=reason)
    keep_pending(session, run, plan.tag, plan.sku, reason)
    session.commit()
