"""The base task: retry policy, dead letters, poison messages, upstream clients.

Every task of this project uses ``SyncTask``. It decides in one place whether
a failure is retried or given up:

- retried with exponential backoff and jitter, ``Retry-After`` honoured, at
  most ``task_max_retries`` times per task id: ``RetriableError`` (5xx, timeouts, 429
  with ``Retry-After``), the soft time limit, and a Redis connection error;
- given up at once: anything else (``PermanentError``, bugs), a message
  whose worker died ``max_deliveries`` times, and the hard time limit.

Giving up writes one dead letter per task id and calls the task's
``give_up`` hook so the run or push it belongs to ends visibly instead of
hanging. The hard time limit kills the pool process, so the worker's main
process does that part (``SyncRequest``) and then releases the locks the
killed process held.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from billiard.exceptions import WorkerLostError
from celery import Task
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded
from celery.signals import worker_process_init
from celery.worker.request import Request
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.orm import Session

from shared.apex.client import ApexClient
from shared.db import get_engine, session_scope
from shared.deadletters import record_dead_letter, resolve_replayed
from shared.errors import RetriableError, SyncError
from shared.flourish.client import FlourishClient
from shared.locks import release_locks_of
from shared.logging import register_secret
from shared.models import Facility, Tenant
from shared.ratelimit import RedisTokenBucket
from shared.redis_client import get_redis
from shared.secrets import Vault
from shared.settings import get_settings

logger = logging.getLogger(__name__)

#: Seconds of the first retry; each later one doubles, up to the maximum.
BASE_RETRY_SECONDS = 2.0
DELIVERY_KEY_TTL = 24 * 60 * 60
REPLAY_KEY_PREFIX = "apexsync:replay:"
FAILURE_KEY_PREFIX = "apexsync:failures:"
#: Seconds the worker's main process waits for a pool process it killed at
#: the hard time limit to exit before releasing that process's locks.
CHILD_EXIT_WAIT_SECONDS = 30.0

#: Share of Apex's per-token limit the token bucket grants. The bucket spaces
#: its grants, but requests reach Apex with varying delays, so grants exactly
#: 1/15 s apart can arrive as 16 within one second. The sandbox counted 16 in
#: a one-second window from two workers sharing one token at the full rate
#: (tests/tasks/test_faults_upstream.py on a 2-CPU machine). At 90 %, 16
#: requests crowd into one second only if the first is 111 ms later than the
#: last.
APEX_RATE_HEADROOM = 0.9

#: Failures that may pass: a slow or failing upstream, a task that ran out of
#: its soft time limit (its finished work is committed, so a retry goes on
#: from there), Redis or the broker unreachable for a moment.
RETRIABLE_ERRORS: tuple[type[BaseException], ...] = (
    RetriableError,
    SoftTimeLimitExceeded,
    RedisConnectionError,
    RedisTimeoutError,
    OperationalError,
)


def retry_countdown(retries: int, retry_after: float | None, maximum: float) -> float:
    """Return seconds to the next attempt: ``Retry-After`` if given, else backoff.

    The backoff ceiling doubles from BASE_RETRY_SECONDS with each retry, and
    the countdown is drawn at random from the upper half of that ceiling, so
    workers that failed together do not retry together. The result never
    exceeds ``maximum``.
    """
    if retry_after is not None:
        return min(maximum, retry_after + random.uniform(0, 1))
    ceiling = min(maximum, BASE_RETRY_SECONDS * 2**retries)
    return random.uniform(ceiling / 2, ceiling)


class PoisonMessage(SyncError):
    """A message whose task killed its worker process on every delivery."""


class HardTimeLimitExceeded(SyncError):
    """A task ran past its hard time limit and its worker process was killed."""


class SyncRequest(Request):
    """The worker's request for a SyncTask: it cleans up after a lost pool process.

    It runs in the worker's main process. The pool process running the task
    may die, killed by a signal or at the hard time limit. The locks it held
    are then released once it has exited, so the redelivered task or the next
    run need not wait for them to expire.
    """

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if not soft:
            _after_hard_timeout(self, timeout)
        super().on_timeout(soft, timeout)

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        pid = self.worker_pid
        super().on_failure(
            exc_info, send_failed_event=send_failed_event, return_ok=return_ok
        )
        # Celery may wrap the exception to carry its traceback.
        error = getattr(exc_info.exception, "exc", exc_info.exception)
        if isinstance(error, WorkerLostError) and pid:
            _release_locks_when_exited(pid)


class SyncTask(Task):
    """Base class of every task; see the module docstring."""

    abstract = True
    typing = True
    Request = SyncRequest
    #: No cap from Celery: ``_retry_or_give_up`` bounds retries after errors
    #: with its own count, and a wait for a lock ends when the lock is
    #: released or expires.
    max_retries = None

    def apply_async(
        self,
        args: Any = None,
        kwargs: Any = None,
        *arguments: Any,
        **options: Any,
    ) -> Any:
        """Publish with a summary of ids as the arguments Flower shows.

        The ``task-sent`` event is built before ``before_task_publish`` runs,
        so the summary must travel in the options to reach that event too.
        """
        from workers.signals import summary_options

        for key, value in summary_options(args or (), kwargs or {}).items():
            options.setdefault(key, value)
        return super().apply_async(args, kwargs, *arguments, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._delivered_too_often():
            self._give_up_poison(args, kwargs)
            raise Ignore()
        try:
            result = self.run(*args, **kwargs)
        except (Retry, Ignore, Reject):
            raise
        except RETRIABLE_ERRORS as exc:
            self._retry_or_give_up(exc, args, kwargs)
        except Exception as exc:
            self._give_up(exc, args, kwargs, tb=traceback.format_exc())
            raise
        self._after_success()
        return result

    def give_up(self, error: BaseException, kwargs: dict[str, Any]) -> None:
        """Hook for subclasses: end the run or push this task belonged to."""

    def _retry_or_give_up(
        self, error: BaseException, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> NoReturn:
        settings = get_settings()
        self._forget_delivery()
        failures = self._count_failure()
        if failures > settings.task_max_retries:
            self._give_up(error, args, kwargs, traceback.format_exc(), failures)
            raise error
        retry_after = getattr(error, "retry_after", None)
        countdown = retry_countdown(
            failures - 1, retry_after, settings.max_retry_countdown
        )
        logger.warning(
            "task=%s id=%s retry=%d in %.1fs: %s",
            self.name,
            self.request.id,
            failures,
            countdown,
            error or type(error).__name__,
        )
        raise self.retry(exc=error, countdown=countdown)

    def _count_failure(self) -> int:
        """Count a failed attempt of this task id; return the failures so far.

        Celery's retry count also grows while a task waits for a lock, and
        such waits must not use up the retries after errors, so failures are
        counted apart. Without Redis, Celery's retry count stands in.
        """
        fallback = self.request.retries + 1
        if self.request.is_eager or not self.request.id:
            return fallback
        key = FAILURE_KEY_PREFIX + self.request.id
        try:
            client = get_redis()
            count = int(client.incr(key))
            client.expire(key, DELIVERY_KEY_TTL)
        except RedisError as exc:
            logger.warning(
                "task=%s id=%s failure not counted: %s", self.name, self.request.id, exc
            )
            return fallback
        return count

    def _forget_failures(self) -> None:
        if self.request.is_eager or not self.request.id:
            return
        try:
            get_redis().delete(FAILURE_KEY_PREFIX + self.request.id)
        except RedisError as exc:
            logger.warning(
                "task=%s id=%s failure count kept: %s", self.name, self.request.id, exc
            )

    def _give_up(
        self,
        error: BaseException,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        tb: str | None,
        attempts: int | None = None,
    ) -> None:
        self._forget_failures()
        record_give_up(
            self,
            task_id=self.request.id,
            args=args,
            kwargs=kwargs,
            chain=self.request.chain,
            error=error,
            tb=tb,
            attempts=attempts if attempts is not None else self.request.retries + 1,
        )

    def _give_up_poison(self, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        crashed = self._deliveries() - 1
        error = PoisonMessage(
            f"Task {self.name} was not run again: its worker process died in each "
            f"of its last {crashed} deliveries.",
            **_ids(kwargs),
        )
        self._give_up(error, args, kwargs, tb=None, attempts=crashed)

    def _deliveries(self) -> int:
        value = get_redis().get(_delivery_key(self.request.id, self.request.retries))
        return int(value or 0)

    def _delivered_too_often(self) -> bool:
        """Count this delivery; return whether the message already killed workers.

        A retry is a new message and starts again at one: only redeliveries
        of the same message after a lost worker add up here. Without Redis
        the count is skipped and the task runs.
        """
        if self.request.is_eager or not self.request.id:
            return False
        key = _delivery_key(self.request.id, self.request.retries)
        try:
            client = get_redis()
            count = int(client.incr(key))
            client.expire(key, DELIVERY_KEY_TTL)
        except RedisError as exc:
            logger.warning(
                "task=%s id=%s delivery not counted: %s",
                self.name,
                self.request.id,
                exc,
            )
            return False
        return count > get_settings().max_deliveries

    def _forget_delivery(self) -> None:
        if self.request.is_eager or not self.request.id:
            return
        try:
            get_redis().delete(_delivery_key(self.request.id, self.request.retries))
        except RedisError as exc:
            logger.warning(
                "task=%s id=%s delivery count kept: %s", self.name, self.request.id, exc
            )

    def _after_success(self) -> None:
        """Forget the delivery count; close the dead letter this task replayed."""
        if self.request.is_eager or not self.request.id:
            return
        self._forget_delivery()
        self._forget_failures()
        try:
            replayed = get_redis().delete(REPLAY_KEY_PREFIX + self.request.id)
        except RedisError as exc:
            logger.warning(
                "task=%s id=%s replay flag unread: %s", self.name, self.request.id, exc
            )
            return
        if replayed:
            with session_scope() as session:
                resolve_replayed(session, self.request.id)
            logger.info(
                "task=%s id=%s replay succeeded; dead letter resolved",
                self.name,
                self.request.id,
            )


def record_give_up(
    task: SyncTask,
    *,
    task_id: str | None,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    chain: Sequence[Any] | None,
    error: BaseException,
    tb: str | None,
    attempts: int,
) -> None:
    """Write the dead letter of a task that gave up, then call its ``give_up`` hook.

    Neither step may hide the original error, so their own failures are
    logged instead of raised.
    """
    logger.error(
        "task=%s id=%s gave up after %d attempts: %s",
        task.name,
        task_id,
        attempts,
        error,
    )
    try:
        with session_scope() as session:
            record_dead_letter(
                session,
                task_name=task.name,
                task_id=task_id,
                arguments=kwargs,
                args=args,
                chain=chain,
                error=error,
                traceback_text=tb,
                attempts=attempts,
            )
    except Exception:
        logger.exception("task=%s id=%s dead letter not written", task.name, task_id)
    try:
        task.give_up(error, kwargs)
    except Exception:
        logger.exception("task=%s id=%s give_up hook failed", task.name, task_id)


def _after_hard_timeout(request: Request, timeout: float) -> None:
    """Give up a task whose pool process is being killed, then free its locks."""
    task = request.task
    pid = request.worker_pid
    if isinstance(task, SyncTask):
        error = HardTimeLimitExceeded(
            f"Task {task.name} ran past its hard time limit of {timeout:g} s, so "
            f"its worker process {pid} was killed.",
            **_ids(request.kwargs),
        )
        _, _, embed = request._payload
        record_give_up(
            task,
            task_id=request.id,
            args=request.args,
            kwargs=request.kwargs,
            chain=(embed or {}).get("chain"),
            error=error,
            tb=None,
            attempts=int(request.request_dict.get("retries") or 0) + 1,
        )
    if pid:
        _release_locks_when_exited(pid)


def _release_locks_when_exited(pid: int) -> None:
    """Release the locks of pool process ``pid`` once it has exited, in a thread."""
    threading.Thread(
        target=_release_locks_after_exit,
        args=(pid,),
        name=f"release-locks-{pid}",
        daemon=True,
    ).start()


def _release_locks_after_exit(pid: int) -> None:
    deadline = time.monotonic() + CHILD_EXIT_WAIT_SECONDS
    while _process_alive(pid):
        if time.monotonic() > deadline:
            logger.warning("pid=%s still alive; its locks expire instead", pid)
            return
        time.sleep(0.1)
    try:
        released = release_locks_of(get_redis(), socket.gethostname(), pid)
    except RedisError as exc:
        logger.warning("pid=%s locks not released, they expire instead: %s", pid, exc)
        return
    if released:
        logger.warning("pid=%s exited while holding locks; released %s", pid, released)


def _process_alive(pid: int) -> bool:
    """Return whether ``pid`` runs; a zombie (exited, not yet reaped) does not."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    except OSError:
        return _signalable(pid)
    return fields[0] not in ("Z", "X")


