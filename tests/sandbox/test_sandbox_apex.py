"""The simulated Apex API through FastAPI's TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sandbox.app import create_app
from sandbox.state import SandboxState

EPOCH = {"updated_at_from": "1970-01-01T00:00:00Z"}


@dataclass
class Apex:
    client: TestClient
    state: SandboxState
    tenant: dict[str, Any]

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token or self.tenant['apex_token']}",
            "Accept": "application/json",
        }

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(
            "/apex/api" + path, params=params, headers=self.headers()
        )

    def send(self, method: str, path: str, body: dict[str, Any]) -> Any:
        return self.client.request(
            method, "/apex/api" + path, json=body, headers=self.headers()
        )


@pytest.fixture
def apex() -> Iterator[Apex]:
    state = SandboxState.seeded(packages=60)
    state.limiter.enabled = False
    with TestClient(create_app(state)) as client:
        yield Apex(client, state, state.seed_summary()["tenants"][0])


def new_batch(apex: Apex, **fields: Any) -> dict[str, Any]:
    product = apex.get("/v1/products", **EPOCH).json()["products"][0]
    body = {
        "name": "1A4TEST0000000000000001",
        "product_id": product["id"],
        "operation_id": apex.tenant["facilities"][0]["apex_operation_id"],
        "quantity": 2.5,
        **fields,
    }
    response = apex.send("POST", "/v2/batches", body)
    assert response.status_code == 201, response.text
    batch: dict[str, Any] = response.json()["batch"]
    return batch


def cannabinoid_id(apex: Apex, abbreviation: str) -> int:
    rows = apex.get("/v1/cannabinoids").json()["cannabinoid"]
    return int(next(row["id"] for row in rows if row["abbreviation"] == abbreviation))


def test_missing_token_is_unauthenticated(apex: Apex) -> None:
    response = apex.client.get(
        "/apex/api/v1/welcome", headers={"Accept": "application/json"}
    )

    assert response.status_code == 401
    assert response.json() == {"message": "Unauthenticated."}


def test_unknown_token_is_unauthenticated(apex: Apex) -> None:
    response = apex.client.get("/apex/api/v1/welcome", headers=apex.headers("nope"))

    assert response.status_code == 401
    assert response.json() == {"message": "Unauthenticated."}


def test_missing_ability_is_unauthorized(apex: Apex) -> None:
    headers = apex.headers(apex.tenant["apex_readonly_token"])

    response = apex.client.post("/apex/api/v2/batches", json={}, headers=headers)

    assert response.status_code == 403
    assert response.json() == {"message": "This action is unauthorized."}


def test_missing_accept_header_returns_html(apex: Apex) -> None:
    headers = {"Authorization": f"Bearer {apex.tenant['apex_token']}"}

    response = apex.client.get("/apex/api/v1/products", params=EPOCH, headers=headers)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text


def test_welcome_lists_abilities(apex: Apex) -> None:
    body = apex.get("/v1/welcome").json()

    assert body["name"] == "Green Valley Farms"
    assert "api-version" in body
    assert "update:batches" in body["access"]


@pytest.mark.parametrize(
    "path", ["/v1/products", "/v2/batches", "/v1/buyers", "/v1/shipping-orders"]
)
def test_list_requires_updated_at_from(apex: Apex, path: str) -> None:
    response = apex.get(path)

    assert response.status_code == 422
    assert response.json() == {
        "message": "The updated at from field is required.",
        "errors": {"updated_at_from": ["The updated at from field is required."]},
    }


def test_products_page_has_links_and_meta(apex: Apex) -> None:
    body = apex.get("/v1/products", per_page=5, page=2, **EPOCH).json()

    assert len(body["products"]) == 5
    assert body["meta"]["current_page"] == 2
    assert body["meta"]["from"] == 6
    assert body["meta"]["to"] == 10
    assert body["meta"]["per_page"] == 5
    assert body["meta"]["total"] > 10
    assert "page=1" in body["links"]["prev"]
    assert "page=3" in body["links"]["next"]
    assert body["meta"]["links"][0]["label"] == "&laquo; Previous"


def test_products_default_page_size_is_15(apex: Apex) -> None:
    body = apex.get("/v1/products", **EPOCH).json()

    assert body["meta"]["per_page"] == 15
    assert len(body["products"]) == 15


def test_per_page_above_500_is_rejected(apex: Apex) -> None:
    response = apex.get("/v1/products", per_page=501, **EPOCH)

    assert response.status_code == 422
    assert "per_page" in response.json()["errors"]


def test_last_page_has_no_next_link(apex: Apex) -> None:
    body = apex.get("/v1/products", per_page=500, **EPOCH).json()

    assert body["links"]["next"] is None
    assert body["meta"]["last_page"] == 1


def test_updated_at_from_is_inclusive(apex: Apex) -> None:
    product = apex.get("/v1/products", per_page=1, **EPOCH).json()["products"][0]

    rows = apex.get("/v1/products", per_page=500, updated_at_from=product["updated_at"])
    ids = [row["id"] for row in rows.json()["products"]]

    assert product["id"] in ids


def test_ids_filter_narrows_products(apex: Apex) -> None:
    first, second = apex.get("/v1/products", per_page=2, **EPOCH).json()["products"]

    body = apex.get("/v1/products", **{"ids[]": [second["id"]]}, **EPOCH).json()

    assert [row["id"] for row in body["products"]] == [second["id"]]
    assert first["id"] != second["id"]


def test_taxonomies_use_data_envelope(apex: Apex) -> None:
    for path in ("/v1/operations", "/v1/unit-measurements", "/v1/terpenes"):
        body = apex.get(path).json()
        assert body["status"] == "success", path
        assert len(body["data"]) > 0, path


def test_cannabinoids_use_singular_key(apex: Apex) -> None:
    body = apex.get("/v1/cannabinoids").json()

    assert {"THC", "CBD"} <= {row["abbreviation"] for row in body["cannabinoid"]}


def test_operations_carry_facility_license(apex: Apex) -> None:
    operations = apex.get("/v1/operations").json()["data"]

    assert "CCL19-0001234" in {op["state_license"] for op in operations}


def test_money_has_raw_cents(apex: Apex) -> None:
    product = apex.get("/v1/products", per_page=1, **EPOCH).json()["products"][0]

    assert isinstance(product["listing_price"], str)
    assert product["listing_price_raw"] == round(float(product["listing_price"]) * 100)


def test_batch_create_requires_fields(apex: Apex) -> None:
    response = apex.send("POST", "/v2/batches", {"quantity": 1})

    assert response.status_code == 422
    assert set(response.json()["errors"]) == {"name", "product_id", "operation_id"}


def test_batch_create_returns_full_batch(apex: Apex) -> None:
    thc = cannabinoid_id(apex, "THC")

    batch = new_batch(
        apex,
        cannabinoids=[
            {"cannabinoid_id": thc, "measurement": 21.5, "measurement_type": "%"}
        ],
    )

    assert batch["quantity"] == 2.5
    assert batch["cannabinoids"][0]["abbreviation"] == "THC"
    assert batch["cannabinoids"][0]["measurement"] == "21.5"


def test_batch_rejects_other_company_cannabinoid(apex: Apex) -> None:
    other = next(c for c in apex.state.apex_companies.values() if c.id != 4101)
    foreign_id = next(iter(other.cannabinoids))

    response = apex.send(
        "POST",
        "/v2/batches",
        {
            "name": "x",
            "product_id": next(iter(apex.state.apex_companies[4101].products)),
            "operation_id": 712,
            "cannabinoids": [
                {
                    "cannabinoid_id": foreign_id,
                    "measurement": 1,
                    "measurement_type": "%",
                }
            ],
        },
    )

    assert response.status_code == 422
    assert "cannabinoids.0.cannabinoid_id" in response.json()["errors"]


def test_batch_update_is_sparse(apex: Apex) -> None:
    batch = new_batch(apex, lot_number="LOT-1", harvest_date="2025-03-01")

    response = apex.send("PATCH", f"/v2/batches/{batch['id']}", {"quantity": 1.25})
    updated = response.json()["batch"]

    assert response.status_code == 200
    assert updated["quantity"] == 1.25
    assert updated["lot_number"] == "LOT-1"
    assert updated["harvest_date"] == "2025-03-01"


def test_batch_update_empty_string_sets_null(apex: Apex) -> None:
    batch = new_batch(apex, lot_number="LOT-1")

    updated = apex.send("PUT", f"/v2/batches/{batch['id']}", {"lot_number": ""})

    assert updated.json()["batch"]["lot_number"] is None


def test_batch_update_replaces_cannabinoids(apex: Apex) -> None:
    thc, cbd = cannabinoid_id(apex, "THC"), cannabinoid_id(apex, "CBD")
    batch = new_batch(
        apex,
        cannabinoids=[
            {"cannabinoid_id": thc, "measurement": 20, "measurement_type": "%"},
            {"cannabinoid_id": cbd, "measurement": 1, "measurement_type": "%"},
        ],
    )

    body = {
        "cannabinoids": [
            {"cannabinoid_id": cbd, "measurement": 2, "measurement_type": "%"}
        ]
    }
    updated = apex.send("PUT", f"/v2/batches/{batch['id']}", body).json()["batch"]

    assert [c["id"] for c in updated["cannabinoids"]] == [cbd]


def test_batch_product_id_is_immutable(apex: Apex) -> None:
    batch = new_batch(apex)

    body = {"product_id": batch["product_id"] + 1, "operation_id": 1}
    updated = apex.send("PUT", f"/v2/batches/{batch['id']}", body).json()["batch"]

    assert updated["product_id"] == batch["product_id"]
    assert updated["operation_id"] == batch["operation_id"]


def test_batch_write_leaves_product_untouched(apex: Apex) -> None:
    batch = new_batch(apex)
    before = apex.get(f"/v1/products/{batch['product_id']}").json()["product"]

    apex.send("PATCH", f"/v2/batches/{batch['id']}", {"quantity": 9})
    after = apex.get(f"/v1/products/{batch['product_id']}").json()["product"]
    moved = apex.get(f"/v2/batches/{batch['id']}").json()["batch"]

    assert after["updated_at"] == before["updated_at"]
    assert moved["updated_at"] > batch["updated_at"]


def test_batch_list_filters_by_product(apex: Apex) -> None:
    batch = new_batch(apex)

    params = {"product_ids[]": [batch["product_id"]], **EPOCH}
    body = apex.get("/v2/batches", **params).json()

    assert [row["id"] for row in body["batches"]] == [batch["id"]]


def test_unknown_batch_is_not_found(apex: Apex) -> None:
    response = apex.get("/v2/batches/1")

    assert response.status_code == 404
    assert response.json() == {"message": "Batch not found"}


def test_buyers_expand_state(apex: Apex) -> None:
    buyer = apex.get("/v1/buyers", with_state="true", **EPOCH).json()["buyers"][0]

    assert buyer["state"] == {"id": 5, "text": "California", "value": "CA"}


def test_deal_flows_include_statuses(apex: Apex) -> None:
    flows = apex.get("/v1/deal-flows", with_order_statuses="true").json()["dealflows"]
    parents = {s["parent_status"]["name"] for s in flows[0]["order_statuses"]}

    assert parents == {
        "Submitted",
        "Accepted",
        "Pending Shipment",
        "In Transit",
        "Delivered",
        "Complete",
    }


def test_usage_counts_credits(apex: Apex) -> None:
    apex.get("/v1/products", per_page=2, **EPOCH)

    usage = apex.get("/v1/usage").json()["data"]

    assert usage["credits_used"] == 1 + 2 * 3 + 1
    assert usage["request_count"] == 2


def test_spent_credits_answer_429_without_retry(apex: Apex) -> None:
    apex.client.put("/_sandbox/apex/credits", json={"monthly_limit": 1})

    apex.get("/v1/welcome")
    response = apex.get("/v1/welcome")

    assert response.status_code == 429
    assert "retry-after" not in response.headers


def test_rate_limit_headers_on_responses(apex: Apex) -> None:
    apex.state.limiter.enabled = True

    response = apex.get("/v1/welcome")

    assert response.headers["x-ratelimit-limit"] == "15"
    assert response.headers["x-ratelimit-remaining"] == "14"


def test_rate_limit_rejects_request_over_limit(apex: Apex) -> None:
    apex.client.put(
        "/_sandbox/apex/rate-limit", json={"per_second": 1, "enabled": True}
    )

    first = apex.get("/v1/welcome")
    second = apex.get("/v1/welcome")

    assert first.status_code == 200
    assert second.status_code == 429
    assert int(second.headers["retry-after"]) >= 1
    assert "x-ratelimit-reset" in second.headers
