"""The reconciler: re-enqueues work whose message was lost.

A message can vanish with a Redis restart (this service's Redis may keep
nothing on disk) or sit unacknowledged with a dead worker. Runs and pushes
record a deadline that every step moves forward; past it, the reconciler
publishes the next step again. Steps are idempotent, so a copy that was not
lost after all does no harm.
"""

from __future__ import annotations

import logging
import os
import signal
from datetime import timedelta

from sqlalchemy import select

from shared import runs
from shared.db import session_scope
from shared.errors import PermanentError
from shared.models import ACTIVE_RUN_STATES, SyncRun, utcnow
from shared.settings import get_settings
from tasks.base import SyncTask
from tasks.inventory import publish_page, publish_run
from workers.app import app

logger = logging.getLogger(__name__)

#: Re-enqueues of one run before it is failed as stuck.
MAX_REENQUEUES = 10


@app.task(base=SyncTask, bind=True, name="maintenance.reconcile")
def reconcile(self: SyncTask) -> int:
    """Re-enqueue runs and order pushes that are past their deadline."""
    count = reconcile_runs()
    try:
        from tasks.orders import reconcile_pushes
    except ImportError:  # pragma: no cover - the orders tasks always ship
        return count
    return count + reconcile_pushes()


def reconcile_runs(limit: int = 200) -> int:
    """Re-enqueue the next step of each run past its deadline; return how many.

    A run re-enqueued MAX_REENQUEUES times is failed as stuck instead.
    """
    now = utcnow()
    deadline = timedelta(seconds=get_settings().run_deadline_seconds)
    republish: list[tuple[int, str, runs.PageToken]] = []
    with session_scope() as session:
        stuck = session.scalars(
            select(SyncRun)
            .where(SyncRun.state.in_(ACTIVE_RUN_STATES))
            .where(SyncRun.deadline_at < now)
            .order_by(SyncRun.deadline_at)
            .limit(limit)
        )
        for run in stuck:
            if run.enqueued_count >= MAX_REENQUEUES:
                runs.fail_run(
                    session, run, f"stuck: re-enqueued {run.enqueued_count} times"
                )
                continue
            run.enqueued_count += 1
            run.deadline_at = now + deadline
            republish.append((run.id, run.state, runs.current_token(run)))
    for run_id, state, token in republish:
        logger.warning("run=%s past its deadline; enqueuing %s again", run_id, token)
        if state == "queued":
            publish_run(run_id)
        else:
            publish_page(run_id, token)
    return len(republish)


@app.task(base=SyncTask, bind=True, name="maintenance.crash_worker")
def crash_worker(self: SyncTask) -> None:
    """Kill this task's own worker process, as a message that crashes it would.

    A test hook for poison messages: it runs only when APEXSYNC_ENVIRONMENT
    is "test", and elsewhere it fails into the dead letters instead.
    """
    if get_settings().environment != "test":
        raise PermanentError(
            "maintenance.crash_worker kills its worker process and runs only when "
            "APEXSYNC_ENVIRONMENT is test."
        )
    logger.warning("pid=%s killing this worker process (test hook)", os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)
