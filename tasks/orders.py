"""Order tasks: push Apex orders to Flourish, poll for final orders, match buyers.

One task does a whole push (fetch the order, check it is final, resolve the
buyer, map the lines, then create, update or cancel the Flourish order).
Each step needs what the one before it read, and a push takes a few
requests. Splitting it into tasks would only copy the order through Redis.
The intent row in the database is what makes a repeated push harmless.

Every push is an OrderPush row. ``enqueue_push`` writes it and publishes the
task after the commit; the reconciler publishes it again if the message is
lost before the push ends.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.exceptions import Ignore
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from shared import orders
from shared.buyers import apply_matches
from shared.db import session_scope
from shared.errors import CredentialsRejected, CreditsExhausted, NeedsAttention
from shared.locks import LockBusy, held_lock
from shared.models import (
    ACTIVE_RUN_STATES,
    Facility,
    OrderLink,
    OrderPush,
    Tenant,
    utcnow,
)
from shared.redis_client import get_redis
from shared.settings import get_settings
from tasks.base import (
    RequestCounter,
    SyncTask,
    apex_client_for,
    flourish_client_for,
    load_tenant,
)
from workers.app import app

logger = logging.getLogger(__name__)

#: Apex advises seeding the first ``updated_at_from`` with 1970 (Apex Postman docs).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Times the reconciler re-publishes one push before failing it as stuck.
MAX_REENQUEUES = 10

#: Seconds a push waits before trying again while another push of the same
#: order holds the order lock.
LOCK_RETRY_SECONDS = 5


def _deadline() -> timedelta:
    return timedelta(seconds=get_settings().run_deadline_seconds)


class OrderTask(SyncTask):
    """Ends the push as failed when its task gives up."""

    def give_up(self, error: BaseException, kwargs: dict[str, Any]) -> None:
        push_id = kwargs.get("push_id")
        if push_id is None:
            return
        with session_scope() as session:
            push = session.get(OrderPush, push_id)
            if push is not None and push.state in ACTIVE_RUN_STATES:
                _finish(push, orders.FAILED, f"{self.name} gave up: {error}")


def _finish(push: OrderPush, state: str, reason: str) -> None:
    push.state = state
    push.reason = reason
    push.finished_at = utcnow()


# --- enqueueing --------------------------------------------------------------


def enqueue_push(
    session: Session, tenant_id: int, apex_order_id: int, trigger: str
) -> OrderPush:
    """Create an OrderPush row, commit it and publish the push task.

    When a push of the same order is still queued or running, that push is
    returned instead and nothing is published, so a person and the poller
    never send the same order twice at once.
    """
    active = session.scalars(
        select(OrderPush)
        .where(OrderPush.tenant_id == tenant_id)
        .where(OrderPush.apex_order_id == apex_order_id)
        .where(OrderPush.state.in_(ACTIVE_RUN_STATES))
        .order_by(OrderPush.id)
    ).first()
    if active is not None:
        return active

    push = OrderPush(
        tenant_id=tenant_id,
        apex_order_id=apex_order_id,
        trigger=trigger,
        state="queued",
        deadline_at=utcnow() + _deadline(),
    )
    session.add(push)
    session.commit()

    publish_push(push)
    logger.info(
        "tenant=%s order=%s push=%s queued (%s)",
        tenant_id,
        apex_order_id,
        push.id,
        trigger,
    )
    return push


def publish_push(push: OrderPush) -> None:
    """Publish the push task of a committed OrderPush row."""
    push_order.apply_async(
        kwargs={
            "push_id": push.id,
            "tenant_id": push.tenant_id,
            "apex_order_id": push.apex_order_id,
        }
    )


# --- pushing -----------------------------------------------------------------


@app.task(base=OrderTask, bind=True, name="orders.push_order")
def push_order(self: SyncTask, push_id: int, tenant_id: int, apex_order_id: int) -> str:
    """Push one Apex order to Flourish and record the outcome on its OrderPush.

    Returns the push's final state. A push that already ended (a duplicate
    message) is left as it is.
    """
    with session_scope() as session:
        push = _start_push(session, push_id, tenant_id, apex_order_id)
        if push is None:
            return "duplicate"
        tenant = load_tenant(session, tenant_id)
        if tenant.apex_state != "active":
            _finish(push, orders.FAILED, _paused_reason(tenant))
            return push.state

        try:
            with _order_lock(tenant_id, apex_order_id):
                _push_with_clients(session, tenant, push)
        except LockBusy:
            raise self.retry(countdown=LOCK_RETRY_SECONDS, max_retries=None) from None
        return push.state


def _start_push(
    session: Session, push_id: int, tenant_id: int, apex_order_id: int
) -> OrderPush | None:
    push = session.get(OrderPush, push_id)
    if (
        push is None
        or push.tenant_id != tenant_id
        or push.apex_order_id != apex_order_id
    ):
        raise LookupError(
            f"Order push {push_id} of tenant {tenant_id} for Apex order "
            f"{apex_order_id} not found."
        )
    if push.state not in ACTIVE_RUN_STATES:
        logger.info("push=%s already %s; skipping the duplicate", push_id, push.state)
        return None

    push.state = "running"
    push.deadline_at = utcnow() + _deadline()
    session.commit()
    return push


def _paused_reason(tenant: Tenant) -> str:
    detail = f": {tenant.apex_state_reason}" if tenant.apex_state_reason else ""
    return (
        f"Apex access of tenant {tenant.name!r} is {tenant.apex_state}{detail}. "
        "Resume the tenant, then push again."
    )


@contextmanager
def _order_lock(tenant_id: int, apex_order_id: int) -> Iterator[None]:
    # Held longer than the hard time limit, so a killed holder's lock expires
    # only after its task can no longer be running.
    timeout = get_settings().task_time_limit + 60
    name = f"apexsync:lock:order:{tenant_id}:{apex_order_id}"
    with held_lock(get_redis(), name, timeout):
        yield


def _push_with_clients(session: Session, tenant: Tenant, push: OrderPush) -> None:
    counter = RequestCounter()
    facilities: list[Facility] = []
    with ExitStack() as clients:
        apex = clients.enter_context(apex_client_for(tenant, counter))

        def flourish_for(facility: Facility) -> Any:
            facilities.append(facility)
            return clients.enter_context(flourish_client_for(facility, counter))

        try:
            outcome = orders.push_order(
                session, tenant, apex, flourish_for, push.apex_order_id
            )
        except NeedsAttention as exc:
            session.rollback()
            orders.record_attention(session, push, exc)
            logger.warning(
                "tenant=%s push=%s %s: %s", tenant.id, push.id, push.state, exc
            )
            return
        except (CredentialsRejected, CreditsExhausted) as exc:
            session.rollback()
            facility = facilities[-1] if facilities else None
            _stop_for_credentials(session, tenant, facility, push, exc)
            session.commit()
            raise Ignore() from None

    orders.record_outcome(session, push, outcome)
    logger.info(
        "tenant=%s order=%s push=%s %s flourish_order=%s apex_requests=%d "
        "flourish_requests=%d",
        tenant.id,
        push.apex_order_id,
        push.id,
        outcome.action,
        outcome.flourish_order_id,
        counter.counts.get("apex", 0),
        counter.counts.get("flourish", 0),
    )


def _stop_for_credentials(
    session: Session,
    tenant: Tenant,
    facility: Facility | None,
    push: OrderPush,
    error: Exception,
) -> None:
    """Fail the push and stop the tenant or facility whose credential failed.

    Neither rejected credentials nor spent Apex credits improve by retrying.
    """
    rejected = isinstance(error, CredentialsRejected)
    state = "credentials_rejected" if rejected else "paused"
    reason = (
        f"credentials rejected: {error}" if rejected else f"Apex credits spent: {error}"
    )
    context = getattr(error, "context", {})
    if context.get("upstream") == "flourish" and facility is not None:
        facility = session.merge(facility)
        facility.state, facility.state_reason = state, reason
    else:
        tenant.apex_state, tenant.apex_state_reason = state, reason

    _finish(push, orders.FAILED, reason)
    logger.error("tenant=%s push=%s stopped: %s", tenant.id, push.id, reason)


# --- polling -----------------------------------------------------------------


@app.task(base=OrderTask, bind=True, name="orders.poll_orders")
def poll_orders(self: SyncTask) -> int:
    """Enqueue an order poll for every tenant whose poll is due (beat, each minute)."""
    now = utcnow()
    with session_scope() as session:
        tenant_ids = _claim_due_tenants(session, now)
    for tenant_id in tenant_ids:
        poll_tenant_orders.apply_async(kwargs={"tenant_id": tenant_id})
    return len(tenant_ids)


def _claim_due_tenants(session: Session, now: datetime) -> list[int]:
    """Move each due tenant's next poll forward; return the tenants this call claimed.

    The conditional UPDATE claims a tenant only if its poll is still due, so
    two beat processes never poll one tenant twice.
    """
    due = session.scalars(
        select(Tenant)
        .where(Tenant.auto_push_orders.is_(True))
        .where(Tenant.apex_state == "active")
        .where(
            or_(Tenant.next_order_poll_at.is_(None), Tenant.next_order_poll_at <= now)
        )
    ).all()

    claimed = []
    for tenant in due:
        seconds = tenant.order_poll_seconds or get_settings().order_poll_seconds
        result = session.execute(
            update(Tenant)
            .where(Tenant.id == tenant.id)
            .where(
                or_(
                    Tenant.next_order_poll_at.is_(None),
                    Tenant.next_order_poll_at <= now,
                )
            )
            .values(next_order_poll_at=now + timedelta(seconds=seconds))
        )
        if getattr(result, "rowcount", 0) == 1:
            claimed.append(tenant.id)
    return claimed


@app.task(base=OrderTask, bind=True, name="orders.poll_tenant_orders")
def poll_tenant_orders(self: SyncTask, tenant_id: int) -> int:
    """Read the tenant's orders changed since its cursor and enqueue pushes.

    Final orders and cancelled orders that were pushed are enqueued. The
    cursor moves to the poll's start minus the overlap only after every page
    was read.
    """
    started = utcnow()
    with session_scope() as session:
        tenant = load_tenant(session, tenant_id)
        since = _aware(tenant.orders_cursor) or EPOCH
        try:
            with apex_client_for(tenant) as apex:
                to_push = [
                    order
                    for order in apex.iter_shipping_orders(since)
                    if _wants_push(session, tenant, order)
                ]
        except (CredentialsRejected, CreditsExhausted) as exc:
            _pause_tenant(session, tenant, exc)
            raise Ignore() from None

        enqueued = 0
        for order in to_push:
            enqueue_push(session, tenant_id, int(order.id), "poll")
            enqueued += 1
        overlap = timedelta(seconds=get_settings().cursor_overlap_seconds)
        tenant.orders_cursor = started - overlap
    logger.info(
        "tenant=%s order poll since %s enqueued %d pushes",
        tenant_id,
        since.isoformat(),
        enqueued,
    )
    return enqueued


def _wants_push(session: Session, tenant: Tenant, order: Any) -> bool:
    link = session.scalars(
        select(OrderLink)
        .where(OrderLink.tenant_id == tenant.id)
        .where(OrderLink.apex_order_id == int(order.id))
    ).first()
    if orders.is_cancelled(order):
        return link is not None and link.state != orders.CANCELLED
    if not orders.is_final(order, tenant):
        return False

    # The overlap window lists an order again; one pushed after its last
    # change needs nothing.
    updated = _aware(getattr(order, "updated_at", None))
    pushed = _aware(link.pushed_at) if link is not None else None
    return not (
        link is not None
        and link.state == orders.PUSHED
        and pushed is not None
        and updated is not None
        and pushed >= updated
    )


def _pause_tenant(session: Session, tenant: Tenant, error: Exception) -> None:
    rejected = isinstance(error, CredentialsRejected)
    tenant.apex_state = "credentials_rejected" if rejected else "paused"
    tenant.apex_state_reason = str(error)
    logger.error("tenant=%s order poll stopped: %s", tenant.id, error)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- buyers ------------------------------------------------------------------


@app.task(base=OrderTask, bind=True, name="orders.match_buyers")
def match_buyers(self: SyncTask, tenant_id: int, full: bool = False) -> dict[str, int]:
    """Match the tenant's Apex buyers to Flourish destinations; return counts.

    Reads buyers changed since the tenant's buyers cursor (all of them with
    ``full``) and every destination. Destinations belong to the company, so
    the first active facility's Flourish key reads them.
    """
    started = utcnow()
    with session_scope() as session:
        tenant = load_tenant(session, tenant_id)
        facility = _any_active_facility(session, tenant)
        since = EPOCH if full else (_aware(tenant.buyers_cursor) or EPOCH)

        with apex_client_for(tenant) as apex, flourish_client_for(facility) as flourish:
            destinations = flourish.list_destinations()
            counts = apply_matches(
                session, tenant_id, apex.iter_buyers(since), destinations
            )

        overlap = timedelta(seconds=get_settings().cursor_overlap_seconds)
        tenant.buyers_cursor = started - overlap
    return dict(counts)


def _any_active_facility(session: Session, tenant: Tenant) -> Facility:
    facility = session.scalars(
        select(Facility)
        .where(Facility.tenant_id == tenant.id)
        .where(Facility.state == "active")
        .order_by(Facility.id)
    ).first()
    if facility is None:
        raise LookupError(
            f"Tenant {tenant.name!r} has no active facility whose Flourish key can "
            "read destinations. Add or resume a facility first."
        )
    return facility


# --- reconciling -------------------------------------------------------------


def reconcile_pushes(limit: int = 200) -> int:
    """Publish again the pushes that are past their deadline; return how many.

    A push re-published MAX_REENQUEUES times is failed as stuck instead.
    """
    now = utcnow()
    republish: list[OrderPush] = []
    with session_scope() as session:
        stuck = session.scalars(
            select(OrderPush)
            .where(OrderPush.state.in_(ACTIVE_RUN_STATES))
            .where(OrderPush.deadline_at < now)
            .order_by(OrderPush.deadline_at)
            .limit(limit)
        )
        for push in stuck:
            if push.enqueued_count >= MAX_REENQUEUES:
                _finish(
                    push,
                    orders.FAILED,
                    f"stuck: re-enqueued {push.enqueued_count} times",
                )
                continue
            push.enqueued_count += 1
            push.state = "queued"
            push.deadline_at = now + _deadline()
            republish.append(push)

    for push in republish:
        logger.warning("push=%s past its deadline; enqueuing it again", push.id)
        publish_push(push)
    return len(republish)
