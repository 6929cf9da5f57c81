"""Summaries of sync runs for the CLI, the demo and ``--json`` readers."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.models import Facility, PackageOutcome, SyncRun, Tenant
from shared.runs import aware

#: Package tags listed per reason; the count covers the rest.
EXAMPLES_PER_REASON = 5


def run_row(
    run: SyncRun, facility: Facility | None, tenant: Tenant | None
) -> dict[str, Any]:
    """Flatten one run for a table or JSON."""
    started = aware(run.started_at)
    finished = aware(run.finished_at)
    duration = (finished - started).total_seconds() if started and finished else None
    return {
        "id": run.id,
        "tenant": tenant.name if tenant else run.tenant_id,
        "facility": facility.name if facility else run.facility_id,
        "trigger": run.trigger,
        "state": run.state,
        "created_at": _iso(run.created_at),
        "duration_seconds": round(duration, 2) if duration is not None else None,
        "fetched": run.fetched,
        "created": run.created,
        "updated": run.updated,
        "skipped": run.skipped,
        "unmapped": run.unmapped,
        "failed": run.failed,
        "apex_requests": run.apex_requests,
        "flourish_requests": run.flourish_requests,
        "error": run.error,
    }


def _iso(moment: datetime | None) -> str | None:
    value = aware(moment)
    return value.isoformat() if value is not None else None


def list_runs(
    session: Session, facility_id: int | None, limit: int
) -> list[dict[str, Any]]:
    statement = select(SyncRun).order_by(SyncRun.id.desc()).limit(limit)
    if facility_id is not None:
        statement = statement.where(SyncRun.facility_id == facility_id)
    return [
        run_row(
            run,
            session.get(Facility, run.facility_id),
            session.get(Tenant, run.tenant_id),
        )
        for run in session.scalars(statement)
    ]


def run_details(session: Session, run: SyncRun) -> dict[str, Any]:
    """Return the counts, skipped and failed packages by reason, unmapped SKUs."""
    outcomes = list(
        session.scalars(select(PackageOutcome).where(PackageOutcome.run_id == run.id))
    )
    details = run_row(
        run, session.get(Facility, run.facility_id), session.get(Tenant, run.tenant_id)
    )
    details["skipped_by_reason"] = _by_reason(outcomes, ("skipped", "exists"))
    details["failed_by_reason"] = _by_reason(outcomes, ("failed",))
    details["unmapped_skus"] = _unmapped(outcomes)
    return details


def _by_reason(
    outcomes: list[PackageOutcome], kinds: tuple[str, ...]
) -> list[dict[str, Any]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for outcome in outcomes:
        if outcome.outcome in kinds:
            groups[_reason_group(outcome.reason or outcome.outcome)].append(
                outcome.package_tag
            )
    return [
        {
            "reason": reason,
            "count": len(tags),
            "packages": sorted(tags)[:EXAMPLES_PER_REASON],
        }
        for reason, tags in sorted(groups.items(), key=lambda item: -len(item[1]))
    ]


def _reason_group(reason: str) -> str:
    # "already has Apex batch 123" differs per package; group them as one.
    if reason.startswith("already has Apex batch"):
        return "already has an Apex batch"
    if reason.startswith("not in the wholesale room"):
        return reason.split(" (room", 1)[0]
    return reason


def _unmapped(outcomes: list[PackageOutcome]) -> list[dict[str, Any]]:
    counts = Counter(o.sku or "(none)" for o in outcomes if o.outcome == "unmapped")
    return [{"sku": sku, "packages": count} for sku, count in sorted(counts.items())]
