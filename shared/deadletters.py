"""Dead letters: tasks that gave up, kept as rows an operator can replay."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.errors import SyncError
from shared.logging import redact
from shared.models import DeadLetter, utcnow

EXCERPT_CHARS = 2000


def record_dead_letter(
    session: Session,
    *,
    task_name: str,
    task_id: str | None,
    arguments: dict[str, Any],
    error: BaseException,
    traceback_text: str | None,
    attempts: int,
) -> DeadLetter:
    """Write or refresh the dead letter of ``task_id``; one row per task id.

    Text that came from outside (messages, tracebacks, HTTP excerpts) passes
    through ``redact`` so no credential reaches the table.
    """
    letter = _find(session, task_id) if task_id else None
    now = utcnow()
    if letter is None:
        letter = DeadLetter(task_name=task_name, task_id=task_id, first_failed_at=now)
        session.add(letter)
    context = error.context if isinstance(error, SyncError) else {}
    letter.arguments = _json_safe(arguments)
    letter.tenant_id = arguments.get("tenant_id") or context.get("tenant_id")
    letter.facility_id = arguments.get("facility_id") or context.get("facility_id")
    letter.exception_type = type(error).__name__
    letter.message = redact(str(error))[:EXCERPT_CHARS]
    letter.traceback = redact(traceback_text or "")[-EXCERPT_CHARS * 4 :] or None
    letter.upstream_status = context.get("status")
    letter.request_excerpt = _excerpt(context.get("request_excerpt"))
    letter.response_excerpt = _excerpt(context.get("response_excerpt"))
    letter.attempts = max(attempts, letter.attempts or 0)
    letter.last_failed_at = now
    letter.state = "open"
    session.flush()
    return letter


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


def _find(session: Session, task_id: str) -> DeadLetter | None:
    return session.scalars(
        select(DeadLetter).where(DeadLetter.task_id == task_id)
    ).first()


def _excerpt(text: Any) -> str | None:
    if not text:
        return None
    return redact(str(text))[:EXCERPT_CHARS]


def _json_safe(value: dict[str, Any]) -> dict[str, Any]:
    def default(item: Any) -> str:
        return item.isoformat() if isinstance(item, datetime) else str(item)

    return dict(json.loads(json.dumps(value, default=default)))
