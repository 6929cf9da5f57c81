"""The sandbox served by uvicorn: counting, rate limit, faults, demo orders."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.__main__ import parse_args
from sandbox.server import SandboxServer

EPOCH = {"updated_at_from": "1970-01-01T00:00:00Z"}


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(packages=90) as server:
        yield server


@pytest.fixture(autouse=True)
def clean(server: SandboxServer) -> Iterator[None]:
    httpx.delete(server.url + "/_sandbox/faults")
    httpx.put(server.url + "/_sandbox/apex/rate-limit", json={"enabled": False})
    httpx.post(server.url + "/_sandbox/stats/reset")
    yield


def seed(server: SandboxServer) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(server.url + "/_sandbox/seed").json()
    return body


def apex_client(server: SandboxServer, tenant: int = 0) -> httpx.Client:
    token = seed(server)["tenants"][tenant]["apex_token"]
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    return httpx.Client(base_url=server.apex_base_url, headers=headers)


def flourish_client(server: SandboxServer) -> httpx.Client:
    facility = seed(server)["tenants"][0]["facilities"][0]
    headers = {
        "x-api-key": facility["flourish_api_key"],
        "FacilityID": facility["flourish_facility_id"],
    }
    return httpx.Client(base_url=server.flourish_base_url, headers=headers)


def stats(server: SandboxServer) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(server.url + "/_sandbox/stats").json()
    return body


def create_batches(server: SandboxServer, tenant: int) -> list[int]:
    """Create one batch per product of the tenant's first operation."""
    facility = seed(server)["tenants"][tenant]["facilities"][0]
    with apex_client(server, tenant) as apex:
        products = apex.get("/v1/products", params={**EPOCH, "per_page": 500})
        ids = []
        for product in products.json()["products"][:8]:
            body = {
                "name": f"TAG-{product['id']}",
                "product_id": product["id"],
                "operation_id": facility["apex_operation_id"],
                "quantity": 100,
            }
            ids.append(apex.post("/v2/batches", json=body).json()["batch"]["id"])
    return ids


def test_server_urls_point_at_loopback(server: SandboxServer) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    assert server.apex_base_url == server.url + "/apex/api"
    assert server.flourish_base_url == server.url + "/flourish/external/api"


def test_stats_count_requests_per_api(server: SandboxServer) -> None:
    with apex_client(server) as apex, flourish_client(server) as flourish:
        apex.get("/v1/welcome")
        apex.get("/v1/products", params=EPOCH)
        flourish.get("/v1/packages")

    counts = stats(server)

    assert counts["apex"]["total"] == 2
    assert counts["flourish"]["total"] == 1


def test_stats_label_callers_without_secrets(server: SandboxServer) -> None:
    with apex_client(server) as apex, flourish_client(server) as flourish:
        apex.get("/v1/welcome")
        flourish.get("/v1/items")

    counts = stats(server)

    assert counts["apex"]["by_token"] == {"Green Valley Farms": 1}
    assert counts["flourish"]["by_key"] == {"GVF Cultivation": 1}


def test_stats_count_paths_with_id_placeholder(server: SandboxServer) -> None:
    with apex_client(server) as apex:
        apex.get("/v2/batches/12345")

    assert stats(server)["apex"]["per_path"] == {"GET /v2/batches/{id}": 1}


def test_stats_skip_admin_requests(server: SandboxServer) -> None:
    httpx.get(server.url + "/_sandbox/seed")

    counts = stats(server)

    assert counts["apex"]["total"] == 0
    assert counts["flourish"]["total"] == 0


def test_stats_track_max_per_second(server: SandboxServer) -> None:
    with apex_client(server) as apex:
        apex.get("/v1/welcome")

    assert stats(server)["apex"]["max_per_second"]["Green Valley Farms"] >= 1


def test_rate_limit_answers_429_with_retry_after(server: SandboxServer) -> None:
    httpx.put(
        server.url + "/_sandbox/apex/rate-limit",
        json={"per_second": 1, "enabled": True},
    )

    with apex_client(server) as apex:
        first = apex.get("/v1/welcome")
        second = apex.get("/v1/welcome")

    assert first.status_code == 200
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) >= 1
    assert second.headers["X-RateLimit-Remaining"] == "0"
    assert stats(server)["apex"]["status_429"] == 1


def test_lose_response_commits_the_write(server: SandboxServer) -> None:
    rule = {"method": "POST", "path_contains": "/v2/batches", "count": 1}
    httpx.put(server.url + "/_sandbox/faults", json={"apex": {"lose_response": [rule]}})
    facility = seed(server)["tenants"][0]["facilities"][0]

    with apex_client(server) as apex:
        product = apex.get("/v1/products", params=EPOCH).json()["products"][0]
        body = {
            "name": "LOST-RESPONSE-TAG",
            "product_id": product["id"],
            "operation_id": facility["apex_operation_id"],
        }
        response = apex.post("/v2/batches", json=body)
    batches = httpx.get(server.url + "/_sandbox/apex/batches").json()["batches"]

    assert response.status_code == 502
    assert "LOST-RESPONSE-TAG" in {batch["name"] for batch in batches}


def test_lose_response_answers_502_once(server: SandboxServer) -> None:
    rule = {"method": "GET", "path_contains": "/v1/welcome", "count": 1}
    httpx.put(server.url + "/_sandbox/faults", json={"apex": {"lose_response": [rule]}})

    with apex_client(server) as apex:
        lost = apex.get("/v1/welcome")
        kept = apex.get("/v1/welcome")

    assert lost.status_code == 502
    assert lost.content == b""
    assert kept.status_code == 200


