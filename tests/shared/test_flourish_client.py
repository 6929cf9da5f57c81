"""Tests of shared.flourish.client through httpx.MockTransport (no network)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from shared.errors import (
    CredentialsRejected,
    InvalidPayload,
    RateLimited,
    SyncError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from shared.flourish.client import FlourishClient, format_timestamp
from shared.flourish.schemas import InvalidRow, PackageRow

BASE_URL = "http://127.0.0.1:9/flourish/external/api"
API_KEY = "flourish-key-3f9a7c1e-SECRET"
FACILITY = "58b9b09d280e20ea24a126bb"

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that records each request and returns a response."""

    def __init__(self, answer: Handler) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


def envelope(data: Any, **meta: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"message": "Success", "status": 200, "data": data}
    if meta:
        body["meta"] = meta
    return body


def package(tag: str, **fields: Any) -> dict[str, Any]:
    row = {
        "package_id": tag,
        "sku": "1.5.29.10.0",
        "item_id": "10",
        "qty": 10,
        "available_qty": 8.5,
        "uom": "g",
        "area_name": "Wholesale Vault",
        "is_locked": False,
        "lab_test_result_id": None,
        "last_updated_timestamp": "2025-01-02T03:04:05Z",
    }
    return row | fields


def make_client(
    answer: Handler, facility_id: str | None = FACILITY, **kwargs: Any
) -> tuple[FlourishClient, Recorder]:
    recorder = Recorder(answer)
    client = FlourishClient(
        BASE_URL,
        API_KEY,
        facility_id,
        transport=httpx.MockTransport(recorder),
        **kwargs,
    )
    return client, recorder


def reply(status: int = 200, body: Any = None, **headers: str) -> Handler:
    return lambda request: httpx.Response(status, json=body, headers=headers)


# Headers and parameters


def test_packages_request_headers() -> None:
    client, recorder = make_client(reply(body=envelope([], next="")))

    client.list_packages()

    headers = recorder.requests[0].headers
    assert headers["x-api-key"] == API_KEY
    assert headers["FacilityID"] == FACILITY
    assert headers["Accept"] == "application/json"


def test_company_endpoints_omit_facility_header() -> None:
    client, recorder = make_client(reply(body=envelope([], next="")))

    client.list_facilities()
    client.list_destinations()
    client.find_items_by_sku("ABC")

    for request in recorder.requests:
        assert "FacilityID" not in request.headers
        assert request.headers["x-api-key"] == API_KEY


def test_packages_query_parameters() -> None:
    client, recorder = make_client(reply(body=envelope([], next="")))
    since = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

    client.list_packages(
        offset=100,
        limit=25,
        statuses=["Created", "Assigned to order"],
        updated_since=since,
        package_ids=["TAG-1", "TAG-2"],
    )

    params = recorder.requests[0].url.params
    assert params["offset"] == "100"
    assert params["limit"] == "25"
    assert params.get_list("package_status") == ["Created", "Assigned to order"]
    assert params.get_list("package_id") == ["TAG-1", "TAG-2"]
    assert params["last_updated_timestamp_start"] == "2025-01-02T03:04:05.678Z"


def test_format_timestamp_converts_to_utc() -> None:
    from datetime import timedelta, timezone

    moment = datetime(2025, 1, 1, 19, 0, tzinfo=timezone(timedelta(hours=-5)))

    assert format_timestamp(moment) == "2025-01-02T00:00:00.000Z"


def test_packages_limit_above_fifty_rejected() -> None:
    client, recorder = make_client(reply(body=envelope([])))

    with pytest.raises(ValueError, match="limit"):
        client.list_packages(limit=51)

    assert recorder.requests == []


def test_packages_need_facility_id() -> None:
    client, _ = make_client(reply(body=envelope([])), facility_id=None)

    with pytest.raises(ValueError, match="facility_id"):
        client.list_packages()


def test_write_sends_json_content_type() -> None:
    client, recorder = make_client(reply(body=envelope({"id": "00000044"})))

    client.create_outbound_order({"original_order_id": "APEX-1"})

    request = recorder.requests[0]
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["FacilityID"] == FACILITY
    assert json.loads(request.content) == {"original_order_id": "APEX-1"}


