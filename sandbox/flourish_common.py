"""Shared parts of the Flourish routes: API key, FacilityID, filters, envelopes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sandbox.clock import parse_time
from sandbox.errors import flourish_error
from sandbox.paging import flourish_list
from sandbox.responses import respond
from sandbox.state import FlourishCompany, FlourishKey, Record, SandboxState, public


@dataclass
class FlourishCaller:
    """The company behind an API key and, on facility-scoped calls, the facility."""

    state: SandboxState
    key: FlourishKey
    company: FlourishCompany
    facility: Record | None = None

    @property
    def facility_id(self) -> str:
        assert self.facility is not None, "route is not facility scoped"
        facility_id: str = self.facility["id"]
        return facility_id


def _caller(request: Request) -> FlourishCaller:
    state: SandboxState = request.app.state.sandbox
    key = request.headers.get("x-api-key", "")
    with state.lock:
        record = state.flourish_keys.get(key)
    if record is None:
        raise flourish_error(401, "Unauthorized")
    return FlourishCaller(state, record, state.flourish_companies[record.company_id])


def company_scope(request: Request) -> FlourishCaller:
    """Authenticate a company-level call (items, destinations, lab results...)."""
    return _caller(request)


def facility_scope(request: Request) -> FlourishCaller:
    """Authenticate a call that needs the ``FacilityID`` header."""
    caller = _caller(request)
    facility_id = request.headers.get("facilityid", "")
    if not facility_id:
        raise flourish_error(
            400, "The FacilityID header is required for this endpoint."
        )
    return _with_facility(caller, facility_id)


def optional_facility_scope(request: Request) -> FlourishCaller:
    """Authenticate a call where ``FacilityID`` narrows the result when present."""
    caller = _caller(request)
    facility_id = request.headers.get("facilityid", "")
    return _with_facility(caller, facility_id) if facility_id else caller


def _with_facility(caller: FlourishCaller, facility_id: str) -> FlourishCaller:
    facility = caller.company.facilities.get(facility_id)
    if facility is None:
        message = f"This API key has no access to facility {facility_id}."
        raise flourish_error(403, message)
    caller.facility = facility
    return caller


def success(data: Any) -> Response:
    return respond({"message": "Success", "status": 200, "data": data})


def listing(
    request: Request, caller: FlourishCaller, rows: list[Record],
    render: Callable[[Record], Record] = public,
) -> Response:  # fmt: skip
    chunk, meta = flourish_list(request, rows)
    with caller.state.lock:
        data = [render(row) for row in chunk]
    return respond({"message": "Success", "status": 200, "meta": meta, "data": data})


def multi(request: Request, name: str) -> list[str]:
    """Read a repeated filter such as ``?sku=a&sku=b``, also spelled ``sku[]``."""
    names = {name, f"{name}[]"}
    return [
        v for k, v in request.query_params.multi_items() if k.lower() in names and v
    ]


def time_filter(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    moment = parse_time(raw)
    if moment is None:
        raise flourish_error(
            400, f"{name} must be an ISO 8601 date or timestamp, got {raw!r}."
        )
    return moment


def in_window(moment: datetime, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or moment >= start) and (end is None or moment <= end)


def cached(
    caller: FlourishCaller, request: Request, resource: str, scope: str,
    build: Callable[[], Iterable[Record]],
) -> list[Record]:  # fmt: skip
    """Return filtered rows, reused while the resource and the query are unchanged."""
    ignored = {"offset", "limit"}
    signature = tuple(
        sorted(
            kv
            for kv in request.query_params.multi_items()
            if kv[0].lower() not in ignored
        )
    )
    version = caller.company.versions[resource]
    key = ("flourish", caller.company.id, resource, scope, version, signature)
    with caller.state.lock:
        return caller.state.cache.rows(key, build)


async def json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        raise flourish_error(400, "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise flourish_error(400, "The request body must be a JSON object.")
    return body
