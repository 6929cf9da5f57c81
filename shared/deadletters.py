"""Dead letters: tasks that gave up, kept as rows an operator can replay.

There is one row per piece of work. Redeliveries of a task id update that
id's row, and a replay that fails again reopens the row it was sent for
instead of adding another. A replay sends the same task with the same
arguments. Giving up had failed the task's sync run or order push, so
``reopen_for_replay`` reopens it first and the replayed task finds it active.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.errors import SyncError
from shared.logging import redact
from shared.models import (
    ACTIVE_RUN_STATES,
    DeadLetter,
    OrderLink,
    OrderPush,
    SyncRun,
    Tenant,
    utcnow,
)
from shared.runs import active_run_id

EXCERPT_CHARS = 2000

#: Keys of ``DeadLetter.arguments`` that are not keyword arguments of the task:
#: its positional arguments and the chain links still to run after it.
ARGS_KEY = "args"
CHAIN_KEY = "chain"


class ReplayRejected(Exception):
    """The dead letter's work cannot be replayed now; the message explains why."""


def record_dead_letter(
    session: Session,
    *,
    task_name: str,
    task_id: str | None,
    arguments: dict[str, Any],
    error: BaseException,
    traceback_text: str | None,
    attempts: int,
    args: Sequence[Any] = (),
    chain: Sequence[Any] | None = None,
) -> DeadLetter:
    """Write or refresh the dead letter of ``task_id``; one row per piece of work.

    Text that came from outside (messages, tracebacks, HTTP excerpts) passes
    through ``redact`` so no credential reaches the table.
    """
    letter = _find(session, task_id) if task_id else None
    now = utcnow()
    if letter is None:
        letter = DeadLetter(
            task_name=task_name, task_id=task_id, first_failed_at=now, attempts=0
        )
        session.add(letter)

    stored = dict(arguments)
    if args:
        stored[ARGS_KEY] = list(args)
    if chain:
        stored[CHAIN_KEY] = list(chain)
    letter.arguments = _json_safe(stored)
    _describe_error(letter, error, traceback_text)
    _set_owner_ids(session, letter, arguments, error)

    # A failed replay adds its attempts to the ones that came before it.
    previous = letter.attempts or 0
    letter.attempts = (
        previous + attempts if letter.state == "replayed" else max(attempts, previous)
    )
    letter.last_failed_at = now
    letter.state = "open"
    session.flush()
    return letter


def _describe_error(
    letter: DeadLetter, error: BaseException, traceback_text: str | None
) -> None:
    context = error.context if isinstance(error, SyncError) else {}
    letter.exception_type = type(error).__name__
    letter.message = redact(str(error) or type(error).__name__)[:EXCERPT_CHARS]
    letter.traceback = redact(traceback_text or "")[-EXCERPT_CHARS * 4 :] or None
    letter.upstream_status = context.get("status")
    letter.request_excerpt = _excerpt(context.get("request_excerpt"))
    letter.response_excerpt = _excerpt(context.get("response_excerpt"))


def _set_owner_ids(
    session: Session,
    letter: DeadLetter,
    arguments: dict[str, Any],
    error: BaseException,
) -> None:
    """Fill tenant and facility from the arguments, the error, or the run or push."""
    context = error.context if isinstance(error, SyncError) else {}
    tenant_id = arguments.get("tenant_id") or context.get("tenant_id")
    facility_id = arguments.get("facility_id") or context.get("facility_id")

    run = session.get(SyncRun, arguments["run_id"]) if "run_id" in arguments else None
    if run is not None:
        tenant_id = tenant_id or run.tenant_id
        facility_id = facility_id or run.facility_id
    push = (
        session.get(OrderPush, arguments["push_id"]) if "push_id" in arguments else None
    )
    if push is not None:
        tenant_id = tenant_id or push.tenant_id
        facility_id = facility_id or _push_facility(session, push)

    # The column is a foreign key, and a task may name a tenant that is gone.
    letter.tenant_id = (
        tenant_id if tenant_id and session.get(Tenant, tenant_id) else None
    )
    letter.facility_id = facility_id


