"""Sync runs: creating and claiming them, their pages, outcomes and counts.

A run reads Flourish in pages. ``(phase, next_offset)`` on the run names the
next page still to process. A page's task advances it with a compare-and-set
update, so a task that runs twice (a crash, a redelivery) advances it once.

Phases: "delta" reads packages changed since the facility's cursor. "pending"
reads again the packages earlier runs left over (unmapped SKUs that now have a
product, failed creations). "done" means only the finish is left.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db import is_postgres
from shared.models import (
    ACTIVE_RUN_STATES,
    ApexProduct,
    Facility,
    PackageOutcome,
    PendingPackage,
    SyncRun,
    Tenant,
    utcnow,
)

logger = logging.getLogger(__name__)

#: Flourish allows at most 50 rows a page.
PAGE_SIZE = 50
#: Longest jitter added to a facility's next sync, so syncs spread out
#: instead of all starting on the hour, which Apex requests integrators to avoid.
MAX_JITTER_SECONDS = 300


class SyncAlreadyRunning(Exception):
    """The facility already has a queued or running sync."""

    def __init__(self, facility_id: int, run_id: int | None) -> None:
        super().__init__(
            f"Facility {facility_id} already has sync run {run_id} queued or running. "
            "Wait for it to finish (`apexsync runs show "
            f"{run_id}`)."
        )
        self.facility_id = facility_id
        self.run_id = run_id


@dataclass(frozen=True)
class PageToken:
    phase: str
    offset: int


def aware(moment: datetime | None) -> datetime | None:
    """Mark a naive datetime read from SQLite as the UTC it was stored as."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def active_run_id(session: Session, facility_id: int) -> int | None:
    return session.scalars(
        select(SyncRun.id)
        .where(SyncRun.facility_id == facility_id)
        .where(SyncRun.state.in_(ACTIVE_RUN_STATES))
    ).first()


def create_run(
    session: Session, facility: Facility, trigger: str, deadline: timedelta
) -> SyncRun:
    """Add a queued run for ``facility``; raise SyncAlreadyRunning if one is active.

    A unique partial index allows one queued or running run per facility, so
    the check stays true even when two processes try at once.
    """
    run = SyncRun(
        tenant_id=facility.tenant_id,
        facility_id=facility.id,
        trigger=trigger,
        state="queued",
        deadline_at=utcnow() + deadline,
    )
    try:
        with session.begin_nested():
            session.add(run)
            session.flush()
    except IntegrityError:
        raise SyncAlreadyRunning(
            facility.id, active_run_id(session, facility.id)
        ) from None
    return run


def claim_due_facilities(session: Session, now: datetime, limit: int) -> list[Facility]:
    """Lock the facilities whose next sync is due; skip rows others hold."""
    statement = (
        select(Facility)
        .join(Tenant, Tenant.id == Facility.tenant_id)
        .where(Facility.next_sync_at <= now)
        .where(Facility.state == "active")
        .where(Tenant.apex_state == "active")
        .order_by(Facility.next_sync_at)
        .limit(limit)
    )
    if is_postgres(session):
        statement = statement.with_for_update(of=Facility, skip_locked=True)
    return list(session.scalars(statement))


def dispatch_due(
    session: Session, now: datetime, deadline: timedelta, limit: int = 1000
) -> list[int]:
    """Create runs for due facilities and move their next sync; return run ids.

    The caller commits, then publishes the runs: a task must never see a run
    its transaction has not committed yet.
    """
    facilities = claim_due_facilities(session, now, limit)
    busy = _facilities_with_active_runs(
        session, [facility.id for facility in facilities]
    )
    runs = []
    for facility in facilities:
        facility.next_sync_at = now + timedelta(seconds=_interval_with_jitter(facility))
        if facility.id in busy:
            continue
        runs.append(
            SyncRun(
                tenant_id=facility.tenant_id,
                facility_id=facility.id,
                trigger="schedule",
                state="queued",
                deadline_at=now + deadline,
            )
        )
    session.add_all(runs)
    session.flush()
    return [run.id for run in runs]


def _facilities_with_active_runs(session: Session, facility_ids: list[int]) -> set[int]:
    busy: set[int] = set()
    for start in range(0, len(facility_ids), 1000):
        chunk = facility_ids[start : start + 1000]
        busy.update(
            session.scalars(
                select(SyncRun.facility_id)
                .where(SyncRun.facility_id.in_(chunk))
                .where(SyncRun.state.in_(ACTIVE_RUN_STATES))
            )
        )
    return busy


def _interval_with_jitter(facility: Facility) -> float:
    interval = facility.sync_interval_seconds
    return interval + random.uniform(0, min(MAX_JITTER_SECONDS, interval * 0.05))


def begin_run(
    session: Session, run: SyncRun, facility: Facility, deadline: timedelta
) -> bool:
    """Mark a queued run as running; tell whether there is work to do."""
    if run.state not in ACTIVE_RUN_STATES:
        return False
    now = utcnow()
    if run.state == "queued":
        run.state = "running"
        run.started_at = now
        run.cursor_from = facility.cursor
    run.deadline_at = now + deadline
    return True


def current_token(run: SyncRun) -> PageToken:
    return PageToken(run.phase, run.next_offset)


def advance_run(
    session: Session, run_id: int, token: PageToken, has_next: bool, deadline: timedelta
) -> PageToken | None:
    """Move the run past ``token``; return the next token, or None if another
    task already moved it (this task's copy is a duplicate)."""
    following = next_token(token, has_next)
    result = session.execute(
        update(SyncRun)
        .where(SyncRun.id == run_id)
        .where(SyncRun.phase == token.phase)
        .where(SyncRun.next_offset == token.offset)
        .values(
            phase=following.phase,
            next_offset=following.offset,
            pages=SyncRun.pages + 1,
            deadline_at=utcnow() + deadline,
        )
    )
    return following if getattr(result, "rowcount", 0) == 1 else None