# Paging


def test_packages_full_page_has_next() -> None:
    rows = [package(f"TAG-{i}") for i in range(50)]
    client, _ = make_client(
        reply(body=envelope(rows, total=120, next="https://x?offset=50"))
    )

    page = client.list_packages()

    assert len(page.items) == 50
    assert page.has_next
    assert page.total == 120
    assert page.offset == 0
    assert page.limit == 50


def test_packages_short_page_is_last() -> None:
    client, _ = make_client(reply(body=envelope([package("A")], next="https://x")))

    page = client.list_packages(offset=50)

    assert not page.has_next
    assert page.offset == 50


def test_packages_empty_next_is_last() -> None:
    rows = [package("A"), package("B")]
    client, _ = make_client(reply(body=envelope(rows, next="")))

    page = client.list_packages(limit=2)

    assert not page.has_next


def test_packages_bad_rows_recorded_not_raised() -> None:
    rows = [
        package("GOOD-1"),
        package("NO-SKU", sku=None),
        package("BAD-QTY", available_qty="eight"),
        package("BAD-UOM", uom="bushel"),
        package("GOOD-2", uom="lb"),
    ]
    client, _ = make_client(reply(body=envelope(rows, next="")))

    page = client.list_packages()

    assert [row.package_id for row in page.items] == ["GOOD-1", "GOOD-2"]
    assert all(isinstance(row, PackageRow) for row in page.items)
    assert [row.package_tag for row in page.invalid] == ["NO-SKU", "BAD-QTY", "BAD-UOM"]
    assert all(isinstance(row, InvalidRow) for row in page.invalid)
    assert "sku" in page.invalid[0].reason
    assert "'eight'" in page.invalid[1].reason
    assert "'bushel'" in page.invalid[2].reason


def test_bad_rows_count_toward_page_size() -> None:
    rows = [package(f"T{i}", sku="") for i in range(2)]
    client, _ = make_client(reply(body=envelope(rows, next="https://x")))

    page = client.list_packages(limit=2)

    assert page.items == []
    assert page.has_next


def test_destinations_read_every_page() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["offset"])
        count = 50 if offset < 100 else 3
        rows = [{"id": f"D{offset + i}", "name": "Shop"} for i in range(count)]
        return httpx.Response(200, json=envelope(rows, next="https://x"))

    client, recorder = make_client(answer)

    destinations = client.list_destinations(license_number="C12-0007786-LIC")

    assert len(destinations) == 103
    assert destinations[-1].id == "D102"
    assert [r.url.params["offset"] for r in recorder.requests] == ["0", "50", "100"]
    assert all(r.url.params["limit"] == "50" for r in recorder.requests)
    assert recorder.requests[0].url.params["license_number"] == "C12-0007786-LIC"


def test_list_stops_on_empty_next() -> None:
    rows = [{"id": str(i)} for i in range(50)]
    client, recorder = make_client(reply(body=envelope(rows, next="")))

    facilities = client.list_facilities()

    assert len(facilities) == 50
    assert len(recorder.requests) == 1


# Single records and envelopes


def test_lab_test_result_path_and_parse() -> None:
    body = envelope(
        {"lab_test_result_id": 1118, "thc_percentage": 21.5, "cbd_percentage": None}
    )
    client, recorder = make_client(reply(body=body))

    result = client.get_lab_test_result(1118)

    assert recorder.requests[0].url.path.endswith("/v2/lab-test-results/1118")
    assert "FacilityID" not in recorder.requests[0].headers
    assert str(result.cannabinoids()["thc"]) == "21.5"


def test_get_by_id_unwraps_one_element_list() -> None:
    client, _ = make_client(reply(body=envelope([{"id": "00000044"}])))

    order = client.get_outbound_order("00000044")

    assert order.id == "00000044"