def _signalable(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@worker_process_init.connect
def _reset_connections_after_fork(**_: Any) -> None:
    """Give each pool process its own database connections.

    A pool process forked after the main process used the database would
    share its sockets (SQLAlchemy's rule for ``fork``: dispose in the child
    without closing the parent's connections).
    """
    get_engine().dispose(close=False)


def _delivery_key(task_id: str | None, retries: int) -> str:
    # Retries keep the task id, so the retry count is part of the key.
    return f"apexsync:deliveries:{task_id}:{retries}"


def _ids(kwargs: dict[str, Any]) -> dict[str, Any]:
    keys = ("tenant_id", "facility_id", "run_id", "push_id", "apex_order_id")
    return {key: kwargs[key] for key in keys if key in kwargs}


def apex_client_for(
    tenant: Tenant, on_request: Callable[[str], None] | None = None
) -> ApexClient:
    """Build the Apex client of ``tenant`` with the shared rate limit."""
    settings = get_settings()
    token = Vault.from_settings(settings).decrypt(tenant.apex_token_encrypted)
    register_secret(token)
    # Capacity 1 spaces requests evenly: a full bucket would allow a burst on
    # top of the rate, and Apex counts 15 per second per token.
    limiter = RedisTokenBucket.for_credential(
        get_redis(),
        "apex",
        token,
        settings.apex_requests_per_second * APEX_RATE_HEADROOM,
        capacity=1,
    )
    return ApexClient(
        settings.apex_base_url,
        token,
        timeout=settings.http_timeout,
        limiter=limiter,
        on_request=on_request,
    )


def flourish_client_for(
    facility: Facility, on_request: Callable[[str], None] | None = None
) -> FlourishClient:
    """Build the Flourish client of ``facility`` with the shared rate limit."""
    settings = get_settings()
    key = Vault.from_settings(settings).decrypt(facility.flourish_api_key_encrypted)
    register_secret(key)
    limiter = RedisTokenBucket.for_credential(
        get_redis(), "flourish", key, settings.flourish_requests_per_second, capacity=1
    )
    return FlourishClient(
        settings.flourish_base_url,
        key,
        facility.flourish_facility_id,
        timeout=settings.http_timeout,
        limiter=limiter,
        on_request=on_request,
    )


class RequestCounter:
    """Counts upstream requests by API, for the run's statistics."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {"apex": 0, "flourish": 0}

    def __call__(self, api: str) -> None:
        self.counts[api] = self.counts.get(api, 0) + 1


def load_tenant(session: Session, tenant_id: int) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise LookupError(f"Tenant {tenant_id} not found.")
    return tenant
