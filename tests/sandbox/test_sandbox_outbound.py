"""Flourish outbound-order rules of the sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sandbox.app import create_app
from sandbox.state import SandboxState

ORDERS = "/flourish/external/api/v1/outbound-orders"


@dataclass
class Shop:
    client: TestClient
    facility: dict[str, Any]
    destination_id: str
    rep_id: int
    sku: str

    def headers(self) -> dict[str, str]:
        return {
            "x-api-key": self.facility["flourish_api_key"],
            "FacilityID": self.facility["flourish_facility_id"],
        }

    def body(self, **changes: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "original_order_id": "APEX-100101",
            "destination": {"id": self.destination_id},
            "sales_rep": {"id": self.rep_id},
            "order_lines": [{"sku": self.sku, "order_qty": 2, "unit_price": 30}],
        }
        body.update(changes)
        return body

    def post(self, body: dict[str, Any]) -> Any:
        return self.client.post(ORDERS, json=body, headers=self.headers())

    def put(self, order_id: str, body: dict[str, Any]) -> Any:
        return self.client.put(
            f"{ORDERS}/{order_id}", json=body, headers=self.headers()
        )


def _shop(client: TestClient, state: SandboxState, tenant_index: int) -> Shop:
    facility = state.seed_summary()["tenants"][tenant_index]["facilities"][0]
    key = state.flourish_keys[facility["flourish_api_key"]]
    company = state.flourish_companies[key.company_id]
    destination = next(iter(company.destinations))
    rep = next(r for r in company.sales_reps.values() if r["active"])
    return Shop(client, facility, destination, rep["sales_rep_id"], "GELATO-3.5G")


@pytest.fixture
def state() -> SandboxState:
    return SandboxState.seeded(packages=60)


@pytest.fixture
def client(state: SandboxState) -> Iterator[TestClient]:
    with TestClient(create_app(state)) as client:
        yield client


@pytest.fixture
def shop(client: TestClient, state: SandboxState) -> Shop:
    """Coastal Main, the facility that requires a sales rep."""
    return _shop(client, state, 1)


def test_create_returns_padded_id(shop: Shop) -> None:
    response = shop.post(shop.body())
    data = response.json()["data"]

    assert response.status_code == 200
    assert len(data["id"]) == 8
    assert data["id"].isdigit()
    assert data["original_order_id"] == "APEX-100101"
    assert data["order_status"] == "Created"


def test_created_line_carries_fields(shop: Shop) -> None:
    line = shop.post(shop.body()).json()["data"]["order_lines"][0]

    assert line["sku"] == "GELATO-3.5G"
    assert line["order_qty"] == 2
    assert line["unit_price"] == 30
    assert line["allocated_qty"] is None
    assert line["order_line_dtls"] == []
    assert line["item_id"]


def test_unknown_sku_fails_whole_order(shop: Shop) -> None:
    lines = [
        {"sku": shop.sku, "order_qty": 1, "unit_price": 1},
        {"sku": "NO-SUCH-SKU", "order_qty": 1, "unit_price": 1},
    ]

    response = shop.post(shop.body(order_lines=lines))
    listed = shop.client.get(ORDERS, headers=shop.headers()).json()

    assert response.status_code == 400
    assert "NO-SUCH-SKU" in response.json()["message"]
    assert "APEX-100101" not in {o["original_order_id"] for o in listed["data"]}


def test_unknown_item_id_is_rejected(shop: Shop) -> None:
    lines = [{"item_id": "999999", "order_qty": 1, "unit_price": 1}]

    response = shop.post(shop.body(order_lines=lines))

    assert response.status_code == 400
    assert "999999" in response.json()["message"]


@pytest.mark.parametrize("party", ["destination", "sales_rep", "distributor"])
def test_party_with_id_takes_no_fields(shop: Shop, party: str) -> None:
    body = shop.body(**{party: {"id": shop.destination_id, "name": "Extra"}})

    response = shop.post(body)

    assert response.status_code == 400
    assert f"{party}.id" in response.json()["message"]


def test_required_sales_rep_is_enforced(shop: Shop) -> None:
    body = shop.body()
    del body["sales_rep"]

    response = shop.post(body)

    assert response.status_code == 400
    assert "sales_rep" in response.json()["message"]


def test_sales_rep_optional_elsewhere(client: TestClient, state: SandboxState) -> None:
    shop = _shop(client, state, 0)
    body = shop.body(order_lines=[{"sku": "GELATO-3.5G", "order_qty": 1}])
    del body["sales_rep"]

    response = shop.post(body)

    assert response.status_code == 200
    assert response.json()["data"]["sales_rep"] is None


def test_missing_facility_header_is_rejected(shop: Shop) -> None:
    headers = {"x-api-key": shop.facility["flourish_api_key"]}

    response = shop.client.post(ORDERS, json=shop.body(), headers=headers)

    assert response.status_code == 400


def test_update_replaces_lines(shop: Shop) -> None:
    order_id = shop.post(shop.body()).json()["data"]["id"]
    lines = [{"sku": shop.sku, "order_qty": 7, "unit_price": 30}]

    response = shop.put(order_id, shop.body(order_lines=lines))

    assert response.status_code == 200
    assert response.json()["data"]["order_lines"][0]["order_qty"] == 7


def test_update_after_allocation_is_rejected(shop: Shop) -> None:
    order_id = shop.post(shop.body()).json()["data"]["id"]
    shop.client.post(f"/_sandbox/flourish/outbound-orders/{order_id}/allocate")

    response = shop.put(order_id, shop.body())

    assert response.status_code == 400
    assert "allocated" in response.json()["message"]


def test_status_change_other_than_cancel_rejected(shop: Shop) -> None:
    order_id = shop.post(shop.body()).json()["data"]["id"]

    response = shop.put(order_id, {"order_status": "Shipped"})

    assert response.status_code == 400
    assert "Cancelled" in response.json()["message"]


def test_cancel_needs_no_sales_rep(shop: Shop) -> None:
    order_id = shop.post(shop.body()).json()["data"]["id"]

    response = shop.put(order_id, {"order_status": "Cancelled"})

    assert response.status_code == 200
    assert response.json()["data"]["order_status"] == "Cancelled"


@pytest.mark.parametrize("status", ["Shipped", "Completed", "Cancelled"])
def test_cancel_of_final_order_rejected(shop: Shop, status: str) -> None:
    order_id = shop.post(shop.body()).json()["data"]["id"]
    shop.client.patch(
        f"/_sandbox/flourish/outbound-orders/{order_id}", json={"order_status": status}
    )

    response = shop.put(order_id, {"order_status": "Cancelled"})

    assert response.status_code == 400
    assert status in response.json()["message"]


def test_changing_destination_is_rejected(shop: Shop, state: SandboxState) -> None:
    order_id = shop.post(shop.body()).json()["data"]["id"]
    company = state.flourish_companies["company-coast"]
    other = next(d for d in company.destinations if d != shop.destination_id)

    response = shop.put(order_id, shop.body(destination={"id": other}))

    assert response.status_code == 400
    assert "destination" in response.json()["message"]


def test_list_filters_by_created_since(shop: Shop) -> None:
    created = shop.post(shop.body()).json()["data"]

    params = {"created_timestamp_start": created["created_timestamp"]}
    listed = shop.client.get(ORDERS, params=params, headers=shop.headers()).json()

    assert [o["id"] for o in listed["data"]] == [created["id"]]


def test_get_one_order_by_id(shop: Shop) -> None:
    created = shop.post(shop.body()).json()["data"]

    response = shop.client.get(f"{ORDERS}/{created['id']}", headers=shop.headers())

    assert response.status_code == 200
    assert response.json()["data"]["original_order_id"] == "APEX-100101"


def test_allocation_fills_line_details(shop: Shop) -> None:
    order_id = shop.post(shop.body()).json()["data"]["id"]

    order = shop.client.post(f"/_sandbox/flourish/outbound-orders/{order_id}/allocate")
    line = order.json()["order"]["order_lines"][0]

    assert line["allocated_qty"] == 2
    assert sum(d["qty"] for d in line["order_line_dtls"]) == 2