def test_get_by_id_quotes_path_segment() -> None:
    client, recorder = make_client(reply(body=envelope({"id": "x"})))

    client.get_outbound_order("../facilities")

    assert recorder.requests[0].url.raw_path.endswith(
        b"/v1/outbound-orders/..%2Ffacilities"
    )


def test_create_accepts_reply_without_envelope() -> None:
    client, _ = make_client(
        reply(body={"original_order_id": "APEX-1", "order_lines": []})
    )

    order = client.create_outbound_order({"original_order_id": "APEX-1"})

    assert order.original_order_id == "APEX-1"
    assert order.id is None


def test_cancel_sends_cancelled_status() -> None:
    client, recorder = make_client(reply(body=envelope({"id": "00000044"})))

    client.cancel_outbound_order("00000044")

    request = recorder.requests[0]
    assert request.method == "PUT"
    assert request.url.path.endswith("/v1/outbound-orders/00000044")
    assert json.loads(request.content) == {"order_status": "Cancelled"}


def test_find_items_matches_sku_exactly() -> None:
    rows = [
        {"id": "1", "sku": "ABC"},
        {"id": "2", "sku": "ABC-2"},
        {"id": "3", "sku": None},
    ]
    client, recorder = make_client(reply(body=envelope(rows, next="")))

    items = client.find_items_by_sku("ABC")

    assert [item.id for item in items] == ["1"]
    assert recorder.requests[0].url.params["sku"] == "ABC"


def test_outbound_orders_created_since_filter() -> None:
    client, recorder = make_client(reply(body=envelope([], next="")), facility_id=None)

    client.list_outbound_orders(created_since=datetime(2025, 5, 1, tzinfo=UTC))

    request = recorder.requests[0]
    assert request.url.params["created_timestamp_start"] == "2025-05-01T00:00:00.000Z"
    assert "FacilityID" not in request.headers


def test_sales_reps_need_facility_header() -> None:
    rows = [{"sales_rep_id": 7, "first_name": "Dana", "active": True}]
    client, recorder = make_client(reply(body=envelope(rows, next="")))

    reps = client.list_sales_reps()

    assert reps[0].sales_rep_id == 7
    assert recorder.requests[0].headers["FacilityID"] == FACILITY


# Errors


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(401, CredentialsRejected, id="401"),
        pytest.param(403, CredentialsRejected, id="403"),
        pytest.param(404, UpstreamRejected, id="404"),
        pytest.param(400, UpstreamRejected, id="400"),
        pytest.param(422, UpstreamRejected, id="422"),
        pytest.param(429, RateLimited, id="429"),
        pytest.param(500, UpstreamUnavailable, id="500"),
        pytest.param(502, UpstreamUnavailable, id="502"),
        pytest.param(503, UpstreamUnavailable, id="503"),
    ],
)
def test_status_maps_to_exception(status: int, expected: type[SyncError]) -> None:
    body = {"message": f"failure {status}", "status": status}
    client, _ = make_client(reply(status, body))

    with pytest.raises(expected) as caught:
        client.list_packages(updated_since=datetime(2025, 1, 1, tzinfo=UTC))

    error = caught.value
    assert type(error) is expected
    assert error.status == status
    assert error.context["path"] == "/v1/packages"
    assert str(status) in str(error)
    assert f"failure {status}" in str(error)
    assert "/v1/packages" in str(error)
    assert "last_updated_timestamp_start" not in str(error)


def test_429_with_retry_after_seconds() -> None:
    client, _ = make_client(
        reply(429, {"message": "slow down"}, **{"Retry-After": "3"})
    )

    with pytest.raises(RateLimited) as caught:
        client.list_facilities()

    assert caught.value.retry_after == 3.0


def test_429_without_retry_after() -> None:
    client, _ = make_client(reply(429, {"message": "slow down"}))

    with pytest.raises(RateLimited) as caught:
        client.list_facilities()

    assert caught.value.retry_after is None


def test_timeout_maps_to_unavailable() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    client, _ = make_client(answer)

    with pytest.raises(UpstreamUnavailable) as caught:
        client.list_facilities()

    assert "timed out" in str(caught.value)
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert caught.value.status is None


