"""The base task: retry policy, dead letters, poison messages, upstream clients.

Every task of this project uses ``SyncTask``. It decides in one place whether
a failure is retried (``RetriableError``: exponential backoff with jitter,
``Retry-After`` honoured, bounded attempts) or given up (anything else, or
retries exhausted). Giving up writes exactly one dead letter per task id and
calls the task's ``give_up`` hook so the run or push it belongs to ends
visibly instead of hanging.
"""

from __future__ import annotations

import logging
import random
import traceback
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Retry
from sqlalchemy.orm import Session

from shared.apex.client import ApexClient
from shared.db import session_scope
from shared.deadletters import record_dead_letter, resolve_replayed
from shared.errors import RetriableError, SyncError
from shared.flourish.client import FlourishClient
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


def retry_countdown(retries: int, retry_after: float | None, maximum: float) -> float:
    """Seconds before the next attempt: ``Retry-After`` if given, else backoff.

    Backoff doubles from BASE_RETRY_SECONDS and takes full jitter in its upper
    half, so workers that failed together do not retry together.
    """
    if retry_after is not None:
        return min(maximum, retry_after + random.uniform(0, 1))
    ceiling = min(maximum, BASE_RETRY_SECONDS * 2**retries)
    return random.uniform(ceiling / 2, ceiling)


class PoisonMessage(SyncError):
    """A message whose task killed its worker process on every delivery."""


class SyncTask(Task):
    """Base class of every task; see the module docstring."""

    abstract = True
    typing = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._delivered_too_often():
            error = PoisonMessage(
                f"Task {self.name} was delivered {self._deliveries()} times and its "
                "worker died each time. It was not run again.",
                **_ids(kwargs),
            )
            self._give_up(error, kwargs, tb=None)
            raise Ignore()
        try:
            result = self.run(*args, **kwargs)
        except (Retry, Ignore):
            raise
        except RetriableError as exc:
            self._retry_or_give_up(exc, kwargs)
        except Exception as exc:
            self._give_up(exc, kwargs, tb=traceback.format_exc())
            raise
        self._after_success()
        return result

    def give_up(self, error: BaseException, kwargs: dict[str, Any]) -> None:
        """Hook for subclasses: end the run or push this task belonged to."""

    def _retry_or_give_up(self, error: RetriableError, kwargs: dict[str, Any]) -> None:
        settings = get_settings()
        if self.request.retries >= settings.task_max_retries:
            self._give_up(error, kwargs, tb=traceback.format_exc())
            raise error
        countdown = retry_countdown(
            self.request.retries, error.retry_after, settings.max_retry_countdown
        )
        logger.warning(
            "task=%s id=%s retry=%d in %.1fs: %s",
            self.name,
            self.request.id,
            self.request.retries + 1,
            countdown,
            error,
        )
        raise self.retry(
            exc=error, countdown=countdown, max_retries=settings.task_max_retries
        )

    def _give_up(
        self, error: BaseException, kwargs: dict[str, Any], tb: str | None
    ) -> None:
        logger.error("task=%s id=%s gave up: %s", self.name, self.request.id, error)
        with session_scope() as session:
            record_dead_letter(
                session,
                task_name=self.name,
                task_id=self.request.id,
                arguments=kwargs,
                error=error,
                traceback_text=tb,
                attempts=self.request.retries + 1,
            )
        try:
            self.give_up(error, kwargs)
        except Exception:
            logger.exception(
                "task=%s id=%s give_up hook failed", self.name, self.request.id
            )

    def _deliveries(self) -> int:
        value = get_redis().get(_delivery_key(self.request.id))
        return int(value or 0)

    def _delivered_too_often(self) -> bool:
        """Count this delivery; tell whether the message already killed workers.

        Retries are new messages and start again at one: only redeliveries of
        the same message after a lost worker add up here.
        """
        if self.request.is_eager or not self.request.id:
            return False
        key = _delivery_key(self.request.id)
        client = get_redis()
        count = int(client.incr(key))
        client.expire(key, DELIVERY_KEY_TTL)
        return count > get_settings().max_deliveries

    def _after_success(self) -> None:
        if self.request.is_eager or not self.request.id:
            return
        client = get_redis()
        client.delete(_delivery_key(self.request.id))
        if client.delete(REPLAY_KEY_PREFIX + self.request.id):
            with session_scope() as session:
                resolve_replayed(session, self.request.id)


def _delivery_key(task_id: str | None) -> str:
    # Retries keep the task id, so the retry count is part of the key.
    return f"apexsync:deliveries:{task_id}"


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
        get_redis(), "apex", token, settings.apex_requests_per_second, capacity=1
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
