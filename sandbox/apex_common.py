"""Shared parts of the Apex routes: caller, abilities, filters, list envelopes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import Depends
from starlette.requests import Request
from starlette.responses import Response

from sandbox.clock import parse_time
from sandbox.errors import HtmlPageRequired, apex_error, apex_required, apex_validation
from sandbox.paging import apex_paginate
from sandbox.responses import respond
from sandbox.state import ApexCompany, ApexToken, Record, SandboxState

#: Per-item credit price of the data-heavy endpoints (Apex OpenAPI document).
HEAVY_ITEM_CREDITS = 3


@dataclass
class ApexCaller:
    """The company and token behind one authenticated Apex request."""

    state: SandboxState
    token: ApexToken
    company: ApexCompany

    def charge(self, items: int, per_item: int = 1, nested: int = 0) -> None:
        """Add the item credits of a response. The gateway charges the call itself."""
        usage = self.company.usage
        with self.state.lock:
            usage.credits_used += items * per_item + nested
            usage.top_level_resources_returned += items
            usage.billable_nested_resource_count += nested

    def can(self, ability: str) -> bool:
        return ability in self.token.abilities


def sandbox_state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


def authenticate(request: Request) -> ApexCaller:
    """Check the Accept header and the bearer token, as the Apex API does."""
    if "json" not in request.headers.get("accept", "").lower():
        raise HtmlPageRequired()

    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    state = sandbox_state(request)
    with state.lock:
        record = (
            state.apex_tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        )
    if record is None:
        raise apex_error(401, "Unauthenticated.")
    return ApexCaller(state, record, state.apex_companies[record.company_id])


def ability(name: str) -> Any:
    """Return a dependency that authenticates and requires the token ability."""

    def require(request: Request) -> ApexCaller:
        caller = authenticate(request)
        if not caller.can(name):
            raise apex_error(403, "This action is unauthorized.")
        return caller

    return Depends(require)


def time_param(
    request: Request, name: str, *, required: bool = False
) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if required:
            raise apex_required(name)
        return None

    moment = parse_time(raw)
    if moment is None:
        label = name.replace("_", " ")
        raise apex_validation({name: [f"The {label} field must be a valid date."]})
    if name.endswith("_to") and len(raw.strip()) == 10:
        moment += timedelta(days=1, microseconds=-1)
    return moment


def int_list(request: Request, name: str) -> list[int]:
    """Read ``name[]=1&name[]=2`` (or repeated ``name``) as integers."""
    values = request.query_params.getlist(f"{name}[]") + request.query_params.getlist(
        name
    )
    numbers = []
    for index, value in enumerate(values):
        try:
            numbers.append(int(value))
        except ValueError:
            message = f"The {name}.{index} field must be an integer."
            raise apex_validation({f"{name}.{index}": [message]}) from None
    return numbers


def flag(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    return raw.lower() in {"1", "true", "yes", "on"}


@dataclass
class TimeWindow:
    """Inclusive ``updated_at_*`` and ``created_at_*`` bounds of a list request."""

    updated_from: datetime | None = None
    updated_to: datetime | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None

    @classmethod
    def from_request(cls, request: Request, *, updated_required: bool) -> TimeWindow:
        return cls(
            time_param(request, "updated_at_from", required=updated_required),
            time_param(request, "updated_at_to"),
            time_param(request, "created_at_from"),
            time_param(request, "created_at_to"),
        )

    def matches(self, record: Record) -> bool:
        updated, created = record["_updated"], record["_created"]
        return (
            (self.updated_from is None or updated >= self.updated_from)
            and (self.updated_to is None or updated <= self.updated_to)
            and (self.created_from is None or created >= self.created_from)
            and (self.created_to is None or created <= self.created_to)
        )


def filter_signature(request: Request) -> tuple[tuple[str, str], ...]:
    ignored = {"page", "per_page", "no_track"}
    return tuple(
        sorted(kv for kv in request.query_params.multi_items() if kv[0] not in ignored)
    )


def cached_rows(
    caller: ApexCaller, request: Request, resource: str,
    build: Callable[[], Iterable[Record]],
) -> list[Record]:  # fmt: skip
    """Return the filtered rows, reusing them while the resource is unchanged."""
    company = caller.company
    key = (company.id, resource, company.versions[resource], filter_signature(request))
    with caller.state.lock:
        return caller.state.cache.rows(key, build)


def list_response(
    request: Request, caller: ApexCaller, key: str, rows: list[Record],
    render: Callable[[Record], Record], per_item: int = 1,
) -> Response:  # fmt: skip
    """Page the rows, render them and charge their credits."""
    page = apex_paginate(request, rows)
    with caller.state.lock:
        rendered = [render(row) for row in page.rows]
    nested = sum(len(row.get("items", ())) for row in rendered)
    caller.charge(len(rendered), per_item, nested)
    return respond({key: rendered, "links": page.links, "meta": page.meta})


def data_response(caller: ApexCaller, rows: list[Record]) -> Response:
    caller.charge(len(rows))
    return respond({"data": rows, "status": "success"})


async def json_body(request: Request) -> dict[str, Any]:
    """Read a JSON object body. Laravel treats an unreadable body as empty input."""
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def find(records: dict[int, Record], record_id: str, message: str) -> Record:
    try:
        return records[int(record_id)]
    except (KeyError, ValueError):
        raise apex_error(404, message) from None
