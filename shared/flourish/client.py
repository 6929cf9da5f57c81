"""Client of the Flourish External API (``.../external/api``).

::

    FlourishClient(base_url, api_key, facility_id)
      every request:  x-api-key, Accept: application/json
      facility-scoped (packages, outbound orders, sales reps): + FacilityID
      │
      ├─ list_packages(offset, limit≤50, ...) ─► Page[PackageRow]   one page,
      │                                            bad rows in Page.invalid
      ├─ list_facilities / list_destinations / find_items_by_sku /
      │  list_sales_reps / list_outbound_orders ─► every page, offset/limit 50,
      │                                            until a short page or
      │                                            meta.next == ""
      └─ get_* / create / update / cancel ─────► one model

Every response is ``{"message", "status", "data", "meta"?}``. Some get-by-id
endpoints return ``data`` as a one-element list. The vendor's example of the
outbound-order POST reply has no envelope at all. Both are accepted.
Errors are translated once in ``shared.http.BaseClient``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from shared.errors import InvalidPayload, UpstreamRejected
from shared.flourish.schemas import (
    Destination,
    FlourishFacility,
    InvalidRow,
    Item,
    LabTestResult,
    OutboundOrder,
    PackageRow,
    Page,
    SalesRep,
    parse_package_row,
)
from shared.http import BaseClient, Params, to_utc
from shared.paging import OffsetPaginator
from shared.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

#: Largest ``limit`` Flourish accepts ("The maximum allowable limit is set to 50").
MAX_LIMIT = 50

#: Pages read from one list before the client gives up on a list that never ends.
MAX_PAGES = 2000

ModelT = TypeVar("ModelT")

_FACILITY = TypeAdapter(FlourishFacility)
_FACILITIES = TypeAdapter(list[FlourishFacility])
_DESTINATIONS = TypeAdapter(list[Destination])
_ITEMS = TypeAdapter(list[Item])
_SALES_REPS = TypeAdapter(list[SalesRep])
_LAB_RESULT = TypeAdapter(LabTestResult)
_ORDER = TypeAdapter(OutboundOrder)
_ORDERS = TypeAdapter(list[OutboundOrder])


def format_timestamp(moment: datetime) -> str:
    """Format ``moment`` as Flourish filters expect: UTC, milliseconds, ``Z``.

    Sub-millisecond digits are dropped, so a filter never starts later than
    ``moment``.
    """
    utc = to_utc(moment)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


class FlourishClient(BaseClient):
    """Client of one Flourish API key, optionally scoped to one facility."""

    upstream = "flourish"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        facility_id: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        limiter: RateLimiter | None = None,
        on_request: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            {"x-api-key": api_key},
            timeout=timeout,
            transport=transport,
            limiter=limiter,
            on_request=on_request,
        )
        self.facility_id = facility_id

    def __repr__(self) -> str:
        return (
            f"FlourishClient(base_url={self.base_url!r}, "
            f"facility_id={self.facility_id!r})"
        )

    def log_ids(self) -> str:
        return f"{super().log_ids()} facility={self.facility_id}"

    # Packages and lab results

    def list_packages(
        self,
        *,
        offset: int = 0,
        limit: int = MAX_LIMIT,
        statuses: Sequence[str] = (),
        updated_since: datetime | None = None,
        package_ids: Sequence[str] = (),
    ) -> Page[PackageRow]:
        """Read one page of the facility's packages.

        ``statuses`` and ``package_ids`` repeat ``package_status`` and
        ``package_id``; ``updated_since`` is ``last_updated_timestamp_start``.
        A row that fails validation goes to ``Page.invalid`` with its package
        tag and the reason; it never fails the page.
        """
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")

        params: Params = [("offset", offset), ("limit", limit)]
        params += [("package_status", status) for status in statuses]
        params += [("package_id", package_id) for package_id in package_ids]
        if updated_since is not None:
            params.append(
                ("last_updated_timestamp_start", format_timestamp(updated_since))
            )

        path = "/v1/packages"
        body = self.request("GET", path, params=params, headers=self._facility(path))
        rows, meta = self._list_data(body, path)
        return _package_page(rows, meta, offset, limit)

    def get_lab_test_result(self, result_id: str | int) -> LabTestResult:
        """Read a v2 lab test result (potency and terpenes)."""
        path = f"/v2/lab-test-results/{_segment(result_id)}"
        return self._get_one(path, _LAB_RESULT)

    # Company-level lists

    def get_facility(self, facility_id: str) -> FlourishFacility:
        """Read one facility, including ``sales_rep_required_for_outbound``."""
        return self._get_one(f"/v1/facilities/{_segment(facility_id)}", _FACILITY)

    def list_facilities(self) -> list[FlourishFacility]:
        """Read every facility of the company."""
        return self._list_all("/v1/facilities", _FACILITIES)

    def list_destinations(
        self, *, license_number: str | None = None
    ) -> list[Destination]:
        """Read the destinations (B2B customers), optionally by license number."""
        params: Params = []
        if license_number:
            params.append(("license_number", license_number))
        return self._list_all("/v1/destinations", _DESTINATIONS, params)

    def find_items_by_sku(self, sku: str) -> list[Item]:
        """Return the items whose SKU equals ``sku`` exactly.

        The ``sku`` filter is not in the May 2025 API documentation (Flourish's
        own WooCommerce plugin sends it), so the rows are also compared here.
        """
        items = self._list_all("/v1/items", _ITEMS, [("sku", sku)])
        return [item for item in items if item.sku == sku]

    # Facility-scoped: sales reps and outbound orders

    def list_sales_reps(self) -> list[SalesRep]:
        """Read the facility's sales reps."""
        path = "/v1/sales-reps"
        return self._list_all(path, _SALES_REPS, headers=self._facility(path))

    def get_outbound_order(self, order_id: str) -> OutboundOrder:
        """Read one outbound (sales) order by its Flourish id."""
        path = f"/v1/outbound-orders/{_segment(order_id)}"
        headers = self._facility(path, required=False)
        return self._get_one(path, _ORDER, headers)

    def list_outbound_orders(
        self, *, created_since: datetime | None = None
    ) -> list[OutboundOrder]:
        """Read the outbound orders, of the facility when one is set.

        Without a facility Flourish returns the orders of the whole company.
        """
        path = "/v1/outbound-orders"
        params: Params = []
        if created_since is not None:
            params.append(("created_timestamp_start", format_timestamp(created_since)))
        headers = self._facility(path, required=False)
        return self._list_all(path, _ORDERS, params, headers)

    def create_outbound_order(self, body: dict[str, Any]) -> OutboundOrder:
        """Create an outbound order and return it as Flourish echoes it.

        The vendor's example reply has no ``id``; when it is None the caller
        finds the order by ``original_order_id`` with ``list_outbound_orders``.
        """
        return self._write("POST", "/v1/outbound-orders", body)

    def update_outbound_order(
        self, order_id: str, body: dict[str, Any]
    ) -> OutboundOrder:
        """Update an order; Flourish rejects this (400) once stock is allocated."""
        return self._write("PUT", f"/v1/outbound-orders/{_segment(order_id)}", body)

    def cancel_outbound_order(self, order_id: str) -> OutboundOrder:
        """Cancel an order, the only status change the API supports."""
        return self.update_outbound_order(order_id, {"order_status": "Cancelled"})

    # Plumbing

    def _facility(self, path: str, *, required: bool = True) -> dict[str, str]:
        """Return the FacilityID header, which facility-scoped endpoints need."""
        if self.facility_id:
            return {"FacilityID": self.facility_id}
        if required:
            raise ValueError(f"FlourishClient needs a facility_id to call {path}")
        return {}

    def _write(self, method: str, path: str, body: dict[str, Any]) -> OutboundOrder:
        headers = self._facility(path)
        reply = self.request(method, path, json=body, headers=headers)
        return self.parse_model(_ORDER, self._single(reply, path), path)

    def _get_one(
        self,
        path: str,
        adapter: TypeAdapter[ModelT],
        headers: dict[str, str] | None = None,
    ) -> ModelT:
        reply = self.request("GET", path, headers=headers)
        return self.parse_model(adapter, self._single(reply, path), path)

    def _list_all(
        self,
        path: str,
        adapter: TypeAdapter[list[ModelT]],
        params: Params | None = None,
        headers: dict[str, str] | None = None,
    ) -> list[ModelT]:
        """Read every page of a list, 50 rows at a time."""
        paginator = OffsetPaginator(MAX_LIMIT)
        results: list[ModelT] = []
        for _ in range(MAX_PAGES):
            page_params = [*(params or []), *self._page_params(paginator)]
            reply = self.request("GET", path, params=page_params, headers=headers)

            rows, meta = self._list_data(reply, path)
            page: list[ModelT] = self.parse_model(adapter, rows, path)
            results.extend(page)

            paginator.advance(len(rows), meta.get("next"))
            if paginator.finished:
                return results
        raise InvalidPayload(f"Flourish {path} did not end after {MAX_PAGES} pages")

    @staticmethod
    def _page_params(paginator: OffsetPaginator) -> Params:
        return [("offset", paginator.offset), ("limit", paginator.limit)]

    def _list_data(self, reply: Any, path: str) -> tuple[list[Any], dict[str, Any]]:
        """Return the rows and the ``meta`` of a list reply."""
        data, meta = self._unwrap(reply, path)
        if not isinstance(data, list):
            raise InvalidPayload(
                f"Flourish {path} returned {type(data).__name__} where a list of "
                "rows was expected",
                upstream=self.upstream,
                path=path,
            )
        return data, meta

    def _single(self, reply: Any, path: str) -> Any:
        """Return the one record of a reply, unwrapping a one-element list."""
        data, _ = self._unwrap(reply, path)
        if not isinstance(data, list):
            return data
        if len(data) != 1:
            raise InvalidPayload(
                f"Flourish {path} returned {len(data)} records where one was expected",
                upstream=self.upstream,
                path=path,
            )
        return data[0]

    def _unwrap(self, reply: Any, path: str) -> tuple[Any, dict[str, Any]]:
        """Split the envelope into ``data`` and ``meta``.

        A reply without ``data`` is taken as the record itself, and an
        envelope whose own ``status`` is an error raises UpstreamRejected.
        """
        if not isinstance(reply, dict):
            return reply, {}

        status = reply.get("status")
        if isinstance(status, int) and status >= 400:
            message = str(reply.get("message") or "")[:300]
            raise UpstreamRejected(
                f"Flourish {path} returned status {status} in its body: {message}",
                upstream=self.upstream,
                path=path,
                status=status,
                response_excerpt=self._excerpt(reply),
            )
        if "data" not in reply:
            return reply, {}
        return reply["data"], reply.get("meta") or {}


def _package_page(
    rows: list[Any], meta: dict[str, Any], offset: int, limit: int
) -> Page[PackageRow]:
    items: list[PackageRow] = []
    invalid: list[InvalidRow] = []
    for raw in rows:
        parsed = parse_package_row(raw)
        if isinstance(parsed, InvalidRow):
            invalid.append(parsed)
        else:
            items.append(parsed)

    paginator = OffsetPaginator(limit, offset)
    paginator.advance(len(rows), meta.get("next"))
    return Page(
        items=items,
        invalid=invalid,
        offset=offset,
        limit=limit,
        total=_optional_int(meta.get("total")),
        has_next=not paginator.finished,
    )


def _optional_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _segment(value: str | int) -> str:
    """Quote an id for use as one URL path segment."""
    return quote(str(value), safe="")
