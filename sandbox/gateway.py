"""The ASGI layer in front of the routes: counting, Apex admission, faults.

Every request to ``/apex/api`` or ``/flourish/external/api`` is counted first.
Apex requests then pass the per-token rate limit and the monthly credit
check. Last, the API's fault settings may delay the request, respond in its
place, or handle it and then spoil the response.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from sandbox.faults import FaultPlan, FaultSpec
from sandbox.state import ApexToken, SandboxState

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

API_PREFIXES = {"apex": "/apex/api", "flourish": "/flourish/external/api"}


class ConnectionDropped(RuntimeError):
    """Raised in place of closing the socket when the server is not uvicorn."""


@dataclass
class Captured:
    """A response held back by a fault: status, headers and body."""

    status: int = 500
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""


def api_of(path: str) -> str | None:
    for api, prefix in API_PREFIXES.items():
        if path == prefix or path.startswith(prefix + "/"):
            return api
    return None


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return ""


def _bearer(scope: Scope) -> str:
    scheme, _, token = _header(scope, b"authorization").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def caller_label(state: SandboxState, api: str, scope: Scope) -> str:
    """Name the caller for statistics without revealing its credential."""
    if api == "apex":
        credential = _bearer(scope)
        token = state.apex_tokens.get(credential)
        label = token.label if token else None
    else:
        credential = _header(scope, b"x-api-key")
        key = state.flourish_keys.get(credential)
        label = key.label if key else None
    if label is not None:
        return label
    return "unknown" if credential else "anonymous"


async def handle(
    state: SandboxState, scope: Scope, receive: Receive, send: Send, inner: App
) -> None:
    """Run one HTTP request through counting, admission and faults."""
    api = api_of(scope["path"])
    if api is None:
        await inner(scope, receive, send)
        return

    path = scope["path"][len(API_PREFIXES[api]) :]
    with state.lock:
        label = caller_label(state, api, scope)
        state.stats.counters(api).record(label, scope["method"], path, time.monotonic())
        plan = state.faults[api].plan(scope["method"], path)
        spec = state.faults[api].spec
        token = state.apex_tokens.get(_bearer(scope)) if api == "apex" else None

    counted_send = _recording_send(state, api, token, send)
    if api == "apex":
        rejection, headers = _admit_apex(state, scope, token)
        counted_send = _adding_headers(counted_send, headers)
        if rejection is not None:
            await _send_json(counted_send, *rejection)
            return

    await _run_with_faults(api, plan, spec, scope, receive, counted_send, send, inner)


def _recording_send(
    state: SandboxState, api: str, token: ApexToken | None, send: Send
) -> Send:
    async def recording(message: Message) -> None:
        if message["type"] == "http.response.start":
            _record_status(state, api, token, message["status"])
        await send(message)

    return recording


def _record_status(
    state: SandboxState, api: str, token: ApexToken | None, status: int
) -> None:
    with state.lock:
        state.stats.counters(api).by_status[status] += 1
        if token is None:
            return
        usage = state.apex_companies[token.company_id].usage
        if 400 <= status < 500:
            usage.error_4xx_count += 1
        elif status >= 500:
            usage.error_5xx_count += 1


def _admit_apex(
    state: SandboxState, scope: Scope, token: ApexToken | None
) -> tuple[tuple[int, dict[str, Any], dict[str, str]] | None, dict[str, str]]:
    """Apply the rate limit, then the monthly credits; charge 1 credit per call."""
    with state.lock:
        decision = state.limiter.check(
            _bearer(scope) or "anonymous", time.monotonic(), time.time()
        )
        usage = state.apex_companies[token.company_id].usage if token else None
        if not decision.allowed:
            if usage is not None:
                usage.throttled_request_count += 1
            return (429, {"message": "Too Many Attempts."}, decision.headers), {}
        if usage is None:
            return None, decision.headers
        if usage.exhausted():
            # Waiting does not help here, so the response has no Retry-After.
            body = {
                "message": "Monthly API credit allowance exhausted. Raise the "
                "spending cap or wait for next month."
            }
            return (429, body, {}), decision.headers
        usage.credits_used += 1
        usage.request_count += 1
    return None, decision.headers


def _adding_headers(send: Send, headers: dict[str, str]) -> Send:
    if not headers:
        return send
    extra = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def adding(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = {k.lower() for k, _ in message.get("headers", [])}
            message["headers"] = list(message.get("headers", [])) + [
                (k, v) for k, v in extra if k not in present
            ]
        await send(message)

    return adding


async def _send_json(
    send: Send, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    payload = json.dumps(body).encode()
    await _send_raw(send, status, payload, headers)


async def _send_raw(
    send: Send, status: int, payload: bytes, headers: dict[str, str] | None = None
) -> None:
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    raw_headers += [
        (k.lower().encode(), v.encode()) for k, v in (headers or {}).items()
    ]
    await send(
        {"type": "http.response.start", "status": status, "headers": raw_headers}
    )
    await send({"type": "http.response.body", "body": payload})


async def _run_with_faults(
    api: str, plan: FaultPlan, spec: FaultSpec, scope: Scope, receive: Receive,
    send: Send, raw_send: Send, inner: App,
) -> None:  # fmt: skip
    if plan.latency_seconds:
        await asyncio.sleep(plan.latency_seconds)
    if plan.kind is None:
        await inner(scope, receive, send)
        return
    if plan.kind in ("error", "429", "drop"):
        await _answer_instead(api, plan, spec, send, raw_send)
        return

    captured = await _capture(inner, scope, receive)
    await _spoil(api, plan, spec, captured, send, raw_send)


async def _answer_instead(
    api: str, plan: FaultPlan, spec: FaultSpec, send: Send, raw_send: Send
) -> None:
    """Respond without handling the request: a 5xx, a 429 or a dropped connection."""
    if plan.kind == "drop":
        await drop_connection(raw_send)
    elif plan.kind == "error":
        await _send_json(send, spec.error_status, _error_body(api, spec.error_status))
    else:
        await _send_json(
            send, 429, _error_body(api, 429), _retry_headers(api, spec.retry_after)
        )


def _error_body(api: str, status: int) -> dict[str, Any]:
    if api == "apex":
        return {"message": "Too Many Attempts." if status == 429 else "Server Error"}
    text = "Too Many Requests" if status == 429 else "Internal Server Error"
    return {"message": text, "status": status}


def _retry_headers(api: str, retry_after: int) -> dict[str, str]:
    headers = {"Retry-After": str(retry_after)}
    if api == "apex":
        headers["X-RateLimit-Remaining"] = "0"
        headers["X-RateLimit-Reset"] = str(int(time.time()) + retry_after)
    return headers


async def _capture(inner: App, scope: Scope, receive: Receive) -> Captured:
    """Handle the request (its writes are committed) but keep the response."""
    captured = Captured()

    async def keep(message: Message) -> None:
        if message["type"] == "http.response.start":
            captured.status = message["status"]
            captured.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            captured.body += message.get("body", b"")

    await inner(scope, receive, keep)
    return captured


async def _spoil(
    api: str,
    plan: FaultPlan,
    spec: FaultSpec,
    captured: Captured,
    send: Send,
    raw_send: Send,
) -> None:
    if plan.kind == "lose":
        logger.info("sandbox lost the response api=%s status=%s", api, captured.status)
        if plan.lose_mode == "drop":
            await drop_connection(raw_send)
        else:
            await _send_raw(send, 502, b"")
        return
    if plan.kind == "timeout":
        await asyncio.sleep(spec.timeout_seconds)
        await _replay(send, captured, captured.body)
        return
    await _replay(send, captured, captured.body[: len(captured.body) // 2] or b"{")


async def _replay(send: Send, captured: Captured, body: bytes) -> None:
    headers = [(k, v) for k, v in captured.headers if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    await send(
        {"type": "http.response.start", "status": captured.status, "headers": headers}
    )
    await send({"type": "http.response.body", "body": body})


async def drop_connection(raw_send: Send) -> None:
    """Close the client's connection without a response.

    uvicorn passes its per-request cycle's bound ``send``, whose object keeps
    the transport; aborting it is the only way an ASGI app can hang up.
    """
    transport = getattr(getattr(raw_send, "__self__", None), "transport", None)
    if transport is None:
        raise ConnectionDropped("the sandbox dropped the connection on purpose")
    transport.abort()
    # Let uvicorn see the closed connection before the app returns, so it
    # neither sends a 500 nor logs a missing response.
    await asyncio.sleep(0.01)
