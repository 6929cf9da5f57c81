"""Tests of shared.apex.client through httpx.MockTransport (no network)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from shared.apex.client import ApexClient, format_timestamp
from shared.errors import (
    CredentialsRejected,
    CreditsExhausted,
    InvalidPayload,
    RateLimited,
    SyncError,
    UpstreamRejected,
    UpstreamUnavailable,
)

BASE_URL = "http://127.0.0.1:9/apex/api"
TOKEN = "apex-token-81c2d4e6-SECRET"
SINCE = datetime(2025, 1, 1, 8, 30, 15, 999999, tzinfo=UTC)

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that records each request and returns a response."""

    def __init__(self, answer: Handler) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


def make_client(answer: Handler, **kwargs: Any) -> tuple[ApexClient, Recorder]:
    recorder = Recorder(answer)
    client = ApexClient(
        BASE_URL, TOKEN, transport=httpx.MockTransport(recorder), **kwargs
    )
    return client, recorder


def reply(status: int = 200, body: Any = None, **headers: str) -> Handler:
    return lambda request: httpx.Response(status, json=body, headers=headers)


def paged(key: str, rows: list[Any], page: int, last_page: int) -> dict[str, Any]:
    next_url = f"{BASE_URL}/x?page={page + 1}" if page < last_page else None
    return {
        key: rows,
        "links": {
            "first": "?page=1",
            "last": f"?page={last_page}",
            "prev": None,
            "next": next_url,
        },
        "meta": {
            "current_page": page,
            "last_page": last_page,
            "per_page": 500,
            "total": 0,
        },
    }


def batch(batch_id: int, name: str, **fields: Any) -> dict[str, Any]:
    return {"id": batch_id, "name": name, "product_id": 55, "quantity": "2.5"} | fields


def pages_of(key: str, pages: list[list[Any]]) -> Handler:
    """Return ``pages[N - 1]`` as page N of a list."""

    def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "1"))
        return httpx.Response(200, json=paged(key, pages[page - 1], page, len(pages)))

    return answer


# Headers and parameters


def test_every_request_sends_bearer_and_accept() -> None:
    client, recorder = make_client(reply(body={"data": [], "status": "success"}))

    client.list_operations()
    client.list_terpenes()

    for request in recorder.requests:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert request.headers["Accept"] == "application/json"
        assert "Content-Type" not in request.headers


def test_write_sends_json_content_type() -> None:
    client, recorder = make_client(reply(body={"batch": batch(901, "TAG-1")}))

    created = client.create_batch(
        {"name": "TAG-1", "product_id": 55, "operation_id": 7}
    )

    request = recorder.requests[0]
    assert request.method == "POST"
    assert request.url.path == "/apex/api/v2/batches"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert json.loads(request.content)["name"] == "TAG-1"
    assert created.id == 901


def test_update_batch_puts_sparse_body() -> None:
    client, recorder = make_client(
        reply(body={"batch": batch(901, "TAG-1", quantity=2.25)})
    )

    updated = client.update_batch(901, {"quantity": "2.25"})

    request = recorder.requests[0]
    assert request.method == "PUT"
    assert request.url.path == "/apex/api/v2/batches/901"
    assert json.loads(request.content) == {"quantity": "2.25"}
    assert updated.quantity == Decimal("2.25")


def test_format_timestamp_is_utc_seconds() -> None:
    assert format_timestamp(SINCE) == "2025-01-01T08:30:15Z"
    assert format_timestamp(datetime(2025, 1, 1)) == "2025-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("call", "path", "key"),
    [
        pytest.param(
            lambda c: list(c.iter_products(SINCE)),
            "/v1/products",
            "products",
            id="products",
        ),
        pytest.param(
            lambda c: c.list_batches(updated_since=SINCE),
            "/v2/batches",
            "batches",
            id="batches",
        ),
        pytest.param(
            lambda c: list(c.iter_buyers(SINCE)), "/v1/buyers", "buyers", id="buyers"
        ),
        pytest.param(
            lambda c: list(c.iter_shipping_orders(SINCE)),
            "/v1/shipping-orders",
            "orders",
            id="orders",
        ),
    ],
)
def test_updated_at_from_always_sent(call, path: str, key: str) -> None:
    client, recorder = make_client(pages_of(key, [[]]))

    call(client)

    params = recorder.requests[0].url.params
    assert recorder.requests[0].url.path == f"/apex/api{path}"
    assert params["updated_at_from"] == "2025-01-01T08:30:15Z"
    assert params["per_page"] == "500"