def _push_facility(session: Session, push: OrderPush) -> int | None:
    return session.scalars(
        select(OrderLink.facility_id)
        .where(OrderLink.tenant_id == push.tenant_id)
        .where(OrderLink.apex_order_id == push.apex_order_id)
    ).first()


def _find(session: Session, task_id: str) -> DeadLetter | None:
    """Find the row of ``task_id``, or the row whose replay ran as ``task_id``."""
    letter = session.scalars(
        select(DeadLetter).where(DeadLetter.task_id == task_id)
    ).first()
    if letter is not None:
        return letter
    return session.scalars(
        select(DeadLetter).where(DeadLetter.replay_task_id == task_id)
    ).first()


def resolve_replayed(session: Session, replay_task_id: str) -> int:
    """Close the dead letter whose replay ran as ``replay_task_id``."""
    result = session.execute(
        update(DeadLetter)
        .where(DeadLetter.replay_task_id == replay_task_id)
        .where(DeadLetter.state == "replayed")
        .values(state="resolved")
    )
    return int(getattr(result, "rowcount", 0) or 0)


def mark_replayed(session: Session, letter: DeadLetter, task_id: str) -> None:
    letter.state = "replayed"
    letter.replay_task_id = task_id
    letter.replayed_at = utcnow()


def reopen_for_replay(
    session: Session, letter: DeadLetter, deadline: timedelta
) -> str | None:
    """Reopen the failed run or push of ``letter``; return what was reopened.

    Giving up fails the run or push a task belongs to, and a task that finds
    its run or push ended does nothing. Raises ReplayRejected when another
    run of the facility or push of the order is active, because reopening
    would make two of them.
    """
    arguments = letter.arguments or {}
    if "run_id" in arguments:
        run = session.get(SyncRun, arguments["run_id"])
        return _reopen_run(session, run, deadline) if run is not None else None
    if "push_id" in arguments:
        push = session.get(OrderPush, arguments["push_id"])
        return _reopen_push(session, push, deadline) if push is not None else None
    return None


def _reopen_run(session: Session, run: SyncRun, deadline: timedelta) -> str | None:
    if run.state != "failed":
        return None
    other = active_run_id(session, run.facility_id)
    if other is not None:
        raise ReplayRejected(
            f"Sync run {run.id} cannot be reopened: facility {run.facility_id} has "
            f"active run {other}, which reads the same packages. Discard this dead "
            "letter, or replay it after that run ends."
        )
    run.state = "running" if run.started_at is not None else "queued"
    run.error = None
    run.finished_at = None
    run.deadline_at = utcnow() + deadline
    session.flush()
    return f"sync run {run.id} ({run.state})"


def _reopen_push(session: Session, push: OrderPush, deadline: timedelta) -> str | None:
    if push.state != "failed":
        return None
    other = session.scalars(
        select(OrderPush.id)
        .where(OrderPush.tenant_id == push.tenant_id)
        .where(OrderPush.apex_order_id == push.apex_order_id)
        .where(OrderPush.state.in_(ACTIVE_RUN_STATES))
    ).first()
    if other is not None:
        raise ReplayRejected(
            f"Order push {push.id} cannot be reopened: push {other} of Apex order "
            f"{push.apex_order_id} is active. Discard this dead letter, or replay "
            "it after that push ends."
        )
    push.state = "queued"
    push.reason = None
    push.finished_at = None
    push.deadline_at = utcnow() + deadline
    session.flush()
    return f"order push {push.id}"


def _excerpt(text: Any) -> str | None:
    if not text:
        return None
    return redact(str(text))[:EXCERPT_CHARS]


def _json_safe(value: dict[str, Any]) -> dict[str, Any]:
    def default(item: Any) -> str:
        return item.isoformat() if isinstance(item, datetime) else str(item)

    return dict(json.loads(json.dumps(value, default=default)))