def test_connection_error_maps_to_unavailable() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client, _ = make_client(answer)

    with pytest.raises(UpstreamUnavailable) as caught:
        client.get_facility(FACILITY)

    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_error_status_in_body_rejected() -> None:
    client, _ = make_client(
        reply(200, {"message": "Order already shipped", "status": 400})
    )

    with pytest.raises(UpstreamRejected) as caught:
        client.cancel_outbound_order("00000044")

    assert caught.value.status == 400
    assert "Order already shipped" in str(caught.value)


def test_body_not_json_is_invalid_payload() -> None:
    client, _ = make_client(
        lambda request: httpx.Response(200, text="<html>login</html>")
    )

    with pytest.raises(InvalidPayload) as caught:
        client.list_facilities()

    assert caught.value.context["response_excerpt"] == "<html>login</html>"


def test_schema_failure_is_invalid_payload() -> None:
    client, _ = make_client(reply(body=envelope({"id": None})))

    with pytest.raises(InvalidPayload) as caught:
        client.get_facility(FACILITY)

    assert "id" in str(caught.value)
    assert caught.value.context["path"] == f"/v1/facilities/{FACILITY}"


def test_data_not_a_list_is_invalid_payload() -> None:
    client, _ = make_client(reply(body=envelope({"id": "1"})))

    with pytest.raises(InvalidPayload):
        client.list_facilities()


def test_error_excerpts_are_bounded() -> None:
    body = {"message": "invalid", "errors": "x" * 5000}
    client, _ = make_client(reply(400, body))

    with pytest.raises(UpstreamRejected) as caught:
        client.create_outbound_order({"notes": [{"note": "y" * 5000}]})

    context = caught.value.context
    assert len(context["response_excerpt"]) == 2000
    assert len(context["request_excerpt"]) == 2000
    assert context["request_excerpt"].startswith('{"notes"')


# Secrets, logging, limiter and statistics


def test_key_never_in_errors_or_repr() -> None:
    echo = {"message": f"key {API_KEY} is not active", "status": 403}
    client, _ = make_client(reply(403, echo))

    with pytest.raises(CredentialsRejected) as caught:
        client.list_packages()

    assert API_KEY not in str(caught.value)
    assert API_KEY not in repr(caught.value.context)
    assert API_KEY not in repr(client)
    assert FACILITY in repr(client)


def test_debug_log_line_per_request(caplog: pytest.LogCaptureFixture) -> None:
    client, _ = make_client(reply(404, {"message": "not found", "status": 404}))
    caplog.set_level(logging.DEBUG, logger="shared.http")

    with pytest.raises(UpstreamRejected):
        client.get_outbound_order("00000044")

    lines = [r.getMessage() for r in caplog.records if r.name == "shared.http"]
    assert len(lines) == 1
    assert "GET /v1/outbound-orders/00000044 status=404" in lines[0]
    assert f"facility={FACILITY}" in lines[0]
    assert "elapsed_ms=" in lines[0]
    assert API_KEY not in caplog.text


def test_limiter_and_counter_called_per_request() -> None:
    events: list[str] = []

    class Limiter:
        def acquire(self) -> None:
            events.append("acquire")

    def answer(request: httpx.Request) -> httpx.Response:
        events.append("send")
        offset = int(request.url.params["offset"])
        rows = [{"id": str(i)} for i in range(50 if offset == 0 else 1)]
        return httpx.Response(200, json=envelope(rows, next="https://x"))

    client, _ = make_client(answer, limiter=Limiter(), on_request=events.append)

    client.list_facilities()

    assert events == ["acquire", "send", "flourish", "acquire", "send", "flourish"]


def test_counter_counts_failed_requests() -> None:
    counted: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    client, _ = make_client(answer, on_request=counted.append)

    with pytest.raises(UpstreamUnavailable):
        client.list_facilities()

    assert counted == ["flourish"]


def test_client_closes_as_context_manager() -> None:
    client, _ = make_client(reply(body=envelope([], next="")))

    with client as entered:
        entered.list_facilities()

    assert entered is client
    assert client._http.is_closed