def test_shipping_orders_request_items() -> None:
    client, recorder = make_client(pages_of("orders", [[]]))

    list(client.iter_shipping_orders(SINCE))

    assert recorder.requests[0].url.params["with_items"] == "true"


def test_buyers_request_state() -> None:
    client, recorder = make_client(
        pages_of(
            "buyers", [[{"id": 1, "state": {"id": 5, "text": "Oregon", "value": "OR"}}]]
        )
    )

    buyers = list(client.iter_buyers(SINCE))

    assert recorder.requests[0].url.params["with_state"] == "true"
    assert buyers[0].state is not None
    assert buyers[0].state.value == "OR"


# Paging


def test_iter_products_reads_every_page() -> None:
    pages = [
        [{"id": i, "name": f"P{i}", "product_sku": f"SKU-{i}"} for i in range(1, 4)],
        [{"id": 4, "name": "P4", "product_sku": 1234}],
        [{"id": 5, "name": "P5", "product_sku": None}],
    ]
    client, recorder = make_client(pages_of("products", pages))

    products = list(client.iter_products(SINCE))

    assert [product.id for product in products] == [1, 2, 3, 4, 5]
    assert products[3].product_sku == "1234"
    assert [r.url.params["page"] for r in recorder.requests] == ["1", "2", "3"]


def test_iter_products_is_lazy() -> None:
    client, recorder = make_client(pages_of("products", [[{"id": 1}]]))

    products = client.iter_products(SINCE)

    assert recorder.requests == []
    assert next(products).id == 1


def test_list_stops_at_last_page() -> None:
    client, recorder = make_client(pages_of("buyers", [[{"id": 1}], [{"id": 2}]]))

    buyers = list(client.iter_buyers(SINCE))

    assert [buyer.id for buyer in buyers] == [1, 2]
    assert len(recorder.requests) == 2


def test_list_stops_on_null_next_link() -> None:
    body = {"orders": [{"id": 1}], "links": {"next": None}, "meta": {"current_page": 1}}
    client, recorder = make_client(reply(body=body))

    orders = list(client.iter_shipping_orders(SINCE))

    assert len(orders) == 1
    assert len(recorder.requests) == 1


def test_list_batches_returns_page() -> None:
    client, recorder = make_client(
        pages_of("batches", [[batch(1, "A")], [batch(2, "B")]])
    )

    first = client.list_batches(updated_since=SINCE, product_ids=[55, 56])
    last = client.list_batches(updated_since=SINCE, page=2)

    assert first.has_next
    assert first.last_page == 2
    assert not last.has_next
    assert last.page == 2
    assert recorder.requests[0].url.params.get_list("product_ids[]") == ["55", "56"]


def test_find_batch_matches_name_across_pages() -> None:
    pages = [[batch(1, "TAG-0"), batch(2, "TAG-10")], [batch(3, "TAG-1")]]
    client, recorder = make_client(pages_of("batches", pages))
    created_since = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

    found = client.find_batch(product_id=55, name="TAG-1", created_since=created_since)

    assert found is not None
    assert found.id == 3
    params = recorder.requests[0].url.params
    assert params.get_list("product_ids[]") == ["55"]
    assert params["updated_at_from"] == "2025-06-01T12:00:00Z"


def test_find_batch_returns_none_when_absent() -> None:
    client, recorder = make_client(pages_of("batches", [[batch(1, "OTHER")]]))

    found = client.find_batch(product_id=55, name="TAG-1", created_since=SINCE)

    assert found is None
    assert len(recorder.requests) == 1


# Envelopes and lenient models


