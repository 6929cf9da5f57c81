"""The project's exceptions, grouped by what the caller must do.

::

    SyncError
    ├── RetriableError            wait and try again (backoff, Retry-After)
    │   ├── UpstreamUnavailable   5xx, timeout, connection error
    │   └── RateLimited           429 with Retry-After
    ├── PermanentError            retrying cannot help; dead-letter it
    │   ├── UpstreamRejected      4xx validation or conflict from an API
    │   └── InvalidPayload        an upstream body that fails its schema
    ├── NeedsAttention            an operator must fix data; record, don't retry
    │   ├── UnmappedSku
    │   ├── UnlinkedBuyer
    │   ├── UnitMismatch
    │   ├── OrderNotFinal
    │   ├── OrderLocked           Flourish order allocated, change can't apply
    │   └── InvalidRecord         one bad package or order line
    ├── CredentialsRejected       401/403: stop the facility or tenant
    └── CreditsExhausted          Apex 429 without Retry-After: pause the tenant

Exceptions carry ids and the upstream status, never a secret, and survive
pickling so Celery can ship them between processes.
"""

from __future__ import annotations

from typing import Any


class SyncError(Exception):
    """Base of every error this project raises on purpose.

    ``context`` contains ids (tenant, facility, run, package tag, order) and, for
    upstream errors, ``status`` and ``path``. Values must never be secrets.
    """

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.context))

    def __str__(self) -> str:
        return self.message

    @property
    def status(self) -> int | None:
        """HTTP status of the upstream response, when there was one."""
        return self.context.get("status")


def _rebuild(cls: type[SyncError], message: str, context: dict[str, Any]) -> SyncError:
    error = cls.__new__(cls)
    SyncError.__init__(error, message, **context)
    return error


class RetriableError(SyncError):
    """A failure that may pass: retry with backoff."""

    @property
    def retry_after(self) -> float | None:
        """Seconds to wait that the upstream sent in ``Retry-After``, if any."""
        return self.context.get("retry_after")


class UpstreamUnavailable(RetriableError):
    """A 5xx response, a timeout or a connection error."""


class RateLimited(RetriableError):
    """A 429 response that carried ``Retry-After``."""


class PermanentError(SyncError):
    """A failure that retrying cannot fix."""


class UpstreamRejected(PermanentError):
    """A 4xx response other than 401, 403 and 429."""


class InvalidPayload(PermanentError):
    """An upstream response body that does not match its schema."""


class NeedsAttention(SyncError):
    """Data an operator must fix. Recorded on the run or order, not retried."""


class UnmappedSku(NeedsAttention):
    """A Flourish SKU with no Apex product of the same ``product_sku``."""


class UnlinkedBuyer(NeedsAttention):
    """An Apex buyer with no linked Flourish destination."""


class UnitMismatch(NeedsAttention):
    """Two units that cannot be converted, such as each against grams."""


class OrderNotFinal(NeedsAttention):
    """An Apex order that is cancelled or not in one of the tenant's final stages."""


class OrderLocked(NeedsAttention):
    """A Flourish order that can no longer change because stock is allocated."""


class InvalidRecord(NeedsAttention):
    """One upstream record (package, order line) that cannot be used as it is."""


class CredentialsRejected(SyncError):
    """A 401 or 403: the key or token is wrong, expired or lacks an ability."""


class CreditsExhausted(SyncError):
    """Apex returned 429 without ``Retry-After``: the monthly credits are spent."""
