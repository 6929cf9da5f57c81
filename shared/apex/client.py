"""Client of the Apex Trading API (``https://app.apextrading.com/api``).

::

    ApexClient(base_url, token)
      every request:  Authorization: Bearer <token>, Accept: application/json
      writes:         + Content-Type: application/json
      │
      ├─ welcome, usage ─────────────► top-level object / "data"
      ├─ list_operations, list_unit_measurements, list_terpenes ─► "data"
      ├─ list_cannabinoids ──────────► "cannabinoid" (a list, despite the name)
      ├─ iter_products ──────────────► "products"   ┐ updated_at_from always
      ├─ list_batches, find_batch ───► "batches"    │ sent (Apex returns 422
      ├─ iter_buyers ────────────────► "buyers"     │ without it); pages of
      ├─ iter_shipping_orders ───────► "orders"     ┘ 500 until meta.last_page
      ├─ get_shipping_order ─────────► "order"
      ├─ create_batch, update_batch ─► "batch"
      └─ list_deal_flows ────────────► "dealflows"

A 429 with ``Retry-After`` is the 15 requests per second limit (RateLimited);
a 429 without it means the month's credits are spent (CreditsExhausted).
Other errors are translated once in ``shared.http.BaseClient``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

import httpx
from pydantic import TypeAdapter

from shared.apex.schemas import (
    ApexPage,
    Batch,
    Buyer,
    Cannabinoid,
    DealFlow,
    Operation,
    Product,
    ShippingOrder,
    Terpene,
    UnitMeasurement,
    Usage,
    Welcome,
)
from shared.errors import CreditsExhausted, InvalidPayload, RateLimited, SyncError
from shared.http import BaseClient, Params, retry_after_seconds, to_utc
from shared.paging import PagePaginator
from shared.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

#: Largest ``per_page`` of most Apex lists (Apex OpenAPI document).
MAX_PER_PAGE = 500

#: Pages read from one list before the client gives up on a list that never ends.
MAX_PAGES = 2000

ModelT = TypeVar("ModelT")


def format_timestamp(moment: datetime) -> str:
    """Format ``moment`` for Apex filters: ISO-8601 in UTC, whole seconds, ``Z``.

    Fractions of a second are dropped, so a filter never starts later than
    ``moment``.
    """
    return to_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApexClient(BaseClient):
    """Client of one Apex API token (one company)."""

    upstream = "apex"

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        limiter: RateLimiter | None = None,
        on_request: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(
            base_url,
            token,
            {"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
            limiter=limiter,
            on_request=on_request,
        )

    def rate_limit_error(
        self, response: httpx.Response, message: str, context: dict[str, Any]
    ) -> SyncError:
        """Tell the per-second limit (``Retry-After``) from spent monthly credits."""
        retry_after = retry_after_seconds(response)
        if retry_after is None:
            return CreditsExhausted(
                f"{message} (no Retry-After: the monthly Apex credits are spent)",
                **context,
            )
        return RateLimited(message, retry_after=retry_after, **context)

    # Account

    def welcome(self) -> Welcome:
        """Check the token and read its abilities; touches no data."""
        reply = self.request("GET", "/v1/welcome")
        return self.parse_model(_adapter(Welcome), reply, "/v1/welcome")

    def usage(self) -> Usage:
        """Read the credits used this month and the monthly limit."""
        return self._get_one("/v1/usage", "data", Usage)

    # Taxonomies and operations (ids differ between companies)

    def list_operations(self) -> list[Operation]:
        """Read the company's licensed locations."""
        return list(self._iter_list("/v1/operations", "data", Operation))

    def list_unit_measurements(self) -> list[UnitMeasurement]:
        """Read the unit measurements (Unit, Gram, Pound, ...)."""
        return list(self._iter_list("/v1/unit-measurements", "data", UnitMeasurement))

    def list_cannabinoids(self) -> list[Cannabinoid]:
        """Read the cannabinoid taxonomy; the list key is ``cannabinoid``."""
        return list(self._iter_list("/v1/cannabinoids", "cannabinoid", Cannabinoid))

    def list_terpenes(self) -> list[Terpene]:
        """Read the terpene taxonomy."""
        return list(self._iter_list("/v1/terpenes", "data", Terpene))

    # Products and batches

    def iter_products(self, updated_since: datetime) -> Iterator[Product]:
        """Yield every product updated since ``updated_since``, 500 per request.

        A change to a batch does not change its product's ``updated_at``.
        """
        params = _since(updated_since)
        return self._iter_list("/v1/products", "products", Product, params)

    def list_batches(
        self,
        *,
        updated_since: datetime,
        product_ids: Sequence[int] = (),
        page: int = 1,
        per_page: int = MAX_PER_PAGE,
    ) -> ApexPage[Batch]:
        """Read one page of v2 batches updated since ``updated_since``."""
        params = _since(updated_since) + [("product_ids[]", pid) for pid in product_ids]
        params += [("page", page), ("per_page", per_page)]
        reply = self.request("GET", "/v2/batches", params=params)

        batches = self._parse_list(reply, "/v2/batches", "batches", Batch)
        return _page(reply, batches, page, per_page)

    def find_batch(
        self, *, product_id: int, name: str, created_since: datetime
    ) -> Batch | None:
        """Return the product's batch named ``name`` created since ``created_since``.

        Used before creating a batch again after a lost response: a batch
        created after ``created_since`` was also updated after it, so the
        ``updated_at_from`` filter cannot hide it.
        """
        page = 1
        for _ in range(MAX_PAGES):
            batches = self.list_batches(
                updated_since=created_since, product_ids=[product_id], page=page
            )
            for batch in batches.items:
                if batch.name == name:
                    return batch
            if not batches.has_next:
                return None
            page += 1
        raise InvalidPayload(f"Apex /v2/batches did not end after {MAX_PAGES} pages")

    def create_batch(self, body: dict[str, Any]) -> Batch:
        """Create a batch (Apex requires name, product_id and operation_id)."""
        reply = self.request("POST", "/v2/batches", json=body)
        return self._parse_one(reply, "/v2/batches", "batch", Batch)

    def update_batch(self, batch_id: int, body: dict[str, Any]) -> Batch:
        """Update a batch sparsely: fields left out stay, "" sets a field to null.

        Cannabinoid and terpene lists replace the stored ones entirely.
        """
        path = f"/v2/batches/{int(batch_id)}"
        reply = self.request("PUT", path, json=body)
        return self._parse_one(reply, path, "batch", Batch)

    # Buyers and orders

    def iter_buyers(self, updated_since: datetime) -> Iterator[Buyer]:
        """Yield every buyer updated since ``updated_since``, with its state."""
        params = [*_since(updated_since), ("with_state", "true")]
        return self._iter_list("/v1/buyers", "buyers", Buyer, params)

    def get_shipping_order(self, order_id: int) -> ShippingOrder:
        """Read one shipping order with its lines."""
        path = f"/v1/shipping-orders/{int(order_id)}"
        return self._get_one(path, "order", ShippingOrder, [("with_items", "true")])

    def iter_shipping_orders(self, updated_since: datetime) -> Iterator[ShippingOrder]:
        """Yield every shipping order updated since ``updated_since``, with lines."""
        params = [*_since(updated_since), ("with_items", "true")]
        path = "/v1/shipping-orders"
        return self._iter_list(path, "orders", ShippingOrder, params)

    def list_deal_flows(self) -> list[DealFlow]:
        """Read the deal flows with their order statuses."""
        params: Params = [("with_order_statuses", "true")]
        return list(self._iter_list("/v1/deal-flows", "dealflows", DealFlow, params))

    # Plumbing

    def _get_one(
        self, path: str, key: str, model: type[ModelT], params: Params | None = None
    ) -> ModelT:
        reply = self.request("GET", path, params=params)
        return self._parse_one(reply, path, key, model)

    def _iter_list(
        self, path: str, key: str, model: type[ModelT], params: Params | None = None
    ) -> Iterator[ModelT]:
        """Yield the items of every page; the first request is sent on first use."""
        paginator = PagePaginator(MAX_PER_PAGE)
        for _ in range(MAX_PAGES):
            page_params: Params = [*(params or []), ("page", paginator.page)]
            page_params.append(("per_page", paginator.per_page))
            reply = self.request("GET", path, params=page_params)

            yield from self._parse_list(reply, path, key, model)

            paginator.advance(reply.get("meta"), reply.get("links"))
            if paginator.finished:
                return
        raise InvalidPayload(f"Apex {path} did not end after {MAX_PAGES} pages")

    def _parse_list(
        self, reply: Any, path: str, key: str, model: type[ModelT]
    ) -> list[ModelT]:
        rows = self._envelope(reply, path, key)
        return self.parse_model(_adapter(list[model]), rows, path)  # type: ignore[valid-type]

    def _parse_one(
        self, reply: Any, path: str, key: str, model: type[ModelT]
    ) -> ModelT:
        return self.parse_model(_adapter(model), self._envelope(reply, path, key), path)

    def _envelope(self, reply: Any, path: str, key: str) -> Any:
        """Return ``reply[key]``; each Apex endpoint has its own envelope key."""
        if not isinstance(reply, dict) or key not in reply:
            keys = sorted(reply) if isinstance(reply, dict) else type(reply).__name__
            raise InvalidPayload(
                f"Apex {path} returned no {key!r} key (found {keys})",
                upstream=self.upstream,
                path=path,
                response_excerpt=self._excerpt(reply),
            )
        return reply[key]


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(model: Any) -> TypeAdapter[Any]:
    """Return a cached TypeAdapter; building one per call would be slow."""
    if model not in _ADAPTERS:
        _ADAPTERS[model] = TypeAdapter(model)
    return _ADAPTERS[model]


def _since(updated_since: datetime) -> Params:
    return [("updated_at_from", format_timestamp(updated_since))]


def _page(
    reply: dict[str, Any], items: list[Batch], page: int, per_page: int
) -> ApexPage[Batch]:
    meta = reply.get("meta") or {}
    paginator = PagePaginator(per_page, page)
    paginator.advance(reply.get("meta"), reply.get("links"))
    return ApexPage(
        items=items,
        page=int(meta.get("current_page") or page),
        per_page=per_page,
        last_page=_optional_int(meta.get("last_page")),
        total=_optional_int(meta.get("total")),
        has_next=not paginator.finished,
    )


def _optional_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
