"""HTTP plumbing shared by the Apex and Flourish clients.

::

    client method ──► BaseClient.request(method, path, params, json)
                        │ limiter.acquire()               (shared Redis bucket)
                        │ httpx send ── timeout ──────────► UpstreamUnavailable
                        │            └─ connection error ─► UpstreamUnavailable
                        │ on_request("apex" | "flourish")  (run statistics)
                        │ DEBUG: upstream, credential label, method, path,
                        │        status, elapsed ms
                        ▼
                      validate_response(response)
                        │ 401, 403 ───────────────────────► CredentialsRejected
                        │ 429 ────────────────────────────► rate_limit_error()
                        │ 5xx ────────────────────────────► UpstreamUnavailable
                        │ other non-2xx ──────────────────► UpstreamRejected
                        ▼
                      JSON body ── not JSON ──────────────► InvalidPayload
    parse_model(Model, data) ── schema failure ───────────► InvalidPayload

Each exception carries ``status``, ``path`` (never the query string),
``request_excerpt`` and ``response_excerpt`` (bodies cut to 2,000 characters,
never a header). The client's secret is masked in every excerpt and appears
in no message, log line or ``repr``.

The module also defines the lenient field types of both clients' pydantic
schemas: numbers sent as strings become ``Decimal``, ids stay text, and a
blank date is None.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from functools import lru_cache
from types import TracebackType
from typing import Annotated, Any, Self, TypeVar

import httpx
from pydantic import AfterValidator, BeforeValidator, TypeAdapter, ValidationError

from shared.errors import (
    CredentialsRejected,
    InvalidPayload,
    RateLimited,
    SyncError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from shared.ratelimit import RateLimiter, credential_label

logger = logging.getLogger(__name__)

#: Maximum length of a body excerpt kept on an exception.
EXCERPT_CHARS = 2000

#: Query parameters as (name, value) pairs; a name may repeat.
Params = list[tuple[str, str | int | float | bool | None]]

ModelT = TypeVar("ModelT")

#: Sends of one request that a short ``Retry-After`` may cause. A rate-limit
#: 429 clears within about a second, so waiting here is cheaper than failing
#: the task and redoing its whole page; longer waits go to the task's retry.
RATE_LIMIT_ATTEMPTS = 3
MAX_INLINE_WAIT_SECONDS = 5.0


def _wait_briefly(error: RateLimited, attempt: int) -> bool:
    """Sleep for a short ``Retry-After``; tell whether to send again."""
    wait = error.retry_after
    if attempt >= RATE_LIMIT_ATTEMPTS or wait is None or wait > MAX_INLINE_WAIT_SECONDS:
        return False
    logger.warning("%s; waiting %.1f s before sending again", error, wait)
    time.sleep(wait)
    return True


@lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    """Build the TLS context that every client of this process shares.

    Loading the CA bundle costs about 30 ms, which a new client per task
    would otherwise pay each time.
    """
    return ssl.create_default_context()


class BaseClient:
    """A synchronous JSON client for one upstream credential.

    Subclasses set ``upstream`` and pass their auth headers. ``on_request`` is
    called with ``upstream`` once per request attempted, failed ones
    included, and ``limiter.acquire()`` runs before each one.
    """

    upstream = "upstream"

    def __init__(
        self,
        base_url: str,
        secret: str,
        headers: Mapping[str, str],
        *,
        timeout: float,
        transport: httpx.BaseTransport | None,
        limiter: RateLimiter | None,
        on_request: Callable[[str], None] | None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._secret = secret
        self._credential_label = credential_label(secret)
        self._limiter = limiter
        self._on_request = on_request
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Accept": "application/json", **headers},
            timeout=timeout,
            transport=transport,
            verify=_ssl_context(),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one request and return its decoded JSON body.

        Raises the project's exceptions as drawn in the module docstring.
        """
        request_headers = dict(headers or {})
        if json is not None:
            request_headers["Content-Type"] = "application/json"

        for attempt in range(1, RATE_LIMIT_ATTEMPTS + 1):
            response = self._send(method, path, params, json, request_headers)
            try:
                self.validate_response(response, path)
            except RateLimited as exc:
                if not _wait_briefly(exc, attempt):
                    raise
                continue
            break
        return self._decode(response, path)

    def _send(
        self,
        method: str,
        path: str,
        params: Params | None,
        json: Any,
        headers: dict[str, str],
    ) -> httpx.Response:
        """Send the request, translating httpx errors once."""
        if self._limiter is not None:
            self._limiter.acquire()

        started = time.perf_counter()
        status: int | str = "none"
        try:
            response = self._http.request(
                method, path, params=params, json=json, headers=headers
            )
            status = response.status_code
            return response
        except httpx.TimeoutException as exc:
            status = "timeout"
            raise self._transport_error(method, path, json, exc, "timed out") from exc
        except httpx.HTTPError as exc:
            status = "error"
            raise self._transport_error(method, path, json, exc, "failed") from exc
        finally:
            self._after_send(method, path, status, started)

    def _after_send(
        self, method: str, path: str, status: int | str, started: float
    ) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        logger.debug(
            "upstream=%s %s %s %s status=%s elapsed_ms=%.0f",
            self.upstream,
            self.log_ids(),
            method,
            path,
            status,
            elapsed_ms,
        )
        if self._on_request is not None:
            self._on_request(self.upstream)

    def log_ids(self) -> str:
        """Return the ids that start each request's log line; never a secret."""
        return f"credential={self._credential_label}"

    def _transport_error(
        self, method: str, path: str, json: Any, exc: httpx.HTTPError, what: str
    ) -> UpstreamUnavailable:
        detail = self._mask(str(exc))[:200] or type(exc).__name__
        return UpstreamUnavailable(
            f"{self._name} {method} {path} {what} ({type(exc).__name__}: {detail})",
            upstream=self.upstream,
            path=path,
            status=None,
            request_excerpt=self._excerpt(json),
            response_excerpt=None,
        )

    def validate_response(self, response: httpx.Response, path: str) -> None:
        """Raise the exception that ``response``'s status calls for, if any."""
        status = response.status_code
        if 200 <= status < 300:
            return

        context = self._error_context(response, path)
        message = self._error_message(response, path)
        if status in (401, 403):
            raise CredentialsRejected(message, **context)
        if status == 429:
            raise self.rate_limit_error(response, message, context)
        if status >= 500:
            raise UpstreamUnavailable(message, **context)
        raise UpstreamRejected(message, **context)

    def rate_limit_error(
        self, response: httpx.Response, message: str, context: dict[str, Any]
    ) -> SyncError:
        """Return the exception for a 429 response: RateLimited by default."""
        retry_after = retry_after_seconds(response)
        return RateLimited(message, retry_after=retry_after, **context)

    def parse_model(self, adapter: TypeAdapter[ModelT], data: Any, path: str) -> ModelT:
        """Validate ``data`` with ``adapter``; a failure raises InvalidPayload."""
        try:
            return adapter.validate_python(data)
        except ValidationError as exc:
            raise InvalidPayload(
                f"{self._name} {path} returned a body that does not match its "
                f"schema: {summarise_validation_error(exc)}",
                upstream=self.upstream,
                path=path,
                status=200,
                response_excerpt=self._excerpt(data),
            ) from exc

    def _decode(self, response: httpx.Response, path: str) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            context = self._error_context(response, path)
            raise InvalidPayload(
                f"{self._name} {response.request.method} {path} returned "
                f"{response.status_code} with a body that is not JSON",
                **context,
            ) from exc

    def _error_context(self, response: httpx.Response, path: str) -> dict[str, Any]:
        request_body = response.request.content.decode("utf-8", "replace")
        return {
            "upstream": self.upstream,
            "status": response.status_code,
            "path": path,
            "request_excerpt": self._excerpt(request_body or None),
            "response_excerpt": self._excerpt(response.text),
        }

    def _error_message(self, response: httpx.Response, path: str) -> str:
        reason = response.reason_phrase or "error"
        detail = _body_message(response)
        message = (
            f"{self._name} {response.request.method} {path} returned "
            f"{response.status_code} {reason}"
        )
        return self._mask(f"{message}: {detail}" if detail else message)

    def _excerpt(self, value: Any) -> str | None:
        if value is None:
            return None
        text = value if isinstance(value, str) else _json_text(value)
        return self._mask(text)[:EXCERPT_CHARS]

    def _mask(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    @property
    def _name(self) -> str:
        return self.upstream.capitalize()


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Return ``Retry-After`` in seconds (a number or an HTTP date), if present.

    A header that is present but unreadable counts as one second.
    """
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 1.0
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def summarise_validation_error(exc: ValidationError, limit: int = 5) -> str:
    """Return pydantic's errors as ``field.path: message`` pairs, without inputs."""
    parts = []
    for error in exc.errors(include_url=False)[:limit]:
        location = ".".join(str(part) for part in error["loc"]) or "body"
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def to_utc(moment: datetime) -> datetime:
    """Return ``moment`` in UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _body_message(response: httpx.Response) -> str:
    """Return the ``message`` or ``error`` text of an error body, if it has one."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    text = body.get("message") or body.get("error") or ""
    return str(text)[:300]


def _json_text(value: Any) -> str:
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return repr(value)


# Lenient field types of upstream payloads. Both APIs send numbers as strings
# now and then, and Flourish sends "" where a date is missing.


def blank_to_none(value: Any) -> Any:
    """Return None for None, "" or whitespace; any other value unchanged."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


def to_decimal(value: Any) -> Decimal | None:
    """Parse a number sent as a number or a string; blank means None.

    Floats go through their shortest repr, so 0.1 becomes Decimal("0.1").
    Raises ValueError naming the value when it is not a finite number.
    """
    value = blank_to_none(value)
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a number")

    try:
        number = Decimal(
            repr(value) if isinstance(value, float) else str(value).strip()
        )
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a number") from None
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return number


def to_required_decimal(value: Any) -> Decimal:
    """Parse a number like ``to_decimal``; a missing or blank value is an error."""
    number = to_decimal(value)
    if number is None:
        raise ValueError("is missing")
    return number


def to_text_id(value: Any) -> Any:
    """Keep an id as text: 1234 becomes "1234" and "00000044" stays as it is."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return blank_to_none(value)


def to_date(value: Any) -> Any:
    """Accept a date, a datetime string (its date part) or a blank (None)."""
    value = blank_to_none(value)
    if isinstance(value, str) and "T" in value:
        return datetime.fromisoformat(value.strip()).date()
    if isinstance(value, datetime):
        return value.date()
    return value


def assume_utc(value: datetime | None) -> datetime | None:
    """Give a naive datetime the UTC zone; both APIs send UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


#: A number that may arrive as a string; blank or null means None.
OptionalDecimal = Annotated[Decimal | None, BeforeValidator(to_decimal)]
#: A number that must be present; it may arrive as a string.
RequiredDecimal = Annotated[Decimal, BeforeValidator(to_required_decimal)]
#: An id kept as text even when it arrives as a number.
TextId = Annotated[str, BeforeValidator(to_text_id)]
OptionalTextId = Annotated[str | None, BeforeValidator(to_text_id)]
#: A date; "" means None, a datetime string gives its date.
OptionalDate = Annotated[date | None, BeforeValidator(to_date)]
#: A timestamp; "" means None and a naive one is taken as UTC.
OptionalDatetime = Annotated[
    datetime | None, BeforeValidator(blank_to_none), AfterValidator(assume_utc)
]