def test_cannabinoids_use_singular_key() -> None:
    body = {"cannabinoid": [{"id": "3", "name": "Cannabidiol", "abbreviation": "CBD"}]}
    client, recorder = make_client(reply(body=body))

    cannabinoids = client.list_cannabinoids()

    assert recorder.requests[0].url.path == "/apex/api/v1/cannabinoids"
    assert cannabinoids[0].id == 3
    assert cannabinoids[0].abbreviation == "CBD"


def test_unit_measurements_use_data_key() -> None:
    body = {
        "data": [
            {"id": 3, "name": "Pound", "alias": "lb", "available_on_inventory_items": 1}
        ]
    }
    client, _ = make_client(reply(body=body))

    units = client.list_unit_measurements()

    assert units[0].name == "Pound"
    assert units[0].available_on_inventory_items is True


def test_welcome_reads_abilities() -> None:
    body = {
        "name": "Green Valley Farms",
        "api-version": "1.0",
        "access": ["view:batches"],
    }
    client, _ = make_client(reply(body=body))

    welcome = client.welcome()

    assert welcome.name == "Green Valley Farms"
    assert welcome.api_version == "1.0"
    assert welcome.abilities == ["view:batches"]


def test_usage_reads_data() -> None:
    body = {
        "data": {"month": "2025-06", "credits_used": 120, "monthly_credit_limit": None}
    }
    client, _ = make_client(reply(body=body))

    usage = client.usage()

    assert usage.credits_used == 120
    assert usage.monthly_credit_limit is None


def test_shipping_order_lenient_fields() -> None:
    order = {
        "id": "100123",
        "cancelled": 0,
        "order_status": {
            "id": 3121,
            "name": "Invoice Finalized",
            "parent_status": {"id": 2, "name": "Accepted"},
        },
        "buyer_location_id": 77,
        "items": [
            {
                "id": 1,
                "batch_id": "901",
                "inventory_quantity": "2",
                "order_price": "1800.00",
                "order_price_raw": 180000,
                "order_sample": 0,
                "unit_price": {"packagePrice": 1},
            }
        ],
    }
    client, recorder = make_client(reply(body={"order": order}))

    result = client.get_shipping_order(100123)

    assert recorder.requests[0].url.path == "/apex/api/v1/shipping-orders/100123"
    assert result.id == 100123
    assert result.cancelled is False
    assert result.stage == "Accepted"
    assert result.items[0].batch_id == 901
    assert result.items[0].inventory_quantity == Decimal("2")
    assert result.items[0].order_price == Decimal("1800.00")
    assert result.items[0].order_sample is False


def test_deal_flows_with_statuses() -> None:
    flow = {
        "id": 1,
        "name": "Default",
        "order_statuses": [{"id": 9, "name": "New", "position": "1"}],
    }
    client, recorder = make_client(reply(body={"dealflows": [flow]}))

    flows = client.list_deal_flows()

    assert recorder.requests[0].url.params["with_order_statuses"] == "true"
    assert flows[0].order_statuses[0].position == 1


def test_missing_envelope_key_is_invalid_payload() -> None:
    client, _ = make_client(reply(body={"data": []}))

    with pytest.raises(InvalidPayload) as caught:
        list(client.iter_products(SINCE))

    assert "'products'" in str(caught.value)


# Errors


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(401, CredentialsRejected, id="401"),
        pytest.param(403, CredentialsRejected, id="403"),
        pytest.param(404, UpstreamRejected, id="404"),
        pytest.param(409, UpstreamRejected, id="409"),
        pytest.param(422, UpstreamRejected, id="422"),
        pytest.param(500, UpstreamUnavailable, id="500"),
        pytest.param(503, UpstreamUnavailable, id="503"),
    ],
)
def test_status_maps_to_exception(status: int, expected: type[SyncError]) -> None:
    client, _ = make_client(reply(status, {"message": f"failure {status}"}))

    with pytest.raises(expected) as caught:
        list(client.iter_buyers(SINCE))

    error = caught.value
    assert type(error) is expected
    assert error.status == status
    assert error.context["path"] == "/v1/buyers"
    assert f"failure {status}" in str(error)
    assert "updated_at_from" not in str(error)
    assert "updated_at_from" not in repr(error.context)