def test_drop_fault_closes_connection(server: SandboxServer) -> None:
    httpx.put(server.url + "/_sandbox/faults", json={"flourish": {"drop_rate": 1.0}})

    with flourish_client(server) as flourish, pytest.raises(httpx.RemoteProtocolError):
        flourish.get("/v1/items")


def test_malformed_fault_breaks_json(server: SandboxServer) -> None:
    httpx.put(
        server.url + "/_sandbox/faults", json={"flourish": {"malformed_rate": 1.0}}
    )

    with flourish_client(server) as flourish:
        response = flourish.get("/v1/items")

    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()


def test_error_fault_answers_server_error(server: SandboxServer) -> None:
    httpx.put(server.url + "/_sandbox/faults", json={"apex": {"error_rate": 1.0}})

    with apex_client(server) as apex:
        response = apex.get("/v1/welcome")

    assert response.status_code == 500
    assert response.json() == {"message": "Server Error"}


def test_injected_429_carries_retry_after(server: SandboxServer) -> None:
    httpx.put(server.url + "/_sandbox/faults", json={"flourish": {"rate_429": 1.0}})

    with flourish_client(server) as flourish:
        response = flourish.get("/v1/items")

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"


def test_timeout_fault_exceeds_client_timeout(server: SandboxServer) -> None:
    spec = {"timeout_rate": 1.0, "timeout_seconds": 1.0}
    httpx.put(server.url + "/_sandbox/faults", json={"flourish": spec})

    with flourish_client(server) as flourish, pytest.raises(httpx.ReadTimeout):
        flourish.get("/v1/items", timeout=0.2)


def test_faults_reject_rates_above_one(server: SandboxServer) -> None:
    spec = {"error_rate": 0.7, "drop_rate": 0.7}

    response = httpx.put(server.url + "/_sandbox/faults", json={"apex": spec})

    assert response.status_code == 422


def test_generate_orders_without_batches_skips(server: SandboxServer) -> None:
    response = httpx.post(server.url + "/_sandbox/apex/orders/generate").json()

    assert "Coastal Cultivators" in response["skipped"]


def test_generate_orders_covers_every_stage(server: SandboxServer) -> None:
    create_batches(server, 0)

    generated = httpx.post(server.url + "/_sandbox/apex/orders/generate").json()
    with apex_client(server) as apex:
        params = {**EPOCH, "with_items": "true", "per_page": 100}
        orders = apex.get("/v1/shipping-orders", params=params).json()["orders"]

    stages = {o["order_status"]["parent_status"]["name"] for o in orders}
    assert len(generated["by_company"]["Green Valley Farms"]) >= 11
    assert stages == {
        "Submitted",
        "Accepted",
        "Pending Shipment",
        "In Transit",
        "Delivered",
        "Complete",
    }
    assert any(o["cancelled"] for o in orders)
    assert any(o["split_from_order_id"] for o in orders)
    assert all(item["batch_id"] for o in orders for item in o["items"])


def test_generate_orders_again_keeps_ids(server: SandboxServer) -> None:
    create_batches(server, 0)

    first = httpx.post(server.url + "/_sandbox/apex/orders/generate").json()
    second = httpx.post(server.url + "/_sandbox/apex/orders/generate").json()

    assert first["by_company"]["Green Valley Farms"]
    assert second["by_company"] == first["by_company"]


def test_order_status_update_checks_deal_flow(server: SandboxServer) -> None:
    create_batches(server, 0)
    order_id = httpx.post(server.url + "/_sandbox/apex/orders/generate").json()[
        "orders"
    ][0]

    with apex_client(server) as apex:
        bad = apex.put(f"/v1/shipping-orders/{order_id}", json={"order_status_id": 1})
        flows = apex.get("/v1/deal-flows", params={"with_order_statuses": 1}).json()
        order = apex.get(f"/v1/shipping-orders/{order_id}").json()["order"]
        flow = next(f for f in flows["dealflows"] if f["id"] == order["deal_flow_id"])
        target = flow["order_statuses"][-1]["id"]
        good = apex.put(
            f"/v1/shipping-orders/{order_id}", json={"order_status_id": target}
        )

    assert bad.status_code == 400
    assert good.status_code == 200
    assert good.json()["order"]["order_status_id"] == target


def test_admin_patch_moves_order_stage(server: SandboxServer) -> None:
    create_batches(server, 0)
    order_id = httpx.post(server.url + "/_sandbox/apex/orders/generate").json()[
        "orders"
    ][0]

    patched = httpx.patch(
        f"{server.url}/_sandbox/apex/orders/{order_id}", json={"stage": "Delivered"}
    ).json()["order"]

    assert patched["order_status"]["parent_status"]["name"] == "Delivered"


def test_admin_split_links_new_order(server: SandboxServer) -> None:
    create_batches(server, 0)
    order_id = httpx.post(server.url + "/_sandbox/apex/orders/generate").json()[
        "orders"
    ][0]

    split = httpx.post(f"{server.url}/_sandbox/apex/orders/{order_id}/split").json()

    assert split["order"]["split_from_order_id"] == order_id
    assert split["order"]["items"]


def test_admin_creates_product(server: SandboxServer) -> None:
    body = {"company": "Coastal Cultivators", "name": "New", "product_sku": "NEW-1"}

    response = httpx.post(server.url + "/_sandbox/apex/products", json=body)

    assert response.status_code == 201
    assert response.json()["product"]["product_sku"] == "NEW-1"


def test_main_defaults_to_loopback() -> None:
    args = parse_args([])

    assert args.host == "127.0.0.1"
    assert args.packages == 1500
    assert args.seed == 7
    assert args.access_log is False