def next_token(token: PageToken, has_next: bool) -> PageToken:
    if token.phase == "delta":
        if has_next:
            return PageToken("delta", token.offset + PAGE_SIZE)
        return PageToken("pending", 0)
    if token.phase == "pending" and has_next:
        return PageToken("pending", token.offset + 1)
    return PageToken("done", 0)


def pending_tags(session: Session, run: SyncRun) -> list[str]:
    """Return the next packages of the pending phase.

    These were left over by earlier runs, their product changed since, and
    this run has not handled them yet.
    """
    handled = exists().where(
        and_(
            PackageOutcome.run_id == run.id,
            PackageOutcome.package_tag == PendingPackage.package_tag,
        )
    )
    # Only a product fetched after the package was last seen can change the
    # outcome, so an unchanged sync does not read the same packages again.
    has_product = exists().where(
        and_(
            ApexProduct.tenant_id == run.tenant_id,
            ApexProduct.sku == PendingPackage.sku,
            ApexProduct.fetched_at > PendingPackage.last_seen_at,
        )
    )
    return list(
        session.scalars(
            select(PendingPackage.package_tag)
            .where(PendingPackage.facility_id == run.facility_id)
            .where(has_product)
            .where(~handled)
            .order_by(PendingPackage.package_tag)
            .limit(PAGE_SIZE)
        )
    )


def record_outcome(
    session: Session,
    run: SyncRun,
    tag: str,
    outcome: str,
    *,
    sku: str | None = None,
    reason: str | None = None,
    apex_batch_id: int | None = None,
) -> None:
    """Write what the run did with one package; a rerun overwrites it."""
    insert = pg_insert if is_postgres(session) else sqlite_insert
    values = {
        "outcome": outcome,
        "sku": sku,
        "reason": reason,
        "apex_batch_id": apex_batch_id,
        "recorded_at": utcnow(),
    }
    statement = insert(PackageOutcome).values(
        run_id=run.id, tenant_id=run.tenant_id, package_tag=tag, **values
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["run_id", "package_tag"], set_=values
        )
    )


def keep_pending(
    session: Session, run: SyncRun, tag: str, sku: str | None, reason: str
) -> None:
    """Remember a package that a later run must read again."""
    row = session.scalars(
        select(PendingPackage)
        .where(PendingPackage.facility_id == run.facility_id)
        .where(PendingPackage.package_tag == tag)
    ).first()
    if row is None:
        session.add(
            PendingPackage(
                tenant_id=run.tenant_id,
                facility_id=run.facility_id,
                package_tag=tag,
                sku=sku,
                reason=reason,
            )
        )
        return
    row.sku = sku
    row.reason = reason
    row.last_seen_at = utcnow()


def drop_pending(session: Session, facility_id: int, tags: list[str]) -> None:
    if not tags:
        return
    for row in session.scalars(
        select(PendingPackage)
        .where(PendingPackage.facility_id == facility_id)
        .where(PendingPackage.package_tag.in_(tags))
    ):
        session.delete(row)


def rewind_pending(session: Session, facility_id: int, tag: str) -> None:
    """Make the next pending phase read ``tag`` again, as if its product changed."""
    session.execute(
        update(PendingPackage)
        .where(PendingPackage.facility_id == facility_id)
        .where(PendingPackage.package_tag == tag)
        .values(last_seen_at=datetime(1970, 1, 1, tzinfo=UTC))
    )


def add_requests(session: Session, run_id: int, counts: dict[str, int]) -> None:
    if not any(counts.values()):
        return
    session.execute(
        update(SyncRun)
        .where(SyncRun.id == run_id)
        .values(
            apex_requests=SyncRun.apex_requests + counts.get("apex", 0),
            flourish_requests=SyncRun.flourish_requests + counts.get("flourish", 0),
        )
    )


OUTCOME_COLUMNS = {
    "created": "created",
    "updated": "updated",
    "exists": "skipped",
    "skipped": "skipped",
    "unmapped": "unmapped",
    "failed": "failed",
}


def complete_run(
    session: Session, run: SyncRun, facility: Facility, overlap: timedelta
) -> None:
    """Count the outcomes, close the run and move the facility's cursor.

    The cursor moves only here, after every page succeeded, to the run's start
    minus an overlap, so rows that changed while the run paged are read again.
    """
    count_outcomes(session, run)
    run.state = "succeeded"
    run.finished_at = utcnow()
    run.phase = "done"
    started = aware(run.started_at) or utcnow()
    facility.cursor = started - overlap
    facility.last_run_id = run.id


def fail_run(session: Session, run: SyncRun, reason: str) -> None:
    """Close the run as failed with ``reason``; the cursor stays where it was."""
    if run.state not in ACTIVE_RUN_STATES:
        return
    count_outcomes(session, run)
    run.state = "failed"
    run.error = reason
    run.finished_at = utcnow()
    facility = session.get(Facility, run.facility_id)
    if facility is not None:
        facility.last_run_id = run.id


def count_outcomes(session: Session, run: SyncRun) -> None:
    totals = dict.fromkeys(set(OUTCOME_COLUMNS.values()), 0)
    rows = session.execute(
        select(PackageOutcome.outcome, func.count())
        .where(PackageOutcome.run_id == run.id)
        .group_by(PackageOutcome.outcome)
    )
    fetched = 0
    for outcome, count in rows:
        fetched += count
        column = OUTCOME_COLUMNS.get(outcome)
        if column:
            totals[column] += count
    run.fetched = fetched
    for column, value in totals.items():
        setattr(run, column, value)