def test_404_error_key_body_in_message() -> None:
    client, _ = make_client(reply(404, {"error": "Batch not found"}))

    with pytest.raises(UpstreamRejected) as caught:
        client.update_batch(5, {"quantity": 1})

    assert "Batch not found" in str(caught.value)
    assert caught.value.context["request_excerpt"] == '{"quantity":1}'


def test_429_with_retry_after_is_rate_limited() -> None:
    client, _ = make_client(
        reply(429, {"message": "Too Many Attempts."}, **{"Retry-After": "1.5"})
    )

    with pytest.raises(RateLimited) as caught:
        client.welcome()

    assert caught.value.retry_after == 1.5
    assert isinstance(caught.value.retry_after, float)


def test_429_retry_after_http_date() -> None:
    moment = datetime.now(UTC) + timedelta(hours=1)
    header = format_datetime(moment, usegmt=True)
    client, _ = make_client(reply(429, {"message": "slow"}, **{"Retry-After": header}))

    with pytest.raises(RateLimited) as caught:
        client.welcome()

    assert caught.value.retry_after is not None
    assert 3000 < caught.value.retry_after <= 3600


def test_429_without_retry_after_is_credits() -> None:
    client, _ = make_client(reply(429, {"message": "Monthly credit limit reached"}))

    with pytest.raises(CreditsExhausted) as caught:
        client.welcome()

    assert caught.value.status == 429
    assert "credits" in str(caught.value)


def test_timeout_maps_to_unavailable() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    client, _ = make_client(answer)

    with pytest.raises(UpstreamUnavailable) as caught:
        client.welcome()

    assert "timed out" in str(caught.value)
    assert isinstance(caught.value.__cause__, httpx.ConnectTimeout)


def test_dropped_connection_maps_to_unavailable() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected", request=request)

    client, _ = make_client(answer)

    with pytest.raises(UpstreamUnavailable):
        client.create_batch({"name": "TAG"})


def test_html_body_is_invalid_payload() -> None:
    client, _ = make_client(lambda request: httpx.Response(200, text="<!doctype html>"))

    with pytest.raises(InvalidPayload):
        client.list_operations()


def test_exceptions_survive_pickling() -> None:
    import pickle

    client, _ = make_client(reply(429, {"message": "slow"}, **{"Retry-After": "2"}))

    with pytest.raises(RateLimited) as caught:
        client.welcome()

    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is RateLimited
    assert copy.retry_after == 2.0
    assert copy.context == caught.value.context


# Secrets, logging, limiter and statistics


def test_token_never_in_errors_logs_or_repr(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echo = {"message": f"Unauthenticated: Bearer {TOKEN}"}
    client, _ = make_client(reply(401, echo))

    with pytest.raises(CredentialsRejected) as caught:
        client.create_batch({"name": "TAG", "note": TOKEN})

    assert TOKEN not in str(caught.value)
    assert TOKEN not in repr(caught.value.context)
    assert TOKEN not in repr(client)
    assert TOKEN not in caplog.text
    assert "***" in caught.value.context["response_excerpt"]


def test_debug_log_line_per_request(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="shared.http")
    client, _ = make_client(pages_of("buyers", [[{"id": 1}], [{"id": 2}]]))

    list(client.iter_buyers(SINCE))

    lines = [r.getMessage() for r in caplog.records if r.name == "shared.http"]
    assert len(lines) == 2
    assert all(line.startswith("upstream=apex credential=") for line in lines)
    assert "GET /v1/buyers status=200" in lines[0]
    assert "elapsed_ms=" in lines[0]
    assert "updated_at_from" not in caplog.text


def test_limiter_and_counter_called_per_request() -> None:
    events: list[str] = []

    class Limiter:
        def acquire(self) -> None:
            events.append("acquire")

    handler = pages_of("products", [[{"id": 1}], [{"id": 2}]])

    def answer(request: httpx.Request) -> httpx.Response:
        events.append("send")
        return handler(request)

    client, _ = make_client(answer, limiter=Limiter(), on_request=events.append)

    list(client.iter_products(SINCE))

    assert events == ["acquire", "send", "apex", "acquire", "send", "apex"]
