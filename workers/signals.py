"""Task summaries for Flower and task events: ids only, never payloads.

Task events, Flower and ``celery inspect`` show a task's arguments through
the ``argsrepr`` and ``kwargsrepr`` message headers, which Celery fills with
a repr of the real arguments. The inventory chain passes whole pages of
package data between tasks, and an id alone does not say whose work a task
is. The ``before_task_publish`` handler here replaces both headers with a
summary such as ``tenant=1 facility=2 run=3 page=delta/50`` and the scalar
keyword arguments, masked with ``shared.logging.redact``.

Importing this module connects the handler in the importing process, so
every process that publishes tasks (CLI, beat, workers) must import it.

NOTE: Celery builds the ``task-sent`` event before this signal runs, so that
event keeps Celery's own repr unless the publisher passes
``summary_options()`` to ``apply_async``. Flower shows the arguments of the
event it processed last, and a ``task-sent`` event can arrive after the
worker's ``task-received`` event.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from celery.signals import before_task_publish
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from shared.db import session_scope
from shared.logging import redact
from shared.models import SyncRun

logger = logging.getLogger(__name__)

#: Keyword arguments shown in the summary, in this order, with their labels.
SUMMARY_IDS = (
    ("tenant_id", "tenant"),
    ("facility_id", "facility"),
    ("run_id", "run"),
    ("push_id", "push"),
    ("apex_order_id", "order"),
    ("package_tag", "package"),
)

#: Maximum characters of a string value in ``kwargsrepr``. Longer ones are cut.
MAX_TEXT_CHARS = 100


def run_owner(run_id: int) -> tuple[int, int] | None:
    """Return the tenant and facility ids of sync run ``run_id``, or None."""
    try:
        with session_scope() as session:
            row = session.execute(
                select(SyncRun.tenant_id, SyncRun.facility_id).where(
                    SyncRun.id == run_id
                )
            ).first()
    except SQLAlchemyError as exc:
        logger.warning(
            "run=%s tenant lookup for the task summary failed: %s", run_id, exc
        )
        return None
    return (int(row[0]), int(row[1])) if row is not None else None


def describe_task(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """Summarise a task's ids as ``tenant=1 facility=2 run=3 page=delta/50``.

    A task that names only its run gets the run's tenant and facility from
    the database. Page data in a positional argument adds its page.
    """
    ids = {key: kwargs[key] for key, _ in SUMMARY_IDS if kwargs.get(key) is not None}
    run_id = ids.get("run_id")
    if run_id is not None and not {"tenant_id", "facility_id"} <= ids.keys():
        owner = run_owner(int(run_id))
        if owner is not None:
            ids.setdefault("tenant_id", owner[0])
            ids.setdefault("facility_id", owner[1])

    parts = [f"{label}={ids[key]}" for key, label in SUMMARY_IDS if key in ids]
    page = _page_of(args, kwargs)
    if page:
        parts.append(page)
    return redact(" ".join(parts))


def _page_of(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    sources = [kwargs, *(arg for arg in args if isinstance(arg, Mapping))]
    for source in sources:
        if "phase" in source and "offset" in source:
            return f"page={source['phase']}/{source['offset']}"
    return None


def kwargs_summary(kwargs: Mapping[str, Any]) -> str:
    """Render the scalar keyword arguments, and only the type of other values."""
    items = []
    for key, value in kwargs.items():
        items.append(f"{key!r}: {_value_text(value)}")
    return redact("{" + ", ".join(items) + "}")


def _value_text(value: Any) -> str:
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value[:MAX_TEXT_CHARS])
    return f"<{type(value).__name__}>"


def args_summary(args: Sequence[Any], summary: str) -> str:
    """Return the summary, or a count of the positional values when it is empty."""
    if summary:
        return summary
    return "()" if not args else f"({len(args)} values not shown)"


def summary_options(args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, str]:
    """Return ``argsrepr`` and ``kwargsrepr`` options for ``apply_async``.

    Passed to ``apply_async``, they reach the ``task-sent`` event as well as
    the message headers.
    """
    return {
        "argsrepr": args_summary(args, describe_task(args, kwargs)),
        "kwargsrepr": kwargs_summary(kwargs),
    }


@before_task_publish.connect(dispatch_uid="apexsync.task_summary", weak=False)
def set_task_summary(
    sender: str | None = None,
    headers: dict[str, Any] | None = None,
    body: Any = None,
    **_: Any,
) -> None:
    """Replace ``argsrepr`` and ``kwargsrepr`` of an outgoing task message."""
    if headers is None or not isinstance(body, tuple | list) or len(body) < 2:
        return
    headers.update(summary_options(body[0] or (), body[1] or {}))
